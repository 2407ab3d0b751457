#!/usr/bin/env python3
"""A live node on a busy robot for minutes: does latency stay flat? (issue 24; not in `make test`.)

    python benchmarks/node/busy_robot.py --minutes 10 --busy 1 [--source SESSION] [--set KEY=VALUE ...]

The recording (default: the demo session) is looped to the given length and fed at recorded
pace to a LIVE node (runner.paced_live: as its devices would feed it, load shedding on), while
``--busy`` processes each keep a core busy (cli/contention.py). Prints, per minute, the
lag p95 and the highest level the 1 Hz status reported and the utterance queue's longest
length; then what was shed, the latencies and the p95 of the first and second half of the run, and
``--json FILE`` writes every figure. Flat: the second half's p95 is not above the first's by
more than the noise, and the queue does not grow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def looped(source: str, minutes: float):
    """The recording repeated (audio and frames) to at least ``minutes``."""
    from robot_emotion import SAMPLE_RATE
    from robot_emotion.sources.replay import Recording, open_recording

    rec = open_recording(source)
    n = max(1, int(np.ceil(minutes * 60 / rec.duration)))
    period = rec.audio.size / SAMPLE_RATE
    frames = None
    if rec.frames is not None:

        def frames():
            for k in range(n):
                for t, image in rec.frames():
                    yield t + k * period, image

    return Recording(f"{rec.name} x{n}", rec.session_id, np.tile(rec.audio, n), frames, dict(rec.meta)), n


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--busy", type=int, default=1, help="processes each keeping a core busy")
    ap.add_argument("--source", default=None, help="recording to loop (default: the demo session)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None, metavar="FILE")
    args = ap.parse_args()
    from robot_emotion.cli.bench import latency_groups
    from robot_emotion.cli.contention import Contention
    from robot_emotion.config import load
    from robot_emotion.node.runner import paced_live
    from robot_emotion.paths import demo_session_path

    cfg, _ = load(None, overrides=['publish.endpoint="tcp://127.0.0.1:*"', *args.overrides])
    rec, loops = looped(args.source or str(demo_session_path()), args.minutes)
    print(
        f"# {rec.name}: {rec.duration / 60:.1f} min at recorded pace, {args.busy} busy process(es), "
        f"{os.cpu_count()} cores, load average before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    status: list[dict] = []

    def sink(body):
        if body.get("topic") == "status":
            status.append(
                {
                    "t": body["t"],
                    "lag_ms": body["load"]["lag_ms"],
                    "level": body["load"]["level"],
                    "segments": body["queues"]["segments"],
                    "audio": body["queues"]["audio"],
                }
            )

    with Contention(args.busy):
        node = paced_live(cfg, rec, sinks=[sink])
    if node.errors:
        print(f"error: {node.errors[0]}")
        return 4
    groups = latency_groups(node.publisher.latencies)  # in publish order: halves are halves of the run
    out = {
        "minutes": rec.duration / 60,
        "loops": loops,
        "busy": args.busy,
        "cores": os.cpu_count(),
        "load": node.status()["load"],
        "skipped": dict(node.skipped),
        "utterances": node.utterances,
        "status": status,
        "halves_p95": {},
        "latency": {},
    }
    print(f"{'min':>4} {'lag p95 ms':>10} {'max level':>9} {'max queue':>9}")
    for m in range(int(np.ceil(rec.duration / 60))):
        st = [s for s in status if m * 60 <= s["t"] < (m + 1) * 60]
        if st:
            print(
                f"{m:4d} {np.percentile([s['lag_ms'] for s in st], 95):10.0f} "
                f"{max(s['level'] for s in st):9d} {max(s['segments'] for s in st):9d}"
            )
    for key in ("emotion first", "emotion final", "utterance final"):
        ms = groups.get(key) or []
        if len(ms) >= 4:
            h = len(ms) // 2
            out["latency"][key] = (float(np.median(ms)), float(np.percentile(ms, 95)), len(ms))
            out["halves_p95"][key] = (float(np.percentile(ms[:h], 95)), float(np.percentile(ms[h:], 95)))
            print(
                f"{key}: median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms (n={len(ms)}); "
                f"p95 first / second half {out['halves_p95'][key][0]:.0f} / {out['halves_p95'][key][1]:.0f} ms"
            )
    ld = out["load"]
    print(
        f"load: peak lag {ld['peak_lag_ms']:.0f} ms, level changes {ld['changes']}, shed {ld['shed']}, "
        f"seconds shed {ld['shed_s']}; skipped {out['skipped']}; final turns {node.utterances}; "
        f"utterance queue max {max((s['segments'] for s in status), default=0)}, "
        f"audio overflows {node.audio_q.overflows}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
