"""Process memory as the kernel counts it, for `robot-emotion bench`.

Three views of one process, read at the same instants from procfs (Linux):

* RSS (``VmRSS`` in /proc/self/status): every resident page, including the file-backed,
  shared pages of mapped libraries (``import torch`` alone maps ~430 MB of CUDA libraries);
* anonymous RSS (``RssAnon``): pages only this process has -- heap, allocator arenas, model
  weights, and library pages the loader wrote to (relocations). What another node on the
  same machine cannot share, and what swap would have to hold;
* PSS (``Pss`` in /proc/self/smaps_rollup): RSS with every shared page divided by the number
  of processes that map it -- what the process adds to the machine's total.

``MemorySampler`` reads all three every ``period_s`` from one thread and keeps the peak of each;
the kernel's own high-water mark (``VmHWM``, = getrusage ru_maxrss) is exact for RSS, so the gap
between it and the sampled RSS peak says how much a short spike the sampling missed.
"""

from __future__ import annotations

import collections
import os
import threading

# oneDNN (in torch and, a second copy, in CTranslate2) builds a primitive per new input shape and
# keeps 1024 of them. Each copy reads ONEDNN_PRIMITIVE_CACHE_CAPACITY once, at its first primitive,
# so the two get different caps (``bound_primitive_caches``):
# * CTranslate2: 8. Every turn has its own length, and the short-window Whisper encoder's
#   convolutions cost ~1.3 MB a length (60 ASR calls on random lengths: +76 MB at 1024). A
#   turn's length is new anyway, so a larger cache would not make it faster.
# * torch: 128. The face nets alone use ~60 shapes a second (MTCNN's pyramid, RNet and ONet,
#   the expression CNN), all the time: with 8 each frame rebuilt them, and the face thread
#   needed 4.0 s of CPU per 29 s demo replay instead of 2.8 (README "Benchmark"). Shapes of a
#   new length (speaker-encoder LSTM, text model) fill the rest: bounded at ~10 MB.
CT2_PRIMITIVE_CACHE_CAPACITY = "8"
TORCH_PRIMITIVE_CACHE_CAPACITY = "128"

STATUS_KEYS = {"VmRSS": "rss_mb", "VmHWM": "hwm_mb", "RssAnon": "anon_mb", "RssFile": "file_mb", "RssShmem": "shmem_mb"}
ROLLUP_KEYS = {"Pss": "pss_mb", "Pss_Anon": "pss_anon_mb", "Pss_File": "pss_file_mb"}


def _read_kb(path: str, keys: dict[str, str]) -> dict[str, float]:
    out = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in keys:
                    out[keys[name]] = int(rest.split()[0]) / 1024.0
    except OSError:  # not Linux, or a kernel without smaps_rollup (< 4.14): no figure
        pass
    return out


def snapshot() -> dict[str, float]:
    """Current memory of this process in MB (keys of STATUS_KEYS and ROLLUP_KEYS that exist)."""
    return {**_read_kb("/proc/self/status", STATUS_KEYS), **_read_kb("/proc/self/smaps_rollup", ROLLUP_KEYS)}


class MemorySampler:
    """Peaks of RSS, anonymous RSS and PSS, sampled together every ``period_s`` in a daemon thread.

    Reading smaps_rollup walks the page tables (~7 ms for a 700 MB process): 0.5 s keeps the
    sampler near 1-2 % of one core, so it does not move the latencies it runs beside."""

    def __init__(self, period_s: float = 0.5):
        self.period_s = period_s
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> dict[str, float]:
        now = snapshot()
        for k, v in now.items():
            self.peak[k] = max(v, self.peak.get(k, 0.0))
        self.samples += 1
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()


def anonymous_by_mapping(top: int = 8) -> list[tuple[str, float]]:
    """Where this process's anonymous pages are (MB per mapping name from /proc/self/smaps):
    "[heap]" is the main malloc arena, "[anon]" unnamed mappings (thread arenas, large mallocs,
    torch tensors, thread stacks), a library path the pages its loader wrote to."""
    agg: collections.Counter = collections.Counter()
    name = "[anon]"
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split(None, 5)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    name = head[5].strip() if len(head) > 5 else "[anon]"
                elif head and head[0] == "Anonymous:":
                    agg[name] += int(head[1]) / 1024.0
    except OSError:
        return []
    return [(n, round(mb, 1)) for n, mb in agg.most_common(top) if mb >= 0.5]


def release_free_memory() -> bool:
    """Give the memory malloc holds free back to the system (glibc ``malloc_trim(0)``; elsewhere
    a no-op, False). Loading the models frees ~120 MB of temporaries (checkpoint buffers,
    dtype conversions) in the middle of the heap, where glibc never trims on its own: after
    loading, the full node's anonymous RSS falls from ~790 to ~670 MB, for < 1 ms."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))  # the process's own symbols: libc's
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False


def bound_primitive_caches(first_ctranslate2_call=None) -> None:
    """Cap oneDNN's primitive caches, CTranslate2's at CT2_PRIMITIVE_CACHE_CAPACITY and torch's
    at TORCH_PRIMITIVE_CACHE_CAPACITY, unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``
    (then both take it). Call before any model runs: ``first_ctranslate2_call()`` (e.g. the
    recogniser's warm-up) runs while the variable says CTranslate2's cap, then it says torch's,
    which torch's copy reads at its own first primitive."""
    global _user_capacity
    if _user_capacity is None:
        _user_capacity = "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ
    if not _user_capacity:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = CT2_PRIMITIVE_CACHE_CAPACITY
    if first_ctranslate2_call is not None:
        first_ctranslate2_call()
    if not _user_capacity:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = TORCH_PRIMITIVE_CACHE_CAPACITY


_user_capacity: bool | None = None  # did the user set the variable before we first looked?
