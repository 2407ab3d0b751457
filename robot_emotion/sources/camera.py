"""Live camera via OpenCV: a reader thread writes a latest-frame slot with capture times.

Source may be a device index ("0"), a file path or a URL. Perception reads only the
newest frame; frames it never saw are counted as dropped by the slot.

A camera that stops delivering (30 failed reads, or a stream that closes) is ``lost``: the
node goes on audio-only while this thread reopens it with backoff (0.5 s doubling up to
``camera.retry_max_s``) and resumes faces when it is back. Every change is reported through
``on_state(name, state, t)`` (the node publishes a ``device`` message and the session keeps
it). A file source simply runs out (``ended``): it is not retried.
"""

from __future__ import annotations

import threading
import time

from robot_emotion.config import CameraConfig
from robot_emotion.sources.base import Frame, LatestFrameSlot
from robot_emotion.sources.microphone import SourceError

FAILED_READS = 30  # ~1-2 s of failed reads: the device is gone


class CameraSource:
    name = "camera"

    def __init__(
        self, cfg: CameraConfig, clock, slot: LatestFrameSlot, offset_s: float = 0.0, recorder=None, on_state=None
    ):
        self.cfg, self.clock, self.slot, self.recorder = cfg, clock, slot, recorder
        self.offset_s = offset_s
        self.on_state = on_state or (lambda name, state, t: None)
        self.state = "stopped"
        self.frames = 0
        self.losses = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()  # set while lost (the node keeps running)
        self._cap = None

    def _open(self):
        import cv2

        src = int(self.cfg.source) if self.cfg.source.isdigit() else self.cfg.source
        cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            return None
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        return cap

    def start(self) -> None:
        import cv2

        self._cap = self._open()
        if self._cap is None:
            raise SourceError(f"cannot open camera {self.cfg.source!r}")
        # A file stands in for a camera at its own frame rate (OpenCV would read it flat out).
        self._file_period = 0.0
        if not self.cfg.source.isdigit() and "://" not in self.cfg.source:
            self._file_period = 1.0 / (self._cap.get(cv2.CAP_PROP_FPS) or self.cfg.fps)
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._read_until_failure() == "ended":
                self.state = "ended"
                break
            if self._stop.is_set():
                break
            self._set_state("lost")
            self._cap.release()
            self._cap = self._reopen()
            if self._cap is None:
                break  # stopped while retrying
            self._set_state("running")
        if self._cap is not None:
            self._cap.release()

    def _read_until_failure(self) -> str:
        import cv2

        failures = 0
        wall0, n0 = time.monotonic(), self.frames
        while not self._stop.is_set():
            if self._file_period:
                self._stop.wait(max(0.0, wall0 + (self.frames - n0) * self._file_period - time.monotonic()))
            ok, bgr = self._cap.read()
            t = self.clock.now() - self.offset_s
            if not ok and self._file_period:
                return "ended"  # a file source simply runs out
            if not ok:
                failures += 1
                if failures > FAILED_READS:
                    return "lost"
                time.sleep(0.03)
                continue
            failures = 0
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frame = Frame(t, rgb, self.frames, time.monotonic())
            self.frames += 1
            self.slot.put(frame)
            if self.recorder is not None:
                self.recorder.write_frame(t, rgb)
        return "stopped"

    def _reopen(self):
        delay = 0.5
        while not self._stop.wait(delay):
            cap = self._open()
            if cap is not None:
                ok, _ = cap.read()  # opened is not enough: it must deliver
                if ok:
                    return cap
                cap.release()
            delay = min(delay * 2, self.cfg.retry_max_s)
        return None

    def _set_state(self, state: str) -> None:
        self.state = state
        if state == "lost":
            self.losses += 1
            self.lost.set()
        else:
            self.lost.clear()
        self.on_state(self.name, "lost" if state == "lost" else "restored", self.clock.now())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.state in ("running", "lost"):
            self.state = "stopped"
