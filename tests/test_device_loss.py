"""Devices come and go: a network camera (tools/mjpeg_camera.py) killed and restarted during
a live recording on the PulseAudio virtual microphone. Speech goes on being published while
the camera is gone, faces resume when it is back, and the session keeps both changes."""

import json
import os
import subprocess
import sys
import time

from conftest import FACE_CLIP, REPO, free_endpoint, free_port
from conftest import play, wait_audio

SPINE_AND_FACES = [
    "asr.enabled=false",
    "speakers.enabled=false",
    "emotion.enabled=false",
    'vad.backend="webrtcvad"',
    "faces.enabled=true",
    'control.endpoint="tcp://127.0.0.1:*"',
]


def _camera(video, port):
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "mjpeg_camera.py"), str(video), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "serving" in proc.stdout.readline()
    return proc


def test_camera_lost_and_restored_during_a_live_run(pulse, short_session, tmp_path):
    src, truth = short_session
    video = FACE_CLIP if FACE_CLIP.is_file() else src / "video.mp4"  # a real face where we have one
    port = free_port()
    cam = _camera(video, port)
    out = tmp_path / "rec"
    duration = truth["turns"][-1]["end"] + 9.0
    cmd = [
        sys.executable,
        "-m",
        "robot_emotion",
        "record",
        str(out),
        "--duration",
        str(duration),
        "--launch",
        str(REPO / "launch" / "robot.toml"),
        "--set",
        f'camera.source="http://127.0.0.1:{port}/stream.mjpg"',
        "--set",
        f'publish.endpoint="{free_endpoint()}"',
        "--set",
        "camera.retry_max_s=1.0",
        *sum([["--set", o] for o in SPINE_AND_FACES], []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_audio(out, seconds=3.0)
        time.sleep(2.0)
        cam.kill()  # unplugged
        cam.wait()
        player = play(src / "audio.wav", pulse)  # people keep talking meanwhile
        time.sleep(4.0)
        cam = _camera(video, port)  # plugged back in
        player.wait()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        cam.kill()
        proc.kill()
    assert proc.returncode == 0, stderr
    events = [json.loads(l) for l in (out / "events.jsonl").read_text().splitlines()]
    dev = [e for e in events if e["topic"] == "device"]
    assert [(e["device"], e["state"]) for e in dev][:2] == [("camera", "lost"), ("camera", "restored")]
    lost_t, back_t = dev[0]["t"], dev[1]["t"]
    assert 1.0 < back_t - lost_t < 15.0
    faces = [e for e in events if e["topic"] == "face"]
    assert any(f["t"] < lost_t and f["tracks"] for f in faces)  # faces before ...
    assert any(f["t"] > back_t and f["tracks"] for f in faces)  # ... and again after
    assert not any(lost_t + 0.5 < f["t"] < back_t - 0.5 for f in faces)
    utts = [e for e in events if e["topic"] == "utterance" and e["final"]]
    assert any(u["start"] < back_t and u["end"] > lost_t for u in utts)  # speech while it was gone
    meta = json.loads((out / "session.json").read_text())
    assert [(d["device"], d["state"]) for d in meta["device_events"]][:2] == [
        ("camera", "lost"),
        ("camera", "restored"),
    ]
    assert meta["complete"] is True


LATE_SERVER = r"""
import json, subprocess, sys, time
import sounddevice  # PortAudio lists the devices now, with no sound server: no input at all
from robot_emotion.config import MicrophoneConfig
from robot_emotion.sources.base import AudioQueue
from robot_emotion.sources.microphone import MicrophoneSource

before = sum(d["max_input_channels"] > 0 for d in sounddevice.query_devices())
subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix"])
for _ in range(100):
    if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
        break
    time.sleep(0.1)
subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=late"], capture_output=True, check=True)
subprocess.run(["pactl", "set-default-source", "late.monitor"], check=True)

class Clock:
    def now(self):
        return time.monotonic()

q = AudioQueue(64)
mic = MicrophoneSource(MicrophoneConfig(), Clock(), q)
mic.start()
block = q.get(timeout=10)
mic.stop()
print(json.dumps({"inputs_at_start": before, "samples": 0 if block is None else len(block.samples)}))
"""


def test_a_microphone_that_comes_up_after_the_node_started_is_opened(pulse, tmp_path):
    """PortAudio lists devices once per process: a sound server (or a USB microphone) that
    appears later must still open, as after a loss the node retries for lost_grace_s."""
    runtime = tmp_path / "pulse"  # a server of this test's own, started inside the child
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "PULSE_RUNTIME_PATH": str(runtime), "PYTHONPATH": str(REPO)}
    try:
        res = subprocess.run([sys.executable, "-c", LATE_SERVER], env=env, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True)
    assert res.returncode == 0, res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["inputs_at_start"] == 0  # the case under test: nothing to open when PortAudio loaded
    assert seen["samples"] == 16000 * 30 // 1000  # a real 30 ms block from the late server
