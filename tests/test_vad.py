"""The streaming segmenter on real (espeak-ng) speech."""

import dataclasses

import numpy as np
import pytest

from conftest import espeak
from robot_emotion.audio.vad import GAP_AUDIO_S, Segmenter, SileroFrames, SpeechEnd, SpeechStart, TurnGap
from robot_emotion.config import VADConfig
from robot_emotion.media import read_wav_tolerant


def segment(audio, cfg=VADConfig(), block=480):
    seg, events = Segmenter(cfg), []
    for i in range(0, audio.size, block):
        events += seg.push(i / 16000, audio[i : i + block])
    return events + seg.flush(audio.size / 16000)


def test_every_turn_found_within_150ms(dialogue_session):
    folder, truth = dialogue_session
    events = segment(read_wav_tolerant(folder / "audio.wav"))
    ends = [e for e in events if isinstance(e, SpeechEnd) and not e.dropped]
    turns = truth["turns"]
    gaps = [b["start"] - a["end"] for a, b in zip(turns, turns[1:])]
    assert min(gaps) < 0.3, "the demo must contain quick turn-taking"
    assert len(ends) == len(turns), [(round(e.start, 2), round(e.end, 2)) for e in ends]
    for turn, e in zip(turns, ends):
        assert abs(e.start - turn["start"]) <= 0.15, (turn, e.start)
        assert abs(e.end - turn["end"]) <= 0.15, (turn, e.end)


def test_start_precedes_end_and_ids_pair_up(dialogue_session):
    folder, _ = dialogue_session
    events = segment(read_wav_tolerant(folder / "audio.wav"), block=333)  # odd block size
    open_ids, prev_end = [], None
    for ev in events:
        if isinstance(ev, SpeechStart):
            assert not open_ids, "two utterances open at once"
            open_ids.append(ev.utterance_id)
            assert ev.decided_at >= ev.start
        elif isinstance(ev, SpeechEnd):
            assert open_ids == [ev.utterance_id]
            open_ids.clear()
            assert ev.end > ev.start and ev.decided_at >= ev.end
            # the audio handed on covers [pre-roll (or the pause since the last segment), decided_at]
            assert ev.audio.size / 16000 == pytest.approx(ev.decided_at - ev.audio_t0, abs=0.021)
            assert ev.audio_t0 <= ev.start - 0.1 or ev.audio_t0 == 0.0
            if prev_end is not None and ev.start - prev_end.decided_at < GAP_AUDIO_S:
                assert ev.audio_t0 <= prev_end.decided_at + 0.011  # no hole
            prev_end = ev
        else:
            assert isinstance(ev, TurnGap) and not open_ids
            assert ev.t - ev.last_end >= VADConfig().turn_gap_ms / 1000 - 1e-6
    assert not open_ids


def test_monologue_is_cut_at_max_length():
    words = espeak("this sentence keeps going and going without any real pause at all", speed=150)
    audio = np.concatenate([words] * 6)  # ~20 s of continuous speech
    # a long hangover so word pauses never end it: only the max-length cut can
    cfg = dataclasses.replace(VADConfig(), max_utterance_s=4.0, hangover_ms=1000)
    ends = [e for e in segment(audio, cfg) if isinstance(e, SpeechEnd)]
    forced = [e for e in ends if e.forced]
    assert len(forced) >= 3
    assert all(e.end - e.start <= 4.0 + 0.03 for e in ends)
    # cuts are seamless: the next utterance starts where the forced one ended
    for a, b in zip(ends, ends[1:]):
        if a.forced:
            assert b.start == pytest.approx(a.end, abs=1e-6)


def test_short_blip_is_dropped_but_still_closed():
    word = espeak("yes", speed=200)
    audio = np.concatenate([np.zeros(8000, np.int16), word, np.zeros(16000, np.int16)])
    cfg = dataclasses.replace(VADConfig(), min_utterance_ms=1000)
    events = segment(audio, cfg)
    assert [type(e).__name__ for e in events] == ["SpeechStart", "SpeechEnd"]
    assert events[1].dropped


def test_silence_and_noise_yield_nothing():
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 30, 16000 * 3)).astype(np.int16)  # -60 dBFS hiss
    assert segment(noise) == []
    assert segment(np.zeros(16000 * 2, np.int16)) == []


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_frame_sizes(frame_ms, dialogue_session):
    folder, truth = dialogue_session
    audio = read_wav_tolerant(folder / "audio.wav")
    cfg = dataclasses.replace(VADConfig(), frame_ms=frame_ms)
    ends = [e for e in segment(audio, cfg) if isinstance(e, SpeechEnd)]
    # every frame size finds every turn start within 150 ms
    for turn in truth["turns"]:
        assert min(abs(e.start - turn["start"]) for e in ends) <= 0.15


def test_silero_backend(dialogue_session):
    pytest.importorskip("silero_vad")
    folder, truth = dialogue_session
    audio = read_wav_tolerant(folder / "audio.wav")[: 16000 * 8]
    cfg = dataclasses.replace(VADConfig(), backend="silero")
    ends = [e for e in segment(audio, cfg, block=512) if isinstance(e, SpeechEnd)]
    first = truth["turns"][0]
    assert ends and abs(ends[0].start - first["start"]) <= 0.2


def test_silero_threshold_and_its_fit_replay_the_nodes_segmenter(dialogue_session):
    """benchmarks/vad/fit.py scores thresholds from silero's stored probabilities: at any
    threshold its segments are exactly the live segmenter's; a higher threshold keeps no more
    speech than a lower one."""
    pytest.importorskip("silero_vad")
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))
    from benchmarks.vad import fit

    folder, _ = dialogue_session
    audio = read_wav_tolerant(folder / "audio.wav")[: 16000 * 8]
    probs = SileroFrames.probabilities(audio)
    covered = {}
    for th in (0.2, 0.5, 0.9):
        cfg = dataclasses.replace(VADConfig(), backend="silero", threshold=th)
        n = probs.size * 512
        live = [
            (e.start, e.end) for e in segment(audio[:n], cfg, block=480) if isinstance(e, SpeechEnd) and not e.dropped
        ]
        assert fit.segments(audio, probs, th) == live, th
        covered[th] = sum(e - s for s, e in live)
    assert covered[0.2] >= covered[0.5] >= covered[0.9] and covered[0.5] > 2.0, covered
