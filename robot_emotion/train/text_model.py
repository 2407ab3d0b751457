"""Train the default text emotion model on MELD (train split; every choice made on dev).

Recipe (CPU friendly): the bottom `n_frozen` MiniLM layers stay frozen and their outputs are
computed ONCE per context size and cached in RAM (fp16, unpadded; n_frozen 0 caches the
embeddings); the layers above are adapted — their full weights, or LoRA low-rank deltas over the
frozen weights (small to ship, and less prone to over-fit MELD's 10k utterances) — with a linear
head and class-weighted cross-entropy (weights = (1/frequency)^alpha, normalised). The best epoch
by dev weighted F1 is kept. Several seeds can be shipped as one averaged ensemble, and a prior
correction of the decision rule is chosen on dev (text_model_grid.choose_prior_correction). Only the trained
tensors are shipped (robot_emotion/assets/text_emotion.safetensors, fp16) plus a JSON meta; they
load on top of the embedded all-MiniLM-L6-v2 (features.text_emotion.load_default_text_model).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robot_emotion import EMOTIONS
from robot_emotion.data.meld_text import with_past_context
from robot_emotion.features.text import TextEncoder, masked_mean
from robot_emotion.train.metrics import classification_report


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
