"""Timed samples and the two backpressure primitives (latest-frame slot, bounded audio queue)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class AudioBlock:
    t: float  # capture time of the first sample, session seconds
    samples: np.ndarray  # int16 mono 16 kHz
    wall: float = 0.0  # time.monotonic() when the block entered the node (latency accounting)


@dataclass
class Frame:
    t: float  # capture time, session seconds (AV offset already applied)
    image: np.ndarray  # RGB uint8 (H, W, 3)
    index: int = 0
    wall: float = 0.0


class LatestFrameSlot:
    """Holds only the newest frame: video never queues up behind slow perception.

    Frames overwritten before anyone read them are counted in ``dropped``.
    """

    def __init__(self):
        self._frame: Frame | None = None
        self._fresh = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.written = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._frame, self._fresh = frame, True
            self.written += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame, waiting up to timeout; None if none arrived."""
        with self._cond:
            if not self._fresh:
                self._cond.wait(timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame


class AudioQueue:
    """Bounded audio queue. Live capture never blocks: a full queue counts an overflow."""

    def __init__(self, maxsize: int):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.overflows = 0

    def put_nowait(self, block: AudioBlock) -> None:
        block.wall = block.wall or time.monotonic()
        try:
            self._q.put_nowait(block)
        except queue.Full:
            self.overflows += 1

    def put(self, block: AudioBlock, stop: threading.Event) -> bool:
        """Blocking put for replay (no drops); gives up when stop is set."""
        while not stop.is_set():
            try:
                block.wall = time.monotonic()
                self._q.put(block, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> AudioBlock | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._q.qsize()
