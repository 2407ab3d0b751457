"""`robot-emotion bench`: the numbers the issues set targets for, as a table.

Each configuration runs in its own child process, so its memory belongs to that
configuration alone. Real-time factor = wall time / recording duration of a replay at
--speed max (median of --repeats). Latencies (speech end decided -> message published)
come from a replay at recorded pace, which is what a live robot sees. Memory
(footprint.py): RSS, anonymous RSS and PSS sampled together every 0.5 s; "node" is the
first replay (models loaded once, the whole source processed), the kernel's VmHWM beside it.
A last child times stock faster-whisper on the same speech segments (bench_reference.py):
every latency is also given as a multiple of its median.

With --contention N (the robot's other software, cli/contention.py), or --live, each
configuration also runs the recording at recorded pace through a LIVE node (runner.paced_live: fed as its devices
would feed it, load shedding on, node/load.py), since a replay never sheds: the contention
table puts its latencies, peak lag and what it shed beside the paced replay's.
(`--set node.lag_budget_ms=0`: the same live run without shedding.)

The shared options (--launch, --calibration, --set, --model, --endpoint) are resolved and
checked here, before any child starts (one line, exit 2/3), and every child loads them.
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
# a private port per child unless the user named one (--endpoint / --set publish.endpoint)
FREE_PORT = 'publish.endpoint="tcp://127.0.0.1:*"'
STAGES = (
    "vad",
    "faces",
    "face_detect",
    "face_expression",
    "speakers",
    "speaker_probe",
    "asr",
    "active_speaker",
    "text",
    "audio",
    "fusion",
)


def _load(job: dict, extra: list[str]):
    from robot_emotion.config import load

    return load(job["launch"], job["calibration"], [FREE_PORT] + extra + job["overrides"])[0]


def _child(job: dict) -> dict:
    from robot_emotion.node.footprint import MemorySampler, anonymous_by_mapping, snapshot

    with MemorySampler() as mem:
        from robot_emotion.node.runner import replay
        from robot_emotion.sources.replay import open_recording

        config, source, repeats = job["config"], job["source"], job["repeats"]
        cfg = _load(job, CONFIGS[config])
        duration = open_recording(source).duration
        rtfs, stages, node_mem, model = [], {}, None, None
        for _ in range(repeats):
            t0 = time.perf_counter()
            node = replay(cfg, source, speed="max")
            rtfs.append((time.perf_counter() - t0) / duration)
            if node.errors:
                return {"error": node.errors[0]}
            if node_mem is None:  # one node: models loaded once, the source processed
                mem.sample()
                node_mem = {
                    **mem.peak,
                    "hwm_mb": snapshot().get("hwm_mb", 0.0),
                    "anon_by_mapping": anonymous_by_mapping(),
                }
                model = _emotion_model(node)
            for name in STAGES:
                stages.setdefault(name, []).extend(node.stats.all(name))
            del node  # its models are freed before the next replay loads its own
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        paced = replay(cfg, source, speed=1.0)
        cpu_share = (_cpu_s() - cpu0) / max(time.perf_counter() - wall0, 1e-9) / (os.cpu_count() or 1)
        live = _live_run(cfg, source) if job.get("live") else None
    lat, halves = latency_table(paced.publisher.latencies)
    return {
        "config": config,
        "duration_s": duration,
        "rtf": rtfs,
        "latency": lat,
        "latency_halves_p95": halves,
        "paced_cpu_share": cpu_share,
        "paced_load": paced.status()["load"],
        **({"live": live} if live else {}),
        "stages": {k: (float(np.median(v)), float(np.percentile(v, 95)), len(v)) for k, v in stages.items() if v},
        "utterances": paced.utterances,
        "model": model,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "memory": {
            "node": node_mem,
            "all": dict(mem.peak),
            "end": snapshot(),
            "period_s": mem.period_s,
            "samples": mem.samples,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        },
    }


def latency_table(latencies) -> tuple[dict, dict]:
    """{group: (median, p95, n)} and {group: (p95 of the first half, p95 of the second half)}."""
    lat, halves = {}, {}
    for key, ms in latency_groups(latencies).items():
        if ms:
            lat[key] = (float(np.median(ms)), float(np.percentile(ms, 95)), len(ms))
            if len(ms) >= 4:  # does latency grow over the run? p95 of its first and second half
                h = len(ms) // 2
                halves[key] = (float(np.percentile(ms[:h], 95)), float(np.percentile(ms[h:], 95)))
    return lat, halves


def _live_run(cfg, source: str) -> dict:
    """The recording at recorded pace through a live node (load shedding on): its latencies,
    the lag status reported each second, what it shed and skipped."""
    from robot_emotion.node.runner import paced_live

    lags: list[float] = []
    node = paced_live(cfg, source, sinks=[lambda b: b.get("topic") == "status" and lags.append(b["load"]["lag_ms"])])
    if node.errors:
        return {"error": str(node.errors[0])}
    lat, halves = latency_table(node.publisher.latencies)
    return {
        "latency": lat,
        "latency_halves_p95": halves,
        "load": node.status()["load"],
        "status_lag_ms": lags,
        "skipped": dict(node.skipped),
        "utterances": node.utterances,
        "dropped": {"frames": node.slot.dropped, "audio_overflows": node.audio_q.overflows},
    }


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _emotion_model(node) -> dict | None:
    """The emotion checkpoint the node really loaded (id, family, path), or None."""
    scorer = getattr(node.perception, "emotion", None)
    if scorer is None:
        return None
    return {"id": scorer.model_id, "family": scorer.meta.get("family"), "path": scorer.meta.get("path")}


def _reference(job: dict) -> dict:
    from robot_emotion.cli.bench_reference import stock_whisper

    return stock_whisper(_load(job, SPINE), job["source"], job["repeats"])


def latency_groups(latencies) -> dict[str, list[float]]:
    """speech.end; and per turn the FIRST utterance/emotion (provisional, after the first
    pause: the early estimate where there is one), the first on the turn's whole transcript
    (``first full``) and the FINAL one (after the turn closed), each from the end of the
    speech it covers."""
    out: dict[str, list[float]] = {"speech.end": []}
    seen: set[tuple[str, str]] = set()
    for topic, ms, uid, final, early in latencies:
        if topic == "speech.end":
            out["speech.end"].append(ms)
        elif topic in ("utterance", "emotion"):
            for key in [f"{topic} first"] + ([] if early else [f"{topic} first full"]):
                if (key, uid) not in seen:
                    seen.add((key, uid))
                    out.setdefault(key, []).append(ms)
            if final:
                out.setdefault(f"{topic} final", []).append(ms)
    return out


def check_options(args) -> list[str]:
    """Resolve --launch/--calibration/--set/--model/--endpoint as the node would and refuse what
    cannot work (one line, exit 2/3) before any child starts; -> the overrides every child adds."""
    from robot_emotion.config import load

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f'emotion.model="{args.model}"')
    if args.endpoint:
        overrides.append(f'publish.endpoint="{args.endpoint}"')
    cfg, _ = load(args.launch, args.calibration, overrides)
    if any(o.split("=", 1)[0].strip() == "publish.endpoint" for o in overrides):
        from robot_emotion.bus.publish import check_endpoint

        check_endpoint(cfg.publish)  # the user's endpoint: bad or busy is exit 2 now
    if cfg.emotion.enabled and (args.model or cfg.emotion.model):
        # a checkpoint that cannot work: exit 3 now. Read in a child: torch in this process
        # would share its libraries' pages with the children and lower their PSS.
        out = _run_child(
            {"config": "check", "launch": args.launch or None, "calibration": args.calibration, "overrides": overrides}
        )
        if "error" in out:
            from robot_emotion.errors import CommandError

            raise CommandError(out["error"], out.get("code", 4))
    return overrides


def _check(job: dict) -> dict:
    from robot_emotion.node.emotion import precheck_checkpoint
    from robot_emotion.errors import RobotEmotionError

    try:
        precheck_checkpoint(_load(job, []))
    except RobotEmotionError as e:
        return {"error": str(e).splitlines()[0], "code": e.code}
    return {}


def run_bench(args) -> int:
    from robot_emotion.errors import CommandError
    from robot_emotion.paths import demo_session_path

    if args.repeats < 1:
        raise CommandError(f"--repeats must be at least 1, got {args.repeats}", 2)
    if getattr(args, "contention", 0) < 0 or getattr(args, "hog_mb", 0) < 0:
        raise CommandError("--contention and --hog-mb must be >= 0", 2)
    configs = getattr(args, "configs", None) or list(CONFIGS)
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise CommandError(f"--configs: unknown {', '.join(unknown)} (choose from {', '.join(CONFIGS)})", 2)
    json_out = getattr(args, "json", None)
    if (
        json_out
        and json_out != "-"
        and (os.path.isdir(json_out) or not os.path.isdir(os.path.dirname(os.path.abspath(json_out))))
    ):
        raise CommandError(f"--json {json_out}: give the path of a file in an existing folder", 2)
    base = {
        "repeats": args.repeats,
        "launch": args.launch or None,
        "live": bool(getattr(args, "contention", 0) or getattr(args, "live", False)),
        "calibration": args.calibration,
        "overrides": check_options(args),
    }
    source = base["source"] = args.source or str(demo_session_path())
    if not os.path.exists(source):
        raise CommandError(f"bench source not found: {source} (run scripts/setup.sh)", 3)
    rows = []
    from tqdm import tqdm

    from robot_emotion.cli.contention import Contention

    load = Contention(getattr(args, "contention", 0) or 0, getattr(args, "hog_mb", 0) or 0)
    with load:
        for config in tqdm(configs + ["reference"], desc="bench", unit="config", file=sys.stderr, dynamic_ncols=True):
            out = _run_child({**base, "config": config})
            if config == "reference":
                reference = out
            else:
                rows.append({"config": config, **out} if "error" in out else out)
    ref_ms = reference.get("median_ms")
    from robot_emotion.cli.bench_reference import ratios
    from robot_emotion.cli.bench_table import format_table

    for r in rows:
        if "latency" in r:
            r["latency_ratio"] = ratios(r["latency"], ref_ms)
    print(format_table(rows, source, reference, load.describe()))
    if json_out:
        from robot_emotion.paths import write_output

        write_output(
            json_out,
            json.dumps(
                {
                    "source": source,
                    "cpu_count": os.cpu_count(),
                    "rows": rows,
                    "reference": reference,
                    "contention": load.describe(),
                },
                indent=1,
            ),
        )
    return 0


def _run_child(job: dict) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "robot_emotion.cli.bench", json.dumps(job)], capture_output=True, text=True
    )
    if r.returncode != 0 or not r.stdout.strip():
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    job = json.loads(sys.argv[1])
    run = {"reference": _reference, "check": _check}.get(job["config"], _child)
    print(json.dumps(run(job)))
