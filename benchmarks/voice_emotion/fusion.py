"""What the voice adds to the words: late-fusion weights fit on development pairs, scored on test.

    python benchmarks/voice_emotion/fusion.py --oof OOF.npz [--meld-dev CSV] [--cache FILE]

No recording here has both a labelled transcript and a labelled voice, so the check pairs
them: each RAVDESS clip (its voice branch's out-of-fold probabilities, from
``python -m robot_emotion.train.voice_emotion --oof OOF.npz``) with a MELD dev utterance of the
same emotion (the node's text branch on it, with its past dialogue context). That treats the
two as independent given the emotion, the assumption late fusion makes anyway.

Split twice: development pairs are RAVDESS actors 01-10 with MELD dev's even dialogues; test
pairs are actors 11-20 with the odd dialogues. Fit on development: the text branch's
temperature (text alone, even dialogues), the audio share of the text + audio weight (grid,
best unweighted accuracy) and the fused temperature. Then the test pairs are scored: text
alone, voice alone, the fitted mix, the old default (0.6 text / 0.15 audio) and equal weights,
with expected calibration errors. Rerun with --noise to pair the voice under held-out noise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from robot_emotion import EMOTIONS  # noqa: E402
from robot_emotion.train.metrics import ece  # noqa: E402
from robot_emotion.train.voice_emotion import softmax, ua  # noqa: E402

SHARES = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def text_probs(csv: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, label index, dialogue id) of every MELD dev utterance, by the node's text branch."""
    if cache.is_file():
        z = np.load(cache)
        return z["probs"], z["label"], z["dialogue"]
    from robot_emotion.data.meld import read_meld_csv
    from robot_emotion.data.meld_text import with_past_context
    from robot_emotion.features.text_emotion import load_default_text_model

    model = load_default_text_model(device="cpu")
    utts = read_meld_csv(csv)
    items, y, dia = [], [], []
    for u, hist in with_past_context(utts, max_turns=model.context_turns):
        items.append((hist, (u.speaker, u.text)))
        y.append(EMOTIONS.index(u.emotion))
        dia.append(u.dialogue_id)
    probs = np.concatenate([model.predict_batch(items[i : i + 32])[0] for i in range(0, len(items), 32)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, probs=probs, label=np.array(y), dialogue=np.array(dia))
    return probs, np.array(y), np.array(dia)


def pairs(voice, vy, tprobs, ty, rng):
    """For each voice clip, the probabilities of a random text utterance of the same class."""
    idx = np.array([rng.choice(np.flatnonzero(ty == c)) for c in vy])
    return tprobs[idx]


def fuse(pt, pv, share, T=1.0):
    return temper((1 - share) * pt + share * pv, T)


def temper(p, T):
    """Temperature on probabilities: p ** (1/T), renormalised (models/fusion.py's LateFusion)."""
    return softmax(np.log(np.clip(p, 1e-12, None)), T)


def main() -> int:
    from robot_emotion.train.voice_emotion import fit_temperature

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oof", required=True)
    ap.add_argument("--meld-dev", default=str(REPO.parent / "shared" / "meld" / "dev_sent_emo.csv"))
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "robot-emotion" / "meld_dev_text_probs.npz"))
    ap.add_argument("--noise", action="store_true", help="the voice under held-out noise at 10 dB")
    a = ap.parse_args()
    z = np.load(a.oof)
    pv_all, vy, act = z["noise10" if a.noise else "clean"], z["label"], z["actor"]
    tp, ty, dia = text_probs(Path(a.meld_dev), Path(a.cache))
    dev_d, test_d = dia % 2 == 0, dia % 2 == 1

    # 1. the text branch's temperature, on the even dialogues; ECE on the odd ones
    T_text = fit_temperature(np.log(np.clip(tp[dev_d], 1e-12, None)), ty[dev_d])
    print(
        f"# text branch on MELD dev's odd dialogues ({test_d.sum()} utterances), temperature {T_text:.3f} "
        f"fit on the even ones: ECE {ece(tp[test_d], ty[test_d]):.3f} -> {ece(temper(tp[test_d], T_text), ty[test_d]):.3f}, "
        f"UA {ua(ty[test_d], tp[test_d].argmax(1)):.3f}"
    )
    tp = temper(tp, T_text)

    # 2. pairs; the audio share and the fused temperature fit on the development pairs
    rng = np.random.default_rng(7)
    split = {}
    for name, am, dm in (("dev", act <= 10, dev_d), ("test", act > 10, test_d)):
        split[name] = (pairs(pv_all[am], vy[am], tp[dm], ty[dm], rng), pv_all[am], vy[am])
    pt, pv, y = split["dev"]
    dev_scores = [ua(y, fuse(pt, pv, s).argmax(1)) for s in SHARES]
    best = float(SHARES[int(np.argmax(dev_scores))])
    T_fused = fit_temperature(np.log(np.clip(fuse(pt, pv, best), 1e-12, None)), y)
    pt, pv, y = split["test"]
    rows = [
        ("text alone", pt),
        ("voice alone", pv),
        (f"fused, audio share {best} (fit on dev)", fuse(pt, pv, best)),
        (f"... and fused temperature {T_fused:.2f} (fit on dev)", fuse(pt, pv, best, T_fused)),
        ("fused, old default 0.6 / 0.15", fuse(pt, pv, 0.2)),
        ("fused, equal weights", fuse(pt, pv, 0.5)),
    ]
    print(
        f"# test pairs: {len(y)} (RAVDESS actors 11-20 x MELD dev odd dialogues); voice "
        f"{'under held-out noise, 10 dB' if a.noise else 'clean'}; fit on {len(split['dev'][2])} dev pairs"
    )
    print("| branch | UA | WA | ECE |\n|---|---|---|---|")
    for name, p in rows:
        print(f"| {name} | {ua(y, p.argmax(1)):.3f} | {(p.argmax(1) == y).mean():.3f} | {ece(p, y):.3f} |")
    print("dev UA by audio share: " + ", ".join(f"{s}: {v:.3f}" for s, v in zip(SHARES, dev_scores)))
    print(
        f"# for tools/make_default_model.py: --audio-share {best} --text-temperature {T_text:.3f} "
        f"--fused-temperature {T_fused:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
