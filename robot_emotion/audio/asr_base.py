"""What every recogniser shares: its Transcript, the ASR base class, audio and device checks.

audio/asr.py builds the recognisers; each returns a ``Transcript``, accepts the audio that
``as_float_audio`` accepts, and raises ``ASRModelNotFound`` (one line) for a missing model."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.errors import InputError

WHISPER_FRAME_SAMPLES = 320  # encoder frame = 2 mel hops of 160 samples = 20 ms
WHISPER_CHUNK_SAMPLES = 30 * SAMPLE_RATE
WHISPER_CHUNK_FRAMES = 1500


class ASRModelNotFound(InputError, RuntimeError):
    """The configured (or embedded default) ASR model is not there; one-line message."""


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the audio passed in
    end: float
    probability: float | None = None


@dataclass
class Transcript:
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None  # mean token log-probability (Whisper)
    confidence: float | None = None  # 0..1: exp(avg_logprob) for Whisper
    ms: float = 0.0  # wall time of the recognition
    no_speech_prob: float | None = None  # Whisper's probability that there was no speech
    extra: dict = field(default_factory=dict)


def as_float_audio(audio) -> np.ndarray:
    """Mono 16 kHz audio as float32 in [-1, 1] (int16 is scaled); anything else is a ValueError."""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"ASR expects mono 1-D audio at {SAMPLE_RATE} Hz, got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"ASR expects float32 audio in [-1, 1] or int16, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def asr_device(device: str) -> tuple[str, int]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> (kind, index); auto picks CUDA when CTranslate2 sees one."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        try:
            import ctranslate2

            return ("cuda", 0) if ctranslate2.get_cuda_device_count() > 0 else ("cpu", 0)
        except Exception:
            return "cpu", 0
    if device == "cpu":
        return "cpu", 0
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m:
        return "cuda", int(m.group(1) or 0)
    raise ValueError(f"unknown device '{device}' (expected auto, cpu, cuda or cuda:N)")


class ASR:
    """Base class. Subclasses set ``id`` and implement ``_transcribe``."""

    id: str = "asr"
    is_whisper: bool = False
    incremental: bool = False  # reuses earlier decodes of a growing audio (audio/incremental.py)

    def transcribe(self, audio, prompt: str | None = None, hypotheses=None, update: bool = False) -> Transcript:
        """Text of the audio; ``prompt`` is preceding dialogue (used by Whisper backends).
        ``hypotheses`` (audio/incremental.py): earlier decodes of the same growing audio, whose
        agreed tokens are reused; ``update`` records this decode as the newest of them."""
        a = as_float_audio(audio)
        t = time.perf_counter()
        if a.size < SAMPLE_RATE // 100:  # < 10 ms: nothing to recognise
            tr = Transcript(text="", words=[] if self._wants_words() else None)
        elif hypotheses is not None and self.incremental:
            tr = self._transcribe(a, prompt=prompt, hypotheses=hypotheses, update=update)
        elif prompt and self.is_whisper:
            tr = self._transcribe(a, prompt=prompt)
        else:
            tr = self._transcribe(a)
        tr.ms = (time.perf_counter() - t) * 1000.0
        return tr

    def _wants_words(self) -> bool:
        return False

    def _transcribe(self, audio: np.ndarray) -> Transcript:
        raise NotImplementedError

    def whisper_encoder_states(self, audio) -> np.ndarray | None:
        """(ceil(len/320), d_model) float32 encoder states; None when the backend is not Whisper."""
        return None

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"
