"""Where the node finds its launch profiles and the generated demo session.

Output folders are checked here before any model loads (check_output_folder); a file named
``-`` is stdout (write_output)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MACHINE_STDOUT = None  # where ``-`` writes while a command's readable output goes to stderr


def write_output(path: str | Path, text: str) -> None:
    """Write text to a file, or to stdout when the file is ``-`` (``--json``, ``--out``)."""
    import sys

    if str(path) == "-":
        out = MACHINE_STDOUT or sys.stdout
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    else:
        Path(path).write_text(text, encoding="utf-8")


def demo_session_path() -> Path:
    return Path(os.environ.get("ROBOT_EMOTION_DEMO", Path.home() / ".cache" / "robot-emotion" / "demo_session"))


def launch_path(name: str) -> str | None:
    """launch/NAME in the source tree, or None when not installed from it."""
    path = REPO / "launch" / name
    return str(path) if path.is_file() else None


def check_output_folder(path: str | Path, what: str = "record") -> None:
    """A folder we are about to write (``record``) must be creatable and writable: refused
    now (UsageError, one line), not after 10-15 s of model loading with a traceback."""
    import tempfile

    from robot_emotion.errors import UsageError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"refusing to {what} into {p}: it is a file, not a folder")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot {what} into {p}: {existing} is a file, not a folder")
    try:  # the kernel's word, not os.access (root, read-only mounts, ACLs)
        tempfile.TemporaryDirectory(dir=existing, prefix=".robot-emotion-probe-").cleanup()
    except OSError as e:
        raise UsageError(f"cannot {what} into {p}: {existing} is not writable ({e.strerror or e})") from None
