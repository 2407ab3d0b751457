"""The learned overlap model (audio/overlap.py): its checkpoint, its onset rule, what it finds
on real voices it was never fit on (RAVDESS actors 11-20: the corpus's test voices), and the
``overlap`` flag of the node's pieces."""

from __future__ import annotations

import numpy as np
import pytest

from robot_emotion.audio.overlap import ASSET, OverlapModel, OverlapModelUnavailable, at_onset, load, overlap_end
from robot_emotion.audio.speaker_change import frame_times
from test_speaker_change import SR, _clip

PAIRS = [(11, 12), (13, 15), (14, 16), (17, 18), (19, 20), (12, 14)]


def test_the_shipped_model_says_what_it_is_and_where_it_was_fit():
    m = load()
    assert 0 < m.threshold < 1
    assert m.fit["script"] == "benchmarks/overlap/train.py"
    assert "dev split" in m.fit["data"] and "test figures are reported only" in m.fit["note"]
    test = m.fit["figures"]["test/all"]["onsets"]
    assert test["true"] > 30 and 0 <= test["f1"] <= 1
    assert 10_000 < sum(p.numel() for p in m.net.parameters()) < 200_000  # small: it runs on every cut segment


def test_a_missing_or_broken_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(OverlapModelUnavailable, match="no overlap model"):
        load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ASSET.read_bytes()[:1000])
    with pytest.raises(OverlapModelUnavailable, match="cannot load overlap model"):
        OverlapModel(bad)


def test_onset_looks_just_before_and_half_a_second_after_a_start():
    p = np.zeros(200)  # 4 s of states
    t = frame_times(200)
    p[(t > 2.3) & (t < 2.4)] = 0.9
    assert at_onset(p, 2.0, 0.5)  # 0.3-0.4 s after the start: inside
    assert at_onset(p, 2.5, 0.5)  # 0.1-0.2 s before it: inside
    assert not at_onset(p, 1.5, 0.5)  # 0.8 s after: the piece was already going
    assert not at_onset(p, 2.0, 0.95)
    assert not at_onset(np.zeros(0), 0.0, 0.5)
    # where that overlap stops: the first frame under the threshold after the run
    assert overlap_end(p, 2.0, 0.5) == pytest.approx(t[np.flatnonzero(t < 2.4)[-1] + 1])
    assert overlap_end(p, 2.5, 0.5) == 2.5  # the run ended before the start: no earlier than it
    assert overlap_end(p, 1.5, 0.5) is None


@pytest.fixture(scope="module")
def ident():
    from robot_emotion.audio.speaker_identity import IdentityEncoder

    return IdentityEncoder()


def _mix(a: np.ndarray, b: np.ndarray, offset_s: float) -> tuple[np.ndarray, float, float]:
    """``b`` starting ``offset_s`` after ``a`` ends (negative: over its last part). Returns the
    mix and b's start and a's end (s)."""
    start = a.size + int(offset_s * SR)
    x = np.zeros(max(a.size, start + b.size), np.float32)
    x[: a.size] += a
    x[start : start + b.size] += b
    return x, start / SR, a.size / SR


def test_real_voices_talking_at_once_are_found_and_a_gap_is_not(ident):
    """Two test actors: the second starts 0.5 s before the first ends (two voices at once), or
    0.2 s after (no overlap). Over most pairs the onset flag is right both ways, and the
    overlapped stretch scores higher than either voice alone."""
    m = load()
    hits = false = 0
    inside, alone, ends = [], [], []
    for a, b in PAIRS:
        x, y = _clip(a, 1), _clip(b, 2)
        mix, start, end = _mix(x, y, -0.5)
        p = m.probabilities(ident.frames(mix))
        t = frame_times(p.size)
        found = m.onsets(ident.frames(mix), [start])[0]
        hits += found is not None
        ends += [] if found is None else [found - end]  # where the overlap was heard to stop
        inside.append(float(p[(t > start + 0.1) & (t < end - 0.1)].mean()))
        alone.append(float(p[(t > end + 0.3) | (t < start - 0.3)].mean()))
        mix, start, _ = _mix(x, y, 0.2)
        false += m.onsets(ident.frames(mix), [start])[0] is not None
    print(f"\noverlaps flagged {hits} of {len(PAIRS)}, gaps flagged {false}; mean p inside {np.round(inside, 2)}")
    print(f"overlap end heard minus true end (s): {np.round(ends, 2)}")
    assert hits >= 4
    assert np.median(np.abs(ends)) <= 0.3
    assert false <= 1
    assert np.median(inside) > np.median(alone) + 0.2


def test_the_piece_after_a_cut_over_another_voice_is_flagged(ident):
    """The tracker's split (real CAM++, change and overlap models): the new voice's piece is
    flagged where it came in over the other one, the first piece never is."""
    from robot_emotion.audio.speakers import SpeakerTracker

    tracker = SpeakerTracker(identity=ident)
    flagged = cut = 0
    for a, b in PAIRS:
        mix, start, _ = _mix(np.concatenate([_clip(a, 1), _clip(a, 2)]), _clip(b, 1), -0.5)
        pieces = tracker.split(mix, 10.0)
        assert not pieces[0].overlap
        near = [p for p in pieces[1:] if abs(p.start - 10.0 - start) <= 0.3]
        cut += bool(near)
        flagged += any(p.overlap for p in near)
        for p, q in zip(pieces, pieces[1:]):  # the voice before a flagged cut goes on under the next
            assert (p.heard_until is not None) == q.overlap
            assert p.heard_until is None or q.start <= p.heard_until <= q.end
    print(f"\ncut near the second voice in {cut} of {len(PAIRS)}, flagged {flagged}")
    assert cut >= 3 and flagged >= cut - 1


def test_the_training_truth():
    """benchmarks/overlap/train.py: frames with two voices are the targets; a change is an
    overlap start when the previous voice still speaks."""
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))
    from benchmarks.overlap import train

    truth = [["A", 0.0, 2.0], ["B", 1.5, 3.0], ["A", 3.1, 4.0]]
    assert train.voices_at(truth, np.array([1.0, 1.7, 3.05, 3.5])).tolist() == [1, 2, 0, 1]
    assert train.overlap_starts(truth, [1.5, 3.1]) == [True, False]


def test_the_scorer_counts_flags_against_turns_that_start_over_another_voice():
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))
    from benchmarks.conversations.score import overlap_flags

    turns = [
        {"start": 0.0, "overlap": False},
        {"start": 2.0, "overlap": True},
        {"start": 4.0, "overlap": True, "backchannel": True},  # too short to be a turn: not counted
        {"start": 6.0, "overlap": True},
    ]
    hyps = [{"start": 0.0, "overlap": False}, {"start": 2.2, "overlap": True}, {"start": 5.0, "overlap": True}]
    assert overlap_flags(turns, hyps) == {
        "overlap_turns": 2,
        "overlap_found": 1,
        "overlap_flagged": 2,
        "overlap_right": 1,
    }


def test_a_turn_talked_over_keeps_its_voice_in_its_spans():
    """The voice before a flagged cut goes on under the next speaker's: the turn's ``spans``
    (what diarization scores) run to where the overlap stopped, while its ``end`` stays the cut
    (where the next turn starts, and the audio the recogniser gets ends)."""
    from robot_emotion.audio.turns import Piece, Turn

    seg = object()
    first = Piece(seg, 0, False, 1.0, 3.0, "S0", heard_until=3.4)
    t = Turn("0", [Piece(seg, 0, False, 0.0, 0.8, "S0"), first])
    assert t.spans == [[0.0, 0.8], [1.0, 3.4]] and t.end == 3.0
    assert Turn("0", [Piece(seg, 0, False, 1.0, 3.0, "S0")]).spans == [[1.0, 3.0]]


@pytest.mark.slow
def test_the_node_publishes_the_flag_and_the_talked_over_span(tmp_path):
    """A real two-voice recording (test actors, never fit on) replayed through the node: one
    actor talks, the other comes in 0.5 s before the first has finished. The second voice's turn
    is published with ``overlap: true``; the turn it talked over runs its last span on past its
    ``end``, into the overlap; every utterance carries the field."""
    import soundfile as sf

    from robot_emotion.config import load as load_config
    from robot_emotion.node.runner import replay

    first = np.concatenate([_clip(13, 1), _clip(13, 2)])
    mix, start, _ = _mix(first, np.concatenate([_clip(16, 1), _clip(16, 2)]), -0.5)
    pad = np.zeros(SR, np.float32)
    wav = tmp_path / "overlap.wav"
    sf.write(wav, np.concatenate([pad, mix, pad]), SR)
    events = []
    node = replay(
        load_config(None, overrides=['publish.endpoint="tcp://127.0.0.1:*"'])[0], str(wav), sinks=[events.append]
    )
    assert not node.errors, node.errors
    finals = [m for m in events if m.get("topic") == "utterance" and m.get("final")]
    assert finals and all(isinstance(m["overlap"], bool) for m in finals)
    came_in = [m for m in finals if m["overlap"]]
    print("\n", [(m["start"], m["end"], m["speaker"], m["overlap"], m["spans"]) for m in finals])
    assert len(came_in) == 1 and abs(came_in[0]["start"] - 1.0 - start) <= 0.3
    before = [m for m in finals if m["end"] <= came_in[0]["start"] + 1e-6]
    assert before and before[-1]["speaker"] != came_in[0]["speaker"]
    assert before[-1]["spans"][-1][1] > before[-1]["end"]  # its voice went on under the new one


def test_a_missing_overlap_model_in_the_config_is_one_clear_error(tmp_path):
    from robot_emotion.config import load as load_config
    from robot_emotion.errors import InputError

    with pytest.raises(InputError, match="speakers.overlap_model.*overlap model not found"):
        load_config(None, overrides=[f'speakers.overlap_model="{tmp_path / "nope.pt"}"'])
    cfg = load_config(None, overrides=['speakers.overlap_model="off"'])[0]
    assert cfg.speakers.overlap_model == "off"
