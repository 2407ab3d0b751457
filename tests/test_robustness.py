"""Nothing lost: long replays drain completely, failing outputs do not stop the bus, a full
disk stops the recording but not perception, sessions are private."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, free_endpoint
from robot_emotion.bus.client import Subscriber
from conftest import NO_PERCEPTION


def _long_wav(session, tmp_path, times: int):
    audio, sr = sf.read(session / "audio.wav", dtype="int16")
    wav = tmp_path / f"long_x{times}.wav"
    sf.write(wav, np.tile(audio, times), sr, subtype="PCM_16")
    return wav


def test_long_replay_at_max_speed_drops_no_utterance(dialogue_session, tmp_path):
    """The demo dialogue 4 times (~2 minutes) at --speed max: the reader finishes in seconds and
    leaves the perception work queued; the drain waits as long as the stages make progress
    (here with a 5 s stall limit, far shorter than the drain: before, a fixed 30 s timeout cut
    what was left). Every segment ends up in a final utterance with its emotion."""
    folder, truth = dialogue_session
    wav = _long_wav(folder, tmp_path, 4)
    from robot_emotion.config import load
    from robot_emotion.node.runner import replay

    cfg = load(None, overrides=['publish.endpoint="tcp://127.0.0.1:*"', "faces.enabled=false"])[0]
    events = []
    node = replay(cfg, str(wav), sinks=[events.append], stall_s=5.0)
    assert not node.errors, node.errors
    ends = [e for e in events if e["topic"] == "speech.end" and not e["dropped"]]
    finals = [e for e in events if e["topic"] == "utterance" and e["final"]]
    covered = {s for u in finals for s in u["segments"]}
    assert len(ends) >= 4 * len(truth["turns"]) - 2
    assert {e["utterance_id"] for e in ends} <= covered  # no segment lost
    speech = [u for u in finals if u["speech"]]
    emotions = {e["utterance_id"] for e in events if e["topic"] == "emotion" and e["final"]}
    assert {u["utterance_id"] for u in speech} == emotions  # every turn got its emotion
    import torch

    if not torch.cuda.is_available():  # two CPU cores: minutes of work outlast the stall limit
        assert node.drain_s > 5.0, node.drain_s


def test_failing_out_file_keeps_the_bus_flowing(short_session):
    """--out /dev/full: one error line, exit non-zero, and a subscriber receives every message."""
    folder, truth = short_session
    endpoint = free_endpoint()
    sub = Subscriber(endpoint, topics=["speech.", "utterance"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "replay",
            str(folder),
            "--speed",
            "2",
            "--quiet",
            "--out",
            "/dev/full",
            "--launch",
            str(REPO / "launch" / "replay.toml"),
            *sum([["--set", o] for o in NO_PERCEPTION[:-1]], []),
            "--endpoint",
            endpoint,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    got = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        body = sub.recv(timeout_ms=100)
        if body is not None:
            got.append(body)
    while (body := sub.recv(timeout_ms=300)) is not None:
        got.append(body)
    sub.close()
    _, stderr = proc.communicate(timeout=30)
    errors = [l for l in stderr.splitlines() if l.startswith("robot-emotion: error:")]
    assert proc.returncode == 4, stderr
    assert len(errors) == 1 and "/dev/full" in errors[0], stderr
    utts = [b for b in got if b["topic"] == "utterance"]
    assert len(utts) == len(truth["turns"])  # every turn reached the bus
    for topic in ("speech.start", "speech.end", "utterance"):  # and nothing in between is missing
        seqs = [b["seq"] for b in got if b["topic"] == topic]
        assert seqs == list(range(len(seqs))), topic


def test_session_files_are_private(tmp_path):
    from robot_emotion.sources.session import SessionWriter

    w = SessionWriter(tmp_path / "s", "x", 0.0, {}, {})
    w.write_audio(np.zeros(1600, np.int16), 0.0)
    w.write_frame(0.0, np.zeros((48, 64, 3), np.uint8))
    w.write_event({"topic": "speech.start"})
    w.close()
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["audio.wav", "events.jsonl", "session.json", "video.mp4", "video_times.csv"]
    for p in (tmp_path / "s").iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p.name
    # configurable: node.private_sessions = false keeps the process umask
    w = SessionWriter(tmp_path / "open", "x", 0.0, {}, {}, private=False)
    w.close()
    assert stat.S_IMODE(os.stat(tmp_path / "open" / "audio.wav").st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.fixture()
def small_disk(tmp_path):
    """A 300 KiB tmpfs: a real full disk (needs root and mount; skips elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        shutil.which("mount") is None
        or os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_stops_recording_keeps_perceiving(small_disk):
    """The writer hits ENOSPC after ~9 s of audio: it finalises what it has (readable wav,
    session.json saying why), never raises into the audio callback, and reports once."""
    from robot_emotion.sources.session import SessionWriter, open_session

    w = SessionWriter(small_disk / "s", "x", 0.0, {}, {}, flush_s=0.0)
    block = (np.sin(np.arange(1600) / 5.0) * 3000).astype(np.int16)
    for i in range(200):  # 20 s of audio into 300 KiB: the disk fills
        w.write_audio(block, i * 0.1)
        w.write_event({"topic": "speech.start", "i": i})
    w.note_device("camera", "lost", 3.0)
    w.close()
    assert w.failure is not None and "No space left" in w.failure
    meta = json.loads((small_disk / "s" / "session.json").read_text())
    assert meta["complete"] is False and "No space left" in meta["stopped"]
    s = open_session(small_disk / "s")
    assert 3.0 < s.duration < 10.0  # what fitted on the disk replays
