"""`robot-emotion bench` honours every shared option (or refuses it: one line, exit 2/3), measures
RSS / anonymous RSS / PSS, and times stock faster-whisper on the same speech as its reference;
`--help` of every sub-command shows defaults and every option explains itself."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, free_endpoint, run_cli
from robot_emotion.cli.main import build_parser

ERROR = "robot-emotion: error: "


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_subcommand_has_help_and_shows_its_default():
    subs = _subparsers(build_parser())
    assert {"run", "replay", "bench", "evaluate", "train", "calibrate"} <= set(subs)
    for name, p in subs.items():
        missing = [
            a.option_strings or a.dest
            for a in p._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
        ]
        assert missing == [], f"{name}: options without help text: {missing}"
        fmt = p._get_formatter()
        for a in p._actions:
            if a.option_strings and not a.required and not isinstance(a, argparse._HelpAction):
                shown = fmt._expand_help(a)  # the option's help as --help prints it
                assert "default" in shown, f"{name} {a.option_strings}: no default in {shown!r}"
                if "%(default)" in fmt._get_help_string(a):
                    assert f"(default: {a.default})" in shown
    bench = " ".join(subs["bench"].format_help().split())
    assert "(default: 3)" in bench and "free loopback port" in bench


def _bench(*args, timeout=60):
    return run_cli("bench", "--repeats", "1", *args, timeout=timeout)


def _one_line(r, code: int, fragment: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(ERROR) and fragment in lines[0], r.stderr
    assert r.stdout == ""


def test_bad_calibration_path_is_one_line_exit_2_before_any_child(tmp_path):
    r = _bench("--calibration", tmp_path / "nope.toml")
    _one_line(r, 2, "config file not found")


def test_missing_or_unreadable_checkpoint_is_one_line_exit_3(tmp_path):
    _one_line(_bench("--model", tmp_path / "nope.pt"), 3, "checkpoint not found")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 64)
    _one_line(_bench("--model", tmp_path / "junk.pt"), 3, "not a readable robot_emotion checkpoint")


def test_busy_endpoint_is_one_line_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _bench("--endpoint", f"tcp://127.0.0.1:{s.getsockname()[1]}")
    _one_line(r, 2, "cannot bind publisher")


def test_unknown_config_and_bad_repeats_are_usage_errors():
    _one_line(_bench("--configs", "spine,turbo"), 2, "turbo")
    _one_line(run_cli("bench", "--repeats", "0", timeout=60), 2, "--repeats")
    _one_line(run_cli("bench", "--contention", "-1", timeout=60), 2, "--contention")


def test_contention_load_takes_cpu_while_it_runs_and_is_gone_after():
    """bench --contention's load: real processes that burn CPU (and stream memory), killed on exit."""
    from robot_emotion.cli.contention import Contention

    with Contention(busy=1, hog_mb=8) as load:
        procs = load.processes
        deadline = time.monotonic() + 20  # (a busy test machine gives the load less)
        while load.cpu_s() < 1.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert load.cpu_s() >= 1.0, f"the load used only {load.cpu_s():.2f} s of CPU in 20 s"
        assert load.describe() == "1 busy process(es) + a 8 MB memory-bandwidth hog"
    assert all(p.poll() is not None for p in procs)


@pytest.fixture(scope="module")
def two_turns(demo_tool, tmp_path_factory):
    """Two turns of real (espeak-ng) speech, audio only: short enough to replay at recorded pace."""
    out = tmp_path_factory.mktemp("bench_src")
    truth = demo_tool.make_session(out, turns=2, seed=1, with_video=False)
    return out, truth


def _other_family_checkpoint(path):
    """A checkpoint of the 'early' family (the shipped one is 'late'), written with the project's writer."""
    from robot_emotion import EMOTIONS
    from robot_emotion.node.emotion import DEFAULT_CHECKPOINT
    from robot_emotion.models import build_model, read_checkpoint, save_checkpoint
    from robot_emotion.vision.expression import FEATURE_DIM

    shipped = read_checkpoint(DEFAULT_CHECKPOINT)
    dims = {"text": 384, "face": FEATURE_DIM}
    save_checkpoint(
        path,
        build_model("early", dims, len(EMOTIONS)),
        family="early",
        dims=dims,
        hparams={},
        labels=EMOTIONS,
        training={},
        metrics={},
        encoders={m: shipped["encoders"][m] for m in dims},
    )
    return path


def test_full_bench_uses_the_given_model_and_reports_memory_and_the_stock_whisper_reference(two_turns, tmp_path):
    src, truth = two_turns
    ck = _other_family_checkpoint(tmp_path / "other_family.pt")
    out = tmp_path / "bench.json"
    r = _bench("--source", src, "--configs", "full", "--model", ck, "--json", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    row = data["rows"][0]
    assert "error" not in row, row
    # --model reached the child: the node scored with the other family's checkpoint
    assert row["model"]["family"] == "early" and row["model"]["path"] == str(ck)
    assert "early:other_family" in r.stdout
    # the existing figures are still there
    assert row["utterances"] == len(truth["turns"]) and len(row["rtf"]) == 1 and row["peak_rss_mb"] > 100
    assert 0 < row["paced_cpu_share"] <= 1 and data["contention"] == "none"  # what the node took of the machine
    assert {"speech.end", "emotion first", "emotion first full", "emotion final", "utterance final"} <= set(
        row["latency"]
    )
    # memory: three views of the same samples, consistent with each other
    node = row["memory"]["node"]
    assert 0 < node["anon_mb"] < node["rss_mb"] <= node["hwm_mb"] + 1
    assert node["anon_mb"] <= node["pss_mb"] <= node["rss_mb"] + 1
    assert node["file_mb"] > 100  # torch's mapped libraries: resident, not anonymous
    assert row["memory"]["samples"] >= 3
    # the reference: stock faster-whisper on the source's speech segments, and the ratios to it
    ref = data["reference"]
    assert ref["segments"] == len(truth["turns"]) and ref["n"] == ref["segments"]
    assert 0 < ref["median_ms"] <= ref["p95_ms"] and ref["words"] >= 8
    for key, (med, p95, _n) in row["latency"].items():
        assert row["latency_ratio"][key] == pytest.approx([med / ref["median_ms"], p95 / ref["median_ms"]])
    assert "stock faster-whisper" in r.stdout and "x / " in r.stdout


def test_latency_groups_count_the_early_estimate_first_and_the_whole_transcript_apart():
    from robot_emotion.cli.bench import latency_groups

    lat = [
        ("speech.end", 2.0, "0", None, False),
        ("utterance", 5.0, "0", False, True),
        ("emotion", 6.0, "0", False, True),
        ("utterance", 150.0, "0", False, False),
        ("emotion", 190.0, "0", False, False),
        ("emotion", 400.0, "0", True, False),
        ("emotion", 210.0, "1", False, False),
    ]
    g = latency_groups(lat)
    assert g["emotion first"] == [6.0, 210.0] and g["emotion first full"] == [190.0, 210.0]
    assert g["emotion final"] == [400.0] and g["utterance first"] == [5.0]


def test_calibration_set_and_endpoint_reach_every_child(two_turns, tmp_path):
    """A calibration whose VAD keeps no segment: the children and the reference see no speech."""
    src, _ = two_turns
    cal = tmp_path / "deaf.toml"
    cal.write_text("[vad]\nmin_utterance_ms = 9000\n")
    out = tmp_path / "bench.json"
    r = _bench("--source", src, "--configs", "spine", "--calibration", cal, "--json", out, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["rows"][0]["utterances"] == 0
    assert "no speech" in data["reference"]["error"]
    # the same source without it: two utterances (the calibration was what changed), published
    # on the --endpoint given, where a subscriber hears them
    import zmq

    endpoint = free_endpoint()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    topics = set()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "robot_emotion",
                "bench",
                "--repeats",
                "1",
                "--source",
                src,
                "--configs",
                "spine",
                "--set",
                "vad.min_utterance_ms=250",
                "--endpoint",
                endpoint,
                "--json",
                out,
                "--live",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if sub.poll(200):
                topics.add(sub.recv_multipart()[0].decode())
        table, err = proc.communicate(timeout=10)
    finally:
        sub.close(0)
        ctx.term()
    assert proc.returncode == 0, err.decode()[-3000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["utterances"] == 2
    assert {"speech.start", "speech.end", "utterance"} <= topics
    # --live: the same recording through a live node at recorded pace, beside the paced replay
    live = row["live"]
    assert "error" not in live and live["utterances"] == 2
    assert all(0 <= med <= p95 for med, p95, _n in live["latency"].values()) and "utterance final" in live["latency"]
    assert set(live["skipped"]) == {"provisional", "partial", "incremental"}
    assert b"| spine | live semantics |" in table and b"| spine | replay (never sheds) |" in table


@pytest.mark.parametrize(
    "profile, overrides, absent, present",
    [
        (
            "audio_only.toml",
            ["emotion.enabled=false", "speakers.enabled=false"],
            ["facenet_pytorch", "h5py", "transformers", "torchvision"],
            ["faster_whisper"],
        ),
        (
            "replay.toml",
            ["emotion.enabled=false", "asr.enabled=false", "speakers.enabled=false"],
            ["transformers", "faster_whisper", "ctranslate2"],
            ["facenet_pytorch"],
        ),
    ],
)
def test_a_profile_imports_only_the_models_it_uses(profile, overrides, absent, present):
    code = (
        "import sys, json\n"
        "from robot_emotion.config import load\nfrom robot_emotion.node.runner import build_perception\n"
        f"cfg, _ = load({str(REPO / 'launch' / profile)!r}, overrides={overrides!r})\n"
        "p = build_perception(cfg, has_video=cfg.camera.enabled and cfg.faces.enabled, log=None)\n"
        "print(json.dumps(sorted(m for m in sys.modules if '.' not in m)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert not loaded & set(absent), f"{profile} {overrides} imported {sorted(loaded & set(absent))}"
    assert set(present) <= loaded
