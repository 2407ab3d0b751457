"""Device selection shared by every model: "auto" = CUDA when present, else CPU."""
from __future__ import annotations


def resolve_device(spec: str = "auto") -> str:
    import torch
    if spec in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    if not (spec == "cpu" or spec.startswith("cuda")):
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return spec
