"""Active-speaker assignment: synthetic series, and the generated two-face demo session."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import wave
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from robot_emotion.vision.active_speaker import assign_active_speaker

REPO = Path(__file__).resolve().parents[1]
CACHED_DEMO = Path("/root/.cache/robot-emotion/demo_session")
DEMO_TOOL = REPO / "robot_emotion" / "sources" / "demo.py"


def _envelope(t):
    """Speech-like energy: bursts at ~4 Hz inside 1.0-3.0 s, silence around."""
    inside = (t >= 1.0) & (t <= 3.0)
    return inside * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.0 * t))) + 0.01


def test_track_following_energy_wins():
    audio_t = np.arange(0, 4, 0.02)
    energy = _envelope(audio_t)
    face_t = np.arange(0, 4, 0.2)
    rng = np.random.default_rng(1)
    mover = 0.25 * _envelope(face_t) + rng.uniform(0, 0.01, face_t.size)
    still = rng.uniform(0, 0.01, face_t.size)
    tid, conf = assign_active_speaker({0: (face_t, still), 1: (face_t, mover)}, audio_t, energy, 1.0, 3.0)
    assert tid == 1 and conf > 0.5


def test_correlation_breaks_a_tie_in_motion():
    """Both mouths move as much; only track 1 moves with the speech."""
    audio_t = np.arange(0, 4, 0.02)
    energy = _envelope(audio_t)
    face_t = np.arange(0, 4, 0.2)
    with_speech = 0.2 * _envelope(face_t)
    chewing = np.full(face_t.size, with_speech[(face_t >= 1) & (face_t <= 3)].mean())
    tid, conf = assign_active_speaker({0: (face_t, chewing), 1: (face_t, with_speech)}, audio_t, energy, 1.0, 3.0)
    assert tid == 1 and 0 < conf < 1


def test_no_tracks_or_no_data_in_interval():
    audio_t = np.arange(0, 4, 0.02)
    assert assign_active_speaker({}, audio_t, _envelope(audio_t), 1.0, 3.0) == (None, 0.0)
    late = np.arange(5, 6, 0.2)
    assert assign_active_speaker({3: (late, np.full(late.size, 0.3))}, audio_t, _envelope(audio_t), 1.0, 3.0) == (
        None,
        0.0,
    )


def test_all_still_tracks_give_none():
    audio_t = np.arange(0, 4, 0.02)
    face_t = np.arange(0, 4, 0.2)
    rng = np.random.default_rng(2)
    series = {k: (face_t, rng.uniform(0, 0.01, face_t.size)) for k in range(3)}
    tid, conf = assign_active_speaker(series, audio_t, _envelope(audio_t), 1.0, 3.0)
    assert tid is None and conf == 0.0


def test_mismatched_audio_lengths_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        assign_active_speaker({}, np.arange(3), np.arange(4), 0, 1)


# ------------------------------------------------------------------ demo session (real pipeline)
@pytest.fixture(scope="module")
def demo_session(tmp_path_factory) -> Path:
    if (CACHED_DEMO / "truth.json").is_file() and (CACHED_DEMO / "video.mp4").is_file():
        return CACHED_DEMO
    if not DEMO_TOOL.is_file():
        pytest.skip(f"no demo session at {CACHED_DEMO} and no generator at {DEMO_TOOL}")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed: cannot generate the demo session")
    spec = importlib.util.spec_from_file_location("make_demo_session", DEMO_TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("demo")
    mod.make_session(out, seed=0)
    return out


def _audio_energy(path: Path, frame_s: float = 0.02):
    with wave.open(str(path), "rb") as w:
        sr, n = w.getframerate(), w.getnframes()
        assert w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(n), np.int16).reshape(-1, w.getnchannels()).mean(axis=1)
    hop = int(sr * frame_s)
    m = len(x) // hop
    rms = np.sqrt(((x[: m * hop].reshape(m, hop) / 32768.0) ** 2).mean(axis=1))
    return (np.arange(m) + 1) * hop / sr, rms


def test_demo_session_speaking_face(demo_session):
    import av

    from robot_emotion.config import FacesConfig
    from robot_emotion.vision import FacePipeline
    from robot_emotion.vision.expression import default_weights_path

    if not default_weights_path().is_file():
        pytest.skip(f"FER weights not installed at {default_weights_path()}")
    truth = json.loads((demo_session / "truth.json").read_text())
    with open(demo_session / "video_times.csv") as f:
        times = [float(r["t"]) for r in csv.DictReader(f)]
    audio_t, energy = _audio_energy(demo_session / "audio.wav")
    pipe = FacePipeline(FacesConfig(), device="cpu")
    width = None
    per_frame = []  # (t, {side: speaking})
    pushed = 0
    with av.open(str(demo_session / "video.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            t = times[i]
            if not pipe.due(t):
                continue
            img = frame.to_ndarray(format="rgb24")
            width = img.shape[1]
            upto = int(np.searchsorted(audio_t, t, side="right"))  # audio up to now only
            pipe.push_audio(audio_t[pushed:upto], energy[pushed:upto])
            pushed = upto
            faces = pipe.process(img, t)
            per_frame.append(
                (
                    t,
                    {
                        ("left" if (f["box"][0] + f["box"][2]) / 2 < width / 2 else "right"): f["speaking"]
                        for f in faces
                    },
                )
            )

    hits, report = 0, []
    for turn in truth["turns"]:
        s, e = turn["start"], turn["end"]
        series = pipe.tracker.activity_series(s - 1.5, e + 1.5)
        tid, conf = assign_active_speaker(series, audio_t, energy, s, e)
        side = None
        if tid is not None:
            box = pipe.tracker.tracks_between(s, e)[tid]["box"]
            side = "left" if box[:, [0, 2]].mean() < width / 2 else "right"
        hits += side == turn["face"]
        report.append((turn["face"], side, round(conf, 2)))
    assert hits >= 0.8 * len(truth["turns"]), report

    # The per-frame `speaking` flag (causal, from pushed audio) inside turns, after 0.6 s.
    good = total = 0
    for turn in truth["turns"]:
        for t, flags in per_frame:
            if turn["start"] + 0.6 <= t <= turn["end"]:
                total += 1
                good += flags.get(turn["face"], False) and not flags.get(
                    "left" if turn["face"] == "right" else "right", False
                )
    print(f"turns: {hits}/{len(truth['turns'])} {report}; speaking flag right in {good}/{total} frames")
    assert total and good / total >= 0.6, f"speaking flag right in {good}/{total} frames"
