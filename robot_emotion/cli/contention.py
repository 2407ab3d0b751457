"""Load for `robot-emotion bench --contention N`: the robot's other processes, simulated.

A robot's computer is never idle: navigation, arm control and the behaviour stack share its
cores. ``Contention(n, hog_mb)`` starts ``n`` processes that each keep one core busy (a pure
Python loop, like a planner that never sleeps) and, with ``hog_mb``, one that streams through
an array of that size (memory bandwidth and last-level cache, like a point-cloud filter). They
run at the node's own priority and are killed on exit; ``cpu_s()`` is the CPU time they took,
so the bench can say what share of the machine the node got.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from robot_emotion.threads import load_process_env

BUSY = "while True:\n    pass\n"
HOG = (
    "import numpy as np, sys\n"
    "a = np.ones(int(sys.argv[1]) * 2**20 // 8)\n"
    "b = np.empty_like(a)\n"
    "while True:\n    np.copyto(b, a)\n    np.copyto(a, b)\n"
)


class Contention:
    def __init__(self, busy: int = 0, hog_mb: int = 0):
        if busy < 0 or hog_mb < 0:
            raise ValueError("contention: the number of busy processes and the hog's size must be >= 0")
        self.busy, self.hog_mb = int(busy), int(hog_mb)
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Contention":
        cmds = [[sys.executable, "-c", BUSY] for _ in range(self.busy)]
        if self.hog_mb:
            cmds.append([sys.executable, "-c", HOG, str(self.hog_mb)])
        env = load_process_env()  # single-threaded loops: no numpy pool on top
        self._procs = [
            subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            for c in cmds
        ]
        return self

    @property
    def processes(self) -> list[subprocess.Popen]:
        return list(self._procs)

    def cpu_s(self) -> float:
        """CPU seconds the load processes have used so far (utime + stime from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self._procs:
            try:
                fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return total

    def __exit__(self, *exc) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self._procs:
            p.wait(timeout=10)
        self._procs = []

    def describe(self) -> str:
        parts = [f"{self.busy} busy process(es)"] if self.busy else []
        if self.hog_mb:
            parts.append(f"a {self.hog_mb} MB memory-bandwidth hog")
        return " + ".join(parts) or "none"
