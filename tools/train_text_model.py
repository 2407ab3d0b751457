#!/usr/bin/env python
"""Train the default text emotion model (thin CLI over robot_emotion.train.text_model_grid).

Reproduce the shipped assets (robot_emotion/assets/text_emotion.{safetensors,json}):
    HF_HUB_OFFLINE=1 python tools/train_text_model.py --meld-dir /path/to/meld [--work-dir DIR]

It trains 3 seeds at 0 and at 2 past turns (~60 min on a 2-core CPU: ~6 min per member at 0 turns,
~14 at 2) and ships the three seeds of the better context as one averaged ensemble. With
--work-dir, trained members are kept there, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robot_emotion.train.text_model import Recipe
from robot_emotion.train.text_model_grid import run

SHIPPED_SEEDS = [13, 14, 15]
SHIPPED_CONTEXTS = [0, 2]  # the shipped model reads 2 past turns: its 3-seed ensemble beat 0 turns on dev
SHIPPED_BETAS = [round(0.05 * i, 2) for i in range(13)]  # 0 .. 0.6
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "robot_emotion" / "assets"


def main(argv=None) -> int:
    d = Recipe()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meld-dir", default="../shared/meld", help="folder with train_sent_emo.csv and dev_sent_emo.csv")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="asset folder to write ('' = do not write)")
    ap.add_argument("--contexts", type=int, nargs="+", default=SHIPPED_CONTEXTS, help="past turns to try")
    ap.add_argument("--poolings", nargs="+", default=[d.pooling], choices=["current", "all"])
    ap.add_argument("--alphas", type=float, nargs="+", default=[d.alpha], help="class weight = freq^-alpha")
    ap.add_argument(
        "--prior-betas",
        type=float,
        nargs="+",
        default=SHIPPED_BETAS,
        help="decision rule argmax p(y|x)/prior(y)^beta: betas to choose from on dev (0 = none)",
    )
    ap.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--n-frozen", type=int, default=d.n_frozen)
    ap.add_argument("--lr-layers", type=float, default=d.lr_layers)
    ap.add_argument("--lr-head", type=float, default=d.lr_head)
    ap.add_argument("--lora-rank", type=int, default=d.lora_rank, help="0 = full weights of the trained layers")
    ap.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--seeds", type=int, nargs="+", default=SHIPPED_SEEDS, help="training seeds to try")
    ap.add_argument(
        "--best-only",
        action="store_true",
        help="ship the best single model of the grid, not the best recipe's seeds as an averaged ensemble",
    )
    ap.add_argument(
        "--work-dir",
        default=None,
        help="save each trained member here and reuse it when a later run has the same recipe and data",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--summary-json", default=None, help="write the grid results here")
    a = ap.parse_args(argv)
    meld = Path(a.meld_dir)
    train_csv, dev_csv = meld / "train_sent_emo.csv", meld / "dev_sent_emo.csv"
    for f in (train_csv, dev_csv):
        if not f.is_file():
            print(f"error: missing MELD file {f}", file=sys.stderr)
            return 2
    base = Recipe(
        epochs=a.epochs,
        n_frozen=a.n_frozen,
        lr_layers=a.lr_layers,
        lr_head=a.lr_head,
        batch_size=a.batch_size,
        label_smoothing=a.label_smoothing,
        lora_rank=a.lora_rank,
        lora_alpha=a.lora_alpha,
    )
    res = run(
        str(train_csv),
        str(dev_csv),
        a.out or None,
        contexts=a.contexts,
        alphas=a.alphas,
        poolings=a.poolings,
        seeds=a.seeds,
        base=base,
        threads=a.threads,
        prior_betas=a.prior_betas,
        ensemble=not a.best_only,
        work_dir=a.work_dir,
        log=lambda s: print(s, flush=True),
    )
    if a.summary_json:
        Path(a.summary_json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
