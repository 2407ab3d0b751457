#!/usr/bin/env python3
"""Does a change keep the published events? Replays sources with this checkout and with another
commit, and compares what each published, topic by topic, without wall-clock fields.

    python tools/same_events.py REF [SOURCE ...]        # default: the demo session

A refactor must print "same" for every topic (the order ACROSS topics may differ at --speed max:
the face and utterance threads publish side by side; within a topic it may not). REF is checked
out into a temporary git worktree; both run with this interpreter. Exit 1 when anything differs.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# fields that depend on the wall clock or the run (messages.WALL_FIELDS, the envelope, status)
VARYING = {"stamp", "latency_ms", "wall", "load_s", "wall_s", "session", "seq", "uptime", "stages", "queues"}


def replay(checkout: Path, source: str, out: Path) -> dict[str, list[str]]:
    args = ["--demo"] if source == "demo" else [source]
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    endpoint = f"ipc://{tempfile.gettempdir()}/same-events-{os.getpid()}"
    subprocess.run(
        [sys.executable, "-m", "robot_emotion", "replay", *args, "--quiet", "--endpoint", endpoint, "--out", str(out)],
        cwd=checkout,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    by_topic: dict[str, list[str]] = collections.defaultdict(list)
    for line in out.read_text(encoding="utf-8").splitlines():
        body = json.loads(line)
        if body["topic"] not in ("status", "ready"):
            by_topic[body["topic"]].append(
                json.dumps({k: v for k, v in body.items() if k not in VARYING}, sort_keys=True)
            )
    return by_topic


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    ref, sources = argv[0], argv[1:] or ["demo"]
    differ = False
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(other), ref], cwd=REPO, check=True)
        try:
            for source in sources:
                a = replay(other, source, Path(tmp) / "a.jsonl")
                b = replay(REPO, source, Path(tmp) / "b.jsonl")
                for topic in sorted(set(a) | set(b)):
                    same = a[topic] == b[topic]
                    differ |= not same
                    print(
                        f"{Path(source).name:<28} {topic:<18} {len(a[topic]):>5} {len(b[topic]):>5}  "
                        f"{'same' if same else 'DIFFERENT'}"
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, check=False)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
