"""Honest start-up: no devices -> exit 3 and nothing published; --demo replays; a `ready`
message once models are loaded; the session clock starts at ready (not during loading)."""

import json
import subprocess
import sys

import soundfile as sf

from conftest import REPO, free_endpoint, run_cli
from robot_emotion.bus.client import Subscriber
from conftest import NO_PERCEPTION, collect, spine_cfg

NO_SOUND_SERVER = {"PULSE_SERVER": "unix:/nonexistent/robot-emotion-test"}  # ALSA's default leads nowhere


def test_run_without_devices_exits_3_and_publishes_nothing():
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    r = run_cli("run", "--duration", "3", "--endpoint", endpoint, env=NO_SOUND_SERVER, timeout=120)
    got = sub.recv(timeout_ms=500)
    sub.close()
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robot-emotion: error: no microphone found")
    assert got is None and r.stdout == ""


def test_run_demo_replays_the_demo_when_devices_are_missing(dialogue_session):
    folder, truth = dialogue_session
    r = run_cli(
        "run",
        "--demo",
        *sum([["--set", o] for o in NO_PERCEPTION[:-1]], []),
        env={**NO_SOUND_SERVER, "ROBOT_EMOTION_DEMO": str(folder)},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "replaying the demo session (--demo)" in r.stderr
    assert r.stdout.count("utterance ") >= len(truth["turns"]) - 1


def test_ready_comes_first(short_session):
    folder, _ = short_session
    events, node = collect(spine_cfg(), folder)
    topics = [e["topic"] for e in events if e["topic"] != "status"]
    assert topics[0] == "ready" and topics.count("ready") == 1
    ready = events[[e["topic"] for e in events].index("ready")]
    assert ready["t"] == 0.0 and ready["mode"] == "replay" and ready["load_s"] >= 0
    assert ready["devices"] == {"replay": str(folder)}


def test_session_clock_starts_when_models_are_loaded(pulse, tmp_path):
    """Full perception (silero, Whisper, speakers, emotion; 10-20 s to load here) and
    `record --duration 3`: 3 s of audio, not 3 s plus the loading."""
    out = tmp_path / "rec"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "record",
            str(out),
            "--duration",
            "3",
            "--launch",
            str(REPO / "launch" / "audio_only.toml"),
            "--endpoint",
            free_endpoint(),
            "--set",
            'control.endpoint="tcp://127.0.0.1:*"',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert "# loading speech recognition" in stderr and "# ready: live" in stderr
    info = sf.info(str(out / "audio.wav"))
    assert abs(info.frames / 16000 - 3.0) < 0.6
    events = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    ready = next(e for e in events if e["topic"] == "ready")
    assert ready["t"] < 0.5 and ready["load_s"] > 1.0 and ready["models"]["asr"]
