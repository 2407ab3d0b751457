"""The optional recognisers besides faster-whisper: pocketsphinx and transformers Whisper.

``make_asr`` (audio/asr.py) builds them when ``asr.backend`` names them:

* ``pocketsphinx``: the en-us model shipped in the ``pocketsphinx`` wheel (fast, poor);
* ``transformers``: any local Whisper checkpoint directory (WhisperForConditionalGeneration
  + WhisperProcessor, ``local_files_only``), whose encoder also serves the audio branch.
"""

from __future__ import annotations

import math
import os
import re
import threading

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.asr_base import (
    ASR,
    WHISPER_CHUNK_SAMPLES,
    WHISPER_FRAME_SAMPLES,
    ASRModelNotFound,
    Transcript,
    Word,
    as_float_audio,
    asr_device,
)


# --------------------------------------------------------------------------- pocketsphinx


def _pocketsphinx_model(path: str) -> dict:
    """hmm/lm/dict of a pocketsphinx model folder laid out like the wheel's model/en-us."""
    if not path:
        try:
            import pocketsphinx
        except ImportError:
            raise ASRModelNotFound(
                "pocketsphinx model not found: Python package 'pocketsphinx' is not installed"
            ) from None
        path = os.path.join(os.path.dirname(pocketsphinx.__file__), "model", "en-us")
    if not os.path.isdir(path):
        raise ASRModelNotFound(f"pocketsphinx model not found: no model folder at {path}")
    names = sorted(os.listdir(path))
    hmm = (
        path
        if os.path.isfile(os.path.join(path, "mdef"))
        else next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n, "mdef"))), None)
    )
    lm = next(
        (os.path.join(path, n) for n in names if n.endswith((".lm.bin", ".lm", ".arpa")) and "phone" not in n), None
    )
    dic = next((os.path.join(path, n) for n in names if n.endswith(".dict")), None)
    if not (hmm and lm and dic):
        raise ASRModelNotFound(
            f"pocketsphinx model not found: {path} needs an acoustic model "
            "folder (with mdef), a *.lm.bin language model and a *.dict"
        )
    return {"hmm": hmm, "lm": lm, "dict": dic}


class PocketSphinxASR(ASR):
    _FILLER = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")

    def __init__(self, path: str = ""):
        from pocketsphinx import Decoder

        self.files = _pocketsphinx_model(path)
        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **self.files)
        name = "en-us" if not path else os.path.basename(os.path.normpath(path))
        self.id = f"pocketsphinx:{name}"
        self._lock = threading.Lock()

    def _wants_words(self) -> bool:
        return True

    def _transcribe(self, audio: np.ndarray) -> Transcript:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        with self._lock:
            d = self.decoder
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            segs = list(d.seg()) if hyp is not None else []
        words = []
        fps = 100.0  # pocketsphinx frame rate
        for s in segs:
            w = re.sub(r"\(\d+\)$", "", s.word)
            if self._FILLER.match(w):
                continue
            # s.prob is only meaningful after a lattice pass (not run: costs time), so no probability
            words.append(Word(w, s.start_frame / fps, (s.end_frame + 1) / fps, None))
        text = " ".join(w.text for w in words)
        return Transcript(
            text=text,
            words=words,
            avg_logprob=None,
            confidence=None,
            extra={"score": hyp.score if hyp is not None else None},
        )


# --------------------------------------------------------------------------- transformers


class TransformersWhisperASR(ASR):
    is_whisper = True

    def __init__(self, path: str, device: str = "auto", num_beams: int = 1, language: str = "en"):
        if not path or not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
            raise ASRModelNotFound(
                f"transformers Whisper checkpoint not found: expected a folder with "
                f"config.json at {path or '(asr.model is empty)'}"
            )
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        kind, index = asr_device(device)
        if kind == "cuda" and not torch.cuda.is_available():
            kind = "cpu"
        self.device = torch.device(f"cuda:{index}" if kind == "cuda" else "cpu")
        try:
            self.processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
            self.model = (
                WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True).to(self.device).eval()
            )
        except OSError as e:
            raise ASRModelNotFound(
                f"transformers Whisper checkpoint at {path} is incomplete: {str(e).splitlines()[0]}"
            ) from None
        self.num_beams = int(num_beams)
        self.id = f"transformers:{os.path.basename(os.path.normpath(path))}"
        self._lock = threading.Lock()
        gc = self.model.generation_config
        # English-only checkpoints (and old generation configs) take no language/task arguments
        self._pass_language = bool(getattr(gc, "is_multilingual", False)) and bool(getattr(gc, "lang_to_id", None))
        if language != "en" and not self._pass_language:
            from robot_emotion.errors import UsageError

            raise UsageError(
                f"asr.language = {language!r} needs a multilingual Whisper model, and {path} "
                "is English-only (asr.model)"
            )
        self.language = language

    def _features(self, audio: np.ndarray):
        inputs = self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return inputs.input_features.to(self.device, self.model.dtype)

    def _transcribe(self, audio: np.ndarray, prompt: str | None = None) -> Transcript:
        import torch

        # The prompt is not passed here: generate() returns it inside the sequence on some
        # transformers versions, and this backend is the non-default one.
        kw = {"language": self.language, "task": "transcribe"} if self._pass_language else {}
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                self._features(audio[:WHISPER_CHUNK_SAMPLES]),
                num_beams=self.num_beams,
                return_dict_in_generate=True,
                output_scores=True,
                **kw,
            )
        seq = out.sequences
        text = self.processor.batch_decode(seq, skip_special_tokens=True)[0].strip()
        avg = None
        try:
            lp = self.model.compute_transition_scores(seq, out.scores, normalize_logits=True)[0]
            lp = lp[torch.isfinite(lp)]
            avg = float(lp.mean()) if lp.numel() else None
        except Exception:  # scores are an optional nicety
            pass
        return Transcript(text=text, words=None, avg_logprob=avg, confidence=math.exp(avg) if avg is not None else None)

    def whisper_encoder_states(self, audio) -> np.ndarray:
        import torch

        a = as_float_audio(audio)
        n_frames = max(1, math.ceil(a.size / WHISPER_FRAME_SAMPLES))
        out = []
        with self._lock, torch.inference_mode():
            for s in range(0, max(1, a.size), WHISPER_CHUNK_SAMPLES):
                enc = self.model.get_encoder()(self._features(a[s : s + WHISPER_CHUNK_SAMPLES]))
                out.append(enc.last_hidden_state[0].float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out)[:n_frames], dtype=np.float32)
