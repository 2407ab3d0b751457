"""Device selection shared by every torch model: "auto" = CUDA when present, else CPU.

(The CTranslate2 recogniser asks CTranslate2 itself, which may see a GPU torch does not.)
"""
from __future__ import annotations


def resolve_device(spec="auto") -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (or a torch.device) -> a usable device string."""
    import torch
    spec = str(spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return str(dev)


def torch_device(spec="auto"):
    import torch
    return torch.device(resolve_device(spec))
