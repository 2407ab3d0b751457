"""Thread-pool policy: how many CPU threads torch, OpenMP/OpenBLAS and CTranslate2 may use, where.

Every number of threads the package sets comes from here, with its reason. The setting they all
start from: the node runs on a robot PC of about 2 cores, beside the robot's own processes
(motion, speech, its behaviour controller), and the node's stages are threads of their own (VAD
and audio, utterances, faces). A pool sized for a whole machine fights those threads for the
cores, and its workers spin after each call, so the live path keeps every pool at one thread.
Offline work (training, feature extraction, benchmarks) owns the machine and takes its cores.

This module imports only the standard library (torch inside the functions that need it), so
every room of the package, ``robot_emotion/__init__.py`` included, can use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import MutableMapping

# Pools that no stage sizes (numpy's OpenBLAS, torch's and CTranslate2's OpenMP) start one
# worker per core, and the workers spin after each call: a 1-thread CTranslate2 decode took 2x
# its wall time in CPU, the extra being OpenBLAS spinning after the feature extractor's matmul.
# With the node's stages in threads of their own, that spinning took ~30% of a 2-core robot PC
# (demo replay: 12.6 -> 9.0 s with 1). What wants more threads sets them itself (below). The
# pools read the variable when they load, so robot_emotion/__init__.py sets it before numpy,
# torch or ctranslate2 load; a value the user set wins.
DEFAULT_OMP_THREADS = 1

# torch's intra-op threads in the node (node.perception.Perception.from_config): the stages already run
# in parallel threads on a small CPU, and intra-op threads on top oversubscribe it (first
# emotion p95 on the conversation set 466-515 ms with 2 threads, 400 ms with 1; bench 352 ms).
NODE_TORCH_THREADS = 1

# The emotion scorer (node.emotion.EmotionScorer.from_config) caps torch at the 2 cores of a
# robot PC and never raises the setting: inside the node perception has already set 1, so it
# stays 1; a scorer built alone (evaluate, tests) uses at most 2 threads.
SCORER_MAX_TORCH_THREADS = 2

# Faces (vision.faces.FacePipeline.process): 1 intra-op thread is fast enough for 5 Hz and never
# fights the other stages; on 2 shared cores, 2 threads that compete with another busy process
# spin-wait (MTCNN 640x360: 29 ms with 1 thread, 1450 ms with 2 under such load).
FACES_TORCH_THREADS = 1

# CTranslate2's (faster-whisper's) default is 4 threads, too many on a 2-core robot PC: ASR uses
# one per core, never more than that default 4, unless a caller asks for a number.
ASR_MAX_CPU_THREADS = 4

# The load processes that cli.contention starts to imitate the robot's other work are plain
# single-threaded loops: their numpy must not start a pool of its own on top.
LOAD_PROCESS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def set_pool_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """OMP_NUM_THREADS=1 unless the user set it (see DEFAULT_OMP_THREADS); before numpy/torch load."""
    environ.setdefault("OMP_NUM_THREADS", str(DEFAULT_OMP_THREADS))


def use_node_threads() -> None:
    """torch's intra-op threads for the live node (NODE_TORCH_THREADS)."""
    import torch

    torch.set_num_threads(NODE_TORCH_THREADS)


def cap_scorer_threads() -> None:
    """At most SCORER_MAX_TORCH_THREADS intra-op threads, never more than already set."""
    import torch

    torch.set_num_threads(max(1, min(SCORER_MAX_TORCH_THREADS, torch.get_num_threads())))


def asr_cpu_threads(requested: int = 0) -> int:
    """CTranslate2 cpu_threads: ``requested`` when positive, else one per core up to ASR_MAX_CPU_THREADS."""
    if requested > 0:
        return requested
    return min(ASR_MAX_CPU_THREADS, os.cpu_count() or 1)


def offline_threads(workers: int = 1) -> int:
    """Intra-op threads for each of ``workers`` processes of offline work (training, feature
    extraction): the machine's cores shared out evenly, at least one each."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def set_torch_threads(n: int) -> None:
    """torch's intra-op threads, as a caller chose them (offline_threads, a --threads option);
    torch refuses fewer than one."""
    import torch

    torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with n intra-op CPU threads, then restore (None or 0: leave the setting). With
    torch's OpenMP backend the setting belongs to the calling thread, so other threads of the
    process are unaffected (see FACES_TORCH_THREADS for why faces use 1)."""
    if not n:
        yield
        return
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def load_process_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of a load process (LOAD_PROCESS_ENV over ``environ``)."""
    return {**environ, **LOAD_PROCESS_ENV}
