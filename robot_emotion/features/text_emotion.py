"""The text emotion model: MiniLM (features.text.TextEncoder) + trained layers + a linear head.

Weights ship as `<dir>/text_emotion.safetensors` + `text_emotion.json` (written by
tools/train_text_model.py) and load on top of the embedded all-MiniLM-L6-v2, offline. The asset
holds one or more *members* (an ensemble: the members' probabilities and pooled features are
averaged). A member is a set of trained transformer layers — full tensors, or low-rank (LoRA)
factors folded into the weights at load — plus a head, with its own number of past turns.
An optional log-space class bias (the dev-selected prior correction) is applied last.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_emotion.features.text import TextEncoder

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
ASSET_NAME = "text_emotion"


def asset_version(asset_dir: str | Path | None = None) -> str:
    """The trained text model's version: a hash of its weights file. Fusion checkpoints record it,
    so a checkpoint trained on another text model's features is refused, not silently misread."""
    w_f = (Path(asset_dir) if asset_dir else ASSET_DIR) / f"{ASSET_NAME}.safetensors"
    return hashlib.sha1(w_f.read_bytes()).hexdigest()[:12]


def merge_layer_state(base: dict, trained: dict) -> dict:
    """A transformer layer's state with the trained tensors applied.

    Full tensors replace the base ones; a low-rank pair "<linear>.lora_A" (r, in) and
    "<linear>.lora_B" (out, r) adds B @ A to "<linear>.weight" (the scale is already folded into B).
    """
    out = {k: v.clone() for k, v in base.items()}
    for k, v in trained.items():
        if k.endswith(".lora_B"):
            continue
        if k.endswith(".lora_A"):
            name = k[: -len(".lora_A")]
            w = out[f"{name}.weight"]
            out[f"{name}.weight"] = w + (trained[f"{name}.lora_B"].float() @ v.float()).to(w.dtype)
        elif k not in out:
            raise KeyError(f"unexpected tensor {k!r} in the text emotion weights")
        else:
            out[k] = v.to(out[k].dtype)
    return out


@dataclass
class Member:
    first: int                # layers [0, first) are plain MiniLM, [first, n) come from `layers`
    layers: nn.ModuleList
    head: nn.Linear
    context_turns: int


def _build_member(enc: TextEncoder, state: dict, prefix: str, context_turns: int, n_labels: int) -> Member:
    trained: dict[int, dict] = {}
    for k, v in state.items():
        if k.startswith(prefix + "layers."):
            i, rest = k[len(prefix) + len("layers."):].split(".", 1)
            trained.setdefault(int(i), {})[rest] = v.float()
    first = min(trained, default=enc.n_layers)
    layers = copy.deepcopy(enc.model.encoder.layer[first:])
    for i, sd in trained.items():
        layer = layers[i - first]
        layer.load_state_dict(merge_layer_state(layer.state_dict(), sd), strict=True)
    head = nn.Linear(enc.dim, n_labels)
    head.load_state_dict({"weight": state[prefix + "head.weight"].float(), "bias": state[prefix + "head.bias"].float()})
    return Member(first, layers.to(enc.device).eval(), head.to(enc.device).eval(), int(context_turns))


class TextEmotionModel:
    """[(past turns, current turn)] -> probabilities over the emotions + features for fusion.

    The feature returned with the probabilities is the pooled 384-d vector before the last FC layer
    (the paper's "features taken before the last FC layer"), averaged over members; the token
    states (for crossmodal attention) are the first member's.
    """

    def __init__(self, encoder: TextEncoder, members: list[Member], labels, meta: dict | None = None,
                 class_bias=None):
        self.encoder = encoder
        self.members = members
        self.labels = tuple(labels)
        self.meta = meta or {}
        self.id = self.meta.get("id", f"{ASSET_NAME}@{encoder.id}")
        self.version = str(self.meta.get("version", encoder.version))
        self.class_bias = None if class_bias is None else torch.tensor(class_bias, dtype=torch.float32)

    @property
    def context_turns(self) -> int:
        """How many past turns the model reads (the most any member reads)."""
        return max(m.context_turns for m in self.members)

    @classmethod
    def load(cls, asset_dir: str | None = None, device: str = "auto", model_path: str | None = None):
        """Load `<asset_dir>/text_emotion.{json,safetensors}` on top of the encoder; refuse mismatches."""
        from safetensors.torch import load_file

        d = Path(asset_dir) if asset_dir else ASSET_DIR
        meta_f, w_f = d / f"{ASSET_NAME}.json", d / f"{ASSET_NAME}.safetensors"
        if not meta_f.is_file() or not w_f.is_file():
            raise FileNotFoundError(f"text emotion model not found in {d} (need {meta_f.name} and {w_f.name})")
        meta = json.loads(meta_f.read_text())
        if meta.get("kind") != "text_emotion":
            raise ValueError(f"{meta_f}: not a text emotion checkpoint (kind={meta.get('kind')!r})")
        enc = TextEncoder(model_path, device=device, max_tokens=meta.get("max_tokens", 256),
                          pooling=meta.get("pooling", "current"))
        want = meta["encoder"]
        if (want["id"], str(want["version"])) != (enc.id, enc.version):
            raise ValueError(f"{meta_f}: trained on encoder {want['id']} v{want['version']}, "
                             f"but the configured encoder is {enc.id} v{enc.version}")
        state = load_file(str(w_f))
        n = len(meta["labels"])
        if "members" in meta:  # ensemble: tensors under "members.<k>."
            members = [_build_member(enc, state, f"members.{k}.", m["context_turns"], n)
                       for k, m in enumerate(meta["members"])]
        else:
            members = [_build_member(enc, state, "", meta["context_turns"], n)]
        bias = (meta.get("prior_correction") or {}).get("log_bias")
        return cls(enc, members, meta["labels"], {"version": asset_version(d), **meta}, class_bias=bias)

    @torch.no_grad()
    def forward(self, items):
        """items: [(history, current)] -> (token states (B,T,D), mask (B,T), pooled (B,D), probs (B,C))."""
        enc = self.encoder
        probs, pooled, first = 0.0, 0.0, None
        inputs: dict = {}  # members that read the same turns share tokenisation and frozen layers
        for m in self.members:
            if m.context_turns not in inputs:
                inputs[m.context_turns] = enc.tokenize(
                    [enc.build_input(list(h)[-m.context_turns:] if m.context_turns else [], c) for h, c in items])
            batch = inputs[m.context_turns]
            if (m.context_turns, m.first) not in inputs:
                inputs[(m.context_turns, m.first)] = enc.bottom_states(batch, m.first)
            mask = batch["attention_mask"].to(enc.device)
            states = enc.run_layers(inputs[(m.context_turns, m.first)], mask, 0, None, layers=m.layers)
            vec = enc.pool(states, mask, batch["current_mask"].to(enc.device))
            probs = probs + torch.softmax(m.head(vec).float(), -1)
            pooled = pooled + vec.float()
            first = first or (states, mask)
        probs, pooled = probs / len(self.members), pooled / len(self.members)
        if self.class_bias is not None:
            probs = probs * torch.exp(self.class_bias.to(probs.device))
            probs = probs / probs.sum(-1, keepdim=True)
        return first[0], first[1], pooled, probs

    def predict_batch(self, items):
        """items: [(history, current)] -> (probs (B,7) float32, features (B,384) float32)."""
        if not items:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, self.encoder.dim), np.float32)
        _, _, pooled, probs = self.forward(items)
        return probs.cpu().numpy().astype(np.float32), pooled.cpu().numpy()

    def predict(self, history, current):
        """history: past turns [(speaker, text)] oldest first; current: (speaker, text)."""
        probs, feats = self.predict_batch([(history, current)])
        return probs[0], feats[0]


def load_default_text_model(device: str = "auto") -> TextEmotionModel:
    """The shipped text emotion model (robot_emotion/assets), fully offline."""
    return TextEmotionModel.load(None, device=device)
