"""Train the default text emotion model on MELD (train split; every choice made on dev).

Recipe (CPU friendly): the bottom `n_frozen` MiniLM layers stay frozen and their outputs are
computed ONCE per context size and cached in RAM (fp16, unpadded; n_frozen 0 caches the
embeddings); the layers above are adapted — their full weights, or LoRA low-rank deltas over the
frozen weights (small to ship, and less prone to over-fit MELD's 10k utterances) — with a linear
head and class-weighted cross-entropy (weights = (1/frequency)^alpha, normalised). The best epoch
by dev weighted F1 is kept. Several seeds can be shipped as one averaged ensemble, and a prior
correction of the decision rule is chosen on dev (choose_prior_correction). Only the trained
tensors are shipped (robot_emotion/assets/text_emotion.safetensors, fp16) plus a JSON meta; they
load on top of the embedded all-MiniLM-L6-v2 (features.text_emotion.load_default_text_model).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_emotion import EMOTIONS
from robot_emotion.data.meld import read_meld_csv
from robot_emotion.data.meld_text import with_past_context
from robot_emotion.features.text import TextEncoder, masked_mean
from robot_emotion.threads import set_torch_threads
from robot_emotion.train.metrics import classification_report, format_tables


@dataclass
class Recipe:
    # defaults = the shipped recipe (selected on MELD dev, see the asset JSON's "grid")
    context_turns: int = 2  # past turns read (the shipped ensemble's; 0 was worse on dev)
    n_frozen: int = 0  # every MiniLM layer adapted ...
    lora_rank: int = 16  # ... by low-rank deltas (0 = fine-tune the layers' full weights)
    lora_alpha: float = 16.0
    pooling: str = "current"
    alpha: float = 0.25  # class weight = freq^-alpha
    label_smoothing: float = 0.0
    epochs: int = 5
    batch_size: int = 32
    lr_layers: float = 5e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    dropout: float = 0.1
    max_tokens: int = 160
    seed: int = 13
    extra: dict = field(default_factory=dict)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_texts(enc: TextEncoder, utts, context_turns: int) -> list[str]:
    return [enc.build_input(hist, (u.speaker, u.text)) for u, hist in with_past_context(utts, max_turns=context_turns)]


@torch.no_grad()
def cache_bottom(enc: TextEncoder, texts: list[str], n_frozen: int, batch_size: int = 64):
    """Run embeddings + frozen layers once. Returns per-example (states fp16 (T,D), mask, current mask)."""
    lens = [len(enc.tokenizer.tokenize(t)) for t in texts]
    order = np.argsort(lens)
    out: list = [None] * len(texts)
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        batch = enc.tokenize([texts[j] for j in idx])
        states = enc.bottom_states(batch, n_frozen).to("cpu", torch.float16)
        for r, j in enumerate(idx):
            n = int(batch["attention_mask"][r].sum())
            out[j] = (states[r, :n].clone(), batch["current_mask"][r, :n].clone())
    return out


class LoRALinear(nn.Module):
    """base(x) + x A^T B^T * alpha/r with the base weight frozen (its bias stays trainable).

    B starts at zero, so training starts from MiniLM itself. Only A and B (r x (in + out) numbers)
    are shipped; the loader folds B A into the weight, so inference costs nothing extra.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A, self.B * self.scale


def add_lora(module: nn.Module, rank: int, alpha: float) -> None:
    """Replace every nn.Linear inside `module` by a LoRALinear wrapping it."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, LoRALinear(child, rank, alpha))
        else:
            add_lora(child, rank, alpha)


class TopModel(nn.Module):
    """Fine-tuned top transformer layers (full weights or LoRA deltas) + pooling + linear head."""

    def __init__(
        self,
        enc: TextEncoder,
        n_frozen: int,
        n_classes: int,
        pooling: str,
        dropout: float,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
    ):
        super().__init__()
        self.enc = [enc]  # not a submodule: its frozen weights are neither trained nor saved
        self.first = n_frozen
        self.layers = copy.deepcopy(enc.model.encoder.layer[n_frozen:])
        if lora_rank:
            add_lora(self.layers, lora_rank, lora_alpha)
        self.pooling = pooling
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(enc.dim, n_classes)

    def forward(self, hidden, mask, cur_mask):
        states = self.enc[0].run_layers(hidden, mask, 0, None, layers=self.layers)
        pooled = masked_mean(states, cur_mask if self.pooling == "current" else mask)
        return self.head(self.drop(pooled)), pooled

    def shipped_state(self) -> dict[str, torch.Tensor]:
        """Trained tensors only: full weights, or biases/LayerNorms + "<linear>.lora_A/B" factors."""
        sd = {}
        for i, layer in enumerate(self.layers):
            prefix = f"layers.{self.first + i}."
            for name, mod in layer.named_modules():
                if isinstance(mod, LoRALinear):
                    a, b = mod.delta_factors()
                    sd[f"{prefix}{name}.lora_A"], sd[f"{prefix}{name}.lora_B"] = a, b
            for k, v in layer.named_parameters():
                if v.requires_grad and not k.endswith((".A", ".B")):
                    sd[prefix + k.replace(".base.", ".")] = v
        sd.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in sd.items()}


def collate(items, device):
    T = max(s.shape[0] for s, _ in items)
    D = items[0][0].shape[1]
    h = torch.zeros(len(items), T, D, dtype=torch.float32)
    m = torch.zeros(len(items), T, dtype=torch.long)
    c = torch.zeros(len(items), T, dtype=torch.bool)
    for i, (s, cm) in enumerate(items):
        n = s.shape[0]
        h[i, :n], m[i, :n], c[i, :n] = s.float(), 1, cm
    return h.to(device), m.to(device), c.to(device)


def length_batches(cache, batch_size: int, rng: random.Random):
    """Shuffled batches of similar length (little padding)."""
    idx = list(range(len(cache)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for i in range(0, len(idx), chunk):
        part = sorted(idx[i : i + chunk], key=lambda j: cache[j][0].shape[0])
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_cached(model: TopModel, cache, device, batch_size: int = 128):
    model.eval()
    order = sorted(range(len(cache)), key=lambda j: cache[j][0].shape[0])
    probs = np.zeros((len(cache), model.head.out_features), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        logits, _ = model(*collate([cache[j] for j in idx], device))
        probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
    return probs


def class_weights(y: np.ndarray, n: int, alpha: float) -> torch.Tensor:
    freq = np.bincount(y, minlength=n).astype(float) / len(y)
    w = np.power(np.maximum(freq, 1e-6), -alpha)
    return torch.tensor(w / (w * freq).sum(), dtype=torch.float32)  # expected weight = 1


def fit(enc: TextEncoder, recipe: Recipe, train_cache, y_train, dev_cache, y_dev, log=print):
    """Fine-tune top layers + head; returns (model with the best-dev-epoch weights, history)."""
    seed_all(recipe.seed)
    device = enc.device
    model = TopModel(
        enc, recipe.n_frozen, len(EMOTIONS), recipe.pooling, recipe.dropout, recipe.lora_rank, recipe.lora_alpha
    ).to(device)
    trainable = [p for p in model.layers.parameters() if p.requires_grad]
    groups = [{"params": trainable, "lr": recipe.lr_layers}, {"params": model.head.parameters(), "lr": recipe.lr_head}]
    opt = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * ((len(train_cache) + recipe.batch_size - 1) // recipe.batch_size)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm)))
    )
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(y_train, len(EMOTIONS), recipe.alpha).to(device), label_smoothing=recipe.label_smoothing
    )
    rng = random.Random(recipe.seed)
    yt = torch.as_tensor(y_train)
    best, history = None, []
    for epoch in range(recipe.epochs):
        model.train()
        t0, tot = time.time(), 0.0
        for b in length_batches(train_cache, recipe.batch_size, rng):
            logits, _ = model(*collate([train_cache[j] for j in b], device))
            loss = loss_fn(logits, yt[b].to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
        rep = classification_report(y_dev, predict_cached(model, dev_cache, device).argmax(1), EMOTIONS)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": tot / len(train_cache),
                "dev_acc": rep["accuracy"],
                "dev_wf1": rep["weighted_f1"],
                "dev_bacc": rep["balanced_accuracy"],
                "seconds": time.time() - t0,
            }
        )
        log(
            f"  epoch {epoch + 1}: loss {tot / len(train_cache):.4f} dev acc {100 * rep['accuracy']:.2f} "
            f"wF1 {100 * rep['weighted_f1']:.2f} bacc {100 * rep['balanced_accuracy']:.2f} "
            f"({time.time() - t0:.0f}s)"
        )
        if best is None or rep["weighted_f1"] > best[0]:
            best = (rep["weighted_f1"], epoch + 1, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model, {"epochs": history, "best_epoch": best[1]}


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
