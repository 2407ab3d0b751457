"""Streaming speech segmentation (py-webrtcvad's ring-buffer collector, made incremental).

Feed audio blocks of any size; the segmenter re-frames them into 10/20/30 ms frames,
classifies each frame (webrtcvad, or silero-vad when configured) and runs a two-state
machine over a ring buffer of ``padding_ms``:

* SILENCE -> SPEECH when more than ``onset_ratio`` of the ring is voiced. The start time
  is the first voiced frame of the ring (the ring is the pre-roll), so the onset event
  is late by at most the ring length but the boundary is not.
* SPEECH -> SILENCE when more than ``offset_ratio`` of the last ``hangover_ms`` is unvoiced.
  The hangover is shorter than the onset ring so that quick turn-taking (another
  speaker answering after 150 ms) still ends the first utterance.
  The end time is the end of the last voiced frame.
* A segment reaching ``max_utterance_s`` is cut and a new one starts at once, so a
  monologue still yields results. Segments shorter than ``min_utterance_ms`` end with
  ``dropped=True`` (a SpeechStart was already sent for barge-in, so the end must follow).
* ``turn_gap_ms`` after the last segment ended with no new speech, a ``TurnGap`` is emitted:
  the pause is long enough to close the speaker's turn (audio/turns.py). Speech that is
  starting but not yet confirmed (voiced frames in the onset ring) holds it back until the
  segment's start is known, so a 450 ms pause never closes a turn at turn_gap_ms = 500. Segments mark
  pauses (fast, for barge-in); turns are built from them downstream.

Audio handed on with a segment runs from ``audio_t0`` to ``decided_at`` (the hangover after
the last voiced frame is kept: padding for the recogniser). ``audio_t0`` is the pre-roll
before the start, or, when the previous segment closed less than ``GAP_AUDIO_S`` earlier,
the moment it closed: consecutive segments then tile the timeline without holes, so a turn
made of several segments has its real pauses, not silence pasted in.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.config import VADConfig

PREROLL_S = 0.15  # audio kept before the detected start, for the recogniser's sake
GAP_AUDIO_S = 1.0  # a pause shorter than this is handed on with the next segment
MIN_FLOOR_DB = 20.0  # ~rms 10 in int16: quieter than any real microphone's self-noise


@dataclass
class SpeechStart:
    utterance_id: str
    start: float
    decided_at: float  # capture time at which onset was confirmed
    wall: float = 0.0


@dataclass
class SpeechEnd:
    utterance_id: str
    start: float
    end: float
    audio: np.ndarray = field(repr=False)  # int16, from audio_t0 to decided_at
    audio_t0: float = 0.0  # capture time of audio[0]
    forced: bool = False  # cut at max_utterance_s
    dropped: bool = False  # shorter than min_utterance_ms
    decided_at: float = 0.0
    wall: float = 0.0


@dataclass
class TurnGap:
    """No speech for ``turn_gap_ms`` since the last segment ended at ``last_end``."""

    t: float
    last_end: float
    wall: float = 0.0


class WebRtcFrames:
    """webrtcvad, gated by energy above an adaptive noise floor.

    webrtcvad keeps saying "speech" for ~100 ms after speech stops (its own hangover),
    which hides quick turn-taking gaps. A frame counts as voiced only if it is also
    ``margin_db`` above the noise floor; the floor follows the quietest frames down at
    once and creeps up slowly (1 dB/s), so it adapts to fans and motors, not to speech.
    """

    def __init__(self, aggressiveness: int, frame_ms: int, margin_db: float = 12.0):
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_len = SAMPLE_RATE * frame_ms // 1000
        self.margin_db = margin_db
        self.floor_db: float | None = None
        self._rise = 1.0 * frame_ms / 1000.0

    def is_speech(self, frame: np.ndarray) -> bool:
        energy_db = 10.0 * np.log10(np.mean(frame.astype(np.float32) ** 2) + 1.0)
        # Digital silence (padding, muted input) must not drag the floor below any real mic's.
        level = max(energy_db, MIN_FLOOR_DB)
        self.floor_db = level if self.floor_db is None else min(level, self.floor_db + self._rise)
        if self.margin_db > 0 and energy_db < self.floor_db + self.margin_db:
            return False
        return self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)


class SileroFrames:
    """silero-vad (its model ships in the wheel); 512-sample frames, speech where its
    probability >= ``threshold`` (vad.threshold)."""

    def __init__(self, threshold: float = 0.15):
        import torch
        from silero_vad import load_silero_vad

        self._torch = torch
        self._model = load_silero_vad()
        self.frame_len = 512
        self.threshold = threshold

    def probability(self, frame: np.ndarray) -> float:
        x = self._torch.from_numpy(frame.astype(np.float32) / 32768.0)
        with self._torch.no_grad():
            return float(self._model(x, SAMPLE_RATE))

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.probability(frame) >= self.threshold

    @classmethod
    def probabilities(cls, audio: np.ndarray) -> np.ndarray:
        """Silero's probability per 512-sample frame of int16 ``audio``, in order, from a fresh
        model state (they do not depend on the threshold: replay them with ``StoredFrames``)."""
        frames = cls()
        n = audio.size // 512
        return np.array([frames.probability(audio[i * 512 : (i + 1) * 512]) for i in range(n)], np.float32)


class StoredFrames:
    """A frame classifier that replays stored silero probabilities at a threshold (the fit of
    vad.threshold in benchmarks/vad, and ``calibrate``'s choice of it)."""

    frame_len = 512

    def __init__(self, probs: np.ndarray, threshold: float):
        self._speech = iter(probs >= threshold)

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(next(self._speech))


def speech_segments(audio: np.ndarray, cfg: VADConfig, frames=None) -> list[tuple[float, float]]:
    """(start, end) of the segments a ``Segmenter`` keeps over int16 ``audio`` fed in 30 ms
    blocks (``frames``: another frame classifier, as ``Segmenter`` takes)."""
    seg = Segmenter(cfg, frames=frames)
    block = SAMPLE_RATE * 30 // 1000
    events = [e for i in range(0, audio.size, block) for e in seg.push(i / SAMPLE_RATE, audio[i : i + block])]
    events += seg.flush(audio.size / SAMPLE_RATE)
    return [(e.start, e.end) for e in events if isinstance(e, SpeechEnd) and not e.dropped]


class Segmenter:
    """Incremental VAD segmenter. ``push(t, samples)`` returns the events it completed."""

    def __init__(self, cfg: VADConfig, id_prefix: str = "", frames=None):
        self.cfg = cfg
        # ``frames``: any frame classifier (``frame_len``, ``is_speech(frame)``); the fit of
        # vad.threshold (benchmarks/vad) replays stored silero probabilities through it
        self.frames = frames or (
            SileroFrames(cfg.threshold)
            if cfg.backend == "silero"
            else WebRtcFrames(cfg.aggressiveness, cfg.frame_ms, cfg.energy_margin_db)
        )
        self.flen = self.frames.frame_len
        self.fdur = self.flen / SAMPLE_RATE
        self.ring = collections.deque(maxlen=max(1, round(cfg.padding_ms / 1000 / self.fdur)))
        self.tail = collections.deque(maxlen=max(1, int(cfg.hangover_ms / 1000 / self.fdur + 1e-6)))
        self._pending = np.zeros(0, np.int16)
        self._pending_t = 0.0
        self._history = collections.deque(maxlen=int(GAP_AUDIO_S / self.fdur) + self.ring.maxlen + 1)
        self._speech: list[np.ndarray] | None = None  # frames of the open segment
        self._start = self._last_voiced_end = self._audio_t0 = 0.0
        self._prev_close: float | None = None  # decided_at of the last segment
        self._last_end: float | None = None  # end of the last segment, until its TurnGap
        self.turn_gap_s = cfg.turn_gap_ms / 1000.0
        self._id_prefix, self._count = id_prefix, 0
        self._open_id = ""

    @property
    def in_speech(self) -> bool:
        return self._speech is not None

    def push(self, t: float, samples: np.ndarray) -> list:
        if self._pending.size == 0:
            self._pending_t = t
        self._pending = np.concatenate([self._pending, samples.astype(np.int16)])
        events = []
        while self._pending.size >= self.flen:
            frame, self._pending = self._pending[: self.flen], self._pending[self.flen :]
            ft = self._pending_t
            self._pending_t += self.fdur
            events.extend(self._step(ft, frame))
        return events

    def _step(self, t: float, frame: np.ndarray) -> list:
        voiced = self.frames.is_speech(frame)
        self._history.append((t, frame))
        self.ring.append((t, voiced))
        if self._speech is None:
            # A segment confirmed later starts at the ring's first voiced frame at the earliest:
            # the pause is a turn gap once even that start would be turn_gap_s after the last end.
            earliest = next((ft for ft, v in self.ring if v), t + self.fdur)
            events = []
            if self._last_end is not None and earliest - self._last_end >= self.turn_gap_s - 1e-9:
                events.append(TurnGap(t + self.fdur, self._last_end))
                self._last_end = None
            if sum(v for _, v in self.ring) > self.cfg.onset_ratio * self.ring.maxlen:
                self._last_end = None
                events.append(self._open(t + self.fdur))
            return events
        self._speech.append(frame)
        self.tail.append(voiced)
        if voiced:
            self._last_voiced_end = t + self.fdur
        n_unvoiced = sum(not v for v in self.tail)
        if n_unvoiced > self.cfg.offset_ratio * self.tail.maxlen:
            return [self._close(t + self.fdur, forced=False)]
        if t + self.fdur - self._start >= self.cfg.max_utterance_s:
            end = self._close(t + self.fdur, forced=True)
            self.ring.clear()
            self.ring.extend([(t, True)] * self.ring.maxlen)  # still speaking: reopen at once
            return [end, self._open(t + self.fdur, start=t + self.fdur)]
        return []

    def _open(self, decided_at: float, start: float | None = None) -> SpeechStart:
        if start is None:
            start = next(ft for ft, v in self.ring if v)
        self._start = start
        self._last_voiced_end = decided_at
        self._audio_t0 = max(0.0, start - PREROLL_S) if start < decided_at else start
        if self._prev_close is not None and start - self._prev_close < GAP_AUDIO_S:
            self._audio_t0 = min(self._audio_t0, self._prev_close)  # tile the pause too
        # The pre-roll and the ring's frames are already in history: seed the segment with them.
        self._speech = [f for ft, f in self._history if ft >= self._audio_t0 - 1e-9]
        if self._speech and start < decided_at:
            self._audio_t0 = next(ft for ft, _ in self._history if ft >= self._audio_t0 - 1e-9)
        elif start >= decided_at:
            self._speech = []
        self._open_id = f"{self._id_prefix}{self._count}"
        self._count += 1
        return SpeechStart(self._open_id, start, decided_at)

    def _close(self, decided_at: float, forced: bool) -> SpeechEnd:
        end = decided_at if forced else self._last_voiced_end
        audio = np.concatenate(self._speech) if self._speech else np.zeros(0, np.int16)
        dropped = (end - self._start) * 1000 < self.cfg.min_utterance_ms
        self._prev_close = decided_at
        self._last_end = end if not dropped else self._last_end
        self._speech = None
        self.ring.clear()
        self.tail.clear()
        return SpeechEnd(self._open_id, self._start, end, audio, self._audio_t0, forced, dropped, decided_at)

    def open_segment(self) -> tuple[str, float] | None:
        """(id, start) of the utterance in progress, or None."""
        return None if self._speech is None else (self._open_id, self._start)

    def trailing_silence_s(self) -> float:
        """Unvoiced time at the end of the utterance in progress (0 when none is open): from
        one frame on, it may be ending (all of the hangover ring unvoiced closes it)."""
        return 0.0 if self._speech is None else max(0.0, self._pending_t - self._last_voiced_end)

    def open_audio(self) -> tuple[float, np.ndarray]:
        """(audio_t0, samples so far) of the utterance in progress, for partial transcripts."""
        return self._audio_t0, (np.concatenate(self._speech) if self._speech else np.zeros(0, np.int16))

    def flush(self, t: float) -> list:
        """End of stream: close an open segment at the last voiced frame."""
        if self._speech is None:
            return []
        return [self._close(t, forced=False)]
