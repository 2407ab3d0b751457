#!/usr/bin/env python3
"""Fit the speaker tracker's two decisions (robot_emotion/audio/voice_decisions.py) on the
conversation corpus's DEVELOPMENT voices, and report them on its TEST voices.

    python benchmarks/voice_decisions/fit.py CORPUS [--out robot_emotion/assets/voice_decisions.json]

CORPUS is what ``benchmarks/conversations/make_corpus.py`` writes (dev/ and test/, voices
disjoint). The node's situations are replayed from the truth, on the conversation's own
mixed audio (its condition, overlaps and noise included):

* every stretch of one speaker's speech (a truth segment) is, in time order, a *new stretch
  after a pause*: the open turn's speaker is the previous stretch's (the one before the turn
  for a turn's first stretch, the turn's own for the stretches after its inner pauses). Its
  first ``d`` seconds, for each probe time the node uses, give one ``changed`` example:
  cosine to the open speaker's voice, to the nearest other known voice, ``d``; label: is it
  someone else. The classes keep their natural frequency in conversation, so p >= 0.5 is
  the decision that errs least there.
* the stretch (whole, and its first 0.5 / 1 s) against every voice known so far gives the
  ``same`` examples (balanced classes: joining and founding cost alike).
* then the stretch's own clean audio (no other voice over it) joins its speaker's voice,
  duration-weighted, as the node's clusterer does.

Backchannels are skipped (no pause before them). Nothing of the test split is used to fit.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from robot_emotion.audio.voice_decisions import (ASSET, Logistic, VoiceDecisions,  # noqa: E402
                                                 changed_features, same_features)

SR = 16000
PROBE_TIMES = (0.25, 0.32, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5)   # the node's (audio/speakers.py)
SAME_TIMES = (0.5, 1.0, None)                                # None: the whole stretch


def clean_spans(spk: str, s: float, e: float, segments: list) -> list[tuple[float, float]]:
    """[s, e] less the times any other speaker talks."""
    spans = [(s, e)]
    for o, a, b in segments:
        if o == spk:
            continue
        spans = [piece for x, y in spans
                 for piece in ((x, min(y, a)), (max(x, b), y)) if piece[1] - piece[0] > 0.05]
    return spans


def examples(truth: dict, audio: np.ndarray, enc) -> tuple[list, list]:
    """(changed rows [own, other, d, label], same rows [cos, d, label]) of one conversation."""
    segs = sorted(([s, float(a), float(b)] for s, a, b in truth["segments"]), key=lambda x: x[1])
    back = [(t["start"], t["end"]) for t in truth["turns"] if t.get("backchannel")]
    sums: dict[str, np.ndarray] = {}
    changed, same = [], []
    open_spk = None

    def cut(a: float, b: float) -> np.ndarray:
        return audio[int(a * SR):int(b * SR)].astype(np.float32)

    for spk, a, b in segs:
        if any(x <= a + 1e-3 and b <= y + 1e-3 for x, y in back):
            continue                                   # a backchannel: no pause before it
        cents = {k: v / np.linalg.norm(v) for k, v in sums.items()}
        if open_spk in cents:
            for d in PROBE_TIMES:
                if d > b - a + 1e-3:
                    break
                e = enc.embed(cut(a, a + d))
                own = float(e @ cents[open_spk])
                other = max((float(e @ c) for k, c in cents.items() if k != open_spk), default=0.0)
                changed.append([own, other, d, int(spk != open_spk)])
        for d in SAME_TIMES:
            dur = (b - a) if d is None else d
            if dur > b - a + 1e-3 or not cents:
                continue
            e = enc.embed(cut(a, a + dur))
            same.extend([float(e @ c), dur, int(k == spk)] for k, c in cents.items())
        for x, y in clean_spans(spk, a, b, segs):
            if y - x >= 0.3:
                sums[spk] = sums.get(spk, 0) + enc.embed(cut(x, y)) * (y - x)
        open_spk = spk
    return changed, same


def collect(folder: Path, enc, limit: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    rows_c, rows_s, n = [], [], 0
    for js in sorted(folder.glob("*.json"))[:limit]:
        truth = json.loads(js.read_text())
        audio, sr = sf.read(js.with_suffix(".wav"), dtype="float32")
        if sr != SR:
            raise SystemExit(f"fit: {js.with_suffix('.wav')}: {sr} Hz, expected {SR}")
        c, s = examples(truth, audio, enc)
        rows_c += c
        rows_s += s
        n += 1
    return np.asarray(rows_c, float).reshape(-1, 4), np.asarray(rows_s, float).reshape(-1, 3), n


def fit_logistic(x: np.ndarray, y: np.ndarray, balanced: bool) -> Logistic:
    from sklearn.linear_model import LogisticRegression
    m = LogisticRegression(C=10.0, class_weight="balanced" if balanced else None, max_iter=2000).fit(x, y)
    return Logistic(tuple(float(c) for c in m.coef_[0]), float(m.intercept_[0]))


def report(p: np.ndarray, y: np.ndarray, d: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, AUC overall and per duration (sklearn)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    out = {"n": int(y.size), "positive": float(y.mean()) if y.size else 0.0}
    if y.size and 0 < y.mean() < 1:
        out.update(accuracy=accuracy_score(y, p >= 0.5), balanced_accuracy=balanced_accuracy_score(y, p >= 0.5),
                   auc=roc_auc_score(y, p))
    by = {}
    for lo, hi in ((0, 0.45), (0.45, 0.9), (0.9, 1.6), (1.6, 1e9)):
        k = (d >= lo) & (d < hi)
        if k.sum() and 0 < y[k].mean() < 1:
            by[f"{lo}-{hi if hi < 1e9 else 'inf'}s"] = {
                "n": int(k.sum()), "balanced_accuracy": float(balanced_accuracy_score(y[k], p[k] >= 0.5))}
    out["by_duration"] = by
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--limit", type=int, default=None, help="conversations per split (quick runs)")
    args = ap.parse_args(argv)
    for split in ("dev", "test"):
        if not (args.corpus / split).is_dir():
            print(f"fit: error: no {split}/ in {args.corpus} (build it with benchmarks/conversations/make_corpus.py)",
                  file=sys.stderr)
            return 2
    from robot_emotion.audio.voice_encoder import VoiceEncoder
    enc = VoiceEncoder()
    t = time.time()
    data = {split: collect(args.corpus / split, enc, args.limit) for split in ("dev", "test")}
    (cd, sd, n_dev), (ct, st, n_test) = data["dev"], data["test"]
    changed = fit_logistic(changed_features(cd[:, 0], cd[:, 1], cd[:, 2]), cd[:, 3], balanced=False)
    same = fit_logistic(same_features(sd[:, 0], sd[:, 1]), sd[:, 2], balanced=True)
    vd = VoiceDecisions(same, changed)
    figures = {}
    for split, (c, s, _) in data.items():
        figures[split] = {"changed": report(vd.p_changed(c[:, 0], c[:, 1], c[:, 2]), c[:, 3], c[:, 2]),
                          "same": report(vd.p_same(s[:, 0], s[:, 1]), s[:, 2], s[:, 1])}
    index = json.loads((args.corpus / "index.json").read_text()) if (args.corpus / "index.json").exists() else {}
    fit = {"script": "benchmarks/voice_decisions/fit.py", "encoder": "GE2E (resemblyzer pretrained.pt)",
           "data": f"conversation corpus dev split, {n_dev} conversations "
                   f"(generator {index.get('generator', '?')}, seed {index.get('seed', '?')})",
           "probe_times_s": list(PROBE_TIMES), "decision": "p >= 0.5",
           "dev": figures["dev"], "test": figures["test"], "test_conversations": n_test,
           "note": "test figures are reported only; nothing was fit or chosen on them"}
    vd.save(args.out, fit)
    print(json.dumps({"changed": changed.to_dict(), "same": same.to_dict(), **figures}, indent=1))
    print(f"wrote {args.out} ({time.time() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
