"""`robot-emotion bench`: the numbers the issues set targets for, as a table.

Each configuration runs in its own child process, so peak RSS belongs to that
configuration alone. Real-time factor = wall time / recording duration of a replay at
--speed max (median of --repeats). Latencies (speech end decided -> message published)
come from a replay at recorded pace, which is what a live robot sees.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SPINE = ["asr.enabled=false", "speakers.enabled=false", "faces.enabled=false", "emotion.enabled=false"]
CONFIGS = {
    "spine": SPINE,
    "perception": ["emotion.enabled=false"],
    "full": [],
}


def _child(config: str, source: str, repeats: int, launch: str | None, extra: list[str]) -> dict:
    from robot_emotion.config import load
    from robot_emotion.runner import replay
    from robot_emotion.sources.replay import open_recording
    overrides = CONFIGS[config] + extra + ['publish.endpoint="tcp://127.0.0.1:*"']
    cfg, _ = load(launch, overrides=overrides)
    duration = open_recording(source).duration
    rtfs, stages = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        node = replay(cfg, source, speed="max")
        rtfs.append((time.perf_counter() - t0) / duration)
        if node.errors:
            return {"error": node.errors[0]}
        for name in ("vad", "faces", "face_detect", "face_expression", "speakers", "speaker_probe", "asr",
                     "active_speaker", "text", "audio", "fusion"):
            stages.setdefault(name, []).extend(node.stats.all(name))
    paced = replay(cfg, source, speed=1.0)
    lat = {}
    for key, ms in latency_groups(paced.publisher.latencies).items():
        if ms:
            lat[key] = (float(np.median(ms)), float(np.percentile(ms, 95)), len(ms))
    return {"config": config, "duration_s": duration, "rtf": rtfs, "latency": lat,
            "stages": {k: (float(np.median(v)), float(np.percentile(v, 95)), len(v))
                       for k, v in stages.items() if v},
            "utterances": paced.utterances,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def latency_groups(latencies) -> dict[str, list[float]]:
    """speech.end; and per turn the FIRST utterance/emotion (provisional, after the first
    pause) and the FINAL one (after the turn closed), each from the end of the speech it covers."""
    out: dict[str, list[float]] = {"speech.end": []}
    seen: set[tuple[str, str]] = set()
    for topic, ms, uid, final in latencies:
        if topic == "speech.end":
            out["speech.end"].append(ms)
        elif topic in ("utterance", "emotion"):
            if (topic, uid) not in seen:
                seen.add((topic, uid))
                out.setdefault(f"{topic} first", []).append(ms)
            if final:
                out.setdefault(f"{topic} final", []).append(ms)
    return out


def run_bench(args) -> int:
    from robot_emotion.paths import demo_session_path
    source = args.source or str(demo_session_path())
    if not os.path.exists(source):
        from robot_emotion.errors import CommandError
        raise CommandError(f"bench source not found: {source} (run scripts/setup.sh)", 3)
    configs = getattr(args, "configs", None) or list(CONFIGS)
    rows = []
    from tqdm import tqdm
    for config in tqdm(configs, desc="bench", unit="config", file=sys.stderr, dynamic_ncols=True):
        cmd = [sys.executable, "-m", "robot_emotion.bench", config, source, str(args.repeats),
               args.launch or "", json.dumps(args.overrides)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not r.stdout.strip():
            rows.append({"config": config, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(format_table(rows, source))
    return 0


def format_table(rows: list[dict], source: str) -> str:
    out = [f"# robot-emotion bench — {source}", f"# {os.cpu_count()} CPU cores; medians unless noted", ""]
    out.append("| config | replay RTF (median, --speed max) | speech.end latency ms (median / p95) "
               "| first emotion of a turn ms | final emotion of a turn ms | final utterance ms | peak RSS MB |")
    out.append("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            out.append(f"| {r['config']} | error: {r['error']} | | | | | |")
            continue
        lat = r["latency"]

        def fmt(topic):
            return f"{lat[topic][0]:.1f} / {lat[topic][1]:.1f} (n={lat[topic][2]})" if topic in lat else "-"
        out.append(f"| {r['config']} | {np.median(r['rtf']):.4f} (runs: {', '.join(f'{x:.4f}' for x in r['rtf'])}) "
                   f"| {fmt('speech.end')} | {fmt('emotion first')} | {fmt('emotion final')} "
                   f"| {fmt('utterance final')} | {r['peak_rss_mb']:.0f} |")
    out += ["", "| config | stage | median ms | p95 ms | calls |", "|---|---|---|---|---|"]
    for r in rows:
        for name, (med, p95, n) in r.get("stages", {}).items():
            out.append(f"| {r['config']} | {name} | {med:.2f} | {p95:.2f} | {n} |")
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config, source, repeats, launch, extra = sys.argv[1:6]
    print(json.dumps(_child(config, source, int(repeats), launch or None, json.loads(extra))))
