"""Offline mode on a generated mini-MELD: extraction resumes after an interruption, then
train (2 epochs) -> evaluate (report md/json/png) -> replay of a demo session with the new
checkpoint publishes one `emotion` per utterance. Budget: < 3 minutes on the 2-core CPU."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MELD_CLIP, load_tool, run_cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    tool = load_tool("tools/make_mini_meld")
    root = tmp_path_factory.mktemp("mini_meld")
    t0 = time.monotonic()
    counts = tool.make_mini_meld(root / "MELD.Raw", train=12, dev=6, test=6, seed=0)
    text_dir = tool.write_probe_text_model(root / "text_model")
    return {
        "root": root,
        "meld": root / "MELD.Raw",
        "text": text_dir,
        "cache": root / "cache",
        "counts": counts,
        "gen_s": time.monotonic() - t0,
    }


@pytest.fixture(scope="module")
def extracted(mini):
    """Interrupted extraction (limit=3, plus a half-written temp file), then the resumed run."""
    from robot_emotion.data.meld import open_meld
    from robot_emotion.train.extract import ExtractSpec, cache_identity, cache_key, extract, split_dir

    splits = open_meld(mini["meld"], ("train", "dev"))
    spec = ExtractSpec(str(mini["text"]), "gold", "cpu")
    usable = sum(len(s.clips) for s in splits.values())
    t0 = time.monotonic()
    first = extract(splits, spec, mini["cache"], limit=3, progress=False)
    d = split_dir(mini["cache"] / cache_key(cache_identity(spec)), splits["train"])
    name = splits["train"].clips[5].name
    (d / f"{name}.npz.tmp999.npz").write_bytes(b"half written")  # killed mid-write
    second = extract(splits, spec, mini["cache"], progress=False)
    third = extract(splits, spec, mini["cache"], progress=False)
    return {
        "splits": splits,
        "usable": usable,
        "first": first,
        "second": second,
        "third": third,
        "seconds": time.monotonic() - t0,
    }


def test_extraction_resumes(extracted):
    first, second, third, usable = extracted["first"], extracted["second"], extracted["third"], extracted["usable"]
    assert first["processed"] + len(first["failed"]) == 3 and first["cached"] == 0
    assert second["cached"] == 3  # the first 3 are not redone
    assert second["processed"] + len(second["failed"]) == usable - 3
    assert third["processed"] == 0 and third["cached"] == usable
    found = first["face_found"] + second["face_found"]
    assert found >= 0.7 * (first["processed"] + second["processed"])
    print(
        f"\nextraction: {usable} clips, {second['clips_per_s']:.2f} clips/s (resumed run), "
        f"speaker's face found in {found}/{first['processed'] + second['processed']}"
    )


def test_chain_train_evaluate_replay(mini, extracted, tmp_path, demo_tool):
    t0 = time.monotonic()
    ckpt = tmp_path / "model.pt"
    r = run_cli(
        "train",
        "--meld",
        mini["meld"],
        "--cache",
        mini["cache"],
        "--text-model",
        mini["text"],
        "--epochs",
        "2",
        "--optimizer",
        "adamw",
        "--class-weights",
        "--out",
        ckpt,
        "--quiet",
        "--device",
        "cpu",
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped dia125_utt3: known corrupt" in r.stdout and "skipped dia110_utt7" in r.stdout
    assert "speaker's face found in" in r.stdout and ckpt.is_file()
    import torch

    ck = torch.load(ckpt, weights_only=True)
    assert ck["family"] == "crossmodal-embracenet" and set(ck["dims"]) == {"text", "audio", "face"}
    assert ck["training"]["text_model_dir"] and len(ck["training"]["history"]) >= 1
    assert any(k.startswith("unimodal.text.") for k in ck["extra_state"])
    assert ck["encoders"]["audio"]["id"] == "whisper-tiny.en-encoder"

    report = tmp_path / "report"
    r = run_cli(
        "evaluate",
        "--meld",
        mini["meld"],
        "--split",
        "test",
        "--model",
        ckpt,
        "--out",
        report,
        "--json",
        tmp_path / "eval.json",
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["rows"]["multimodal"]["n"] > 0
    for f in ("report.md", "report.json", "confusion.png", "tsne.png", "training_curves.png"):
        assert (report / f).is_file() and (report / f).stat().st_size > 0, f
    rep = json.loads((report / "report.json").read_text())
    assert {
        "audio",
        "face",
        "text",
        "multimodal",
        "multimodal - text",
        "multimodal - audio",
        "multimodal - face",
    } <= set(rep["rows"])
    md = (report / "report.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "balanced acc." in md
    assert rep["meta"]["data"] == "test split of " + "/".join(Path(rep["meta"]["csv"]).parts[-3:])
    assert rep["meta"]["data"] in md.splitlines()[0] and "MELD.Raw/test_sent_emo.csv" in rep["meta"]["data"]
    assert any("final_videos_test" in s[0] for s in rep["meta"]["skips"])

    session = tmp_path / "demo"
    truth = demo_tool.make_session(session, turns=3, seed=2)
    out = tmp_path / "replay.jsonl"
    r = run_cli("replay", session, "--model", ckpt, "--out", out, "--quiet", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    bodies = [json.loads(line) for line in out.read_text().splitlines()]
    emotions = [b for b in bodies if b["topic"] == "emotion" and b["final"]]
    utts = [b for b in bodies if b["topic"] == "utterance" and b["final"]]
    assert len(emotions) == len(utts) == len(truth["turns"])
    for e in emotions:
        assert e["label"] is not None and abs(sum(e["probs"].values()) - 1) < 1e-4
        assert e["modalities"]["text"] and e["modalities"]["audio"]
    total = extracted["seconds"] + mini["gen_s"] + time.monotonic() - t0
    print(
        f"\nchain: generate {mini['gen_s']:.0f} s + extract {extracted['seconds']:.0f} s + "
        f"train/evaluate/replay {time.monotonic() - t0:.0f} s = {total:.0f} s"
    )
    assert total < 180


def test_fixture_clip_face(mini, extracted):
    """The real MELD clip went through the same path: report whether the speaker's face was found."""
    if not MELD_CLIP.is_file():
        pytest.skip(f"{MELD_CLIP} is absent")
    from robot_emotion.train.extract import load_split

    cache = Path(extracted["second"]["cache"])
    feats, y, metas, names = load_split(cache, extracted["splits"]["train"])
    meta = metas[names.index("dia1_utt0")]
    assert meta["frames"] > 5 and meta["tracks"] >= 1
    print(
        f"\nreal MELD clip dia1_utt0: {meta['tracks']} track(s), speaker's face "
        f"{'found' if meta['face_found'] else 'NOT found'} (confidence {meta['face_confidence']:.2f}), "
        f"{meta['seconds']:.1f} s"
    )


def _tiny_meld(root: Path, clip_bytes: bytes, n: int = 4) -> Path:
    """A MELD-format test split (CSV + clip files named like MELD's); the clips' content is `clip_bytes`."""
    import csv
    from robot_emotion import EMOTIONS

    (root / "output_repeated_splits_test").mkdir(parents=True)
    with open(root / "test_sent_emo.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
        for i in range(n):
            w.writerow([i + 1, f"line {i}", "Ross", EMOTIONS[i % 7], "neutral", 0, i])
            (root / "output_repeated_splits_test" / f"dia0_utt{i}.mp4").write_bytes(clip_bytes)
    return root


def test_feature_cache_is_per_dataset(tmp_path):
    """Two MELD-format folders with the same clip names never share cached features: the second
    finds nothing cached (before the fix it reused all of the first one's); the first still does."""
    from robot_emotion.data.meld import open_meld
    from robot_emotion.train.extract import (
        ExtractSpec,
        cache_identity,
        cache_key,
        dataset_identity,
        extract,
        save_features,
        split_dir,
    )

    text_dir = load_tool("tools/make_mini_meld").write_probe_text_model(tmp_path / "text")
    spec = ExtractSpec(str(text_dir), "gold", "cpu")
    a = open_meld(_tiny_meld(tmp_path / "a", b"A" * 32), ("test",))
    b = open_meld(_tiny_meld(tmp_path / "b", b"B" * 32), ("test",))
    cache = tmp_path / "cache" / cache_key(cache_identity(spec))
    for clip in a["test"].clips:  # pretend dataset a was extracted
        split_dir(cache, a["test"]).mkdir(parents=True, exist_ok=True)
        save_features(split_dir(cache, a["test"]) / f"{clip.name}.npz", {}, {"label": clip.label})
    assert split_dir(cache, a["test"]) != split_dir(cache, b["test"])
    assert extract(a, spec, tmp_path / "cache", limit=0, progress=False, log=lambda *_: None)["cached"] == 4
    assert extract(b, spec, tmp_path / "cache", limit=0, progress=False, log=lambda *_: None)["cached"] == 0
    # same folder read again: same place; a clip rewritten with other content (size): another place
    before = split_dir(cache, a["test"])
    assert split_dir(cache, open_meld(tmp_path / "a", ("test",))["test"]) == before
    (tmp_path / "a" / "output_repeated_splits_test" / "dia0_utt2.mp4").write_bytes(b"A" * 33)
    again = open_meld(tmp_path / "a", ("test",))["test"]
    assert split_dir(cache, again) != before
    ident = dataset_identity(again)
    assert ident["csv"][0] == str((tmp_path / "a" / "test_sent_emo.csv").resolve()) and len(ident["clips"]) == 4


def _history(f1s):
    return [
        {
            "epoch": i + 1,
            "train_loss": 2.0 - 0.1 * i,
            "dev_loss": 1.9 - 0.05 * i,
            "dev_accuracy": f,
            "dev_weighted_f1": f,
        }
        for i, f in enumerate(f1s)
    ]


def test_report_figures():
    """Confusion matrix: a colour bar and a title naming the data evaluated; curves: one colour
    per model in both panels and a star on the kept (best dev) epoch of each model."""
    import matplotlib.pyplot as plt
    from robot_emotion.train.fit import chosen_epoch
    from robot_emotion.train.report import confusion_figure, confusion_title, curves_figure

    meta = {"model": "early:m.pt", "data": "dev split of x/MINI/dev_sent_emo.csv", "split": "dev", "n": 9}
    title = confusion_title(meta)
    assert "dev split of x/MINI/dev_sent_emo.csv" in title and "n=9" in title and "MELD test" not in title
    fig = confusion_figure(np.eye(7, dtype=int) * 3, title)
    assert len(fig.axes) == 2 and "true class" in fig.axes[1].get_ylabel()  # the colour bar
    assert fig.axes[0].get_title() == title
    plt.close(fig)

    training = {
        "history": _history([0.2, 0.5, 0.4, 0.45]),
        "unimodal": {"text": {"history": _history([0.3, 0.3, 0.6])}},
    }
    assert chosen_epoch(training["history"]) == 2 and chosen_epoch(training["unimodal"]["text"]["history"]) == 3
    assert chosen_epoch(_history([0.3, 0.3])) == 1  # ties: the first (fit_model keeps the first best)
    fig = curves_figure(training)
    loss, f1 = fig.axes
    colours = {}
    for ax in (loss, f1):
        for line in ax.lines:
            name = line.get_label().removeprefix("_chosen ").removesuffix(" train").removesuffix(" dev")
            colours.setdefault(name, set()).add(line.get_color())
    assert set(colours) == {"fusion", "unimodal text"} and all(len(c) == 1 for c in colours.values())
    assert colours["fusion"] != colours["unimodal text"]
    stars = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in f1.lines if ln.get_marker() == "*"}
    assert stars == {"_chosen fusion": ([2], [50.0]), "_chosen unimodal text": ([3], [60.0])}
    assert sum(ln.get_marker() == "*" for ln in loss.lines) == 2
    assert "kept epoch (best dev wF1)" in [t.get_text() for t in f1.get_legend().get_texts()]
    plt.close(fig)


def test_each_clip_is_featurized_as_if_first(mini):
    """The face pipeline starts every clip afresh (FacePipeline.reset: tracks, rate clock, the
    search schedule, the followed boxes), so a clip's face features do not depend on the clip
    before it: the real face video gives the same features after itself and after the MELD clip
    as when it comes first (not following the boxes where the clip before left its faces)."""
    from conftest import FACE_CLIP, shared_file
    from robot_emotion.train.extract import ClipFeaturizer, ExtractSpec

    face, meld = shared_file(FACE_CLIP), shared_file(MELD_CLIP)
    fz = ClipFeaturizer(ExtractSpec(str(mini["text"]), "gold", "cpu", ("asr.enabled=false",)))
    first = fz.featurize(str(face), "A", "hello there", [])
    assert first["meta"]["face_found"] and first["meta"]["tracks"] >= 1
    for before in (face, meld):
        if before == meld:
            fz.featurize(str(meld), "Joey", "the waitress", [])
        again = fz.featurize(str(face), "A", "hello there", [])
        assert again["meta"]["tracks"] == first["meta"]["tracks"]
        np.testing.assert_array_equal(again["arrays"]["face_seq"], first["arrays"]["face_seq"])
