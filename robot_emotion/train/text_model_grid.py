"""The recipe grid that chose the shipped text emotion model, and the assets it writes.

``run`` trains every recipe of a grid (train/text_model.py: context size x pooling x class
weights x seed) on MELD's train split, keeps the best by dev weighted F1 (or the best
seed-averaged ensemble), chooses the prior correction on dev (``choose_prior_correction``) and
writes ``text_emotion.safetensors`` + ``.json`` (``write_assets``). MELD test is never read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from robot_emotion import EMOTIONS
from robot_emotion.data.meld import read_meld_csv
from robot_emotion.features.text import TextEncoder
from robot_emotion.threads import set_torch_threads
from robot_emotion.train.metrics import classification_report, format_tables
from robot_emotion.train.text_model import (
    Recipe,
    build_texts,
    cache_bottom,
    fit,
    predict_cached,
    seed_all,
)


def _grid(spec: dict) -> list[dict]:
    keys = list(spec)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(spec[k] for k in keys))]


def run(
    train_csv: str,
    dev_csv: str,
    out_dir: str | None,
    contexts=(0, 1, 2, 4),
    alphas=(0.0, 0.5),
    poolings=("current",),
    seeds=None,
    base: Recipe | None = None,
    threads: int | None = None,
    prior_betas=(0.0,),
    ensemble: bool = False,
    work_dir: str | None = None,
    log=print,
) -> dict:
    """Train every recipe of the grid (context size x pooling x class-weight exponent x seed).

    Ship the best single model by dev weighted F1 or, with `ensemble`, all the seeds of the recipe
    whose seed-averaged ensemble has the best dev weighted F1, as one averaged model;
    then choose the prior correction on dev (choose_prior_correction) and write the assets.
    With `work_dir`, each trained member is saved there and reused by any later run with the same
    recipe and data (an interrupted grid resumes; a larger grid trains only what is new).
    """
    if threads:
        set_torch_threads(threads)
    base = base or Recipe()
    seeds = tuple(seeds or (base.seed,))
    enc = TextEncoder(device="auto", max_tokens=base.max_tokens)
    train_u, dev_u = read_meld_csv(train_csv), read_meld_csv(dev_csv)
    data_key = [[Path(f).name, Path(f).stat().st_size] for f in (train_csv, dev_csv)]
    y_train = np.array([u.label for u in train_u])
    y_dev = np.array([u.label for u in dev_u])
    log(f"train {len(train_u)} / dev {len(dev_u)} utterances; device {enc.device}")
    results = []
    for ctx in contexts:
        tr = dv = None  # the frozen-layer cache, built only if some recipe at this context must train
        for g in _grid({"pooling": poolings, "alpha": alphas, "seed": seeds}):
            recipe = Recipe(**{**asdict(base), "context_turns": ctx, **g})
            log(f"recipe ctx={ctx} {g}")
            saved = _member_file(work_dir, recipe, enc, data_key) if work_dir else None
            if saved and saved.is_file():
                results.append(_load_member(saved))
                log(f"  reused {saved} (dev wF1 {100 * results[-1]['dev_weighted_f1']:.2f})")
                continue
            if tr is None:
                t0 = time.time()
                seed_all(base.seed)
                tr = cache_bottom(enc, build_texts(enc, train_u, ctx), base.n_frozen)
                dv = cache_bottom(enc, build_texts(enc, dev_u, ctx), base.n_frozen)
                ntok = np.mean([s.shape[0] for s, _ in tr])
                log(
                    f"context {ctx}: cached {base.n_frozen} frozen layers, mean {ntok:.1f} tokens "
                    f"({time.time() - t0:.0f}s)"
                )
            model, hist = fit(enc, recipe, tr, y_train, dv, y_dev, log=log)
            probs = predict_cached(model, dv, enc.device)
            rep = classification_report(y_dev, probs.argmax(1), EMOTIONS)
            results.append(
                {
                    "recipe": asdict(recipe),
                    "dev_weighted_f1": rep["weighted_f1"],
                    "dev_accuracy": rep["accuracy"],
                    "history": hist,
                    "probs": probs,
                    "state": model.shipped_state(),
                }
            )
            if saved:
                _save_member(saved, results[-1])
            del model
        del tr, dv
    ensembles = _ensembles(results, y_dev)
    for e in ensembles:
        log(f"ensemble of {len(e['members'])} seed(s) of {e['recipe']}: dev wF1 {100 * e['dev_weighted_f1']:.2f}")
    if ensemble:  # every seed of the recipe whose averaged ensemble is best on dev
        members = max(ensembles, key=lambda e: e["dev_weighted_f1"])["members"]
    else:
        members = [max(results, key=lambda r: r["dev_weighted_f1"])]
    probs = np.mean([r["probs"] for r in members], axis=0)
    plain = classification_report(y_dev, probs.argmax(1), EMOTIONS)
    log(f"shipping {len(members)} member(s): dev wF1 {100 * plain['weighted_f1']:.2f}")
    prior = np.bincount(y_train, minlength=len(EMOTIONS)) / len(y_train)
    corr = choose_prior_correction(probs, y_dev, prior, np.array([u.dialogue_id for u in dev_u]), prior_betas)
    rep = classification_report(y_dev, (probs * prior ** -corr["beta"]).argmax(1), EMOTIONS)
    log(
        f"prior correction beta {corr['beta']}: dev wF1 {100 * plain['weighted_f1']:.2f} -> "
        f"{100 * rep['weighted_f1']:.2f} (beta chosen on one half of dev, scored on the other: "
        f"{100 * corr['split_half_weighted_f1']:.2f})"
    )
    if out_dir:
        write_assets(out_dir, enc, members, corr, rep, results, ensemble, train_csv, dev_csv, ensembles)
    log(format_tables(rep))
    for r in results:  # keep the summary JSON-friendly
        r.pop("state")
        r["dev_probs"] = r.pop("probs").round(5).tolist()
    return {
        "members": [r["recipe"] for r in members],
        "report": rep,
        "prior_correction": corr,
        "ensembles": [{k: e[k] for k in ("recipe", "dev_weighted_f1")} for e in ensembles],
        "results": results,
    }


ENSEMBLE_KEYS = ("context_turns", "pooling", "alpha")  # a recipe up to its seed


def _ensembles(results: list[dict], y_dev: np.ndarray) -> list[dict]:
    """Group the grid's results by recipe (all but the seed); score each group's averaged probabilities."""
    groups: dict = {}
    for r in results:
        groups.setdefault(tuple(r["recipe"][k] for k in ENSEMBLE_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        probs = np.mean([r["probs"] for r in rs], axis=0)
        out.append(
            {
                "recipe": dict(zip(ENSEMBLE_KEYS, key)),
                "members": rs,
                "dev_weighted_f1": classification_report(y_dev, probs.argmax(1), EMOTIONS)["weighted_f1"],
            }
        )
    return out


def _member_file(work_dir, recipe: Recipe, enc: TextEncoder, data_key) -> Path:
    """One file per (recipe, encoder, training data): the name is a hash of all three."""
    key = json.dumps({"recipe": asdict(recipe), "encoder": [enc.id, enc.version], "data": data_key}, sort_keys=True)
    return Path(work_dir) / f"member-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def _save_member(f: Path, res: dict) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: res[k] for k in ("recipe", "dev_weighted_f1", "dev_accuracy", "history")}
    tmp = f.with_suffix(".tmp")
    torch.save({"state": res["state"], "probs": torch.from_numpy(res["probs"]), "meta": json.dumps(meta)}, tmp)
    tmp.replace(f)  # never leave a half-written member behind


def _load_member(f: Path) -> dict:
    d = torch.load(f, weights_only=True)
    return {**json.loads(d["meta"]), "probs": d["probs"].numpy(), "state": d["state"]}


def choose_prior_correction(
    probs: np.ndarray, y: np.ndarray, prior: np.ndarray, dialogues: np.ndarray, betas=(0.0,)
) -> dict:
    """Decision rule argmax_y p(y|x) / prior(y)^beta, beta chosen by dev weighted F1 (0 = plain argmax).

    Class weighting in the loss and this correction trade majority-class recall for minority
    recall; weighted F1 rewards a balance between the two. beta is one more dev-selected
    hyper-parameter, so its worth is also measured honestly: choose beta on the even-numbered dev
    dialogues and score the odd ones, and vice versa ("split_half_weighted_f1", pooled).
    """

    def wf1(beta: float, sel: np.ndarray) -> float:
        return classification_report(y[sel], (probs[sel] * prior**-beta).argmax(1), EMOTIONS)["weighted_f1"]

    def pick(sel: np.ndarray) -> float:  # ties -> the smaller correction
        return max(betas, key=lambda b: (round(wf1(b, sel), 6), -abs(b)))

    everything = np.ones(len(y), bool)
    even = dialogues % 2 == 0
    held_out = np.empty(len(y), dtype=int)
    for part in (even, ~even):
        held_out[part] = (probs[part] * prior ** -pick(~part)).argmax(1)
    beta = float(pick(everything))
    return {
        "beta": beta,
        "betas": [float(b) for b in betas],
        "train_prior": prior.tolist(),
        "log_bias": (-beta * np.log(prior)).tolist(),
        "dev_weighted_f1_plain": wf1(0.0, everything),
        "split_half_weighted_f1": classification_report(y, held_out, EMOTIONS)["weighted_f1"],
    }


def write_assets(
    out_dir,
    enc,
    members: list[dict],
    corr: dict,
    rep: dict,
    results: list[dict],
    ensemble: bool,
    train_csv,
    dev_csv,
    ensembles: list[dict] = (),
) -> None:
    """text_emotion.safetensors (fp16 trained tensors; "members.<k>." prefixes for an ensemble) + .json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ensemble:
        state = {f"members.{k}.{name}": v for k, m in enumerate(members) for name, v in m["state"].items()}
    else:
        state = members[0]["state"]
    save_file(state, str(out / "text_emotion.safetensors"))

    def describe(m: dict) -> dict:
        r = m["recipe"]
        return {
            "context_turns": r["context_turns"],
            "trained_layers": list(range(r["n_frozen"], enc.n_layers)),
            "lora_rank": r["lora_rank"],
            "recipe": r,
            "best_epoch": m["history"]["best_epoch"],
            "epochs": m["history"]["epochs"],
            "dev_weighted_f1": m["dev_weighted_f1"],
        }

    first = members[0]["recipe"]
    meta = {
        "kind": "text_emotion",
        "format": 2,
        "labels": list(EMOTIONS),
        "encoder": {"id": enc.id, "version": enc.version, "dim": enc.dim, "n_layers": enc.n_layers},
        "pooling": first["pooling"],
        "max_tokens": first["max_tokens"],
        "weights_dtype": "float16",
        **({"members": [describe(m) for m in members]} if ensemble else describe(members[0])),
        "prior_correction": corr,
        "training_data": {
            "train": Path(train_csv).name,
            "select": Path(dev_csv).name,
            "note": "MELD train split; every choice (recipe grid, epoch, prior correction) "
            "selected on dev; test never used",
        },
        "dev_metrics": {
            k: rep[k]
            for k in (
                "n",
                "accuracy",
                "balanced_accuracy",
                "weighted_precision",
                "weighted_recall",
                "weighted_f1",
                "macro_f1",
                "per_class",
                "confusion_matrix",
            )
        },
        "grid": [
            {
                "recipe": {k: r["recipe"][k] for k in ("context_turns", "pooling", "alpha", "seed")},
                "dev_weighted_f1": r["dev_weighted_f1"],
                "dev_accuracy": r["dev_accuracy"],
                "best_epoch": r["history"]["best_epoch"],
            }
            for r in results
        ],
        "ensembles": [
            {
                "recipe": e["recipe"],
                "seeds": [m["recipe"]["seed"] for m in e["members"]],
                "dev_weighted_f1": e["dev_weighted_f1"],
            }
            for e in ensembles
        ],
        "date": _dt.date.today().isoformat(),
        "command": "HF_HUB_OFFLINE=1 python tools/train_text_model.py --meld-dir <MELD folder>",
    }
    (out / "text_emotion.json").write_text(json.dumps(meta, indent=1) + "\n")
