"""Replay of recordings: session folders, video files with an audio track, audio files.

A reader thread walks the recording in capture-time order, advancing the injected
VirtualClock. ``speed="max"`` runs as fast as the node consumes; a number paces the
reader against the wall clock (1 = recorded pace). The node's results depend only on
capture times, so both speeds publish the same events.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.errors import UsageError
from robot_emotion.media import (
    AUDIO_EXTS,
    VIDEO_EXTS,
    MediaError,
    decode_audio,
    iter_video,
    probe_video,
    read_audio_file,
)
from robot_emotion.sources.base import AudioBlock, AudioQueue, Frame
from robot_emotion.sources.session import open_session, safe_id


@dataclass
class Recording:
    """Whatever we replay, normalised: audio + an optional lazy frame iterator."""

    name: str
    session_id: str
    audio: np.ndarray
    frames: Callable[[], object] | None  # () -> iterable of (t, rgb) (media.VideoFrames)
    meta: dict
    notes: tuple[str, ...] = ()  # one line each, logged before the replay starts

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE


def open_recording(source: str | Path, resample: bool = False, bag=None) -> Recording:
    """Open a session folder, a rosbag2 folder (``bag``: config.BagConfig), a video file with
    audio, or a wav/flac file (MediaError if not)."""
    path = Path(source)
    if not path.exists():
        raise MediaError(f"replay source not found: {path}")
    from robot_emotion.sources.bag import is_bag

    if is_bag(path):
        from robot_emotion.config import BagConfig
        from robot_emotion.sources.bag import open_bag

        audio, frames, meta = open_bag(path, bag or BagConfig())
        return Recording(path.name, safe_id(path.name), audio, frames, meta)
    if path.is_dir():
        s = open_session(path)
        frames = None
        if s.video_path is not None:
            frames = lambda: iter_video(s.video_path, s.frame_times, s.fps)  # noqa: E731
        return Recording(path.name, s.session_id, s.audio, frames, s.meta, tuple(s.notes))
    ext = path.suffix.lower()
    if ext in AUDIO_EXTS:
        return Recording(
            path.name, safe_id(path.stem), read_audio_file(path, resample=resample), None, {"source": str(path)}
        )
    if ext in VIDEO_EXTS:
        has_video, has_audio = probe_video(path)
        if not has_audio:
            raise MediaError(f"{path} has no audio track; the node needs speech to segment")
        audio = decode_audio(path)
        if audio.size == 0:
            raise MediaError(f"{path}: the audio track decoded to nothing (corrupt or truncated)")
        frames = (lambda: iter_video(path)) if has_video else None
        return Recording(path.name, safe_id(path.stem), audio, frames, {"source": str(path)})
    raise MediaError(
        f"unsupported replay source {path.name}: expected a session folder, "
        f"{'/'.join(sorted(VIDEO_EXTS))} or {'/'.join(sorted(AUDIO_EXTS))}"
    )


def check_speed(speed: str | float) -> str | float:
    """'max' or a finite factor > 0 (NaN would pace nothing, inf/negative never end), else UsageError."""
    if speed == "max":
        return speed
    try:
        value = float(speed)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"--speed must be 'max' or a positive number, got {speed!r}")
    return value


class ReplaySource:
    """Feeds a Recording into the node's audio queue and frame sink, in time order."""

    name = "replay"

    def __init__(
        self,
        rec: Recording,
        clock,
        audio_out: AudioQueue,
        frame_out: Callable[[Frame], bool] | None,
        speed: str | float = "max",
        block_ms: int = 30,
        offset_s: float = 0.0,
    ):
        self.rec, self.clock, self.audio_out, self.frame_out = rec, clock, audio_out, frame_out
        self.speed = check_speed(speed)
        self.block = SAMPLE_RATE * block_ms // 1000
        self.offset_s = offset_s
        self.state = "stopped"
        self.done = threading.Event()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.video = None  # the frames being read (its ``skipped``: corrupt frames)

    @property
    def corrupt_frames(self) -> int:
        """Video frames skipped because they did not decode (status ``skipped``, the summary)."""
        return getattr(self.video, "skipped", 0)

    def start(self) -> None:
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self._thread.start()

    def _pace(self, t: float, wall0: float) -> None:
        if self.speed != "max":
            delay = wall0 + t / float(self.speed) - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _run(self) -> None:
        self.video = self.rec.frames() if (self.rec.frames and self.frame_out) else ()
        frames = iter(self.video)
        pending = next(frames, None)
        audio, wall0, n = self.rec.audio, time.monotonic(), 0
        try:
            for start in range(0, audio.size, self.block):
                t0, t1 = start / SAMPLE_RATE, min(start + self.block, audio.size) / SAMPLE_RATE
                # Frames captured up to the end of this block go first, in time order.
                while pending is not None and pending[0] - self.offset_s <= t1:
                    self._pace(pending[0], wall0)
                    self.clock.advance_to(pending[0] - self.offset_s)
                    if not self.frame_out(Frame(pending[0] - self.offset_s, pending[1], n, time.monotonic())):
                        return
                    n += 1
                    pending = next(frames, None)
                self._pace(t1, wall0)
                if self._stop.is_set():
                    return
                self.clock.advance_to(t1)
                if not self.audio_out.put(AudioBlock(t0, audio[start : start + self.block]), self._stop):
                    return
        except MediaError as e:
            self.error = str(e)
        finally:
            self.state = "finished" if not self._stop.is_set() else "stopped"
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
