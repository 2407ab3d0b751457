"""Fusion inference micro-benchmark: median ms per utterance (batch 1).

python -m robot_emotion.models.bench [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robot_emotion.threads import set_torch_threads

from .base import MODALITIES, FusionInput
from .fusion import FAMILIES, build_model

TYPICAL_DIMS = {"text": 384, "audio": 384, "face": 128}
TYPICAL_LENS = {"text": 64, "audio": 50, "face": 50}


def make_random_input(
    dims: dict[str, int], seq_lens: dict[str, int] | None = None, batch: int = 1, device="cpu", seed: int = 0
) -> FusionInput:
    """Random features (all modalities available, full-length sequences)."""
    g = torch.Generator().manual_seed(seed)
    lens = {**TYPICAL_LENS, **(seq_lens or {})}
    seqs = {m: torch.randn(batch, lens.get(m, 50), d, generator=g) for m, d in dims.items()}
    mask = {m: torch.ones(batch, s.shape[1], dtype=torch.bool) for m, s in seqs.items()}
    pooled = {m: s.mean(1) for m, s in seqs.items()}
    avail = torch.tensor([[m in dims for m in MODALITIES]] * batch)
    return FusionInput(seqs, mask, pooled, avail).to(device)


def bench_fusion(
    family: str,
    dims: dict[str, int] | None = None,
    n: int = 200,
    *,
    seq_lens: dict[str, int] | None = None,
    device="cpu",
    warmup: int = 10,
    **hparams,
) -> float:
    """Median wall-clock ms of one eval-mode forward pass at batch 1 (model built with default
    hparams unless overridden). Uses the current torch thread setting."""
    dims = dict(dims or TYPICAL_DIMS)
    model = build_model(family, dims, **hparams).to(device).eval()
    inp = make_random_input(dims, seq_lens, device=device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + n):
            t0 = time.perf_counter()
            model(inp)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args(argv)
    set_torch_threads(a.threads)
    print(f"dims {TYPICAL_DIMS} lens {TYPICAL_LENS} device {a.device} threads {a.threads}")
    for fam in FAMILIES:
        print(f"{fam:24s} {bench_fusion(fam, n=a.n, device=a.device):7.2f} ms/utterance")


if __name__ == "__main__":
    main()
