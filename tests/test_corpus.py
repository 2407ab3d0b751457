"""The speaker-disjoint conversation corpus (benchmarks/conversations/make_corpus.py): the
turn-taking sampler, and a --small build checked against its own truth and a dry render."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SHARED

sys.path.insert(0, str(REPO))
from benchmarks.conversations import conditions as cd
from benchmarks.conversations import make_corpus as mc
from benchmarks.conversations import voices as vo

NEEDED = [
    SHARED / "emotion_speech" / "ravdess" / "Actor_01",
    SHARED / "speech" / "librispeech",
    SHARED / "speech" / "noise",
    SHARED / "speech" / "wsj0mix",
    SHARED / "conversations" / "ami" / "trn00.json",
]


# ------------------------------------------------------------------ sampler (no data needed)
def test_turn_taking_sampler_follows_the_measured_statistics():
    rng = np.random.default_rng(0)
    offs = np.array([mc.draw_offset(rng) for _ in range(20000)])
    gaps = offs[offs >= 0]
    assert 0.20 <= np.mean(offs < 0) <= 0.34  # a fifth to a third overlap
    assert 0.0 <= np.median(gaps) <= 0.30  # most gaps are short
    assert 0.0 <= np.median(offs) <= 0.30
    assert offs.max() <= 1.5 and np.percentile(gaps, 99) > 0.8  # a long tail, capped
    assert offs.min() >= -1.0 and np.percentile(offs, 1) < -0.5  # overlaps up to ~1 s
    pauses = np.array([mc.draw_pause(rng) for _ in range(5000)])
    assert pauses.min() >= 0.2 and pauses.max() <= 0.7
    assert 0.3 <= np.median(pauses) <= 0.5


def test_voiced_span_skips_a_click_before_the_speech():
    sr, rng = vo.SR, np.random.default_rng(1)
    x = rng.normal(0, 1e-4, 3 * sr)  # quiet floor
    x[int(0.40 * sr) : int(0.42 * sr)] += 0.3  # a 20 ms click
    t = np.arange(int(1.2 * sr)) / sr
    x[sr : sr + len(t)] += 0.2 * np.sin(2 * np.pi * 150 * t)  # "speech" 1.0-2.2 s
    a, b = vo.voiced_span(x)
    assert abs(a - 1.0) <= 0.02 and abs(b - 2.2) <= 0.02


# ------------------------------------------------------------------------- the small build
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    missing = [p for p in NEEDED if not p.exists()]
    if missing:
        pytest.skip(f"{missing[0]} is absent (the corpus is built from ../shared)")
    root = tmp_path_factory.mktemp("corpus")
    convs: list = []
    index = mc.build(root / "a", small=True, cache_dir=root / "cache", log=lambda s: None, keep=convs)
    truths = {p.stem: json.loads(p.read_text()) for p in sorted((root / "a").glob("*/*.json"))}
    return root, index, truths, convs


def test_splits_are_speaker_disjoint(corpus):
    _, index, truths, _ = corpus
    dev, test = (set(index["splits"][s]["voices"]) for s in ("dev", "test"))
    assert dev and test and not dev & test
    lib = mc.Library(SHARED)
    assert set(lib.split_voices("test")) == {f"ravdess_{n}" for n in range(11, 21)} | {"libri_spk2"}
    assert not set(lib.split_voices("dev")) & set(lib.split_voices("test"))
    assert any(v.startswith("ami_") for v in lib.split_voices("dev"))
    for t in truths.values():
        assert t["name"].startswith(t["split"] + "_")
        assert set(t["speakers"]) <= set(lib.split_voices(t["split"]))
        assert set(t["voices"]) == set(t["speakers"]) == set(t["gain_db"])


def test_truth_matches_the_audio_and_itself(corpus):
    root, _, truths, _ = corpus
    assert {t["condition"] for t in truths.values()} == set(mc.CONDITIONS)
    for name, t in truths.items():
        x, sr = sf.read(str(root / "a" / t["split"] / f"{name}.wav"), dtype="int16")
        assert sr == 16000 and x.ndim == 1 and abs(len(x) / sr - t["duration"]) < 1e-3
        assert 2 <= len(t["speakers"]) <= 4
        assert {s for s, _, _ in t["segments"]} == set(t["speakers"])
        assert max(t["gain_db"].values()) - min(t["gain_db"].values()) <= 10.0
        for s, a, b in t["segments"]:
            assert 0 <= a < b <= t["duration"]
            assert any(u["spk"] == s and u["start"] - 1e-3 <= a and b <= u["end"] + 1e-3 for u in t["turns"]), (
                name,
                s,
                a,
                b,
            )
        for u in t["turns"]:  # a turn spans its speech: it starts and ends on a segment
            segs = [
                (a, b) for s, a, b in t["segments"] if s == u["spk"] and u["start"] - 1e-3 <= a and b <= u["end"] + 1e-3
            ]
            assert abs(segs[0][0] - u["start"]) < 2e-3 and abs(segs[-1][1] - u["end"]) < 2e-3
            assert u["text"]
        assert t["full_text"] == " ".join(u["text"] for u in t["turns"])
        for e in t["nonspeech"]:  # non-speech lies between or after the turns
            assert 0 <= e["start"] < e["end"] <= t["duration"]
            assert not any(a < e["end"] and b > e["start"] for _, a, b in t["segments"])
        if t["condition"] == "noisy":
            assert 0 <= t["snr_db"] <= 20
        if t["condition"] == "reverb":
            assert 0.2 <= t["rt60"] <= 1.0 and 0.3 <= t["rt60_target"] <= 0.8


def test_turn_taking_in_the_built_conversations(corpus):
    _, index, truths, _ = corpus
    offs = [o for t in truths.values() for o in mc.change_offsets(t)]
    assert offs and min(offs) >= -1.0 - 1e-3 and max(offs) <= 1.5 + 1e-3
    for t in truths.values():
        for u in t["turns"]:
            if u["backchannel"] or u["spk"].startswith("ami_"):
                continue  # (an AMI clip may hold several reference segments)
            segs = sorted(
                (a, b) for s, a, b in t["segments"] if s == u["spk"] and u["start"] - 1e-3 <= a and b <= u["end"] + 1e-3
            )
            for (_, b), (a, _) in zip(segs, segs[1:]):  # pauses between a turn's clips
                assert 0.2 - 2e-3 <= a - b <= 0.7 + 2e-3
    assert index["totals"]["speaker_changes"] == len(offs)


def test_backchannels_sit_inside_another_speakers_turn(corpus):
    _, index, truths, _ = corpus
    bcs = [(t, u) for t in truths.values() for u in t["turns"] if u["backchannel"]]
    assert bcs and index["totals"]["backchannels"] == len(bcs)
    for t, u in bcs:
        assert u["overlap"] and len(u["text"].split()) == 1 and u["end"] - u["start"] <= 0.8
        assert any(
            v["spk"] != u["spk"] and not v["backchannel"] and v["start"] < u["start"] and u["end"] < v["end"]
            for v in t["turns"]
        )
        if not u["spk"].startswith("ami_"):  # a word whisper cut out of the voice's own clip
            assert u["end"] - u["start"] <= 0.6 + 1e-3
            texts = " ".join(list(vo.RAVDESS_TEXT.values()) + list(vo.LIBRI_TEXT.values()))
            assert u["text"] in {vo._norm_word(w) for w in texts.split()}


def _band_share(x: np.ndarray, lo_hz: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[f > lo_hz].sum() / spec.sum())


def test_telephone_has_no_energy_above_3600_hz(corpus):
    root, _, truths, _ = corpus
    share = {
        t["condition"]: _band_share(sf.read(str(root / "a" / t["split"] / f"{n}.wav"))[0], 3600)
        for n, t in truths.items()
    }
    assert share["telephone"] < 1e-3 < 1e-2 < share["clean"]


def test_noisy_and_reverb_against_the_dry_render(corpus):
    root, _, truths, convs = corpus
    lib = mc.Library(SHARED, cache_dir=root / "cache")
    for conv in convs:
        t = truths[conv["name"]]
        mix = mc.render(conv, lib)
        # what was written is this render
        wav, _ = sf.read(str(root / "a" / t["split"] / f"{t['name']}.wav"), dtype="int16")
        assert np.array_equal(mc.to_pcm(mix), wav)
        if t["condition"] not in ("noisy", "reverb"):
            continue
        dry = mc.render(conv, lib, "clean")
        speech = [(a, b) for _, a, b in t["segments"]]
        if t["condition"] == "noisy":  # the difference is the noise, at the drawn SNR
            snr = 20 * np.log10(cd.active_rms(dry, speech) / np.sqrt(np.mean((mix - dry) ** 2)))
            assert abs(snr - t["snr_db"]) < 0.5
        else:  # reverberant, same level, truth still on the direct path
            assert np.sqrt(np.mean((mix - dry) ** 2)) > 0.3 * np.sqrt(np.mean(dry**2))
            assert abs(20 * np.log10(cd.active_rms(mix, speech) / cd.active_rms(dry, speech))) < 1.5
            busy = [(a, b) for a, b in speech] + [(e["start"], e["end"]) for e in t["nonspeech"]]
            ends = [b for _, b in speech if not any(c < b + 0.3 and d > b for c, d in busy)]
            assert ends
            ratios = []  # after speech that nothing follows: the room's decaying tail
            for e in ends:
                tail = slice(int((e + 0.02) * 16000), int((e + 0.15) * 16000))
                ratios.append(np.mean(mix[tail] ** 2) / np.mean(dry[tail] ** 2))
            assert min(ratios) > 1.2 and max(ratios) > 3, ratios
            assert all(int(np.argmax(np.abs(h))) == 0 for h in conv["_rirs"].values())
            onsets = [a for a in sorted(a for a, _ in speech) if not any(c < a and d > a - 0.4 for c, d in busy)]
            assert onsets
            for a in onsets:  # speech from silence rises where the truth says, dry and wet
                rise = []
                for y in (dry, mix):
                    db = vo.frame_db(y[int((a - 0.2) * 16000) : int((a + 0.2) * 16000)])
                    rise.append(int(np.argmax(db > db[:15].max() + 10)))
                assert abs(rise[0] - rise[1]) <= 2 and abs(rise[0] - 20) <= 3, (a, rise)


def test_the_build_is_deterministic(corpus):
    root, _, _, _ = corpus
    mc.build(root / "b", small=True, cache_dir=root / "cache", log=lambda s: None)
    files = sorted(p.relative_to(root / "a") for p in (root / "a").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(root / "b") for p in (root / "b").rglob("*") if p.is_file())
    for f in files:
        assert (root / "a" / f).read_bytes() == (root / "b" / f).read_bytes(), f


def test_truth_speech_times_follow_the_audio(corpus):
    """In the clean conversation the truth's speech is loud and the rest quiet, and speech
    that starts from silence starts where the truth says (the clips were trimmed right)."""
    root, _, truths, _ = corpus
    t = next(t for t in truths.values() if t["condition"] == "clean")
    x, _ = sf.read(str(root / "a" / t["split"] / f"{t['name']}.wav"))
    db = vo.frame_db(x)
    speech = np.zeros(len(db), bool)
    near = np.zeros(len(db), bool)  # speech +- 80 ms margins and the non-speech events
    for _, a, b in t["segments"]:
        speech[int(a * 100) + 2 : int(b * 100) - 2] = True
        near[max(0, int(a * 100) - 8) : int(b * 100) + 8] = True
    for e in t["nonspeech"]:
        near[int(e["start"] * 100) - 8 : int(e["end"] * 100) + 8] = True
    assert np.median(db[speech]) - np.median(db[~near]) > 20
    assert np.percentile(db[~near], 95) < np.median(db[speech]) - 10
    onsets = 0
    for _, a, _ in t["segments"]:
        if (
            a > 0.3
            and not near[int(a * 100) - 25 : int(a * 100) - 8].any()
            and not any(c < a - 0.05 and d > a - 0.25 for _, c, d in t["segments"])
        ):
            before = np.mean(db[int(a * 100) - 15 : int(a * 100) - 5])
            after = np.mean(db[int(a * 100) : int(a * 100) + 10])
            assert after - before > 15, (t["name"], a)
            onsets += 1
    assert onsets >= 1
