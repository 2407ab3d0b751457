"""Classification metrics in the paper's style + evaluation of a text model on a MELD CSV."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from robot_emotion import EMOTIONS


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence[str] = EMOTIONS) -> dict:
    """Accuracy, balanced accuracy, weighted P/R/F1, per-class P/R/F1/support, confusion matrix.

    y_true / y_pred hold label names or integer indices into `labels`. Balanced accuracy is the
    mean recall over the classes present in y_true (sklearn's definition).
    """
    labels = list(labels)
    idx = {name: i for i, name in enumerate(labels)}

    def to_idx(y):
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

    t, p = to_idx(y_true), to_idx(y_pred)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} items, y_pred {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples to evaluate")
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    prec = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    rec = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    w = support / support.sum()
    present = support > 0
    return {
        "n": int(len(t)),
        "labels": labels,
        "accuracy": float(tp.sum() / len(t)),
        "balanced_accuracy": float(rec[present].mean()),
        "weighted_precision": float((w * prec).sum()),
        "weighted_recall": float((w * rec).sum()),
        "weighted_f1": float((w * f1).sum()),
        "macro_f1": float(f1[present].mean()),
        "per_class": {
            name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def format_tables(report: dict) -> str:
    """Per-class table, summary table and confusion matrix as Markdown (figures in %)."""
    labels = report["labels"]
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in labels:
        c = report["per_class"][name]
        lines.append(f"| {name} | {100 * c['precision']:.1f} | {100 * c['recall']:.1f} | "
                     f"{100 * c['f1']:.1f} | {c['support']} |")
    lines += ["", "| n | accuracy | balanced acc. | weighted P | weighted R | weighted F1 |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {report['n']} | {100 * report['accuracy']:.1f} | {100 * report['balanced_accuracy']:.1f} | "
              f"{100 * report['weighted_precision']:.1f} | {100 * report['weighted_recall']:.1f} | "
              f"{100 * report['weighted_f1']:.1f} |",
              "", "| true \\ pred | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name, row in zip(labels, report["confusion_matrix"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def evaluate_text_csv(csv_path: str | Path, model, limit: int | None = None, batch_size: int = 32) -> dict:
    """Evaluate a text emotion model on a MELD-format CSV with past-only dialogue context.

    `model` is a TextEmotionModel (anything with `context_turns`, `labels` and
    `predict_batch(items) -> (probs, features)`). Context per utterance = the previous
    `model.context_turns` utterances of its dialogue, ordered by Utterance_ID. Only rows present in
    the CSV (or its first `limit` rows) are used, both as targets and as context.
    """
    from robot_emotion.data.meld_text import read_meld_csv, with_past_context

    utts = read_meld_csv(csv_path, limit=limit)
    if not utts:
        raise ValueError(f"{csv_path}: no utterances")
    if any(u.emotion is None for u in utts):
        raise ValueError(f"{csv_path}: rows without an Emotion label cannot be evaluated")
    items, y_true = [], []
    for u, hist in with_past_context(utts, max_turns=model.context_turns):
        items.append((hist, (u.speaker, u.text)))
        y_true.append(u.emotion)
    probs = []
    for i in range(0, len(items), batch_size):
        probs.append(model.predict_batch(items[i:i + batch_size])[0])
    pred = np.concatenate(probs).argmax(1)
    labels = list(model.labels)
    report = classification_report(y_true, [labels[j] for j in pred], labels)
    report["source"] = str(csv_path)
    report["predictions"] = [labels[j] for j in pred]
    return report
