"""Live camera via OpenCV: a reader thread writes a latest-frame slot with capture times.

Source may be a device index ("0"), a file path or a URL. Perception reads only the
newest frame; frames it never saw are counted as dropped by the slot.
"""
from __future__ import annotations

import threading
import time

from robot_emotion.config import CameraConfig
from robot_emotion.sources.base import Frame, LatestFrameSlot
from robot_emotion.sources.microphone import SourceError


class CameraSource:
    name = "camera"

    def __init__(self, cfg: CameraConfig, clock, slot: LatestFrameSlot, offset_s: float = 0.0,
                 recorder=None):
        self.cfg, self.clock, self.slot, self.recorder = cfg, clock, slot, recorder
        self.offset_s = offset_s
        self.state = "stopped"
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def start(self) -> None:
        import cv2
        src = int(self.cfg.source) if self.cfg.source.isdigit() else self.cfg.source
        self._cap = cv2.VideoCapture(src)
        if not self._cap.isOpened():
            raise SourceError(f"cannot open camera {self.cfg.source!r}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        self._cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        # A file stands in for a camera at its own frame rate (OpenCV would read it flat out).
        self._file_period = 0.0
        if not self.cfg.source.isdigit() and "://" not in self.cfg.source:
            self._file_period = 1.0 / (self._cap.get(cv2.CAP_PROP_FPS) or self.cfg.fps)
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import cv2
        failures = 0
        wall0 = time.monotonic()
        while not self._stop.is_set():
            if self._file_period:
                self._stop.wait(max(0.0, wall0 + self.frames * self._file_period - time.monotonic()))
            ok, bgr = self._cap.read()
            t = self.clock.now() - self.offset_s
            if not ok and self._file_period:
                self.state = "ended"  # a file source simply runs out
                break
            if not ok:
                failures += 1
                if failures > 30:  # ~1-2 s of failed reads: the device is gone
                    self.state = "lost"
                    self.lost.set()
                    break
                time.sleep(0.03)
                continue
            failures = 0
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frame = Frame(t, rgb, self.frames, time.monotonic())
            self.frames += 1
            self.slot.put(frame)
            if self.recorder is not None:
                self.recorder.write_frame(t, rgb)
        self._cap.release()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.state == "running":
            self.state = "stopped"
