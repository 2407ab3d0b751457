"""`robot-emotion evaluate --speech DIR|CSV [--out DIR] [--json FILE]`: the voice-emotion branch
on labelled clips (RAVDESS-named files, or a CSV of path,label[,speaker]).

Each clip is cut as the node cuts a turn, encoded by the node's Whisper encoder and scored by
the shipped (or --voice-model) read-out, exactly as live. Where clips name their speaker, each
speaker's clips are taken in file order as the turns of one conversation, so the speaker
baseline builds up as it would (audio/voice_emotion.py); the table also gives the figures with
no baseline. Prints unweighted (balanced) and weighted accuracy, the per-class table and the
confusion matrix; --out also writes confusion.png and reliability.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def score_clips(clips, asr, voice, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(probs with the speaker baseline, probs without) for each clip, in order."""
    from tqdm import tqdm

    from robot_emotion.audio.voice_emotion import SpeakerBaselines, pool
    from robot_emotion.train.voice_features import as_turn, read_clip

    base = SpeakerBaselines(voice.prior)
    with_b, without = [], []
    for c in tqdm(clips, unit="clip", desc="evaluate", disable=not progress, dynamic_ncols=True):
        z = voice.standardize(pool(asr.whisper_encoder_states(as_turn(read_clip(c.path)))))
        spk = c.speaker or None
        with_b.append(voice.probs(base.relative(spk, z)))
        without.append(voice.probs(z))
        base.add(spk, z)
    return np.stack(with_b), np.stack(without)


def plots(report: dict, rel: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cm = report["labels"], np.asarray(report["confusion_matrix"], float)
    fig, ax = plt.subplots(figsize=(6, 5))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"voice emotion: UA {report['balanced_accuracy']:.3f}, WA {report['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    pts = [(b["confidence"], b["accuracy"], b["n"]) for b in rel if b["n"]]
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar(
        [(b["lo"] + b["hi"]) / 2 for b in rel],
        [b["accuracy"] or 0 for b in rel],
        width=0.09,
        alpha=0.6,
        label="accuracy per confidence bin",
    )
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the top class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {report['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)


def run_speech_evaluate(args) -> int:
    from robot_emotion import EMOTIONS
    from robot_emotion.audio.asr import FasterWhisperASR
    from robot_emotion.audio.voice_emotion import VoiceEmotion
    from robot_emotion.data.ravdess import labelled_clips
    from robot_emotion.train.metrics import classification_report, ece, format_tables, reliability

    clips = labelled_clips(args.speech)  # a bad folder or CSV fails before the model loads
    if args.limit:
        clips = clips[: args.limit]
    voice = VoiceEmotion.load(getattr(args, "voice_model", None))
    asr = FasterWhisperASR(device="cpu")
    p_base, p_plain = score_clips(clips, asr, voice)
    y = np.array([EMOTIONS.index(c.label) for c in clips])
    report = classification_report(y, p_base.argmax(1), EMOTIONS)
    report.update(
        ece=ece(p_base, y),
        source=str(args.speech),
        without_baseline={
            "balanced_accuracy": classification_report(y, p_plain.argmax(1))["balanced_accuracy"],
            "accuracy": float((p_plain.argmax(1) == y).mean()),
            "ece": ece(p_plain, y),
        },
    )
    rel = reliability(p_base, y)
    nb = report["without_baseline"]
    print(
        f"# {args.speech}: {len(clips)} clips, {len({c.speaker for c in clips})} speaker(s); voice branch "
        f"UA {report['balanced_accuracy']:.3f} WA {report['accuracy']:.3f} ECE {report['ece']:.3f} "
        f"(no speaker baseline: UA {nb['balanced_accuracy']:.3f} WA {nb['accuracy']:.3f})"
    )
    print(format_tables(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plots(report, rel, out)
        print(f"# wrote {out / 'confusion.png'} and {out / 'reliability.png'}", file=sys.stderr)
    if args.json:
        from robot_emotion.paths import write_output

        write_output(args.json, json.dumps({**report, "reliability": rel}, indent=1))
    return 0
