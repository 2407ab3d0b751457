"""The whole node on the demo session: transcripts, speakers, faces, active speaker, emotion."""

import numpy as np
import pytest

from conftest import MELD_CLIP, shared_file
from robot_emotion import EMOTIONS
from robot_emotion.bus import messages
from robot_emotion.config import load
from robot_emotion.node.runner import replay

ENDPOINT = 'publish.endpoint="tcp://127.0.0.1:*"'


def run(source, *overrides, speed="max"):
    cfg, _ = load(None, overrides=[ENDPOINT, *overrides])
    events = []
    node = replay(cfg, str(source), speed=speed, sinks=[events.append])
    assert not node.errors, node.errors
    return events, node


def topic(events, name, final_only=True):
    """Messages of a topic in publish order; for utterance/emotion only the FINAL result of
    each turn unless final_only=False (provisional ones carry final: false)."""
    got = sorted((e for e in events if e["topic"] == name), key=lambda e: e["seq"])
    return [e for e in got if e.get("final") is not False] if final_only else got


@pytest.fixture(scope="module")
def full_run(dialogue_session):
    folder, truth = dialogue_session
    events, node = run(folder)
    return events, node, truth


def _truth_turn(truth, utt):
    """The truth turn overlapping an utterance the most."""

    def overlap(t):
        return min(t["end"], utt["end"]) - max(t["start"], utt["start"])

    return max(truth["turns"], key=overlap)


def test_every_utterance_is_transcribed_and_attributed(full_run):
    events, node, truth = full_run
    utts = topic(events, "utterance")
    assert len(utts) >= len(truth["turns"])
    from robot_emotion.audio.asr import wer

    errors = [wer(_truth_turn(truth, u)["text"], u["text"]) for u in utts if u["end"] - u["start"] > 1.0]
    print(f"demo transcripts: median WER {np.median(errors):.2f}")
    assert np.median(errors) <= 0.35  # espeak-ng voices through Whisper tiny.en
    assert all(u["speaker"] is not None for u in utts)
    # each voice keeps one id (voice clustering, checked against the speaking face)
    tops = []
    for spk in ("A", "B"):
        ids = [u["speaker"] for u in utts if _truth_turn(truth, u)["speaker"] == spk]
        top = max(set(ids), key=ids.count)
        assert ids.count(top) / len(ids) >= 0.9, (spk, ids)
        tops.append(top)
    assert tops[0] != tops[1]


def test_speaking_face_is_assigned(full_run):
    events, node, truth = full_run
    faces = topic(events, "face")
    assert len(faces) >= 0.8 * 5 * truth["turns"][-1]["end"]  # ~5 Hz
    assert np.median([len(f["tracks"]) for f in faces]) == 2
    # map track ids to the left/right face by box centre
    side = {}
    for f in faces:
        for tr in f["tracks"]:
            cx = (tr["box"][0] + tr["box"][2]) / 2
            side.setdefault(tr["id"], []).append("left" if cx < f["frame_size"][0] / 2 else "right")
    side = {k: max(set(v), key=v.count) for k, v in side.items()}
    assert sorted(side.values()) == ["left", "right"], side  # one id per face throughout
    utts = topic(events, "utterance")
    right = [u["face_track"] is not None and side.get(u["face_track"]) == _truth_turn(truth, u)["face"] for u in utts]
    print(f"active speaker correct for {sum(right)}/{len(right)} utterances")
    assert sum(right) / len(right) >= 0.8


def test_one_emotion_per_utterance(full_run):
    events, node, truth = full_run
    utts, emos = topic(events, "utterance"), topic(events, "emotion")
    assert [e["utterance_id"] for e in emos] == [u["utterance_id"] for u in utts]
    # every result, provisional or final, is an utterance followed by its emotion
    every_u, every_e = topic(events, "utterance", False), topic(events, "emotion", False)
    assert [(u["utterance_id"], u["final"]) for u in every_u] == [(e["utterance_id"], e["final"]) for e in every_e]
    assert all(u["final"] for u in utts) and len({u["utterance_id"] for u in utts}) == len(utts)
    for e in every_e:
        messages.validate(e)
        assert set(e["probs"]) == set(EMOTIONS)
        assert abs(sum(e["probs"].values()) - 1.0) < 1e-4
        assert e["label"] == max(e["probs"], key=e["probs"].get)
        assert e["modalities"]["text"] is True and e["modalities"]["audio"] is True  # the voice branch
        assert e["modalities"]["face"] == (e["face_track"] is not None)
        assert set(e["branches"]) == {m for m, used in e["modalities"].items() if used}
        assert abs(sum(b["weight"] for b in e["branches"].values()) - 1.0) < 1e-3
        assert e["latency_ms"]["total"] > 0
    # the history recorded every turn's emotion
    turns = node.history.turns()
    assert len(turns) == len(utts) and all(t.emotion in EMOTIONS for t in turns)


def test_no_face_in_view_gives_audio_only_utterances(demo_tool, tmp_path):
    folder = tmp_path / "noface"
    demo_tool.make_session(folder, turns=3, seed=2, with_video=False)
    events, _ = run(folder)
    utts, emos = topic(events, "utterance"), topic(events, "emotion")
    assert len(utts) == 3 and not topic(events, "face")
    assert all(u["face_track"] is None and u["text"] for u in utts)
    assert all(e["modalities"] == {"text": True, "audio": True, "face": False} for e in emos)


def test_camera_off_profile(short_session):
    folder, truth = short_session
    events, _ = run(folder, "camera.enabled=false")
    assert not topic(events, "face")
    assert all(u["face_track"] is None for u in topic(events, "utterance"))
    assert len(topic(events, "emotion")) == len(topic(events, "utterance")) >= len(truth["turns"])


def test_replay_speeds_agree_with_all_stages(short_session):
    folder, _ = short_session
    fast, _ = run(folder)
    paced, _ = run(folder, speed=1.0)
    for name in ("utterance", "emotion", "face"):
        a = [messages.reproducible(e) for e in topic(fast, name)]
        b = [messages.reproducible(e) for e in topic(paced, name)]
        assert a == b and a, name


def test_meld_clip_transcript(record_property):
    clip = shared_file(MELD_CLIP)
    from robot_emotion.audio.asr import wer

    events, _ = run(clip)
    text = " ".join(u["text"] for u in topic(events, "utterance"))
    ref = "But then who? The waitress I went out with last month?"
    score = wer(ref, text)
    record_property("meld_clip_wer", score)
    print(f"MELD clip through the node: {text!r} WER {score:.3f}")
    # The clip's audio starts at ~0.25 s with "The waitress": MELD's cut dropped "But then
    # who?" (3 of the CSV line's 11 words), so 3/11 = 27.3% is the floor against the CSV text.
    # Against what is audible the transcript must be (near) exact: at most one word of 8 off
    # (Whisper's int8 kernels differ from CPU to CPU: on an AMD EPYC "went out" reads "went on").
    audible = "The waitress I went out with last month?"
    record_property("meld_clip_wer_audible", wer(audible, text))
    assert score <= 4 / 11 + 1e-9
    assert wer(audible, text) <= 1 / 8 + 1e-9


def test_long_utterance_publishes_partial_transcripts(tmp_path):
    """A ~9 s monologue with a partial every 3 s: partials, then the final utterance."""
    import soundfile as sf
    from conftest import espeak

    # two different lines (the same line twice reads like a decoding loop: asr.py)
    lines = [
        "the robot keeps listening while I keep talking about my long day at work",
        "first the train was late and then the office was locked for an hour",
    ]
    audio = np.concatenate(
        [np.zeros(8000, np.int16)] + [espeak(t, speed=150) for t in lines] + [np.zeros(16000, np.int16)]
    )
    wav = tmp_path / "mono.wav"
    sf.write(wav, audio, 16000, subtype="PCM_16")
    events, _ = run(
        wav, "vad.hangover_ms=1000", "asr.partial_after_s=3", "emotion.enabled=false", "speakers.enabled=false"
    )
    partials, utts = topic(events, "utterance.partial"), topic(events, "utterance")
    assert len(utts) >= 1 and len(partials) >= 1
    p = partials[0]
    assert p["utterance_id"] == utts[0]["utterance_id"] and p["end"] < utts[0]["end"]
    assert "robot" in p["text"].lower()
    assert len(p["text"]) < len(utts[0]["text"])


def readme_samples() -> dict[str, dict]:
    """The sample messages of the README's "What a controller receives" (```json blocks)."""
    import json
    import re
    from conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## What a controller receives", 1)[1].split("\n## ", 1)[0]
    return {b["topic"]: b for b in (json.loads(s) for s in re.findall(r"```json\n(.*?)\n```", section, re.S))}


def test_readme_samples_are_what_the_node_publishes(full_run):
    """Every sample in the README is a valid message, one per topic, and has exactly the fields
    the node publishes for that topic on the demo (status: a subset, its counters vary)."""
    events, _, _ = full_run
    samples = readme_samples()
    assert set(samples) == set(messages.TOPICS) - {"utterance.partial"}, sorted(samples)
    for body in samples.values():
        messages.validate(body)
    real = {}
    for e in sorted(events, key=lambda e: e["seq"]):
        if e["topic"] not in real and e.get("final", True) and (e["topic"] != "utterance" or e["speaker"]):
            real[e["topic"]] = e
    wall = {"backlog", "processing"}  # (a replay at --speed max only: README shows recorded pace)
    for name, body in samples.items():
        if name not in real:
            continue  # device: live only
        if name == "status":
            assert set(body) <= set(real[name]), set(body) - set(real[name])
            continue
        assert set(body) == set(real[name]), (name, set(body) ^ set(real[name]))
        if isinstance(body.get("latency_ms"), dict):
            assert set(body["latency_ms"]) == set(real[name]["latency_ms"]) - wall, name
        if name == "face":
            assert set(body["tracks"][0]) == set(real[name]["tracks"][0])
    assert {"face", "utterance", "emotion", "ready", "session.end", "speech.start", "speech.end"} <= set(real)
