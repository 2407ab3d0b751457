"""Replay: sessions, media files, determinism across speeds, and one-line errors."""

import json

import numpy as np
import soundfile as sf

from conftest import FACE_CLIP, MELD_CLIP, NO_PERCEPTION, by_topic, collect, run_cli, shared_file, spine_cfg
from robot_emotion.bus import messages
from robot_emotion.node.runner import replay


def test_replay_publishes_schema_complete_messages(dialogue_session):
    folder, truth = dialogue_session
    events, node = collect(spine_cfg(), folder)
    for e in events:
        messages.validate(e)
        assert e["session"] == "demo-0" and e["v"] == messages.SCHEMA_VERSION
    utts = by_topic(events, "utterance")
    assert len(utts) == len(truth["turns"])
    assert [u["seq"] for u in utts] == list(range(len(utts)))
    # every speech.start is published before its speech.end, which precedes the utterance
    order = [(e["topic"], e.get("utterance_id")) for e in events if e["topic"] != "status"]
    for u in utts:
        i_start = order.index(("speech.start", u["utterance_id"]))
        i_end = order.index(("speech.end", u["utterance_id"]))
        assert i_start < i_end < order.index(("utterance", u["utterance_id"]))


def test_max_speed_equals_recorded_pace(short_session):
    folder, _ = short_session
    fast, _ = collect(spine_cfg(), folder, speed="max")
    paced, _ = collect(spine_cfg(), folder, speed=1.0)
    for topic in ("speech.start", "speech.end", "utterance"):
        assert by_topic(fast, topic) == by_topic(paced, topic)
        assert by_topic(fast, topic), topic


def test_video_and_audio_files(tmp_path):
    clip = shared_file(MELD_CLIP)
    events, node = collect(spine_cfg(), clip)
    utts = by_topic(events, "utterance")
    assert len(utts) >= 1 and utts[0]["start"] < 1.0 and utts[-1]["end"] > 1.5
    # the same speech written as a 16 kHz wav replays to the same segments
    from robot_emotion.media import decode_audio

    wav = tmp_path / "clip.wav"
    sf.write(wav, decode_audio(clip), 16000, subtype="PCM_16")
    events2, _ = collect(spine_cfg(), wav)
    assert [(u["start"], u["end"]) for u in by_topic(events2, "utterance")] == [(u["start"], u["end"]) for u in utts]


def test_out_file_has_one_json_body_per_message(short_session, tmp_path):
    folder, _ = short_session
    out = tmp_path / "events.jsonl"
    r = run_cli("replay", folder, "--out", out, *sum([["--set", o] for o in NO_PERCEPTION], []))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"speech.start", "speech.end", "utterance"} <= {b["topic"] for b in lines}
    assert all({"v", "topic", "seq", "session", "stamp"} <= set(b) for b in lines)
    assert "speech.start" in r.stdout  # the human-readable stream on stdout


def _one_line_error(r, code, fragment):
    assert r.returncode == code, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("robot-emotion: error:"), err
    assert fragment in err, err


def test_bad_inputs_give_one_line_errors(tmp_path):
    _one_line_error(run_cli("replay", tmp_path / "nope.mp4"), 3, "not found")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    _one_line_error(run_cli("replay", corrupt), 3, "corrupt.mp4")
    stereo = tmp_path / "stereo48k.wav"
    sf.write(stereo, np.zeros((48000, 2), np.int16), 48000)
    _one_line_error(run_cli("replay", stereo), 3, "48000 Hz, 2 channel(s)")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really a wav")
    _one_line_error(run_cli("replay", garbage), 3, "garbage.wav")
    _one_line_error(run_cli("replay", tmp_path), 3, "no session.json")
    _one_line_error(run_cli("replay", "--demo", "--speed", "fast"), 2, "--speed")


def test_truncated_video_is_refused_or_replayed_up_to_the_cut(tmp_path):
    clip = shared_file(FACE_CLIP)
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # moov atom lost: not decodable
    r = run_cli("replay", cut, *sum([["--set", o] for o in NO_PERCEPTION], []))
    assert r.returncode in (0, 3)
    if r.returncode == 3:
        assert r.stderr.strip().count("\n") == 0 and "cut.mp4" in r.stderr


def test_resample_flag_accepts_48k_stereo(tmp_path, dialogue_session):
    folder, _ = dialogue_session
    import scipy.signal as ss
    from robot_emotion.media import read_wav_tolerant

    audio = read_wav_tolerant(folder / "audio.wav")[: 16000 * 6].astype(np.float32) / 32768
    up = ss.resample_poly(audio, 3, 1)
    wav = tmp_path / "s48.wav"
    sf.write(wav, np.stack([up, up], 1), 48000)
    out = []
    node = replay(spine_cfg(), str(wav), sinks=[out.append], resample=True)
    assert not node.errors and by_topic(out, "utterance")
