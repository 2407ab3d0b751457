"""Text emotion branch: input building (past-only, left truncation), MELD CSV text reading,
the shipped default model, metrics and CSV evaluation."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from robot_emotion import EMOTIONS
from robot_emotion.data.meld import MeldClip, read_meld_csv
from robot_emotion.data.meld_text import fix_mojibake, with_past_context
from robot_emotion.train.metrics import classification_report, format_tables

DEV_CSV = Path(os.environ.get("MELD_DIR", Path(__file__).resolve().parents[2] / "shared" / "meld")) / "dev_sent_emo.csv"


@pytest.fixture(scope="module")
def encoder():
    from robot_emotion.features.text import TextEncoder

    return TextEncoder(device="cpu", max_tokens=40)


@pytest.fixture(scope="module")
def model():
    from robot_emotion.features.text_emotion import load_default_text_model

    return load_default_text_model(device="cpu")


def test_mojibake_repair():
    assert (
        fix_mojibake("Oh my God, heÂ’s lost it. HeÂ’s totally lost it.")
        == "Oh my God, he’s lost it. He’s totally lost it."
    )
    assert fix_mojibake("Itâ€™s okay â€” really") == "It’s okay — really"
    assert fix_mojibake("You\x92re a genius\x85") == "You’re a genius…"
    assert fix_mojibake("Ross: I’m fine, café") == "Ross: I’m fine, café"  # clean text untouched


def test_csv_reader_repairs_and_groups(tmp_path):
    f = tmp_path / "m.csv"
    rows = [
        ("1", "Utt two", "Ross", "joy", "1", "2"),
        ("2", "heÂ’s here", "Joey", "neutral", "1", "0"),
        ("3", "Utt one", "Rachel", "anger", "1", "1"),
        ("4", "Other", "Monica", "fear", "0", "0"),
    ]
    with open(f, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"])
        w.writerows(rows)
    utts = read_meld_csv(f)
    assert utts[1].text == "he’s here" and utts[0].label == EMOTIONS.index("joy")
    ctx = {u.text: h for u, h in with_past_context(utts)}
    assert ctx["Utt two"] == [("Joey", "he’s here"), ("Rachel", "Utt one")]
    assert ctx["he’s here"] == [] and ctx["Other"] == []
    assert [h for u, h in with_past_context(utts, max_turns=1) if u.text == "Utt two"][0] == [("Rachel", "Utt one")]


def test_build_input_never_sees_future_turns(encoder):
    utts = [
        MeldClip("dev", 7, i, spk, f"turn number {w} here", "neutral")
        for i, (spk, w) in enumerate([("Joey", "zero"), ("Ross", "one"), ("Joey", "two"), ("Ross", "three")])
    ]
    for u, hist in with_past_context(utts, max_turns=4):
        text = encoder.build_input(hist, (u.speaker, u.text))
        words = ["zero", "one", "two", "three"]
        for later in words[u.utterance_id + 1 :]:
            assert later not in text
        assert text.endswith(f"turn number {words[u.utterance_id]} here")
        if u.utterance_id:
            assert encoder.sep in text and text.index(encoder.sep) > text.index(words[u.utterance_id - 1])


def test_build_input_truncates_left_keeps_current(encoder):
    history = [("Joey", f"oldest{i} " + "blah " * 6) for i in range(6)] + [("Ross", "the newest past turn")]
    current = ("Rachel", "This current utterance must stay whole, every single word of it.")
    text = encoder.build_input(history, current)
    assert len(encoder.tokenizer(text)["input_ids"]) <= encoder.max_tokens
    assert text.endswith(": This current utterance must stay whole, every single word of it.")
    assert "the newest past turn" in text and "oldest0" not in text
    # the current utterance's tokens are marked for pooling
    batch = encoder.tokenize([text])
    toks = encoder.tokenizer.convert_ids_to_tokens(batch["input_ids"][0][batch["current_mask"][0]])
    assert "current" in toks and "newest" not in toks
    # with no history there is no separator and the whole utterance is the current one
    assert encoder.sep not in encoder.build_input([], ("Joey", "Hi."))


def test_classification_report_and_tables():
    y_true = ["joy", "joy", "anger", "neutral", "neutral", "neutral"]
    y_pred = ["joy", "neutral", "anger", "neutral", "neutral", "joy"]
    rep = classification_report(y_true, y_pred, EMOTIONS)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["balanced_accuracy"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert rep["per_class"]["joy"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert sum(map(sum, rep["confusion_matrix"])) == 6
    sk = pytest.importorskip("sklearn.metrics")
    assert rep["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))
    assert "| joy |" in format_tables(rep) and "weighted F1" in format_tables(rep)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_macro_f1_counts_a_class_predicted_but_never_true():
    """A class predicted but absent from the truth has F1 = 0 and counts in macro F1 (scikit-learn:
    0.667); averaging over the true classes only gave 0.889."""
    sk = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = [0, 1, 2, 2], [0, 1, 2, 3]
    rep = classification_report(y_true, y_pred, EMOTIONS)
    assert rep["macro_f1"] == pytest.approx(2 / 3) == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert rep["per_class"][EMOTIONS[3]] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    assert rep["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))
    assert rep["confusion_matrix"] == sk.confusion_matrix(y_true, y_pred, labels=range(len(EMOTIONS))).tolist()


def test_default_model_clear_cases(model):
    assert model.labels == EMOTIONS and model.meta["encoder"]["id"] == "all-MiniLM-L6-v2"
    probs, feat = model.predict([], ("A", "This is the best day of my life, I love it!"))
    assert probs.shape == (7,) and abs(float(probs.sum()) - 1) < 1e-4 and feat.shape == (384,)
    assert EMOTIONS[int(probs.argmax())] == "joy"
    batch, feats = model.predict_batch(
        [
            ([("B", "You ate my sandwich?")], ("A", "I hate you! Get out of my house!")),
            ([], ("A", "Oh my God! Really?! No way!")),
        ]
    )
    top2 = [{EMOTIONS[i] for i in np.argsort(-p)[:2]} for p in batch]
    assert top2[0] & {"anger", "disgust"}
    assert "surprise" in top2[1]
    assert feats.shape == (2, 384)
    # batching gives the same answer as one at a time
    single, _ = model.predict([("B", "You ate my sandwich?")], ("A", "I hate you! Get out of my house!"))
    np.testing.assert_allclose(single, batch[0], atol=1e-4)


def test_default_model_reads_its_past_turns_only(model):
    """The shipped model reads the current turn + its context_turns past turns: the recent past
    changes the answer, turns further back do not (and nothing after the current turn exists)."""
    k = model.context_turns
    assert k == model.meta["members"][0]["context_turns"] >= 1
    cur = ("A", "Yeah, right.")
    recent = [("B", "I got the job! They called this morning!"), ("A", "No way!")][-k:]
    old = [("B", "My dog died last week."), ("A", "I'm so sorry.")]
    alone, _ = model.predict([], cur)
    with_recent, _ = model.predict(recent, cur)
    with_older_too, _ = model.predict(old + recent, cur)
    assert np.abs(with_recent - alone).max() > 0.01
    np.testing.assert_allclose(with_older_too, with_recent, atol=1e-5)


@pytest.mark.skipif(not DEV_CSV.is_file(), reason=f"MELD dev CSV not available at {DEV_CSV}")
def test_evaluate_text_csv_first_rows(model):
    from robot_emotion.train.metrics import evaluate_text_csv

    rep = evaluate_text_csv(DEV_CSV, model, limit=100)
    truth = [u.emotion for u in read_meld_csv(DEV_CSV, limit=100)]
    assert rep["n"] == 100 and 0.0 <= rep["accuracy"] <= 1.0
    direct = np.mean([t == p for t, p in zip(truth, rep["predictions"])])
    assert rep["accuracy"] == pytest.approx(direct)
    assert rep["weighted_f1"] > 0.2  # far above chance on real dialogue


def _trained_looking(encoder, n_frozen, lora_rank, seed):
    """A TopModel whose every shipped tensor moved away from MiniLM (as training would move it)."""
    import torch

    from robot_emotion.train.text_model import TopModel

    torch.manual_seed(seed)
    top = TopModel(encoder, n_frozen, len(EMOTIONS), "current", 0.0, lora_rank=lora_rank)
    with torch.no_grad():
        for p in top.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        state = top.shipped_state()
        for k, v in top.head.state_dict().items():  # the reference uses the fp16 head the asset stores
            v.copy_(state[f"head.{k}"].float())
    return top.eval(), state


@pytest.mark.parametrize("lora_rank,n_members", [(0, 1), (4, 1), (4, 2)])
def test_trained_layers_round_trip_through_asset(encoder, tmp_path, lora_rank, n_members):
    """What training ships (full top layers or LoRA factors; one model or an averaged ensemble with
    a class bias) loads back into the same probabilities."""
    import json

    import torch
    from safetensors.torch import save_file

    from robot_emotion.features.text_emotion import TextEmotionModel
    from robot_emotion.train.text_model import cache_bottom, collate

    tops = [_trained_looking(encoder, 4 - k, lora_rank, seed=k) for k in range(n_members)]
    if lora_rank:  # low-rank deltas are a small fraction of the layers they adapt
        state = tops[0][1]
        assert any(k.endswith(".lora_A") for k in state)
        assert sum(v.numel() for v in state.values()) < 0.15 * sum(
            p.numel() for p in encoder.model.encoder.layer[4:].parameters()
        )
    meta = {
        "kind": "text_emotion",
        "labels": list(EMOTIONS),
        "pooling": "current",
        "max_tokens": 40,
        "encoder": {"id": encoder.id, "version": encoder.version},
    }
    bias = np.zeros(len(EMOTIONS))
    if n_members == 1:
        state = tops[0][1]
        meta["context_turns"] = 0
    else:
        state = {f"members.{k}.{name}": v for k, (_, st) in enumerate(tops) for name, v in st.items()}
        meta["members"] = [{"context_turns": 0} for _ in tops]
        bias = np.linspace(-0.5, 0.5, len(EMOTIONS))
        meta["prior_correction"] = {"log_bias": bias.tolist()}
    save_file(state, str(tmp_path / "text_emotion.safetensors"))
    (tmp_path / "text_emotion.json").write_text(json.dumps(meta))
    loaded = TextEmotionModel.load(str(tmp_path), device="cpu")
    assert len(loaded.members) == n_members

    texts = [encoder.build_input([], ("A", t)) for t in ["I can't believe you did that!", "Okay, fine."]]
    with torch.no_grad():
        ref = np.mean(
            [
                torch.softmax(top(*collate(cache_bottom(encoder, texts, top.first), "cpu"))[0], -1).numpy()
                for top, _ in tops
            ],
            axis=0,
        )
        ref = ref * np.exp(bias)
        ref /= ref.sum(1, keepdims=True)
        _, _, pooled = encoder.encode(texts)  # the same heads on plain MiniLM: the layers must matter
        plain = np.mean([torch.softmax(top.head(pooled), -1).numpy() for top, _ in tops], axis=0)
    got, feats = loaded.predict_batch([([], ("A", t)) for t in ["I can't believe you did that!", "Okay, fine."]])
    np.testing.assert_allclose(got, ref, atol=3e-3)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert feats.shape == (2, encoder.dim)
    assert np.abs(ref - plain * np.exp(bias) / (plain * np.exp(bias)).sum(1, keepdims=True)).max() > 0.01


def _write_meld_csv(path: Path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"])
        for i, (dia, utt, spk, text, emo) in enumerate(rows):
            w.writerow([i + 1, text, spk, emo, "neutral", dia, utt])


def test_trainer_end_to_end_ships_and_resumes(tmp_path):
    """tools/train_text_model.py's engine on a tiny MELD-format CSV: it writes assets the node loads,
    and a larger grid with --work-dir trains only the new member, reusing the saved one bit for bit."""
    from robot_emotion.features.text_emotion import TextEmotionModel
    from robot_emotion.train.text_model import Recipe
    from robot_emotion.train.text_model_grid import run

    lines = {
        "joy": "I love this, it's wonderful!",
        "anger": "Get out of my house right now!",
        "neutral": "The meeting is at three.",
        "surprise": "What?! No way! Really?",
        "sadness": "I miss her so much.",
        "fear": "Oh no, something is in the dark.",
        "disgust": "Ew, that is gross.",
    }
    rows = [(d, u, "AB"[u % 2], lines[e], e) for d in range(4) for u, e in enumerate(lines)]
    _write_meld_csv(tmp_path / "train.csv", rows)
    _write_meld_csv(tmp_path / "dev.csv", rows[:14])
    base = Recipe(epochs=1, batch_size=8, max_tokens=40)
    args = dict(
        contexts=(0,), alphas=(0.5,), base=base, ensemble=True, prior_betas=(0.0, 0.3), work_dir=str(tmp_path / "work")
    )
    logs: list[str] = []
    first = run(
        str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"), str(tmp_path / "a"), seeds=(1,), log=logs.append, **args
    )
    assert len(list((tmp_path / "work").glob("member-*.pt"))) == 1 and not any("reused" in s for s in logs)
    logs.clear()
    second = run(
        str(tmp_path / "train.csv"),
        str(tmp_path / "dev.csv"),
        str(tmp_path / "b"),
        seeds=(1, 2),
        log=logs.append,
        **args,
    )
    assert sum("reused" in s for s in logs) == 1 and len(list((tmp_path / "work").glob("member-*.pt"))) == 2
    assert second["results"][0]["dev_probs"] == first["results"][0]["dev_probs"]
    model = TextEmotionModel.load(str(tmp_path / "b"), device="cpu")
    assert len(model.members) == 2 and model.meta["dev_metrics"]["n"] == 14
    probs, _ = model.predict_batch([([], ("A", t)) for t in lines.values()])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
