"""The paper-style evaluation report: Markdown + JSON tables, confusion matrix, t-SNE, curves.

Table 1: per-class precision / recall / F1 for audio, face, text and multimodal.
Table 2: accuracy, balanced accuracy, weighted F1 per model, plus the fused model with each
modality removed (robustness). Figures with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(results: dict, meta: dict) -> str:
    rows = results["rows"]  # name -> classification_report
    t1 = [r for r in ("audio", "face", "text", "multimodal") if r in rows]
    lines = [
        f"# Evaluation of {meta['model']} on the {meta.get('data') or meta['split'] + ' split'}",
        "",
        f"{meta['n']} clips ({meta.get('skipped', 0)} skipped, see the summary); speaker's face found "
        f"in {meta['face_found']}/{meta['n']}; text source: {meta['text_source']}.",
        "",
        "## Table 1: per-class precision / recall / F1 (%)",
        "",
        "| emotion | " + " | ".join(f"{r} P | {r} R | {r} F1" for r in t1) + " | support |",
        "|---|" + "---:|" * (3 * len(t1) + 1),
    ]
    for e in EMOTIONS:
        cells = []
        for r in t1:
            c = rows[r]["per_class"][e]
            cells += [_pct(c["precision"]), _pct(c["recall"]), _pct(c["f1"])]
        sup = rows[t1[0]]["per_class"][e]["support"] if t1 else 0
        lines.append(f"| {e} | " + " | ".join(cells) + f" | {sup} |")
    lines += [
        "",
        "## Table 2: accuracy, balanced accuracy, weighted F1 (%)",
        "",
        "| model | n | accuracy | balanced acc. | weighted F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['n']} | {_pct(r['accuracy'])} | {_pct(r['balanced_accuracy'])} | {_pct(r['weighted_f1'])} |"
        )
    lines += [
        "",
        "Rows `multimodal - X` are the fused model with modality X marked unavailable "
        "(robustness); unimodal rows are the stage-1 heads stored in the checkpoint.",
    ]
    if meta.get("notes"):
        lines += [""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm, title: str):
    """Counts in the cells, colour = share of the true class (row-normalised), with its colour bar."""
    plt = _pyplot()
    cm = np.asarray(cm, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.6, 5.4))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("share of the true class (row-normalised)")
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_title(meta: dict) -> str:
    """Names the data actually evaluated (split + CSV), never a fixed "MELD test"."""
    return f"{meta['model']}\n{meta.get('data') or meta['split'] + ' split'} (n={meta['n']})"


def plot_confusion(cm, path: Path, title: str) -> None:
    fig = confusion_figure(cm, title)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_tsne(emb: np.ndarray, y: np.ndarray, path: Path, seed: int = 0) -> str | None:
    """t-SNE of the fused embeddings coloured by the true emotion; returns a note if skipped."""
    plt = _pyplot()
    from sklearn.manifold import TSNE

    fig, ax = plt.subplots(figsize=(6, 5))
    note = None
    if len(emb) >= 5:
        xy = TSNE(
            2, perplexity=float(min(30, max(2, (len(emb) - 1) // 3))), init="pca", random_state=seed
        ).fit_transform(np.asarray(emb, np.float32))
        for k, e in enumerate(EMOTIONS):
            sel = y == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=10, label=e)
        ax.legend(fontsize=7, markerscale=1.5)
    else:
        note = f"t-SNE skipped: {len(emb)} samples (needs >= 5)"
        ax.text(0.5, 0.5, note, ha="center", transform=ax.transAxes)
    ax.set_title("t-SNE of the fused embeddings (colour = true emotion)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return note


def curves_figure(training: dict):
    """Loss (train solid, dev dashed) and dev weighted F1 per epoch; one colour per model in both
    panels; a star marks the epoch whose weights were kept (best dev weighted F1, fit.chosen_epoch)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from robot_emotion.train.fit import chosen_epoch

    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    series = {"fusion": training.get("history") or []}
    series.update({f"unimodal {m}": u.get("history") or [] for m, u in (training.get("unimodal") or {}).items()})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    marked = False
    for k, (name, hist) in enumerate((n, h) for n, h in series.items() if h):
        colour = palette[k % len(palette)]
        ep = [h["epoch"] for h in hist]
        a1.plot(ep, [h["train_loss"] for h in hist], "-o", ms=3, color=colour, label=f"{name} train")
        has_dev = hist[0].get("dev_loss") is not None
        if has_dev:
            a1.plot(ep, [h["dev_loss"] for h in hist], "--", color=colour, label=f"{name} dev")
        f1 = [100 * (h.get("dev_weighted_f1") or 0) for h in hist]
        a2.plot(ep, f1, "-o", ms=3, color=colour, label=name)
        best = chosen_epoch(hist)
        i = ep.index(best)
        # underscore labels stay out of the legend; one legend entry explains the star
        a2.plot([best], [f1[i]], "*", ms=14, color=colour, markeredgecolor="black", label=f"_chosen {name}")
        a1.plot(
            [best],
            [hist[i]["dev_loss"] if has_dev else hist[i]["train_loss"]],
            "*",
            ms=14,
            color=colour,
            markeredgecolor="black",
            label=f"_chosen {name}",
        )
        marked = True
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.set_title("loss")
    a2.set_xlabel("epoch")
    a2.set_ylabel("dev weighted F1 (%)")
    a2.set_title("early stopping metric")
    for a in (a1, a2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if a.lines:
            handles, labels = a.get_legend_handles_labels()
            if marked:
                handles.append(Line2D([], [], ls="", marker="*", ms=10, color="white", markeredgecolor="black"))
                labels.append("kept epoch (best dev wF1)")
            a.legend(handles, labels, fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(training: dict, path: Path) -> None:
    fig = curves_figure(training)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def write_report(
    out_dir, results: dict, meta: dict, embeddings: np.ndarray, y: np.ndarray, training: dict
) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "md": out / "report.md",
        "json": out / "report.json",
        "confusion": out / "confusion.png",
        "tsne": out / "tsne.png",
        "curves": out / "training_curves.png",
    }
    plot_confusion(results["rows"]["multimodal"]["confusion_matrix"], files["confusion"], confusion_title(meta))
    note = plot_tsne(embeddings, y, files["tsne"])
    if note:
        meta.setdefault("notes", []).append(note)
    plot_curves(training, files["curves"])
    files["md"].write_text(markdown(results, meta))
    files["json"].write_text(json.dumps({"meta": meta, **results}, indent=1))
    return files
