"""Where the node finds its launch profiles and the generated demo session."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo_session_path() -> Path:
    return Path(os.environ.get("ROBOT_EMOTION_DEMO",
                               Path.home() / ".cache" / "robot-emotion" / "demo_session"))


def launch_path(name: str) -> str | None:
    """launch/NAME in the source tree, or None when not installed from it."""
    path = REPO / "launch" / name
    return str(path) if path.is_file() else None
