"""Per-utterance features for the fusion models — ONE featurizer for the node and for training.

    text   past-only dialogue context + current utterance -> MiniLM token states (T, 384),
           pooled vector (384) and the text branch's class probabilities (7)
    audio  Whisper tiny.en encoder states over the utterance's real length (T, 384) + mean,
           and the voice-emotion branch's class probabilities (7; audio/voice_emotion.py)
    face   the speaking face track during the utterance: per-frame expression-CNN features,
           at most 50 frames (down-sampled or zero-padded, as in the paper) with a mask,
           their mean, and the mean FER2013 probabilities (7)

A modality that cannot be computed (no transcript, no face in view, model not using it)
is None and marked unavailable; the fusion models are built for exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_FACE_FRAMES = 50
MAX_AUDIO_FRAMES = 250  # 5 s of 20 ms Whisper frames; longer utterances are down-sampled


@dataclass
class ModalityFeatures:
    seq: np.ndarray | None = None  # (T, D)
    pooled: np.ndarray | None = None  # (D,)
    probs: np.ndarray | None = None  # (7,) class probabilities from a unimodal branch


@dataclass
class UtteranceFeatures:
    text: ModalityFeatures | None = None
    audio: ModalityFeatures | None = None
    face: ModalityFeatures | None = None

    def available(self) -> dict[str, bool]:
        return {m: getattr(self, m) is not None for m in ("text", "audio", "face")}


def fit_length(seq: np.ndarray, n: int) -> np.ndarray:
    """Evenly down-sample a (T, D) sequence to at most n steps (never pads)."""
    if len(seq) <= n:
        return seq
    idx = np.linspace(0, len(seq) - 1, n).round().astype(int)
    return seq[idx]


def face_features(track: dict | None) -> ModalityFeatures | None:
    """From tracker.tracks_between()[track_id]: feats (K, D), expression (K, 7) optional."""
    if track is None or track.get("feats") is None or len(track["feats"]) == 0:
        return None
    feats = np.asarray(track["feats"], np.float32)
    if feats.shape[1] == 0:
        return None
    seq = fit_length(feats, MAX_FACE_FRAMES)
    probs = None
    if track.get("expression") is not None and len(track["expression"]):
        probs = np.asarray(track["expression"], np.float32).mean(0)
        probs = probs / probs.sum()
    return ModalityFeatures(seq, seq.mean(0), probs)


class TextFeaturizer:
    MEMO = 4  # the node asks for the same turn twice: its early estimate is prepared during speech

    def __init__(self, model):
        self.model = model  # features.text.TextEmotionModel
        self._memo: dict = {}

    def __call__(
        self, history: list[tuple[str | None, str]], current: tuple[str | None, str]
    ) -> ModalityFeatures | None:
        key = (tuple(history), tuple(current))
        if key not in self._memo:
            if len(self._memo) >= self.MEMO:
                del self._memo[next(iter(self._memo))]
            self._memo[key] = self.batch([(history, current)])[0]
        return self._memo[key]

    def batch(self, items: list) -> list[ModalityFeatures | None]:
        """[(history, (speaker, text))] -> features; one encoder pass for the whole batch."""
        import torch

        m = self.model
        keep = [i for i, (_, cur) in enumerate(items) if cur[1] and cur[1].strip()]
        out: list[ModalityFeatures | None] = [None] * len(items)
        if not keep:
            return out
        with torch.no_grad():
            states, mask, pooled, probs = m.forward([items[i] for i in keep])
        probs = probs.cpu().numpy()
        for j, i in enumerate(keep):
            seq = states[j][mask[j].bool()].float().cpu().numpy()
            out[i] = ModalityFeatures(seq, pooled[j].float().cpu().numpy(), probs[j].astype(np.float32))
        return out


class AudioFeaturizer:
    """Whisper encoder states of the turn (the ASR's own encoding, audio/whisper_short.py) and,
    where a voice-emotion model fits the encoder, its calibrated class probabilities."""

    def __init__(self, asr, voice=None):
        from robot_emotion.audio.voice_emotion import SpeakerBaselines

        self.asr, self.voice = asr, voice  # voice: audio.voice_emotion.VoiceEmotion or None
        self.baselines = SpeakerBaselines(voice.prior) if voice is not None else None

    def __call__(self, audio: np.ndarray, speaker: str | None = None, final_key=None) -> ModalityFeatures | None:
        """``speaker``: whose baseline the voice is measured against; ``final_key``: the turn's
        id when this is its final result (then the turn joins its speaker's baseline)."""
        if self.asr is None or audio.size < 1600:  # < 0.1 s: nothing to encode
            return None
        states = self.asr.whisper_encoder_states(audio)
        if states is None or len(states) == 0:
            return None
        states = np.asarray(states, np.float32)
        probs = None
        if self.voice is not None:
            from robot_emotion.audio.voice_emotion import pool

            z = self.voice.standardize(pool(states))
            probs = self.voice.probs(self.baselines.relative(speaker, z)).astype(np.float32)
            if final_key is not None:
                self.baselines.add(speaker, z, final_key)
        seq = fit_length(states, MAX_AUDIO_FRAMES)
        return ModalityFeatures(seq, seq.mean(0), probs)


def to_fusion_input(batch: list[UtteranceFeatures], dims: dict[str, int], device="cpu"):
    """Stack features into the models' FusionInput (zero-padded sequences + masks)."""
    import torch
    from robot_emotion.models import MODALITIES, FusionInput

    B = len(batch)
    seqs, masks, pooled, probs = {}, {}, {}, {}
    avail = torch.zeros(B, len(MODALITIES), dtype=torch.bool)
    for j, m in enumerate(MODALITIES):
        if m not in dims:
            continue
        d = dims[m]
        feats = [getattr(u, m) for u in batch]
        for i, f in enumerate(feats):
            # a probability-only modality (dim 0) is available when probs exist
            avail[i, j] = f is not None and (f.pooled is not None if d else f.probs is not None)
        if d:
            T = max([len(f.seq) for f in feats if f is not None and f.seq is not None] + [1])
            s = torch.zeros(B, T, d)
            mk = torch.zeros(B, T, dtype=torch.bool)
            p = torch.zeros(B, d)
            for i, f in enumerate(feats):
                if f is not None and f.seq is not None and avail[i, j]:
                    s[i, : len(f.seq)] = torch.from_numpy(np.asarray(f.seq, np.float32))
                    mk[i, : len(f.seq)] = True
                    p[i] = torch.from_numpy(np.asarray(f.pooled, np.float32))
            seqs[m], masks[m], pooled[m] = s, mk, p
        if any(f is not None and f.probs is not None for f in feats):
            pr = torch.full((B, 7), 1.0 / 7)
            for i, f in enumerate(feats):
                if f is not None and f.probs is not None:
                    pr[i] = torch.from_numpy(np.asarray(f.probs, np.float32))
            probs[m] = pr
    return FusionInput(seqs=seqs, seq_mask=masks, pooled=pooled, available=avail, probs=probs or None).to(device)
