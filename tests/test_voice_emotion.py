"""The voice-emotion branch: its model file, the speaker baseline, the encoder reuse, a held-out
RAVDESS actor replayed through the node, and `evaluate --speech`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED, run_cli
from robot_emotion import EMOTIONS
from robot_emotion.audio.voice_emotion import ASSET, SpeakerBaselines, VoiceEmotion, pool
from robot_emotion.errors import InputError

RAVDESS = SHARED / "emotion_speech" / "ravdess"


def ravdess_or_skip():
    if not RAVDESS.is_dir():
        pytest.skip(f"{RAVDESS} is absent (tests that use ../shared skip without it)")
    return RAVDESS


def test_speaker_baseline_is_the_shrunk_mean_of_earlier_final_turns():
    b = SpeakerBaselines(prior=1.0)
    z = np.array([1.0, 2.0])
    np.testing.assert_allclose(b.relative("S0", z), z)  # no turns yet: z itself
    b.add("S0", np.array([2.0, 2.0]), key="u1")
    b.add("S0", np.array([4.0, 0.0]), key="u2")
    np.testing.assert_allclose(b.relative("S0", z), z - np.array([6.0, 2.0]) / 3)  # n / (n + 1)
    np.testing.assert_allclose(b.relative("S1", z), z)  # another voice's turns do not count
    np.testing.assert_allclose(b.relative(None, z), z)  # no speaker id: no baseline
    b.add("S0", np.array([0.0, 0.0]), key="u2")  # u2 re-finalised: replaced, not added
    assert b.turns("S0") == 2
    np.testing.assert_allclose(b.relative("S0", z), z - np.array([2.0, 2.0]) / 3)
    b.add(None, z, key="u3")
    assert b.turns(None) == 0


def test_shipped_model_describes_itself_and_gives_calibrated_probabilities():
    m = VoiceEmotion.load()
    assert m.labels == EMOTIONS and m.temperature > 0 and m.prior > 0
    assert "non-commercial" in m.card["licence"] and "RAVDESS" in m.card["training"]
    assert 19 not in m.card["actors"] and 20 not in m.card["actors"]  # the replay check's actors
    assert (ASSET.parent / "voice_emotion.md").is_file()  # the model card
    z = np.random.default_rng(0).normal(size=(3, m.mean.size)).astype(np.float32)
    p = m.probs(z)
    assert p.shape == (3, 7) and np.allclose(p.sum(1), 1) and (p > 0).all()
    # temperature > 1 flattens: the calibrated top probability is below the raw one
    raw = m.probs(z, calibrated=False)
    assert (m.temperature > 1) == bool((p.max(1) < raw.max(1)).all())


def test_unreadable_or_foreign_model_is_one_clear_error(tmp_path):
    bad = tmp_path / "v.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="unreadable"):
        VoiceEmotion.load(bad)
    m = VoiceEmotion.load()
    other = VoiceEmotion(
        m.mean, m.scale, m.coef, m.intercept, m.temperature, m.prior, tuple(reversed(EMOTIONS)), m.card
    )
    other.save(tmp_path / "w.npz")
    with pytest.raises(InputError, match="labels"):
        VoiceEmotion.load(tmp_path / "w.npz")


def test_emotion_features_reuse_the_recognisers_encoding():
    """The node scores a turn's voice from the encoding its transcript was decoded from: the
    states equal a fresh encode of the same audio, and the branch's pooling is mean + std."""
    from robot_emotion.audio.asr import ASRModelNotFound, FasterWhisperASR
    from robot_emotion.audio.whisper_short import encode, turn_states
    from robot_emotion.train.voice_features import as_turn, read_clip

    clip = ravdess_or_skip() / "Actor_20" / "03-01-05-02-01-01-20.flac"
    try:
        asr = FasterWhisperASR(device="cpu")
    except ASRModelNotFound as e:
        pytest.skip(str(e))
    x = as_turn(read_clip(clip))
    assert "door" in asr.transcribe(x).text.lower()
    reused = asr.whisper_encoder_states(x)
    fresh = turn_states(encode(asr.model, x), x.size)
    assert reused.shape == (int(np.ceil(x.size / 320)), 384)
    np.testing.assert_allclose(reused, fresh, atol=1e-4)
    f = pool(reused)
    np.testing.assert_allclose(f[:384], reused.mean(0), rtol=1e-5)
    np.testing.assert_allclose(f[384:], reused.std(0), rtol=1e-4, atol=1e-6)


def held_out_session(tmp_path, actor: int):
    """One held-out actor's strong-intensity clips and the neutral/calm ones (first repetition)
    in a seeded shuffled order, 1.5 s apart: a conversation with one voice."""
    from robot_emotion.data.ravdess import ravdess_clips
    from robot_emotion.train.voice_features import read_clip, speech_span

    clips = [
        c
        for c in ravdess_clips(ravdess_or_skip() / f"Actor_{actor:02d}")
        if (c.intensity == "02" or c.label == "neutral") and c.path.split("-")[-2] == "01"
    ]
    clips = [clips[i] for i in np.random.default_rng(actor).permutation(len(clips))]
    gap = np.zeros(24000, np.float32)
    parts, truth, t = [gap], [], 1.5
    for c in clips:
        x = read_clip(c.path)
        a, b = speech_span(x)
        x = x[max(0, a - 1600) : b + 1600]
        truth.append((t, t + x.size / 16000, c.label))
        parts += [x, gap]
        t += x.size / 16000 + 1.5
    wav = tmp_path / f"actor{actor}.wav"
    sf.write(wav, np.concatenate(parts), 16000)
    return wav, truth


@pytest.mark.slow
def test_held_out_actors_voice_read_right_through_the_node(tmp_path):
    """Actors 19 and 20 are outside the shipped model: replayed through the node, each clip's
    final `emotion` carries the voice's own reading (branches.audio) and it names the clip's
    emotion for the majority of their clips (7 classes: chance is 1 in 7)."""
    from robot_emotion.config import load
    from robot_emotion.node.runner import replay

    right = total = 0
    for actor in (19, 20):  # (in this process: the second replay reuses the loaded models)
        wav, truth = held_out_session(tmp_path, actor)
        events = []
        node = replay(
            load(None, overrides=['publish.endpoint="tcp://127.0.0.1:*"'])[0], str(wav), sinks=[events.append]
        )
        assert not node.errors, node.errors
        emo = [m for m in events if m.get("topic") == "emotion" and m.get("final") and m.get("label")]
        for m in emo:
            assert m["modalities"]["audio"] and set(m["branches"]) >= {"audio"}
            assert abs(sum(b["weight"] for b in m["branches"].values()) - 1) < 1e-3
            assert -1 <= m["valence"] <= 1 and 0 <= m["arousal"] <= 1
            assert m["latency_ms"]["audio"] < 50  # the recogniser's encoding, not a second pass
        for a, b, label in truth:
            said = [
                m["branches"]["audio"]["label"] for m in emo if min(b, m["end"]) - max(a, m["start"]) > 0.3 * (b - a)
            ]
            total += 1
            right += label in said
    assert right > total / 2, f"voice right on {right} of {total} held-out clips"


def test_evaluate_speech_reports_accuracy_confusion_and_reliability(tmp_path):
    src = ravdess_or_skip() / "Actor_20"
    folder = tmp_path / "clips"
    folder.mkdir()
    for f in sorted(src.glob("03-01-0[1-8]-02-01-01-20.flac")) + [src / "03-01-01-01-01-01-20.flac"]:
        shutil.copy(f, folder / f.name)
    out, js = tmp_path / "report", tmp_path / "eval.json"
    r = run_cli("evaluate", "--speech", folder, "--out", out, "--json", js, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8 clips" in r.stdout and "UA" in r.stdout
    rep = json.loads(js.read_text())
    assert rep["n"] == 8 and 0 <= rep["balanced_accuracy"] <= 1 and 0 <= rep["ece"] <= 1
    assert sum(map(sum, rep["confusion_matrix"])) == 8 and len(rep["reliability"]) == 10
    for png in ("confusion.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a CSV of path,label works the same; bad input is one line and exit 3
    (tmp_path / "l.csv").write_text("path,label\nclips/03-01-05-02-01-01-20.flac,anger\n")
    r = run_cli("evaluate", "--speech", tmp_path / "l.csv", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and "1 clips" in r.stdout, r.stderr[-2000:]
    (tmp_path / "bad.csv").write_text("path,label\nclips/x.flac,happyish\n")
    for bad in (tmp_path / "bad.csv", tmp_path / "nowhere"):
        r = run_cli("evaluate", "--speech", bad)
        assert r.returncode == 3 and r.stderr.strip().count("\n") == 0 and "error:" in r.stderr, r.stderr
