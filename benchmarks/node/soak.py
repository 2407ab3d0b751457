#!/usr/bin/env python3
"""Soak test: does the node stay flat over a long run? (Not part of `make test`: minutes.)

    python benchmarks/node/soak.py replays --n 30 [--source SESSION] [--launch FILE]
                                                             N replays in one process
    python benchmarks/node/soak.py live --minutes 10                   a live run on the PulseAudio
                                                             virtual microphone, speech looping

Prints one row per sample (RSS and anonymous RSS in MB, threads, open fds) and, after a
warm-up (the first third), the RSS slope in MB/min from a least-squares fit, and the
change in threads and fds. Target: slope < 1 MB/min; threads and fds flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def sample() -> dict:
    """RSS and anonymous RSS (/proc/self/status), threads, fds."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "Threads"):
            fields[key] = int(value.split()[0])
    return {
        "t": time.monotonic(),
        "rss_mb": fields["VmRSS"] / 1024,
        "anon_mb": fields["RssAnon"] / 1024,
        "threads": fields["Threads"],
        "fds": len(os.listdir("/proc/self/fd")),
    }


def report(rows: list[dict]) -> dict:
    print(f"{'min':>6} {'rss MB':>8} {'anon MB':>8} {'threads':>8} {'fds':>5}")
    t0 = rows[0]["t"]
    for r in rows:
        print(f"{(r['t'] - t0) / 60:6.2f} {r['rss_mb']:8.1f} {r['anon_mb']:8.1f} {r['threads']:8d} {r['fds']:5d}")
    warm = rows[len(rows) // 3 :]
    minutes = np.array([(r["t"] - t0) / 60 for r in warm])
    out = {"samples": len(rows), "minutes": (rows[-1]["t"] - t0) / 60}
    for key in ("rss_mb", "anon_mb"):
        out[f"{key}_slope_per_min"] = float(np.polyfit(minutes, [r[key] for r in warm], 1)[0]) if len(warm) > 1 else 0.0
    out["threads_change"] = warm[-1]["threads"] - warm[0]["threads"]
    out["fds_change"] = warm[-1]["fds"] - warm[0]["fds"]
    print(
        f"after warm-up ({len(warm)} samples): RSS {out['rss_mb_slope_per_min']:+.2f} MB/min, "
        f"anon {out['anon_mb_slope_per_min']:+.2f} MB/min, threads {out['threads_change']:+d}, "
        f"fds {out['fds_change']:+d}"
    )
    return out


def soak_replays(n: int, source: str, launch: str, sets: list[str]) -> tuple[list[dict], dict]:
    from robot_emotion.config import load
    from robot_emotion.node.footprint import release_free_memory
    from robot_emotion.node.runner import replay

    cfg = load(launch, overrides=['publish.endpoint="tcp://127.0.0.1:*"', *sets])[0]
    rows = []
    for i in range(n):
        got = []
        node = replay(cfg, source, sinks=[got.append], progress=None)
        if node.errors:
            raise SystemExit(f"soak: replay {i} failed: {node.errors[0]}")
        release_free_memory()  # what a live node does once a minute: count what is really held
        rows.append(sample())
        print(f"# replay {i + 1}/{n}: {sum(b['topic'] == 'emotion' for b in got)} emotions", file=sys.stderr)
    return rows, report(rows)


def soak_live(minutes: float, audio: str) -> tuple[list[dict], dict]:
    """The node on the default microphone (a PulseAudio null sink's monitor), speech looping into it."""
    from robot_emotion.config import load
    from robot_emotion.node.runner import live

    if "robot_soak" not in subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout:
        subprocess.run(
            ["pactl", "load-module", "module-null-sink", "sink_name=robot_soak"], check=True, capture_output=True
        )
    os.environ["PULSE_SOURCE"] = "robot_soak.monitor"  # our own virtual microphone (libpulse reads it)
    stop = threading.Event()

    def player():
        while not stop.is_set():
            subprocess.run(["paplay", "--device", "robot_soak", audio])

    threading.Thread(target=player, daemon=True).start()
    cfg = load(
        str(REPO / "launch" / "audio_only.toml"),
        overrides=['publish.endpoint="tcp://127.0.0.1:*"', 'control.endpoint="tcp://127.0.0.1:*"'],
    )[0]
    rows = []

    def sampler():
        while not stop.wait(10.0):
            rows.append(sample())

    threading.Thread(target=sampler, daemon=True).start()
    got = []
    node = live(cfg, duration=minutes * 60, sinks=[got.append])
    stop.set()
    print(f"# {sum(b['topic'] == 'emotion' for b in got)} emotions, errors: {node.errors}", file=sys.stderr)
    return rows, report(rows)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("replays")
    r.add_argument("--n", type=int, default=30)
    r.add_argument("--source", default=str(Path.home() / ".cache" / "robot-emotion" / "demo_session"))
    r.add_argument(
        "--launch",
        default=str(REPO / "launch" / "replay.toml"),
        help="launch profile (launch/audio_only.toml: the stages of `soak live`)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='config override, e.g. --set speakers.enabled=false (find which stage grows)',
    )
    lv = sub.add_parser("live")
    lv.add_argument("--minutes", type=float, default=10.0)
    for p in (r, lv):
        p.add_argument("--json", metavar="FILE", help="also write the samples and the summary here")
    lv.add_argument("--audio", default=str(Path.home() / ".cache" / "robot-emotion" / "demo_session" / "audio.wav"))
    args = ap.parse_args()
    if args.mode == "replays":
        rows, out = soak_replays(args.n, args.source, args.launch, args.set)
    else:
        rows, out = soak_live(args.minutes, args.audio)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "mode": args.mode,
                    "summary": out,
                    "samples": rows,
                    "oneDNN_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
