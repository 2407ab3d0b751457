"""Classification metrics (scikit-learn, in the paper's table layout) + evaluation of a text model on a MELD CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from robot_emotion import EMOTIONS


def _indices(y: Sequence, labels: list[str]) -> np.ndarray:
    idx = {name: i for i, name in enumerate(labels)}
    out = []
    for v in y:
        if isinstance(v, (int, np.integer)):
            if not 0 <= int(v) < len(labels):
                raise ValueError(f"label index {v} out of range")
            out.append(int(v))
        elif v in idx:
            out.append(idx[v])
        else:
            raise ValueError(f"unknown label {v!r}")
    return np.asarray(out, dtype=np.int64)


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] = EMOTIONS) -> dict:
    """Accuracy, balanced accuracy, weighted P/R/F1, macro F1, per-class P/R/F1/support and the
    confusion matrix, all computed by scikit-learn (zero_division=0).

    y_true / y_pred hold label names or integer indices into `labels`. Macro F1 and balanced
    accuracy follow scikit-learn's defaults: macro F1 averages over every class present in y_true
    OR y_pred (a class predicted but never true counts with F1 = 0); balanced accuracy is the
    mean recall over the classes present in y_true.
    """
    import warnings

    from sklearn import metrics as skm

    labels = list(labels)
    t, p = _indices(y_true, labels), _indices(y_pred, labels)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items, y_pred {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples to evaluate")
    every = list(range(len(labels)))
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        per = skm.classification_report(t, p, labels=every, target_names=labels, output_dict=True, zero_division=0)
        bacc = skm.balanced_accuracy_score(t, p)
    weighted = per["weighted avg"]
    return {
        "n": int(len(t)),
        "labels": labels,
        "accuracy": float(skm.accuracy_score(t, p)),
        "balanced_accuracy": float(bacc),
        "weighted_precision": float(weighted["precision"]),
        "weighted_recall": float(weighted["recall"]),
        "weighted_f1": float(skm.f1_score(t, p, average="weighted", zero_division=0)),
        "macro_f1": float(skm.f1_score(t, p, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(per[name]["precision"]),
                "recall": float(per[name]["recall"]),
                "f1": float(per[name]["f1-score"]),
                "support": int(per[name]["support"]),
            }
            for name in labels
        },
        "confusion_matrix": skm.confusion_matrix(t, p, labels=every).tolist(),
    }


def reliability(probs, y_true, bins: int = 10) -> list[dict]:
    """Top-class confidence vs accuracy in equal-width bins: [{lo, hi, n, confidence, accuracy}]."""
    p, y = np.asarray(probs, float), np.asarray(y_true)
    conf, right = p.max(1), p.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "n": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else None,
                "accuracy": float(right[m].mean()) if m.any() else None,
            }
        )
    return out


def ece(probs, y_true, bins: int = 10) -> float:
    """Expected calibration error of the top class (Guo et al. 2017): the bin-size-weighted mean
    gap between confidence and accuracy over equal-width confidence bins."""
    n = len(y_true)
    return float(
        sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, y_true, bins) if b["n"])
    )


def format_tables(report: dict) -> str:
    """Per-class table, summary table and confusion matrix as Markdown (figures in %)."""
    labels = report["labels"]
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in labels:
        c = report["per_class"][name]
        lines.append(
            f"| {name} | {100 * c['precision']:.1f} | {100 * c['recall']:.1f} | {100 * c['f1']:.1f} | {c['support']} |"
        )
    lines += [
        "",
        "| n | accuracy | balanced acc. | weighted P | weighted R | weighted F1 |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {report['n']} | {100 * report['accuracy']:.1f} | {100 * report['balanced_accuracy']:.1f} | "
        f"{100 * report['weighted_precision']:.1f} | {100 * report['weighted_recall']:.1f} | "
        f"{100 * report['weighted_f1']:.1f} |",
        "",
        "| true \\ pred | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for name, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def evaluate_text_csv(
    csv_path: str | Path,
    model,
    limit: int | None = None,
    batch_size: int = 1,
    rows: list | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate a text emotion model on a MELD-format CSV with past-only dialogue context.

    `model` is a TextEmotionModel (anything with `context_turns`, `labels` and
    `predict_batch(items) -> (probs, features)`). Context per utterance = the previous
    `model.context_turns` utterances of its dialogue, ordered by Utterance_ID. Only rows present in
    the CSV (or its first `limit` rows) are used, both as targets and as context. `rows`: the CSV
    already read with data.meld.read_meld_csv; `progress`: a tqdm bar on stderr.

    One utterance per call by default, as the node scores them: the int8 text model's activation
    scales are per call, so batches of 32 moved MELD dev accuracy by up to 0.5 % with their
    neighbours and padding, and the padding made them slower (MELD dev: 80-90 s -> 52 s).
    """
    from tqdm import tqdm

    from robot_emotion.data.meld import read_meld_csv
    from robot_emotion.data.meld_text import with_past_context

    utts = rows if rows is not None else read_meld_csv(csv_path, limit=limit)
    if not utts:
        raise ValueError(f"{csv_path}: no utterances")
    items, y_true = [], []
    for u, hist in with_past_context(utts, max_turns=model.context_turns):
        items.append((hist, (u.speaker, u.text)))
        y_true.append(u.emotion)
    probs = []
    with tqdm(total=len(items), unit="utt", desc="evaluate", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(items), batch_size):
            probs.append(model.predict_batch(items[i : i + batch_size])[0])
            bar.update(len(items[i : i + batch_size]))
    pred = np.concatenate(probs).argmax(1)
    labels = list(model.labels)
    report = classification_report(y_true, [labels[j] for j in pred], labels)
    report["source"] = str(csv_path)
    report["predictions"] = [labels[j] for j in pred]
    return report
