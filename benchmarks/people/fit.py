#!/usr/bin/env python3
"""Fit the people store's match decision on DEVELOPMENT voices and measure identification on
TEST voices (speaker-disjoint, as benchmarks/voice_decisions does):

    python benchmarks/people/fit.py [--shared ../shared] [--features /tmp/people.npz] [--out ASSET]

dev  = RAVDESS actors 01-10 + LibriSpeech spk1;  test = RAVDESS actors 11-20 + LibriSpeech spk2.

Every recording's voice is taken as the node takes a speaker's (robot_emotion/people/voice.py:
the node's VAD, the speaker tracker, the cluster centroid and its seconds of speech). Each
speaker is enrolled from ONE recording (the first: RAVDESS neutral, sentence 1, take 1;
LibriSpeech snt1); every other recording of every speaker is a probe.

* fit (dev): a logistic model p(same | cosine, log seconds, their product) on every probe
  against every enrolled dev speaker (balanced classes), then the threshold on p: the
  lowest whose false-accept rate for never-enrolled voices on dev is <= --far (1 %) -- a
  stranger called by someone's name costs more than a person not recognised.
* report (dev and test): identification (all speakers of the split enrolled: the probe's
  best match is its speaker and passes the threshold), misses, wrong person; false accepts
  of never-enrolled voices (the probe's own speaker left out of the store, leave-one-out),
  and of the other split's voices against this split's store.
Nothing of the test split is fit or chosen on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from robot_emotion.audio.voice_decisions import Logistic, same_features  # noqa: E402
from robot_emotion.people.store import MATCH_ASSET, Matcher  # noqa: E402

SPLITS = {"dev": (range(1, 11), "spk1"), "test": (range(11, 21), "spk2")}


def recordings(shared: Path, split: str) -> dict[str, list[Path]]:
    """speaker -> recordings, the enrolment one first."""
    actors, spk = SPLITS[split]
    out = {
        f"ravdess{a:02d}": sorted((shared / "emotion_speech" / "ravdess" / f"Actor_{a:02d}").glob("*.flac"))
        for a in actors
    }
    out[f"libri_{spk}"] = sorted((shared / "speech" / "librispeech").glob(f"{spk}_*.wav"))
    return {k: v for k, v in out.items() if v}


def embed_all(shared: Path) -> dict:
    from robot_emotion.audio.speakers import SpeakerTracker
    from robot_emotion.errors import InputError
    from robot_emotion.people.voice import read_recording, voice_of

    tracker = SpeakerTracker()
    rows = {}
    for split in SPLITS:
        for spk, files in recordings(shared, split).items():
            i = 0
            for f in files:
                try:
                    v = voice_of(read_recording(f), tracker)
                except InputError:  # the node's VAD hears no speech in it: no voice to take
                    print(f"{f.name}: no speech found, left out", file=sys.stderr)
                    continue
                rows.setdefault(split, []).append((spk, i, str(f.relative_to(shared)), v.embedding, v.seconds))
                i += 1
            print(f"{split} {spk}: {i} of {len(files)} recordings", file=sys.stderr)
    return rows


def arrays(rows) -> dict:
    return {
        "spk": np.array([r[0] for r in rows]),
        "idx": np.array([r[1] for r in rows]),
        "file": np.array([r[2] for r in rows]),
        "emb": np.stack([r[3] for r in rows]),
        "sec": np.array([r[4] for r in rows], float),
    }


def enrolled(d: dict) -> tuple[list[str], np.ndarray]:
    k = d["idx"] == 0
    return list(d["spk"][k]), d["emb"][k]


def trials(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every probe against every enrolled speaker: (features, same?)."""
    names, mat = enrolled(d)
    p = d["idx"] > 0
    cos = d["emb"][p] @ mat.T
    lab = d["spk"][p][:, None] == np.array(names)[None, :]
    sec = np.repeat(d["sec"][p][:, None], len(names), axis=1)
    return same_features(cos.ravel(), sec.ravel()), lab.ravel().astype(int)


def scores(d: dict, m: Matcher, store: dict | None = None) -> dict:
    """Per probe: p of the best enrolled match, whether it is the right one, and p of the best
    match with the probe's own speaker left out (never enrolled)."""
    names, mat = enrolled(store or d)
    names = np.array(names)
    probes = d["idx"] > 0
    cos = d["emb"][probes] @ mat.T
    sec = d["sec"][probes]
    p_all = m.p(cos.ravel(), np.repeat(sec, len(names))).reshape(cos.shape)
    best = p_all.argmax(axis=1)
    truth = d["spk"][probes]
    own = names[None, :] == truth[:, None]
    return {
        "p_best": p_all.max(axis=1),
        "right": names[best] == truth,
        "p_stranger": np.where(own, -1.0, p_all).max(axis=1),
        "spk": truth,
        "file": d["file"][probes],
    }


def figures(s: dict, tau: float, other: dict | None) -> dict:
    ok = (s["p_best"] >= tau) & s["right"]
    wrong = (s["p_best"] >= tau) & ~s["right"]
    out = {
        "probes": int(ok.size),
        "identified": float(ok.mean()),
        "missed": float((s["p_best"] < tau).mean()),
        "wrong_person": float(wrong.mean()),
        "false_accept_never_enrolled": float((s["p_stranger"] >= tau).mean()),
    }
    lib = np.char.startswith(s["spk"].astype(str), "libri")
    if lib.any():
        out["identified_librispeech"] = f"{int(ok[lib].sum())}/{int(lib.sum())}"
    # RAVDESS 03-01-EE-...: emotion 01 neutral, 02 calm (the enrolment recording is neutral)
    neutral = (
        np.array([Path(f).name.split("-")[2] in ("01", "02") if f.endswith(".flac") else False for f in s["file"]])
        & ~lib
    )
    if neutral.any():
        out["identified_ravdess_neutral_calm"] = float(ok[neutral].mean())
        out["identified_ravdess_other_emotions"] = float(ok[~neutral & ~lib].mean())
    if other is not None:
        out["false_accept_other_split"] = float((other["p_best"] >= tau).mean())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--features", type=Path, help="cache the voices here (.npz) and reuse them")
    ap.add_argument("--far", type=float, default=0.01, help="false-accept target on dev (never-enrolled voices)")
    ap.add_argument("--out", type=Path, default=MATCH_ASSET)
    args = ap.parse_args(argv)
    t = time.time()
    if args.features is not None and args.features.exists():
        z = np.load(args.features)
        data = {sp: {k: z[f"{sp}_{k}"] for k in ("spk", "idx", "file", "emb", "sec")} for sp in SPLITS}
    else:
        if not (args.shared / "emotion_speech" / "ravdess").is_dir():
            print(f"fit: error: no RAVDESS under {args.shared}", file=sys.stderr)
            return 2
        data = {sp: arrays(rows) for sp, rows in embed_all(args.shared).items()}
        if args.features is not None:
            np.savez(args.features, **{f"{sp}_{k}": v for sp, d in data.items() for k, v in d.items()})
    from sklearn.linear_model import LogisticRegression

    x, y = trials(data["dev"])
    lr = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000).fit(x, y)
    m = Matcher(Logistic(tuple(float(c) for c in lr.coef_[0]), float(lr.intercept_[0])), 0.5)
    dev = scores(data["dev"], m)
    cands = np.unique(np.concatenate([dev["p_stranger"], dev["p_best"], [0.5]]))
    far = np.array([(dev["p_stranger"] >= c).mean() for c in cands])
    m.threshold = float(cands[far <= args.far].min())
    test = scores(data["test"], m)
    cross = {"dev": scores(data["test"], m, store=data["dev"]), "test": scores(data["dev"], m, store=data["test"])}
    fig = {sp: figures(s, m.threshold, cross[sp]) for sp, s in (("dev", dev), ("test", test))}
    points = {}  # other operating points: threshold from dev, figures on test
    for target in (0.01, 0.02, 0.05, 0.10):
        tau = float(cands[far <= target].min())
        points[str(target)] = {
            "threshold": round(tau, 4),
            "dev": figures(dev, tau, None),
            "test": figures(test, tau, None),
        }
    fit = {
        "script": "benchmarks/people/fit.py",
        "encoder": "GE2E (resemblyzer pretrained.pt)",
        "data": "dev: RAVDESS actors 01-10 + LibriSpeech spk1; enrolled from one recording each",
        "threshold_rule": f"lowest p with dev false accepts of never-enrolled voices <= {args.far}",
        "dev": fig["dev"],
        "test": fig["test"],
        "operating_points": points,
        "note": "test figures are reported only; nothing was fit or chosen on them",
    }
    m.save(args.out, fit)
    print(
        json.dumps({"model": m.model.to_dict(), "threshold": m.threshold, **fig, "operating_points": points}, indent=1)
    )
    print(f"wrote {args.out} ({time.time() - t:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
