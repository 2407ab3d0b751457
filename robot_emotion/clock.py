"""Clocks. Every sample carries a capture time from ONE injected clock.

``WallClock`` is for live devices. ``VirtualClock`` is advanced by the replay reader
from recorded capture times, so a replay "as fast as possible" and one at recorded
pace see exactly the same times. Times are seconds since the session started.
"""

from __future__ import annotations

import threading
import time


class WallClock:
    """Session-relative time from a monotonic clock, plus the unix time at start."""

    def __init__(self):
        self._t0 = time.monotonic()
        self.unix_start = time.time()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> None:
        delay = t - self.now()
        if delay > 0:
            (stop.wait(delay) if stop else time.sleep(delay))


class VirtualClock:
    """A clock that only moves when the replay reader advances it."""

    def __init__(self, unix_start: float = 0.0):
        self._t = 0.0
        self.unix_start = unix_start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance_to(self, t: float) -> None:
        with self._lock:
            if t > self._t:
                self._t = t

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> None:
        self.advance_to(t)
