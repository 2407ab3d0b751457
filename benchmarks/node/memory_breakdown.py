"""What the node's anonymous memory is made of: stage by stage, then one replay.

    python benchmarks/node/memory_breakdown.py [SOURCE] [--launch FILE] [--set k=v ...] [--trim]

Prints, after each step, RSS / anonymous RSS / PSS (robot_emotion/node/footprint.py) and the delta
in anonymous RSS; for each model, the bytes of its weights (torch parameters and buffers; the
CTranslate2 Whisper: its model.bin). After the replay, --trim calls glibc's malloc_trim(0):
what it gives back is memory the allocator held free (arenas), not memory in use.
Run it with MALLOC_ARENA_MAX=2 in the environment to see what per-thread arenas cost.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

from robot_emotion.node.footprint import MemorySampler, anonymous_by_mapping, snapshot

_last = [0.0]


def show(step: str, weights_mb: float | None = None) -> None:
    m = snapshot()
    extra = f"  weights {weights_mb:6.1f} MB" if weights_mb is not None else ""
    print(
        f"{step:42s} RSS {m['rss_mb']:6.0f}  anon {m['anon_mb']:6.0f} (+{m['anon_mb'] - _last[0]:5.0f})"
        f"  PSS {m.get('pss_mb', 0):6.0f}{extra}",
        flush=True,
    )
    _last[0] = m["anon_mb"]


def torch_weights_mb(obj, depth: int = 4) -> float:
    """Bytes of every distinct tensor storage reachable from obj's modules (attributes, depth 4)."""
    import torch

    seen: set[int] = set()
    storages: dict[int, int] = {}

    def walk(o, d):
        if id(o) in seen or d < 0:
            return
        seen.add(id(o))
        if isinstance(o, torch.nn.Module):
            for t in list(o.parameters()) + list(o.buffers()):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return
        if isinstance(o, torch.Tensor):
            storages[o.untyped_storage().data_ptr()] = o.untyped_storage().nbytes()
            return
        items = (
            o.values()
            if isinstance(o, dict)
            else o
            if isinstance(o, (list, tuple))
            else getattr(o, "__dict__", {}).values()
        )
        for v in items:
            walk(v, d - 1)

    walk(obj, depth)
    return sum(storages.values()) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=None, help="recording (default: the demo session)")
    ap.add_argument("--launch", default=None, help="launch profile (default: launch/replay.toml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after loading and after the replay")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from robot_emotion.paths import demo_session_path, launch_path

    source = a.source or str(demo_session_path())
    print(f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '(unset)')}  source {source}")
    show("python + robot_emotion")
    import numpy  # noqa: F401

    show("numpy")
    import torch

    show("import torch")
    torch.set_num_threads(1)
    from robot_emotion.config import load

    cfg, _ = load(
        a.launch or launch_path("replay.toml"), overrides=['publish.endpoint="tcp://127.0.0.1:*"'] + a.overrides
    )
    from robot_emotion.compute import resolve_device

    device = resolve_device(cfg.node.device)
    asr = speakers = faces = emotion = None
    if cfg.asr.enabled and cfg.asr.backend != "none":
        from robot_emotion.audio.asr import make_asr

        asr = make_asr(cfg.asr, device=device)
        path = getattr(asr, "path", "")
        bin_mb = os.path.getsize(os.path.join(path, "model.bin")) / 2**20 if path else None
        show(f"ASR {asr.id}", bin_mb)
    if cfg.speakers.enabled:
        from robot_emotion.audio.speakers import SpeakerTracker

        speakers = SpeakerTracker(cfg.speakers)
        show("speaker encoder (GE2E)", torch_weights_mb(speakers))
    from robot_emotion.sources.replay import open_recording

    has_video = open_recording(source).frames is not None and cfg.camera.enabled and cfg.faces.enabled
    if has_video:
        from robot_emotion.vision.faces import FacePipeline

        faces = FacePipeline(cfg.faces, device=device)
        show("faces (MTCNN + FER2013 CNN)", torch_weights_mb(faces))
    if cfg.emotion.enabled:
        from robot_emotion.node.emotion import EmotionScorer

        emotion = EmotionScorer.from_config(cfg, device=device, asr=asr)
        show("emotion (MiniLM text branch + fusion)", torch_weights_mb(emotion, depth=6))
    if a.trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        show("malloc_trim(0) after loading")
    from robot_emotion.node.perception import Perception
    from robot_emotion.node.runner import replay

    perception = Perception(cfg, asr=asr, speakers=speakers, faces=faces, emotion=emotion)
    t0 = time.monotonic()
    with MemorySampler(0.25) as mem:
        node = replay(cfg, source, speed="max", perception=perception, progress=None)
    show(f"after one replay ({time.monotonic() - t0:.0f} s)")
    print(
        f"{'  peak during the replay (sampled 4/s)':42s} RSS {mem.peak['rss_mb']:6.0f}  anon {mem.peak['anon_mb']:6.0f}"
        f"         PSS {mem.peak.get('pss_mb', 0):6.0f}"
    )
    if a.trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        show("malloc_trim(0)")
    print(
        "anonymous pages by mapping:",
        ", ".join(f"{os.path.basename(n)} {mb:.0f} MB" for n, mb in anonymous_by_mapping()),
    )
    print(f"threads: {len(os.listdir('/proc/self/task'))}")
    return 1 if node.errors else 0


if __name__ == "__main__":
    sys.exit(main())
