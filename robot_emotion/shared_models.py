"""Model weights loaded once per process and shared by every node in it.

The stages' models (speaker encoder, MTCNN, the expression CNN, the text model, the fusion
checkpoint; Whisper has its own cache in audio/asr.py) are read-only after loading: all
per-session state lives in the stages that use them (speaker clusters, face tracks,
dialogue history). A program that runs many sessions in one process (benchmarks/node/soak.py,
benchmarks/conversations/score.py, the embedding API) then loads each model once instead of
once per session: measured with `benchmarks/node/soak.py replays`, reloading per replay grew the
process by ~150 MB of anonymous memory per replay, never returned to the system.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


def shared(key: tuple, load: Callable[[], T]) -> T:
    """The object cached under ``key``, loading it on first use (thread-safe)."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def file_key(path) -> tuple:
    """A file's identity for a cache key: a changed file is loaded again."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)
