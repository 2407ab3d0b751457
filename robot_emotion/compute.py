"""The one device rule for every torch model: "auto" = CUDA when present, else CPU.

`resolve_device` gives the device as a string (what configs, checkpoints and logs carry),
`torch_device` the same choice as a torch.device; every model goes through one of them.
(The CTranslate2 recogniser asks CTranslate2 itself, which may see a GPU torch does not.)
"""

from __future__ import annotations

from robot_emotion.errors import UsageError


class DeviceError(UsageError, ValueError):
    """An unknown device name, or CUDA asked for where there is none (exit 2)."""


def resolve_device(spec="auto") -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (or a torch.device) -> a usable device string."""
    import torch

    spec = str(spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available")
    return str(dev)


def torch_device(spec="auto"):
    """resolve_device(spec) as a torch.device."""
    import torch

    return torch.device(resolve_device(spec))
