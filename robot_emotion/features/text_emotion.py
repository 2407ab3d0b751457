"""The text emotion model: MiniLM (features.text.TextEncoder) + trained layers + a linear head.

Weights ship as `<dir>/text_emotion.safetensors` + `text_emotion.json` (written by
tools/train_text_model.py) and load on top of the embedded all-MiniLM-L6-v2, offline. The asset
holds one or more *members* (an ensemble: the members' probabilities and pooled features are
averaged). A member is a set of trained transformer layers — full tensors, or low-rank (LoRA)
factors folded into the weights at load — plus a head, with its own number of past turns.
An optional log-space class bias (the dev-selected prior correction) is applied last.

At inference the members that read the same input run as ONE batched forward
(features.text_ensemble.StackedMembers), optionally with dynamic int8 weights on CPU; the input's
token ids are assembled from per-turn cached ids (TextEncoder.build_ids).
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
from robot_emotion.features.text_ensemble import StackedMembers

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"
ASSET_NAME = "text_emotion"


def asset_version(asset_dir: str | Path | None = None) -> str:
    """The trained text model's version: a hash of its weights file. Fusion checkpoints record it,
    so a checkpoint trained on another text model's features is refused, not silently misread."""
    w_f = (Path(asset_dir) if asset_dir else ASSET_DIR) / f"{ASSET_NAME}.safetensors"
    return hashlib.sha1(w_f.read_bytes()).hexdigest()[:12]


def encoder_tag(asset_dir: str | Path | None = None) -> dict:
    """The id and version a loaded model of this folder reports (fusion checkpoints record
    them) and its feature size, read from its files without loading it: a checkpoint that
    cannot work with it is refused in a second."""
    d = Path(asset_dir) if asset_dir else ASSET_DIR
    meta = json.loads((d / f"{ASSET_NAME}.json").read_text())
    return {
        "id": meta.get("id", f"{ASSET_NAME}@{meta['encoder']['id']}"),
        "version": str(meta.get("version", asset_version(d))),
        "dim": int(meta["encoder"]["dim"]),
    }


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
    first: int  # layers [0, first) are plain MiniLM, [first, n) come from `layers`
    layers: nn.ModuleList
    head: nn.Linear
    context_turns: int


def _build_member(enc: TextEncoder, state: dict, prefix: str, context_turns: int, n_labels: int) -> Member:
    trained: dict[int, dict] = {}
    for k, v in state.items():
        if k.startswith(prefix + "layers."):
            i, rest = k[len(prefix) + len("layers.") :].split(".", 1)
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

    def __init__(
        self,
        encoder: TextEncoder,
        members: list[Member],
        labels,
        meta: dict | None = None,
        class_bias=None,
        stacked: bool = True,
        int8: bool = False,
    ):
        self.encoder = encoder
        self.members = members
        self.labels = tuple(labels)
        self.meta = meta or {}
        self.id = self.meta.get("id", f"{ASSET_NAME}@{encoder.id}")
        self.version = str(self.meta.get("version", encoder.version))
        self.class_bias = None if class_bias is None else torch.tensor(class_bias, dtype=torch.float32)
        # int8 (dynamic quantization) is a CPU kernel and needs the stacked form
        self.int8 = bool(int8) and stacked and encoder.device.type == "cpu"
        self.groups: list[tuple[int, list[int], StackedMembers]] = []  # (context_turns, member indices, stack)
        if stacked:
            self._stack_members()

    def _stack_members(self) -> None:
        """Members reading the same input (past turns, first trained layer) become one StackedMembers;
        their per-member layers are then released (the stack holds the weights)."""
        by_input: dict[tuple[int, int], list[int]] = {}
        for i, m in enumerate(self.members):
            by_input.setdefault((m.context_turns, m.first), []).append(i)
        heads = self.encoder.model.config.num_attention_heads
        for (ctx, _), idx in by_input.items():
            stack = StackedMembers([self.members[i] for i in idx], heads).to(self.encoder.device).eval()
            self.groups.append((ctx, idx, stack.to_int8() if self.int8 else stack))
        for m in self.members:
            m.layers = None

    @property
    def context_turns(self) -> int:
        """How many past turns the model reads (the most any member reads)."""
        return max(m.context_turns for m in self.members)

    @classmethod
    def load(
        cls,
        asset_dir: str | None = None,
        device: str = "auto",
        model_path: str | None = None,
        stacked: bool = True,
        int8: bool = False,
    ):
        """Load `<asset_dir>/text_emotion.{json,safetensors}` on top of the encoder; refuse mismatches.

        stacked: the members run as one batched forward (False: one pass per member, the reference);
        int8: dynamic int8 Linear weights (CPU only; measured in README's Benchmark section)."""
        from safetensors.torch import load_file

        d = Path(asset_dir) if asset_dir else ASSET_DIR
        meta_f, w_f = d / f"{ASSET_NAME}.json", d / f"{ASSET_NAME}.safetensors"
        if not meta_f.is_file() or not w_f.is_file():
            raise FileNotFoundError(f"text emotion model not found in {d} (need {meta_f.name} and {w_f.name})")
        meta = json.loads(meta_f.read_text())
        if meta.get("kind") != "text_emotion":
            raise ValueError(f"{meta_f}: not a text emotion checkpoint (kind={meta.get('kind')!r})")
        enc = TextEncoder(
            model_path, device=device, max_tokens=meta.get("max_tokens", 256), pooling=meta.get("pooling", "current")
        )
        want = meta["encoder"]
        if (want["id"], str(want["version"])) != (enc.id, enc.version):
            raise ValueError(
                f"{meta_f}: trained on encoder {want['id']} v{want['version']}, "
                f"but the configured encoder is {enc.id} v{enc.version}"
            )
        state = load_file(str(w_f))
        n = len(meta["labels"])
        if "members" in meta:  # ensemble: tensors under "members.<k>."
            members = [
                _build_member(enc, state, f"members.{k}.", m["context_turns"], n) for k, m in enumerate(meta["members"])
            ]
        else:
            members = [_build_member(enc, state, "", meta["context_turns"], n)]
        bias = (meta.get("prior_correction") or {}).get("log_bias")
        return cls(
            enc,
            members,
            meta["labels"],
            {"version": asset_version(d), **meta},
            class_bias=bias,
            stacked=stacked,
            int8=int8,
        )

    @torch.no_grad()
    def forward(self, items):
        """items: [(history, current)] -> (token states (B,T,D), mask (B,T), pooled (B,D), probs (B,C))."""
        enc = self.encoder
        probs, pooled, first = 0.0, 0.0, None
        inputs: dict = {}  # members that read the same turns share tokenisation and frozen layers
        for ctx, first_layer, run in self._passes():
            if ctx not in inputs:
                inputs[ctx] = enc.tokenize_ids([enc.build_ids(list(h)[-ctx:] if ctx else [], c) for h, c in items])
            batch = inputs[ctx]
            if (ctx, first_layer) not in inputs:
                inputs[(ctx, first_layer)] = enc.bottom_states(batch, first_layer)
            mask = batch["attention_mask"].to(enc.device)
            states, vec, logits = run(inputs[(ctx, first_layer)], mask, batch["current_mask"].to(enc.device))
            probs = probs + torch.softmax(logits.float(), -1).sum(0)
            pooled = pooled + vec.float().sum(0)
            first = first or (states[0], mask)
        probs, pooled = probs / len(self.members), pooled / len(self.members)
        if self.class_bias is not None:
            probs = probs * torch.exp(self.class_bias.to(probs.device))
            probs = probs / probs.sum(-1, keepdim=True)
        return first[0], first[1], pooled, probs

    def _passes(self):
        """(context turns, first trained layer, run) per forward pass; run(hidden, mask, current_mask)
        -> (states (M,B,T,D), pooled (M,B,D), logits (M,B,C)) for the pass's M members."""
        enc = self.encoder
        if self.groups:
            for ctx, _, stack in self.groups:

                def run(hidden, mask, cur, stack=stack):
                    m = stack.m
                    pool = lambda s: enc.pool(s, mask.repeat(m, 1), cur.repeat(m, 1))  # noqa: E731
                    return stack(hidden, mask, enc.extended_mask(mask, hidden.dtype), pool)

                yield ctx, stack.first, run
            return
        for m in self.members:  # the reference: one MiniLM pass per member

            def run(hidden, mask, cur, m=m):
                states = enc.run_layers(hidden, mask, 0, None, layers=m.layers)
                vec = enc.pool(states, mask, cur)
                return states[None], vec[None], m.head(vec)[None]

            yield m.context_turns, m.first, run

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


def load_default_text_model(device: str = "auto", int8: bool = False) -> TextEmotionModel:
    """The shipped text emotion model (robot_emotion/assets), fully offline."""
    return TextEmotionModel.load(None, device=device, int8=int8)
