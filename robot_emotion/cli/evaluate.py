"""`robot-emotion evaluate --meld-csv FILE [--model CKPT] [--json OUT]`: text-only evaluation.

Runs the emotion model on a MELD-format CSV (no media needed) with past-only dialogue
context and prints the paper's tables: per-class P/R/F1, accuracy, balanced accuracy,
weighted P/R/F1 and the confusion matrix. With a fusion checkpoint only the text modality
is available, so this measures exactly what the node does when no face is in view.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


class FusionTextModel:
    """Adapter: a fusion checkpoint seen as a text model (text available, the rest not)."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.context_turns = scorer.text.model.context_turns
        self.labels = scorer.text.model.labels

    def predict_batch(self, items):
        from robot_emotion.features.utterance import UtteranceFeatures

        probs = []
        for feats in self.scorer.text.batch(items):
            p, _, _ = self.scorer.predict(UtteranceFeatures(text=feats))
            probs.append(p if p is not None else np.full(7, 1 / 7, np.float32))
        return np.stack(probs), None


def check_output_paths(args) -> None:
    """Refuse an unwritable --json file or --out folder before any work (exit 2), not after it."""
    from robot_emotion.errors import UsageError

    if getattr(args, "json", None) and args.json != "-":  # -: stdout
        f = Path(args.json)
        if f.is_dir():
            raise UsageError(f"--json {f}: is a folder; give a file name (e.g. {f / 'evaluation.json'})")
        parent = f.parent
        if not parent.is_dir():
            raise UsageError(f"--json {f}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK) or (f.exists() and not os.access(f, os.W_OK)):
            raise UsageError(f"--json {f}: not writable")
    if getattr(args, "out", None):
        d = Path(args.out)
        if d.exists() and not d.is_dir():
            raise UsageError(f"--out {d}: exists and is not a folder")
        first = d
        while not first.exists() and first != first.parent:  # the folder the report tree will start in
            first = first.parent
        if not first.is_dir():
            raise UsageError(f"--out {d}: {first} is a file, not a folder")
        if not os.access(first, os.W_OK):
            raise UsageError(f"--out {d}: {first} is not writable")


def run_evaluate(args) -> int:
    check_output_paths(args)  # before the imports below (torch: seconds)
    from robot_emotion.errors import CommandError
    from robot_emotion.config import load
    from robot_emotion.data.meld import read_meld_csv

    if getattr(args, "speech", None):  # the voice branch on labelled clips (evaluate_speech.py)
        from robot_emotion.cli.evaluate_speech import run_speech_evaluate

        return run_speech_evaluate(args)
    if getattr(args, "meld", None):  # multimodal MELD.Raw evaluation + report (train/meld_eval.py)
        from robot_emotion.train.meld_eval import run_meld_evaluate

        return run_meld_evaluate(args)
    csv = Path(args.meld_csv)
    if not csv.is_file():
        raise CommandError(f"MELD CSV not found: {csv}", 3)
    rows = read_meld_csv(csv, limit=args.limit or None)  # a malformed CSV fails before the model loads
    from robot_emotion.node.emotion import EmotionScorer
    from robot_emotion.models.checkpoint import CheckpointError
    from robot_emotion.train.metrics import evaluate_text_csv, format_tables

    overrides = [f'emotion.model="{args.model}"'] if args.model else []
    cfg, _ = load(None, overrides=overrides)
    try:
        scorer = EmotionScorer.from_config(cfg, device="cpu")
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise CommandError(str(e), 3) from None
    if scorer.text is None:
        raise CommandError(f"model {scorer.model_id} has no text branch: nothing to evaluate on a CSV", 2)
    try:
        report = evaluate_text_csv(csv, FusionTextModel(scorer), rows=rows, progress=True)
    except (ValueError, KeyError) as e:
        raise CommandError(f"{csv}: {e}", 3) from None
    report["model"] = scorer.model_id
    print(
        f"# {csv.name}: {report.get('n', len(report['predictions']))} utterances, model {scorer.model_id}, "
        f"text only, past-only context ({scorer.text.model.context_turns} turns)"
    )
    print(format_tables(report))
    if args.json:
        from robot_emotion.paths import write_output

        write_output(args.json, json.dumps({k: v for k, v in report.items() if k != "predictions"}, indent=1))
        if args.json != "-":
            print(f"# tables written to {args.json}", file=sys.stderr)
    return 0
