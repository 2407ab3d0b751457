"""Train and validate the voice-emotion branch (audio/voice_emotion.py) on RAVDESS.

    python -m robot_emotion.train.voice_emotion [--ravdess DIR] [--noise DIR] [--out FILE]

Speaker-independent throughout: 5 folds of 4 actors (2 women, 2 men); every figure comes from
actors the model being scored never saw. The two numbers of the method, the regularisation C
and the baseline prior (audio/voice_emotion.py's SpeakerBaselines), are chosen by
leave-2-actors-out on the development actors 01-10 only; figures are given for all 20 actors
and for actors 11-20 alone (never used in that choice). The temperature that calibrates the
shipped model is fit on out-of-fold logits; "ECE calibrated" is cross-fitted (the temperature
applied to a fold was fit on the other folds).

Training rows: every training actor's clips under the clean, noisy, reverb and telephone
conditions (train/voice_features.py), each taken relative to a baseline of 0-20 earlier turns
of its actor drawn with a conversation's emotion frequencies (mostly neutral: MELD's), SEQ_ORDERS
times, plus once with no baseline (a voice heard for the first time). Scored on clean clips and
on held-out noise at 10 dB SNR, each after one such drawn history of its own actor.

Generalisation checks (also actor-disjoint): train on one sentence and score the other; train
on normal intensity and score strong, and back. The floor the issue set (mean/std pooling +
logistic regression, clean training only, C = 1, no baseline) is scored on the same folds.
Prints a table and writes the figures (JSON); --out writes the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS
from robot_emotion.audio.voice_emotion import SpeakerBaselines
from robot_emotion.train.metrics import ece
from robot_emotion.train.voice_features import EVAL_CONDITIONS, TRAIN_CONDITIONS

C_GRID = (0.003, 0.01, 0.03)
PRIOR_GRID = (1.0, 4.0)
SEQ_ORDERS = 3
N_FOLDS = 5
SELECT_ACTORS = range(1, 11)
# Never in the shipped model: tests/test_voice_emotion.py replays them through the node.
REPLAY_CHECK_ACTORS = (19, 20)


def actor(speaker: str) -> int:
    return int(speaker.replace("actor", ""))


def fold_of(speaker: str) -> int:
    """actor01,02 -> 0; 03,04 -> 1; ... 11,12 -> 0: each fold two men and two women."""
    return ((actor(speaker) - 1) // 2) % N_FOLDS


# A conversation's emotions are mostly neutral: MELD train's class counts (Poria et al. 2019),
# in EMOTIONS order. A speaker's baseline is built from turns drawn with these frequencies.
CONVERSATION_PRIOR = np.array([4710, 1743, 683, 1109, 1205, 268, 271], float)
MAX_HISTORY = 20


def relative(Z, y, spk, idx, prior, rng, reps=1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows idx of Z, each relative to a baseline of n earlier turns of the same speaker (n
    uniform in 0..MAX_HISTORY; the turns drawn from the speaker's other clips with
    conversation-like emotion frequencies) -> (rows, their indices into Z, n of each)."""
    w_class = CONVERSATION_PRIOR / CONVERSATION_PRIOR.sum()
    rows, where, seen = [], [], []
    for s in sorted(set(spk[idx])):
        own = idx[spk[idx] == s]
        counts = np.bincount(y[own], minlength=len(EMOTIONS))
        w = w_class[y[own]] / counts[y[own]]
        for _ in range(reps):
            for i in own:
                others = own != i
                n = int(rng.integers(0, MAX_HISTORY + 1))
                hist = rng.choice(own[others], size=n, p=w[others] / w[others].sum()) if n else []
                b = SpeakerBaselines(prior)
                for h in hist:
                    b.add(s, Z[h])
                rows.append(b.relative(s, Z[i]))
                where.append(i)
                seen.append(n)
    return np.asarray(rows, np.float32), np.asarray(where), np.asarray(seen)


class Fold:
    """One fit: the scaler from the training rows, a logistic regression on baseline-relative
    (or, with prior None, plain) standardised features."""

    def __init__(self, F, y, spk, tr, conds, C, prior, seed=0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.prior = prior
        self.sc = StandardScaler().fit(np.concatenate([F[c][tr] for c in conds]))
        X, Y = [], []
        rng = np.random.default_rng(seed)
        for c in conds:
            Z = self.sc.transform(F[c])
            X.append(Z[tr])
            Y.append(y[tr])
            if prior is not None:
                R, where, _ = relative(Z, y, spk, tr, prior, rng, SEQ_ORDERS)
                X.append(R)
                Y.append(y[where])
        self.lr = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(
            np.concatenate(X), np.concatenate(Y)
        )

    def logits(self, Fc, y, spk, te, seed=1, baseline=True):
        """Logits of rows te (each after a drawn history of its speaker's turns) -> (logits,
        indices, turns in the baseline)."""
        Z = self.sc.transform(Fc)
        if self.prior is None or not baseline:
            R, where, seen = Z[te], te, np.zeros(len(te), int)
        else:
            R, where, seen = relative(Z, y, spk, te, self.prior, np.random.default_rng(seed))
        out = np.full((len(R), len(EMOTIONS)), -1e9)
        out[:, self.lr.classes_] = self.lr.decision_function(R)
        return out, where, seen


def softmax(z, T=1.0):
    z = z / T
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_temperature(z, y) -> float:
    from scipy.optimize import minimize_scalar

    def nll(logT):
        return -np.mean(np.log(softmax(z, np.exp(logT))[np.arange(len(y)), y] + 1e-12))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def ua(y, pred) -> float:
    """Unweighted accuracy: the mean of the per-class recalls of the classes present in y."""
    from sklearn.metrics import recall_score

    return float(recall_score(y, pred, labels=sorted(set(y)), average="macro", zero_division=0))


def cross_validate(F, y, spk, groups, conds, C, prior, train_mask=None, test_mask=None):
    """Out-of-group logits {condition: (logits, turns seen)} in clip order."""
    Z = {c: np.zeros((len(y), len(EMOTIONS))) for c in ("clean",) + EVAL_CONDITIONS + ("clean, no baseline",)}
    seen = np.zeros(len(y), int)
    for g in sorted(set(groups[groups >= 0])):
        tr = np.flatnonzero((groups != g) & (groups >= 0) & (train_mask if train_mask is not None else True))
        te = np.flatnonzero((groups == g) & (test_mask if test_mask is not None else True))
        fold = Fold(F, y, spk, tr, conds, C, prior)
        for c in ("clean",) + EVAL_CONDITIONS:
            z, where, s = fold.logits(F[c], y, spk, te)
            Z[c][where], seen[where] = z, s
        z, where, _ = fold.logits(F["clean"], y, spk, te, baseline=False)
        Z["clean, no baseline"][where] = z
    return Z, seen


def select(F, y, spk) -> tuple[float, float, list]:
    """(C, prior) by leave-2-actors-out on the development actors 01-10."""
    a = np.array([actor(s) for s in spk])
    groups = np.where(np.isin(a, SELECT_ACTORS), (a - 1) // 2, -1)
    dev = groups >= 0
    scores = []
    for C in C_GRID:
        for prior in PRIOR_GRID:
            Z, _ = cross_validate(F, y, spk, groups, TRAIN_CONDITIONS, C, prior)
            scores.append((ua(y[dev], Z["clean"][dev].argmax(1)), C, prior))
            print(f"  select C={C} prior={prior}: dev UA {scores[-1][0]:.3f}", file=sys.stderr)
    best = max(scores)
    return best[1], best[2], scores


def summary(Z, seen, y, mask, folds=None, T_cross=None) -> dict:
    out = {}
    for cond, z in Z.items():
        z, yy = z[mask], y[mask]
        r = {"ua": ua(yy, z.argmax(1)), "wa": float((z.argmax(1) == yy).mean()), "ece": ece(softmax(z), yy)}
        if T_cross is not None:
            f = folds[mask]
            p = np.zeros_like(z)
            for k in range(N_FOLDS):
                p[f == k] = softmax(z[f == k], T_cross[k])
            r["ece_calibrated"] = ece(p, yy)
        if cond == "clean":
            s = seen[mask]
            r["ua_by_turns_heard"] = {
                name: ua(yy[m], z[m].argmax(1))
                for name, m in (("0-4 turns", s <= 4), ("5-9", (s >= 5) & (s <= 9)), ("10-20", s >= 10))
                if m.any()
            }
        out[cond] = r
    return out


def main(argv=None) -> int:
    from robot_emotion.audio.asr import FasterWhisperASR
    from robot_emotion.audio.voice_emotion import ASSET, ENCODER, VoiceEmotion
    from robot_emotion.data.ravdess import ravdess_clips
    from robot_emotion.train.voice_features import Room, extract

    shared = Path(__file__).resolve().parents[3] / "shared"
    ap = argparse.ArgumentParser(prog="python -m robot_emotion.train.voice_emotion", description=__doc__.split("\n")[0])
    ap.add_argument("--ravdess", default=str(shared / "emotion_speech" / "ravdess"))
    ap.add_argument("--noise", default=str(shared / "speech" / "noise"))
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "robot-emotion" / "voice_features.npz"))
    ap.add_argument("--out", default=None, help=f"write the model here (the shipped one: {ASSET})")
    ap.add_argument("--figures", default=None, help="write the figures as JSON here")
    ap.add_argument(
        "--oof",
        default=None,
        help="write the out-of-fold calibrated probabilities (npz: "
        "clean, noise10, label, actor) here, for benchmarks/voice_emotion/fusion.py",
    )
    a = ap.parse_args(argv)

    clips = ravdess_clips(a.ravdess)
    y = np.array([EMOTIONS.index(c.label) for c in clips])
    spk = np.array([c.speaker for c in clips])
    folds = np.array([fold_of(s) for s in spk])
    test_actors = ~np.isin([actor(s) for s in spk], SELECT_ACTORS)
    everyone = np.ones(len(y), bool)
    F = extract(
        clips,
        TRAIN_CONDITIONS + EVAL_CONDITIONS,
        FasterWhisperASR(device="cpu"),
        Room(a.noise),
        Path(a.cache),
        progress=lambda c, i, n: i % 300 == 0 and print(f"  features {c}: {i}/{n}", file=sys.stderr),
    )
    figs = {"classes": list(EMOTIONS), "n_clips": len(clips), "actors": len(set(spk))}

    Zf, seen = cross_validate(F, y, spk, folds, ("clean",), 1.0, None)  # the floor
    figs["floor"] = summary(Zf, seen, y, everyone)
    figs["floor, actors 11-20"] = summary(Zf, seen, y, test_actors)
    C, prior, grid = select(F, y, spk)
    figs["selection"] = {"C": C, "prior": prior, "grid (dev UA, C, prior)": grid}
    Z, seen = cross_validate(F, y, spk, folds, TRAIN_CONDITIONS, C, prior)
    T_cross = [fit_temperature(Z["clean"][folds != k], y[folds != k]) for k in range(N_FOLDS)]
    figs["branch"] = summary(Z, seen, y, everyone, folds, T_cross)
    figs["branch, actors 11-20"] = summary(Z, seen, y, test_actors, folds, T_cross)
    figs["confusion_clean"] = confusion(y, Z["clean"].argmax(1))
    if a.oof:
        cal = {
            c: np.concatenate([softmax(Z[c][folds == k], T_cross[k]) for k in range(N_FOLDS)])
            for c in ("clean", "noise10")
        }
        order = np.concatenate([np.flatnonzero(folds == k) for k in range(N_FOLDS)])
        inv = np.argsort(order)
        np.savez(
            a.oof,
            clean=cal["clean"][inv],
            noise10=cal["noise10"][inv],
            label=y,
            actor=np.array([actor(s) for s in spk]),
        )
    sent, inten = np.array([c.sentence for c in clips]), np.array([c.intensity for c in clips])
    gen = {}
    for name, trm, tem in (
        ("sentence 01 -> 02", sent == "01", sent == "02"),
        ("sentence 02 -> 01", sent == "02", sent == "01"),
        ("normal -> strong", inten == "01", inten == "02"),
        ("strong -> normal", inten == "02", inten == "01"),
    ):
        Zg, _ = cross_validate(F, y, spk, folds, TRAIN_CONDITIONS, C, prior, trm, tem)
        gen[name] = {
            "ua": ua(y[tem], Zg["clean"][tem].argmax(1)),
            "ua_noise10": ua(y[tem], Zg["noise10"][tem].argmax(1)),
        }
    figs["generalisation"] = gen

    # The shipped model: every actor but the replay check's, the selected C and prior, the
    # out-of-fold temperature.
    T = fit_temperature(Z["clean"], y)
    kept = np.flatnonzero(~np.isin([actor(s) for s in spk], REPLAY_CHECK_ACTORS))
    fold = Fold(F, y, spk, kept, TRAIN_CONDITIONS, C, prior)
    figs["shipped"] = {"C": C, "prior": prior, "temperature": T, "actors": sorted({actor(s) for s in spk[kept]})}
    print(table(figs))
    if a.figures:
        Path(a.figures).write_text(json.dumps(figs, indent=1) + "\n")
    if a.out:
        card = {
            "encoder": ENCODER,
            "pooling": "mean and std of the turn's encoder states",
            "training": f"RAVDESS speech, actors {figs['shipped']['actors']} (19 and 20 held out for the "
            "node replay check), 4 conditions (clean, noisy, reverb, telephone)",
            "licence": "CC BY-NC-SA 4.0 (trained on RAVDESS): non-commercial use only",
            "script": "python -m robot_emotion.train.voice_emotion",
            **figs["shipped"],
            "validation": {k: figs["branch"][k] for k in ("clean",) + EVAL_CONDITIONS},
        }
        coef = np.zeros((len(EMOTIONS), len(fold.sc.mean_)))
        icpt = np.full(len(EMOTIONS), -1e9)
        coef[fold.lr.classes_], icpt[fold.lr.classes_] = fold.lr.coef_, fold.lr.intercept_
        VoiceEmotion(
            fold.sc.mean_.astype(np.float32),
            fold.sc.scale_.astype(np.float32),
            coef.astype(np.float32),
            icpt.astype(np.float32),
            T,
            prior,
            EMOTIONS,
            card,
        ).save(a.out)
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


def confusion(y, pred) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y, pred, labels=range(len(EMOTIONS))).tolist()


def table(f) -> str:
    rows = [
        "| voice branch, unseen actors | UA clean | WA clean | UA clean, no baseline | UA noise 10 dB "
        "| ECE | ECE calibrated |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("floor", "branch", "floor, actors 11-20", "branch, actors 11-20"):
        r = f[name]
        nb = r.get("clean, no baseline", r["clean"])["ua"]
        rows.append(
            f"| {name} | {r['clean']['ua']:.3f} | {r['clean']['wa']:.3f} | {nb:.3f} | "
            f"{r['noise10']['ua']:.3f} | {r['clean']['ece']:.3f} | "
            f"{r['clean'].get('ece_calibrated', float('nan')):.3f} |"
        )
    by = f["branch"]["clean"]["ua_by_turns_heard"]
    rows += [
        "",
        "UA by the speaker's turns heard before: " + ", ".join(f"{k} {v:.3f}" for k, v in by.items()),
        "",
        "| generalisation (unseen actors too) | UA clean | UA noise 10 dB |",
        "|---|---|---|",
    ]
    rows += [f"| {k} | {v['ua']:.3f} | {v['ua_noise10']:.3f} |" for k, v in f["generalisation"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
