"""Fusion models: four families behind one interface, and self-describing checkpoints.

One interface (FusionInput -> FusionOutput); see fusion.py for the families."""

from .base import MODALITIES, FusionInput, FusionModel, FusionOutput, masked_mean
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .fusion import DEFAULT_HPARAMS, FAMILIES, build_model

__all__ = [
    "MODALITIES",
    "FusionInput",
    "FusionOutput",
    "FusionModel",
    "masked_mean",
    "build_model",
    "FAMILIES",
    "DEFAULT_HPARAMS",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "CheckpointError",
    "bench_fusion",
    "make_random_input",
]


def __getattr__(name):  # lazy, so `python -m robot_emotion.models.bench` runs cleanly
    if name in ("bench_fusion", "make_random_input"):
        from . import bench

        return getattr(bench, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
