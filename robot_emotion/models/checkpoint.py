"""Self-describing fusion checkpoints.

A checkpoint is one torch file readable with ``torch.load(path, weights_only=True)``: a dict of
plain metadata (str / int / float / bool / None / lists / dicts) plus ``state_dict`` (tensors)
and optional ``extra_state`` (tensors). It records the model family, dims, hparams, labels,
the encoder id/version per modality, training setup and metrics, so the node can rebuild the
model and refuse a checkpoint whose encoders do not match the configured ones.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import EMOTIONS, __version__
from .base import MODALITIES
from .fusion import FAMILIES, build_model
from robot_emotion.errors import InputError

FORMAT = "robot_emotion.fusion-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(InputError, ValueError):
    """A checkpoint is missing, unreadable, malformed or does not match the configuration."""


def _plain(obj, where: str):
    """Convert metadata to plain types that weights_only loading accepts (and JSON can show)."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return str(obj)  # also plain-ifies str subclasses such as torch's TorchVersion
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Tensor):
        return _plain(obj.detach().cpu().tolist(), where)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalars / arrays
        return _plain(obj.tolist(), where)
    raise CheckpointError(f"checkpoint metadata {where} has unsupported type {type(obj).__name__}")


def encoder_tag(enc: dict | None) -> str:
    """'id@version' for messages."""
    if not enc:
        return "<none>"
    return f"{enc.get('id')}@{enc.get('version')}"


def save_checkpoint(
    path,
    model: nn.Module,
    *,
    family: str,
    dims: dict[str, int],
    hparams: dict,
    labels=EMOTIONS,
    encoders: dict[str, dict],
    training: dict,
    metrics: dict,
    extra_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write a self-describing checkpoint (atomically: temp file + rename). Returns the path.

    encoders: modality -> {"id": ..., "version": ...}, required for every modality in dims.
    hparams: the build_model hparams; the model's resolved hparams (defaults filled in) are
    stored when the model exposes them, so loading rebuilds exactly the same model.
    """
    path = Path(path)
    labels = [str(x) for x in labels]
    n_classes = int(getattr(model, "n_classes", len(labels)))
    if n_classes != len(labels):
        raise CheckpointError(f"model has {n_classes} classes but {len(labels)} labels were given")
    for m in dims:
        e = encoders.get(m)
        if not isinstance(e, dict) or "id" not in e or "version" not in e:
            raise CheckpointError(f"encoders must give {{'id', 'version'}} for the {m} modality")
    if getattr(model, "family", family) != family:
        raise CheckpointError(f"model is a {model.family!r} model but family={family!r} was given")
    resolved = getattr(model, "hparams", None) or hparams
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    extra = {str(k): v.detach().cpu().contiguous() for k, v in (extra_state or {}).items()}
    for k, v in extra.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"extra_state[{k!r}] must be a tensor")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": str(family),
        "dims": _plain(dict(dims), "dims"),
        "n_classes": n_classes,
        "hparams": _plain(dict(resolved), "hparams"),
        "labels": labels,
        "encoders": _plain(encoders, "encoders"),
        "training": _plain(training, "training"),
        "metrics": _plain(metrics, "metrics"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "state_dict": state,
        "extra_state": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate the raw checkpoint dict (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if str(map_location).startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"cannot load {path} onto {map_location}: CUDA is not available")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"{path} is not a readable robot_emotion checkpoint ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robot_emotion fusion checkpoint")
    if int(ck.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ck.get('format_version')}, "
            f"this code reads up to {FORMAT_VERSION}; upgrade robot_emotion"
        )
    missing = [k for k in ("family", "dims", "hparams", "labels", "encoders", "state_dict") if k not in ck]
    if missing:
        raise CheckpointError(f"{path} is missing checkpoint field(s): {', '.join(missing)}")
    return ck


def check_encoders(ck_encoders: dict, expected: dict | None, dims=None) -> None:
    """Raise CheckpointError (one line) if a modality's configured encoder differs from the
    one the checkpoint was trained with. Modalities the checkpoint does not use, and modalities
    configured as None (disabled), are not compared."""
    if not expected:
        return
    used = set(dims) if dims is not None else set(ck_encoders)
    problems = []
    for m, want in expected.items():
        if want is None or m not in used:
            continue
        have = ck_encoders.get(m)
        if have is None:
            problems.append(
                f"checkpoint does not record its {m} encoder but the node is configured with '{encoder_tag(want)}'"
            )
        elif (str(have.get("id")), str(have.get("version"))) != (str(want.get("id")), str(want.get("version"))):
            problems.append(
                f"checkpoint was trained with {m} encoder '{encoder_tag(have)}' "
                f"but the node is configured with '{encoder_tag(want)}'"
            )
    if problems:
        raise CheckpointError("; ".join(problems))


# Modalities whose node encoder also gives class probabilities: only they may be dim 0 in `late`
# (audio: the voice-emotion read-out, audio/voice_emotion.py).
PROBABILITY_MODALITIES = ("text", "audio", "face")


def _first(names: list[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def validate_checkpoint(ck: dict, path, node_dims: dict[str, int] | None = None) -> None:
    """Refuse at load, with one line, what would otherwise fail (or be silently wrong) at the
    first utterance: an unknown family, labels other than robot_emotion.EMOTIONS in that order,
    dims the node's encoders do not produce (node_dims: modality -> feature size), a modality
    without a recorded encoder, and weights that are not finite tensors."""

    def bad(msg: str):
        raise CheckpointError(f"{path}: {msg}")

    family = ck["family"]
    if family not in FAMILIES:
        bad(f"unknown model family {family!r}; this node builds {', '.join(FAMILIES)}")
    labels = ck["labels"]
    names = [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None
    if names != list(EMOTIONS):
        if names is not None and sorted(names) == sorted(EMOTIONS):
            bad(f"labels are in another order ({', '.join(names)}); the node publishes {', '.join(EMOTIONS)}")
        bad(
            f"labels {names if names is not None else labels!r} are not the node's "
            f"{len(EMOTIONS)} emotions ({', '.join(EMOTIONS)})"
        )
    n_classes = ck.get("n_classes", len(EMOTIONS))
    if isinstance(n_classes, bool) or n_classes != len(EMOTIONS):
        bad(f"n_classes is {n_classes!r}; the node publishes {len(EMOTIONS)} emotions")
    dims = ck["dims"]
    if not isinstance(dims, dict) or not dims:
        bad(f"dims must map some of {', '.join(MODALITIES)} to feature sizes, got {dims!r}")
    for m, d in dims.items():
        if m not in MODALITIES:
            bad(f"unknown modality {m!r} in dims; the node has {', '.join(MODALITIES)}")
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            bad(f"dims[{m!r}] must be a feature size >= 0, got {d!r}")
        if d == 0 and family != "late":
            bad(f"{m} has dim 0 (probabilities only), which only the 'late' family reads")
        if d == 0 and m not in PROBABILITY_MODALITIES:
            bad(f"{m} has dim 0 (probabilities only) but the node's {m} encoder gives no probabilities")
        if d and node_dims and m in node_dims and d != node_dims[m]:
            bad(f"its {m} features are {d}-dimensional but the node's {m} encoder gives {node_dims[m]}")
    encoders = ck["encoders"]
    for m in dims:
        e = encoders.get(m) if isinstance(encoders, dict) else None
        if not isinstance(e, dict) or "id" not in e or "version" not in e:
            bad(f"no encoder id/version recorded for its {m} modality")
    if not isinstance(ck["hparams"], dict):
        bad("hparams must be a table of the family's hyper-parameters")
    for name in ("training", "metrics"):
        if not isinstance(ck.get(name, {}), dict):
            bad(f"{name} must be a table")
    text_dir = ck.get("training", {}).get("text_model_dir")
    if text_dir is not None and not isinstance(text_dir, str):
        bad(f"training.text_model_dir must be a path, got {text_dir!r}")
    for name in ("state_dict", "extra_state"):
        tensors = ck.get(name) or {}
        if not isinstance(tensors, dict) or not all(isinstance(v, Tensor) for v in tensors.values()):
            bad(f"{name} must map names to tensors")
        broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if broken:
            bad(f"tensor(s) {_first(broken)} hold NaN or infinite values")


def _check_tensors(model: nn.Module, state: dict, path, family: str) -> None:
    """Every tensor the rebuilt model needs is present with its shape (one line naming them)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k} {tuple(state[k].shape)} (needs {tuple(v.shape)})"
        for k, v in want.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = (
        ([f"missing {_first(missing)}"] if missing else [])
        + ([f"unexpected {_first(unexpected)}"] if unexpected else [])
        + ([f"wrong shape {_first(shapes, 2)}"] if shapes else [])
    )
    if problems:
        raise CheckpointError(f"{path}: weights do not fit its {family!r} model: {'; '.join(problems)}")


def load_checkpoint(
    path, expected_encoders: dict | None = None, map_location="cpu", node_dims: dict[str, int] | None = None
):
    """-> (model in eval mode on map_location, meta dict without the weights).

    expected_encoders: modality -> {"id", "version"} as configured in the node; a mismatch with
    the checkpoint raises CheckpointError naming the modality. node_dims: modality -> the
    feature size the node's encoder gives (validate_checkpoint)."""
    ck = read_checkpoint(path, map_location=map_location)
    validate_checkpoint(ck, path, node_dims)
    check_encoders(ck["encoders"], expected_encoders, ck["dims"])
    hp = dict(ck["hparams"])
    n_classes = int(ck.get("n_classes", len(ck["labels"])))
    if n_classes != len(ck["labels"]):
        raise CheckpointError(f"{path}: {n_classes} classes but {len(ck['labels'])} labels")
    try:
        model = build_model(ck["family"], ck["dims"], n_classes, **hp)
        _check_tensors(model, ck["state_dict"], path, ck["family"])
        model.load_state_dict(ck["state_dict"], strict=True)
    except CheckpointError:
        raise
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        first = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path}: cannot rebuild the {ck['family']!r} model ({first})") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    meta = {k: v for k, v in ck.items() if k != "state_dict"}
    meta.setdefault("extra_state", {})
    return model, meta
