"""The speaker tracker's learned decisions (audio/voice_decisions.py) and the script that fits
them on the conversation corpus's development voices (benchmarks/voice_decisions/fit.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED
from robot_emotion.audio.voice_decisions import DecisionsUnreadable, VoiceDecisions, shipped


def test_the_shipped_models_say_where_they_were_fit_and_how_they_did_on_test():
    d = shipped()
    assert d.meta["script"] == "benchmarks/voice_decisions/fit.py"
    assert "dev split" in d.meta["data"]
    for split in ("dev", "test"):
        for model in ("changed", "same", "same_identity"):
            fig = d.meta[split][model]
            assert fig["n"] > 500, (split, model, fig)
            assert fig["balanced_accuracy"] > 0.7, (split, model, fig)  # far above chance (0.5)


def test_the_shipped_models_behave_like_voices():
    d = shipped()
    # the more alike, the more likely the same voice, at every duration
    for dur in (0.3, 1.0, 3.0):
        p = d.p_same(np.linspace(-0.2, 1.0, 25), dur)
        assert np.all(np.diff(p) > 0), dur
        assert p[0] < 0.1 and p[-1] > 0.9, dur
    # where "same" starts lies between the cosines of different and of one voice (GE2E)
    for dur in (0.3, 1.0, 3.0):
        grid = np.linspace(0, 1, 1001)
        edge = grid[np.argmax(d.p_same(grid, dur) >= 0.5)]
        assert 0.45 < edge < 0.9, (dur, edge)
    # a new segment nearer another known voice than the open turn's: a change; the reverse: not
    assert d.changed(own=0.45, other=0.85, dur=1.0) and not d.changed(own=0.85, other=0.45, dur=1.0)
    p = d.p_changed(np.linspace(0.3, 0.95, 14), 0.5, 1.0)
    assert np.all(np.diff(p) < 0)  # the nearer the own voice, the less a change


def test_the_shipped_identity_model_behaves_like_voices():
    """CAM++ cosines: monotone, a clear edge, and through a telephone (where CAM++ finds every
    voice more alike) "same" asks for a higher cosine than on wideband audio."""
    d = shipped()
    assert d.uses_identity
    grid = np.linspace(-0.2, 1.0, 1201)
    for dur in (0.5, 1.0, 3.0):
        edges = []
        for nb in (False, True):
            p = d.p_same_identity(grid, dur, nb)
            assert np.all(np.diff(p) > 0) and p[0] < 0.1 and p[-1] > 0.9, (dur, nb)
            edges.append(grid[np.argmax(p >= 0.5)])
        assert 0.0 < edges[0] < edges[1] < 0.9, (dur, edges)
    # a whole piece nearer another known voice than the open turn's: a change; the reverse: not
    assert d.has_changed_identity
    for nb in (False, True):
        p = d.p_changed_identity(np.linspace(0.0, 0.9, 10), 0.2, 2.0, nb)
        assert np.all(np.diff(p) < 0), nb  # the nearer the own voice, the less a change
        assert d.p_changed_identity(0.1, 0.7, 2.0, nb)[0] > 0.5 > d.p_changed_identity(0.7, 0.1, 2.0, nb)[0]


def test_a_bad_decisions_file_is_one_clear_error(tmp_path):
    for text in (
        "not json",
        json.dumps({"same": {"coef": [1, 2], "intercept": 0}}),
        json.dumps(
            {"same": {"coef": [1, 2, "nan"], "intercept": 0}, "changed": {"coef": [1, 2, 3, 4, 5], "intercept": 0}}
        ),
    ):
        p = tmp_path / "d.json"
        p.write_text(text)
        with pytest.raises(DecisionsUnreadable, match="cannot read speaker decision models"):
            VoiceDecisions.load(p)
    with pytest.raises(DecisionsUnreadable):
        VoiceDecisions.load(tmp_path / "missing.json")


def test_save_and_load_round_trip(tmp_path):
    d = shipped()
    d.save(tmp_path / "d.json", {"script": "x"})
    e = VoiceDecisions.load(tmp_path / "d.json")
    cos, dur = np.linspace(0, 1, 11), np.full(11, 0.7)
    assert np.allclose(d.p_same(cos, dur), e.p_same(cos, dur))
    assert np.allclose(d.p_changed(cos, 1 - cos, dur), e.p_changed(cos, 1 - cos, dur))
    assert e.uses_identity and np.allclose(d.p_same_identity(cos, dur, True), e.p_same_identity(cos, dur, True))
    assert np.allclose(d.p_changed_identity(cos, 1 - cos, dur, 1), e.p_changed_identity(cos, 1 - cos, dur, 1))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """make_corpus.py --small: dev gets a clean and a telephone conversation (~11 s to build)."""
    if not (SHARED / "emotion_speech" / "ravdess").is_dir():
        pytest.skip(f"{SHARED}/emotion_speech/ravdess is not here: no corpus to fit on")
    corpus = tmp_path_factory.mktemp("small") / "corpus"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks/conversations/make_corpus.py"), str(corpus), "--small"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return corpus


def test_fit_replays_the_nodes_situations_on_a_small_corpus(small_corpus, tmp_path):
    """The committed fit script on a --small corpus: the examples come from the node's own
    VAD segments with the truth's speakers; the CLI either fits (a loadable file whose
    provenance names the dev split) or, when the tiny dev split lacks a kind, says so in one
    line (exit 2)."""
    import soundfile as sf

    sys.path.insert(0, str(REPO))
    from benchmarks.voice_decisions import fit
    from robot_emotion.audio.speaker_identity import IdentityEncoder
    from robot_emotion.audio.voice_encoder import VoiceEncoder
    from robot_emotion.config import VADConfig

    corpus, out = small_corpus, tmp_path / "d.json"
    enc, ident, rows_c, rows_s, rows_w = VoiceEncoder(), IdentityEncoder(), [], [], []
    # silero at 0.5: on the two --small conversations the default 0.15 bridges the one short
    # pause after which a probe is asked (a larger corpus has plenty at either threshold)
    vad = VADConfig(threshold=0.5)
    for js in sorted((corpus / "dev").glob("*.json")):  # (--small: a clean and a telephone one)
        truth = json.loads(js.read_text())
        audio, _ = sf.read(js.with_suffix(".wav"), dtype="float32")
        c, s, w = fit.examples(truth, audio, enc, ident, 0.5, vad)
        rows_c += c
        rows_s += s
        rows_w += w
        spans = [(a, b) for _, a, b in truth["segments"]]
        assert all(any(a - 0.5 <= r[4] <= b for a, b in spans) for r in c)  # probes start on speech
    assert rows_c and rows_s
    assert {r[2] for r in rows_c} <= set(fit.PROBE_TIMES) and {r[3] for r in rows_c} <= {0, 1}
    assert all(-1 <= r[0] <= 1 and -1 <= r[1] <= 1 for r in rows_c)
    assert {r[4] for r in rows_s} == {0, 1}  # own voice and others' voices both met
    assert all(-1 <= r[0] <= 1 and -1 <= r[1] <= 1 and r[3] in (0, 1) for r in rows_s)
    # the telephone conversation's pieces, and only they, are narrowband
    assert {r[3] for r in rows_s} == {0.0, 1.0}
    # whole segments that may continue the open turn, on CAM++: as long as the segment
    assert rows_w and all(-1 <= r[0] <= 1 and -1 <= r[1] <= 1 and r[2] > 0.1 and r[4] in (0, 1) for r in rows_w)
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/voice_decisions/fit.py"), str(corpus), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode == 0:
        d = VoiceDecisions.load(out)
        assert "dev split" in d.meta["data"] and "test figures are reported only" in d.meta["note"]
    else:
        assert r.returncode == 2 and "examples of both kinds" in r.stderr.strip().splitlines()[-1], r.stderr[-500:]
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/voice_decisions/fit.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "no dev/" in r.stderr


def test_the_change_model_trains_on_a_small_corpus(small_corpus, tmp_path):
    """benchmarks/speaker_change/train.py on the same corpus: the checkpoint it writes loads and
    says where it was fit; in the sequences it collected (its --features cache) the truth's
    changes land inside the node's VAD segments and label their frames."""
    sys.path.insert(0, str(REPO))
    from benchmarks.speaker_change import train
    from robot_emotion.audio.speaker_change import SpeakerChangeModel

    # joins: as many one-voice pairs as two-voice ones (where there are), the change in the gap
    a1, a2, b = (np.full(n, v, np.float32) for n, v in ((16000, 0.5), (8000, 0.25), (4000, -0.5)))
    made = train.joins([("A", a1), ("A", a2), ("B", b)], np.random.default_rng(0), 4)
    one, two = [x for x, c in made if not c], [(x, c[0]) for x, c in made if c]
    assert len(one) == 2 and len(two) == 4  # A1 A2 and A2 A1; A with B four ways
    for x in one + [x for x, _ in two]:
        assert 0.03 * 16000 <= int((x == 0).sum()) <= 0.3 * 16000  # 30-300 ms of silence
    assert all(x[int(c * 16000)] == 0 for x, c in two)  # the change sits in the gap
    # a segment's changes: only where the voice changes inside it (the voice heard before the
    # segment is not its first speaker)
    truth = [("A", 0.0, 1.0), ("B", 2.0, 3.0), ("A", 3.05, 4.0), ("B", 3.8, 5.0)]
    assert train.true_changes(truth, 1.5, 5.5) == [3.05, 3.8]
    assert train.true_changes(truth, 0.0, 2.5) == [2.0]
    out, cache = tmp_path / "change.pt", tmp_path / "seqs.npz"
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/speaker_change/train.py"),
            str(small_corpus),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--features",
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-500:]
    m = SpeakerChangeModel(out)
    assert m.fit["script"] == "benchmarks/speaker_change/train.py" and "dev split" in m.fit["data"]
    assert "test/segments" in m.fit["figures"] and 0 < m.threshold < 1
    seqs = train.load_cache(cache)["dev"]
    segs = [s for s in seqs if s["kind"] == "segment"]
    assert segs and all(len(s["x"]) == len(s["y"]) and s["name"].startswith("dev_") for s in seqs)
    assert all(((c > 0) & (c < 0.02 * len(s["y"]))).all() for s in segs for c in [s["changes"]])
    assert any(len(s["changes"]) for s in segs) and all(s["y"].any() == bool(len(s["changes"])) for s in seqs)


def test_the_vad_threshold_fit_runs_on_a_small_corpus(small_corpus, tmp_path):
    """benchmarks/vad/fit.py: a threshold from its grid, fit on dev (no AMI folder given here),
    with every part's figures written; no corpus is one line and exit 2."""
    out = tmp_path / "vad.json"
    fit = str(REPO / "benchmarks/vad/fit.py")
    r = subprocess.run(
        [sys.executable, fit, str(small_corpus), "--ami", str(tmp_path / "none"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-500:]
    got = json.loads(out.read_text())
    assert got["threshold"] in got["grid"] and f"vad.threshold = {got['threshold']}" in r.stdout
    assert {k.split("@")[0] for k in got["figures"]} >= {"dev", "test"}
    assert all(0 <= v["der"] == pytest.approx(v["miss"] + v["false_alarm"], abs=2e-4) for v in got["figures"].values())
    r = subprocess.run([sys.executable, fit, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no dev/ and test/" in r.stderr
