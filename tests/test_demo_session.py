"""The demo-session generator: real audio, real video, ground truth that matches both."""

from __future__ import annotations

import csv
import json
import wave

import numpy as np

SR = 16000


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:  # the stdlib reader accepts only a standard PCM WAV
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def median_f0(x: np.ndarray, fmin=60.0, fmax=400.0) -> float:
    """Median autocorrelation pitch of the voiced 40 ms frames."""
    win, lags = int(0.04 * SR), np.arange(int(SR / fmax), int(SR / fmin))
    frames = [x[i : i + win] for i in range(0, len(x) - win, win // 2)]
    loud = max(rms(f) for f in frames)
    f0s = []
    for f in frames:
        if rms(f) < 0.3 * loud:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[win - 1 :]
        a = ac[lags]
        if a.max() > 0.4 * ac[0]:  # clearly periodic: voiced
            # the shortest lag near the best peak, not a multiple of the period (octave error)
            f0s.append(SR / lags[np.flatnonzero(a >= 0.85 * a.max())[0]])
    assert len(f0s) > 10
    return float(np.median(f0s))


def test_audio_turns_gaps_and_voices(dialogue_session):
    folder, truth = dialogue_session
    audio = read_wav(folder / "audio.wav")
    meta = json.loads((folder / "session.json").read_text())
    assert meta["format"] == "robot_emotion.session" and meta["complete"] is True
    assert meta["session_id"] == "demo-0" and meta["config"] is None
    assert abs(meta["duration"] - len(audio) / SR) < 1e-6
    assert json.loads((folder / "truth.json").read_text()) == truth
    assert (folder / "events.jsonl").read_text() == ""

    turns = truth["turns"]
    assert len(turns) == 10 and [t["speaker"] for t in turns] == ["A", "B"] * 5
    assert {t["emotion"] for t in turns} >= {"joy", "surprise", "sadness", "anger"}
    speech = np.zeros(len(audio), bool)
    for t in turns:
        assert 1.2 <= t["end"] - t["start"] <= 3.5, t
        speech[int(t["start"] * SR) : int(t["end"] * SR)] = True
    silence = rms(audio[~speech])
    assert 10 < silence < 100  # a low (about -60 dBFS) noise floor, never digital silence
    for t in turns:
        assert rms(audio[int(t["start"] * SR) : int(t["end"] * SR)]) > 10 * silence, t
    # the edges were trimmed to speech: the first and last 50 ms of a turn are not silent
    for t in turns:
        s, e = int(t["start"] * SR), int(t["end"] * SR)
        assert rms(audio[s : s + 800]) > 2 * silence and rms(audio[e - 800 : e]) > 2 * silence

    gaps = [b["start"] - a["end"] for a, b in zip(turns, turns[1:])]
    assert sum(g < 0.3 for g in gaps) >= 3 and max(gaps) >= 1.0 and min(gaps) > 0.1

    f0 = {
        spk: median_f0(
            np.concatenate([audio[int(t["start"] * SR) : int(t["end"] * SR)] for t in turns if t["speaker"] == spk])
        )
        for spk in "AB"
    }
    assert f0["B"] > 1.8 * f0["A"], f0  # a low male and a high female voice
    assert 70 < f0["A"] < 150 and 180 < f0["B"] < 350, f0


def decode(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_video_faces_and_moving_mouths(dialogue_session):
    folder, truth = dialogue_session
    meta = json.loads((folder / "session.json").read_text())
    frames = decode(folder / "video.mp4")
    with open(folder / "video_times.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(frames) == meta["frames"] == len(rows) == int(np.ceil(meta["duration"] * 15))
    assert frames[0].shape == (360, 640, 3)
    assert np.allclose([float(r["t"]) for r in rows], np.arange(len(rows)) / 15, atol=1e-6)

    mouth = {t["face"]: t["mouth_box"] for t in truth["turns"]}  # one box per face
    assert truth["faces"] == {"A": "left", "B": "right"}
    for t in truth["turns"]:
        x0, y0, x1, y1 = t["face_box"]
        assert 130 <= y1 - y0 <= 180 and 100 <= x1 - x0 <= 150
        assert (x1 < 320) == (t["face"] == "left")

    def mouth_motion(side, i0, i1):
        x0, y0, x1, y1 = mouth[side]
        x0, y0, x1, y1 = x0 - 6, y0 - 4, x1 + 6, y1 + 8  # covers the sway
        clip = np.stack([frames[i][y0:y1, x0:x1].mean(axis=2) for i in range(i0, i1)])
        # per-pixel temporal variance (the sway adds some on textured teeth), and the
        # variance of the region's mean brightness (an opening dark mouth; sway-proof)
        return float(clip.var(axis=0).mean()), float(clip.mean(axis=(1, 2)).var())

    for t in truth["turns"]:
        i0, i1 = int(np.ceil(t["start"] * 15)), int(t["end"] * 15)
        silent = "right" if t["face"] == "left" else "left"
        (talk_px, talk_mean), (still_px, still_mean) = (mouth_motion(t["face"], i0, i1), mouth_motion(silent, i0, i1))
        assert talk_px > 3 * still_px, (t, talk_px, still_px)
        assert talk_mean > 10 * still_mean + 5, (t, talk_mean, still_mean)


def test_gap_override_no_video_and_idempotent(demo_tool, tmp_path):
    for _ in range(2):  # a second run overwrites cleanly
        truth = demo_tool.make_session(tmp_path, turns=3, seed=2, with_video=False, gap_ms=60)
    turns = truth["turns"]
    assert [t["speaker"] for t in turns] == ["A", "B", "A"]
    for a, b in zip(turns, turns[1:]):
        assert abs((b["start"] - a["end"]) - 0.06) < 1e-3
    assert not (tmp_path / "video.mp4").exists() and not (tmp_path / "video_times.csv").exists()
    meta = json.loads((tmp_path / "session.json").read_text())
    assert meta["frames"] == 0 and meta["session_id"] == "demo-2"
    assert abs(len(read_wav(tmp_path / "audio.wav")) / SR - meta["duration"]) < 1e-6
