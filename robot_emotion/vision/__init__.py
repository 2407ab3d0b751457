"""Vision: MTCNN faces, tracking, FER2013 expression, mouth activity, active speaker.

Heavy modules (torch, facenet-pytorch) load on first attribute access.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FaceDetector": "faces",
    "FacePipeline": "faces",
    "align_face": "faces",
    "measure_mouth": "faces",
    "ExpressionNet": "expression",
    "ExpressionClassifier": "expression",
    "ExpressionModelError": "expression",
    "default_weights_path": "expression",
    "FaceTracker": "tracker",
    "Track": "tracker",
    "assign_active_speaker": "active_speaker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
