"""Emotion scoring in the node: features -> fusion model -> the `emotion` message.

The checkpoint says which modalities it uses and with which encoders (self-describing);
features the model does not use are never computed. The shipped default is late fusion of
three calibrated branches: the fine-tuned MiniLM text model, the voice-emotion read-out of
the recogniser's own Whisper encoding (audio/voice_emotion.py: no second encoder pass), and
the FER2013 face expression CNN, each weighted where it is present.

Every `emotion` message also says what each branch said (``branches``: its probabilities and
its weight in the fused result) and places the fused result on the circumplex (``valence``
-1..1, ``arousal`` 0..1) as the probability-weighted mean of the class coordinates below.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS
from robot_emotion.bus.messages import valence_arousal
from robot_emotion.features.utterance import (
    AudioFeaturizer,
    TextFeaturizer,
    UtteranceFeatures,
    face_features,
    to_fusion_input,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "default_emotion.pt"
FACE_ENCODER = {"id": "fer2013-mini-xception", "version": "1"}
# version 2: the states of the recogniser's short-window encoding (audio/whisper_short.py)
AUDIO_ENCODER = {"id": "whisper-tiny.en-encoder", "version": "2"}

AUDIO_DIM = 384  # width of the Whisper tiny.en encoder states (AUDIO_ENCODER)


def node_feature_dims(asr=None, text_model=None) -> dict[str, int]:
    """The feature size each of the node's encoders gives; a checkpoint's dims must match."""
    from robot_emotion.vision.expression import FEATURE_DIM

    dims = {"face": FEATURE_DIM}
    if asr is not None and "whisper" in getattr(asr, "id", ""):
        dims["audio"] = AUDIO_DIM
    if text_model is not None:
        dims["text"] = int(text_model.encoder.dim)
    return dims


def precheck_checkpoint(cfg, asr=None) -> dict:
    """Read and validate the configured checkpoint (CheckpointError, exit 3) before the models
    load: a checkpoint that cannot work is refused in a second, not after the ASR loaded. The
    text and face encoders it names are compared here too (the audio one once the recogniser
    is loaded: its id comes from the model files)."""
    from robot_emotion.features.text_emotion import encoder_tag
    from robot_emotion.models.checkpoint import check_encoders, read_checkpoint, validate_checkpoint

    path = checkpoint_path(cfg)
    raw = read_checkpoint(path)
    try:
        text = encoder_tag(text_model_dir(raw, path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        text = None  # a broken text model folder: its load says what is wrong
    validate_checkpoint(raw, path, {**node_feature_dims(asr), **({"text": text["dim"]} if text else {})})
    if text is not None:
        check_encoders(raw["encoders"], {"text": text, "face": FACE_ENCODER}, raw["dims"])
    return raw


def checkpoint_path(cfg) -> Path:
    return Path(cfg.emotion.model) if cfg.emotion.model else DEFAULT_CHECKPOINT


def text_model_dir(raw: dict, path: Path) -> str:
    """The text model a checkpoint was built on: its `training.text_model_dir` (relative to the
    checkpoint), else the shipped one."""
    text_dir = raw.get("training", {}).get("text_model_dir") or str(ASSETS)
    return text_dir if Path(text_dir).is_absolute() else str(path.parent / text_dir)


def configured_encoders(text_model, asr) -> dict:
    enc = {"text": {"id": text_model.id, "version": text_model.version}, "face": FACE_ENCODER}
    if asr is not None and "whisper" in getattr(asr, "id", ""):
        enc["audio"] = AUDIO_ENCODER
    return enc


def voice_model(asr):
    """The shipped voice-emotion read-out, where the recogniser is the encoder it was trained
    on (the embedded Whisper tiny.en); None otherwise (the audio branch then gives no probs)."""
    if getattr(asr, "id", "") != "faster-whisper:tiny.en":
        return None
    from robot_emotion.audio.voice_emotion import VoiceEmotion
    from robot_emotion.shared_models import shared

    return shared(("voice_emotion",), VoiceEmotion.load)


class EmotionScorer:
    def __init__(self, model, meta: dict, text_model, asr=None, device: str = "cpu", history_turns: int = 8):
        self.model, self.meta, self.device = model, meta, device
        self.dims = dict(meta["dims"])
        self.model_id = meta.get("model_id") or f"{meta['family']}:{Path(meta.get('path', '')).stem}"
        self.text = TextFeaturizer(text_model) if "text" in self.dims else None
        voice = voice_model(asr) if "audio" in self.dims else None
        self.audio = AudioFeaturizer(asr, voice) if self.dims.get("audio") or voice else None
        self.uses_face = "face" in self.dims
        self.history_turns = history_turns

    @classmethod
    def from_config(cls, cfg, device: str = "cpu", asr=None) -> "EmotionScorer":
        from robot_emotion.features.text_emotion import TextEmotionModel
        from robot_emotion.models import load_checkpoint
        from robot_emotion.threads import cap_scorer_threads

        cap_scorer_threads()
        path = checkpoint_path(cfg)
        raw = precheck_checkpoint(cfg, asr)  # it names the text branch it was built with
        text_dir = text_model_dir(raw, path)
        from robot_emotion.shared_models import file_key, shared

        text_model = shared(
            ("text_model", str(Path(text_dir).resolve()), device, cfg.emotion.text_int8),
            lambda: TextEmotionModel.load(text_dir, device=device, int8=cfg.emotion.text_int8),
        )
        model, meta = shared(
            ("fusion", file_key(path), device, getattr(asr, "id", None), id(text_model)),
            lambda: load_checkpoint(
                path,
                expected_encoders=configured_encoders(text_model, asr),
                map_location=device,
                node_dims=node_feature_dims(asr, text_model),
            ),
        )
        meta = dict(meta, path=str(path))
        return cls(model, meta, text_model, asr, device, cfg.emotion.history_turns)

    def features(
        self,
        text: str | None,
        speaker: str | None,
        history: list,
        audio: np.ndarray,
        face_track: dict | None,
        lat: dict,
        final_key=None,
    ) -> UtteranceFeatures:
        f = UtteranceFeatures()
        if self.text is not None and text:
            t0 = time.perf_counter()
            f.text = self.text(history, (speaker, text))
            lat["text"] = (time.perf_counter() - t0) * 1000.0
        if self.audio is not None:
            t0 = time.perf_counter()
            f.audio = self.audio(audio, speaker, final_key)
            lat["audio"] = (time.perf_counter() - t0) * 1000.0
        if self.uses_face:
            f.face = face_features(face_track)
        return f

    def predict(self, feats: UtteranceFeatures) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
        """-> (probs (7,) or None when no modality is available, embedding, modalities used)."""
        import torch

        x = to_fusion_input([feats], self.dims, self.device)
        with torch.no_grad():
            out = self.model(x)
        used = {m: bool(x.available[0, i]) for i, m in enumerate(("text", "audio", "face"))}
        if not bool(out.has_estimate[0]):
            return None, None, used
        return out.probs[0].cpu().numpy(), out.embedding[0].cpu().numpy(), used

    def branches(self, feats: UtteranceFeatures, used: dict) -> dict:
        """What each modality the model used said on its own (its class probabilities, where
        its encoder gives them), and its weight in the fused result (late fusion: the
        checkpoint's weights renormalised over the modalities present; other families mix
        learned features, so no single weight exists: null)."""
        late = self.meta.get("family") == "late"
        w = (self.meta.get("hparams") or {}).get("weights") or {}
        total = sum(float(w.get(m, 0.0)) for m, u in used.items() if u)
        out = {}
        for m, u in used.items():
            if not u:
                continue
            f = getattr(feats, m)
            probs = None if f is None or f.probs is None else f.probs / max(float(f.probs.sum()), 1e-12)
            out[m] = {
                "probs": None if probs is None else {e: round(float(p), 4) for e, p in zip(EMOTIONS, probs)},
                "label": None if probs is None else EMOTIONS[int(np.argmax(probs))],
                "weight": round(float(w.get(m, 0.0)) / total, 4) if late and total > 0 else None,
            }
        return out

    def prepare_text(self, history: list, speaker: str | None, text: str) -> None:
        """Compute (and keep: TextFeaturizer's memo) the text features a later ``score`` of
        this turn with this text and history will ask for. ``history``: the past dialogue
        turns (DialogueHistory.context, at most ``history_turns``)."""
        if self.text is not None and text:
            self.text([(h.speaker, h.text) for h in history], (speaker, text))

    def score(self, utt: dict, audio: np.ndarray, face_track: dict | None, history: list) -> dict:
        """The `emotion` body of an `utterance` body; ``latency_ms`` holds each stage's time."""
        lat = {}
        history = [(h.speaker, h.text) for h in history]
        final_key = utt["utterance_id"] if utt.get("final", True) else None
        feats = self.features(utt.get("text"), utt.get("speaker"), history, audio, face_track, lat, final_key)
        t0 = time.perf_counter()
        probs, _, used = self.predict(feats)
        lat["fusion"] = (time.perf_counter() - t0) * 1000.0
        body = {
            "topic": "emotion",
            **{k: utt[k] for k in ("utterance_id", "start", "end", "speaker", "face_track", "text")},
        }
        body.update(modalities=used, model=self.model_id, latency_ms=lat)
        if probs is None:
            body.update(label=None, probs=None, valence=None, arousal=None, branches={})
        else:
            probs = probs / probs.sum()
            v, a = valence_arousal(probs)
            body.update(
                label=EMOTIONS[int(np.argmax(probs))],
                probs={e: float(p) for e, p in zip(EMOTIONS, probs)},
                valence=v,
                arousal=a,
                branches=self.branches(feats, used),
            )
        return body
