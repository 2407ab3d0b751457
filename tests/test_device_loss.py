"""Devices come and go: a network camera (tools/mjpeg_camera.py) killed and restarted during
a live recording on the PulseAudio virtual microphone. Speech goes on being published while
the camera is gone, faces resume when it is back, and the session keeps both changes."""

import json
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
