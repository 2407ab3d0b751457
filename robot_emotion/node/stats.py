"""Rolling per-stage timings for the status topic and the benchmark."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager

import numpy as np


KEEP_ALL = 20000


class StageStats:
    def __init__(self, window: int = 500):
        self._samples: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        # every sample of a benchmark run; bounded, so a node running for days stays flat
        self._all: dict[str, deque] = defaultdict(lambda: deque(maxlen=KEEP_ALL))
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._samples[stage].append(ms)
            self._all[stage].append(ms)

    @contextmanager
    def time(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - t0) * 1000.0)

    def summary(self) -> dict:
        with self._lock:
            return {
                k: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95)), "n": len(v)}
                for k, v in self._samples.items()
                if v
            }

    def all(self, stage: str) -> list[float]:
        with self._lock:
            return list(self._all.get(stage, []))
