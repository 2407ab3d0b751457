"""The robot's own voice: its TTS (espeak-ng) played into the PulseAudio virtual microphone
while the controllers say `robot.speaking` is not a person; a person talking over it is."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHARED, espeak, free_endpoint
from robot_emotion.bus.client import Controller
from conftest import play

SR = 16000
ROBOT_A = "Hello, I am your robot. It is nice to see you here today."
ROBOT_B = "Let me tell you about the weather for tomorrow afternoon."


def _at_db(x: np.ndarray, db: float) -> np.ndarray:
    x = x.astype(np.float32)
    rms = np.sqrt(np.mean(x[np.abs(x) > 200] ** 2))  # level of the voiced part
    return x * (32768.0 * 10 ** (db / 20) / rms)


def _human() -> np.ndarray:
    real = SHARED / "speech" / "librispeech" / "spk1_snt1.wav"
    if real.is_file():  # a real person where we have one
        x, sr = sf.read(real, dtype="int16")
        assert sr == SR
        return x[: int(3.5 * SR)]
    return espeak("I am sorry, could you say that again please", voice="en-us+m3")[: int(3.5 * SR)]


def _write(path, x):
    sf.write(path, np.clip(x, -32768, 32767).astype(np.int16), SR, subtype="PCM_16")


@pytest.fixture()
def own_sink(pulse):
    """A null sink of this test's own (other tests may play into the shared one meanwhile);
    the node hears its monitor through PULSE_SOURCE."""
    name = "robot_voice_test"
    if name not in subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout:
        subprocess.run(
            ["pactl", "load-module", "module-null-sink", f"sink_name={name}"], check=True, capture_output=True
        )
    return name


def test_robot_speech_is_not_a_person_but_barge_in_is(own_sink, tmp_path):
    pulse = own_sink
    robot_a = _at_db(espeak(ROBOT_A), -30)
    robot_b = _at_db(espeak(ROBOT_B, voice="en-us+f2"), -30)
    human = _at_db(_human(), -14)  # 16 dB louder than the robot
    over = robot_b.copy()
    n = min(human.size, over.size - SR)
    over[SR : SR + n] += human[:n]  # talks over the robot after 1 s
    files = {}
    for name, x in (("a", robot_a), ("b", over), ("c", human)):
        files[name] = tmp_path / f"{name}.wav"
        _write(files[name], x)
    control = free_endpoint()
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "run",
            "--launch",
            str(REPO / "launch" / "audio_only.toml"),
            "--out",
            str(out),
            "--quiet",
            "--endpoint",
            free_endpoint(),
            "--set",
            f'control.endpoint="{control}"',
            "--set",
            'vad.backend="webrtcvad"',
            "--set",
            "asr.enabled=false",
            "--set",
            "emotion.enabled=false",
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PULSE_SOURCE": f"{own_sink}.monitor"},
    )
    try:
        with Controller(control, timeout_ms=10000) as ctl:  # (a busy CI machine)
            ctl.wait_ready()
            time.sleep(1.0)
            ctl.robot_speaking(ROBOT_A)
            play(files["a"], pulse).wait()
            time.sleep(0.3)
            ctl.robot_done()
            time.sleep(1.5)
            t_b = ctl.robot_speaking(ROBOT_B)["t"]
            play(files["b"], pulse).wait()
            time.sleep(0.3)
            t_b_end = ctl.robot_done()["t"]
            time.sleep(1.5)
            t_c = time.monotonic()
            play(files["c"], pulse).wait()
            time.sleep(2.0)
            proc.send_signal(2)
            _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    events = [json.loads(l) for l in out.read_text().splitlines()]
    finals = [e for e in events if e["topic"] == "utterance" and e["final"]]
    robot = [u for u in finals if u["speaker"] == "robot"]
    assert [u["text"] for u in robot] == [ROBOT_A, ROBOT_B]  # the robot's turns, with its words
    people = [u for u in finals if u["speaker"] != "robot"]
    assert not [u for u in people if u["start"] < t_b - 0.5]  # robot alone: nobody spoke
    starts = [e for e in events if e["topic"] == "speech.start"]
    barge = [e for e in starts if e.get("barge_in")]
    assert barge and t_b + 0.8 < barge[0]["t"] < t_b_end  # heard over the robot
    assert not [e for e in starts if e["start"] < t_b - 0.5]  # no speech.start for the robot alone
    seen = [(u["speaker"], round(u["start"] - t_b, 2), round(u["end"] - t_b, 2)) for u in people]
    # the barge-in is a person's turn. Its segment opens with the robot's first word, a block or
    # two after t_b, or a little before it: capture times and the VAD's pre-roll jitter by tens of ms
    assert [u for u in people if t_b - 0.5 <= u["start"] < t_b_end], (seen, t_b_end - t_b)
    assert [u for u in people if u["start"] > t_b_end + 0.5]  # and so is the reply after it
    status = [e for e in events if e["topic"] == "status"][-1]
    assert status["robot"]["segments_dropped"] >= 1 and t_c > 0


def test_robot_turn_enters_the_dialogue_history():
    """The robot's words are the text context of the next human turn."""
    from robot_emotion.clock import VirtualClock
    from robot_emotion.config import load
    from robot_emotion.node.core import Node

    cfg = load(None, overrides=['publish.endpoint="tcp://127.0.0.1:*"'])[0]
    clock = VirtualClock()
    node = Node(cfg, clock, mode="live")
    clock.advance_to(1.0)
    node.on_control({"cmd": "robot.speaking", "state": "start", "text": "How was your day?"})
    clock.advance_to(2.5)
    node.on_control({"cmd": "robot.speaking", "state": "stop"})
    ctx = node.history.context(before=3.0)
    assert [(t.speaker, t.text, t.start, t.end) for t in ctx] == [("robot", "How was your day?", 1.0, 2.5)]
    assert node.robot.is_robot("x", 2.0) and not node.robot.is_robot("x", 3.5)
    node.on_control({"cmd": "reset"})
    assert node.history.context(before=3.0) == []
    for bad in (
        {"cmd": "robot.speaking", "state": "maybe"},
        {"cmd": "dance"},
        {"cmd": "robot.speaking", "state": "start", "text": 5},
    ):
        try:
            node.on_control(bad)
        except ValueError as e:
            assert str(e)
        else:
            raise AssertionError(f"accepted {bad}")


def test_control_socket_is_local_only():
    from conftest import run_cli

    r = run_cli("run", "--set", 'control.endpoint="tcp://0.0.0.0:5557"', "--demo", timeout=120)
    lines = [l for l in r.stderr.splitlines() if not l.startswith("#")]
    assert r.returncode == 2 and len(lines) == 1 and "control.endpoint" in lines[0], r.stderr


def test_control_port_is_free_the_moment_the_server_stops():
    """A node restarted on the same control endpoint binds at once, even with a controller
    still connected to the old one."""
    import zmq
    from robot_emotion.bus.control import ControlServer

    ep = free_endpoint()
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(ep)
    try:
        for i in range(20):
            server = ControlServer(ep, lambda r: {"n": i})
            server.start()  # raises UsageError("cannot bind control socket ...") if held
            if i == 0:
                req.send_string(json.dumps({"cmd": "ping"}))
                assert json.loads(req.recv_string()) == {"ok": True, "n": 0}
            server.stop()
    finally:
        req.close()
