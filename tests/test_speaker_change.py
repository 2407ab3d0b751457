"""The learned speaker change model (audio/speaker_change.py): its cut rule, its checkpoint,
and what it finds on real voices it was never fit on (../shared/emotion_speech/ravdess)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED
from robot_emotion.audio.speaker_change import (
    ASSET,
    ChangeModelUnavailable,
    SpeakerChangeModel,
    frame_times,
    load,
    peaks,
)

SR = 16000
RAVDESS = SHARED / "emotion_speech" / "ravdess"


def test_peaks_cut_at_the_top_of_each_run_and_keep_pieces_long_enough():
    p = np.zeros(500)  # 10 s of states
    p[100:110] = np.linspace(0.6, 0.9, 10)  # a run peaking at frame 109
    p[120:125] = 0.95  # another run 0.2 s later, stronger: wins, the first is dropped
    p[300:303] = 0.7  # a third, far enough
    p[495:] = 0.99  # too near the end: a 0.1 s piece
    cuts = peaks(p, 0.5, 0.8)
    t = frame_times(500)
    assert cuts == pytest.approx([t[120], t[300]])
    assert peaks(p, 0.999, 0.8) == []
    assert peaks(np.zeros(0), 0.5, 0.8) == []


def test_the_shipped_model_says_what_it_is_and_where_it_was_fit():
    m = load()
    assert 0 < m.threshold < 1
    assert m.fit["script"] == "benchmarks/speaker_change/train.py"
    assert "dev split" in m.fit["data"] and "test figures are reported only" in m.fit["note"]
    test = m.fit["figures"]["test/segments"]
    assert test["changes"] > 50 and 0 <= test["f1"] <= 1
    n = sum(p.numel() for p in m.net.parameters())
    assert 20_000 < n < 200_000  # small: it runs on every segment


def test_a_missing_or_broken_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(ChangeModelUnavailable, match="no speaker change model"):
        load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ASSET.read_bytes()[:1000])
    with pytest.raises(ChangeModelUnavailable, match="cannot load speaker change model"):
        SpeakerChangeModel(bad)


def _clip(actor: int, statement: int) -> np.ndarray:
    """A neutral RAVDESS statement of an actor (16 kHz), its leading and trailing silence cut."""
    from scipy.signal import resample_poly

    path = RAVDESS / f"Actor_{actor:02d}" / f"03-01-01-01-{statement:02d}-01-{actor:02d}.flac"
    if not path.is_file():
        pytest.skip(f"{path} is not here (../shared)")
    x, sr = sf.read(path, dtype="float32")
    x = resample_poly(x if x.ndim == 1 else x.mean(axis=1), SR, sr).astype(np.float32)
    loud = np.flatnonzero(np.abs(x) > 0.05 * np.abs(x).max())
    return x[max(0, loud[0] - 800) : loud[-1] + 800]


@pytest.fixture(scope="module")
def ident():
    from robot_emotion.audio.speaker_identity import IdentityEncoder

    return IdentityEncoder()


def test_real_voices_joined_by_50_ms_are_cut_near_the_join_and_one_voice_is_not(ident):
    """Real voices of the corpus's TEST split (RAVDESS actors 11-20: never fit on), a man and a
    woman or two of one sex, joined with 50 ms of silence (no pause detector sees that): most
    joins are cut within 0.3 s; one actor's two statements joined the same way are rarely cut."""
    m = load()
    gap = np.zeros(int(0.05 * SR), np.float32)
    pairs = [(11, 12), (13, 15), (14, 16), (17, 18), (19, 20), (12, 14)]
    found = false = 0
    for a, b in pairs:
        x = _clip(a, 1)
        onset = (x.size + gap.size + 800) / SR  # where the second voice's speech begins
        cuts = m.cuts(ident.frames(np.concatenate([x, gap, _clip(b, 2)])), ident, 0.8)
        found += len(cuts) == 1 and abs(cuts[0] - onset) <= 0.3
        false += len(m.cuts(ident.frames(np.concatenate([x, gap, _clip(a, 2)])), ident, 0.8))
    print(f"\nchanges found {found} of {len(pairs)}, cuts in one voice {false} of {len(pairs)}")
    assert found >= 4
    assert false <= 1


def test_window_embeddings_are_the_networks_own(ident):
    """``contrast`` pools states as the network pools an utterance: with each window holding one
    whole clip's states, the cosine at their junction is that of the two clips' embeddings."""
    x, y = _clip(11, 1), _clip(12, 1)
    fx, fy = ident.frames(x), ident.frames(y)
    w = max(len(fx), len(fy))
    c = ident.contrast(np.vstack([fx, fy]), (w, 10))
    assert c.shape == (len(fx) + len(fy), 2)
    assert c[len(fx), 0] == pytest.approx(float(ident.embed(x) @ ident.embed(y)), abs=1e-3)  # (float32 sums)
    assert ident.contrast(np.vstack([fx, fx]), (len(fx),))[len(fx), 0] == pytest.approx(1.0, abs=1e-5)
    assert (c[:4] == 1).all()  # under 5 states on one side: no evidence
    # a window's embedding pooled from the states is the network's own embedding of that audio
    assert float(ident.pool(fx) @ ident.embed(x)) == pytest.approx(1.0, abs=1e-5)
    assert ident.pool(fx[:2]) is None
