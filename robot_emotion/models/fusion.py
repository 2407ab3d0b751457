"""The fusion families behind one interface, and ``build_model``.

families:
  crossmodal-embracenet  crossmodal transformer + EmbraceNet (Xie, Sidulova & Park, Sensors 2021)
  early                  concat | sum | product of projected utterance vectors + MLP
  late                   weighted average of per-modality class probabilities
  unified                one transformer encoder over [CLS; T; F; A] + emotion-query decoder,
                         sigmoid per emotion, weighted BCE (multi-label); see unified.py
Every model: forward(FusionInput) -> FusionOutput, loss(output, targets) -> scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MODALITIES, FusionInput, FusionModel, FusionOutput, masked_mean
from .crossmodal import CrossmodalTransformer
from .embracenet import EmbraceNet
from .unified import UnifiedTransformer

_COMMON = {"class_weights": None}

DEFAULT_HPARAMS: dict[str, dict] = {
    "crossmodal-embracenet": {
        "d": 64,
        "heads": 4,
        "layers": 1,
        "dropout": 0.1,
        "c": 256,
        "embrace_p": None,
        "modality_dropout": 0.25,
        **_COMMON,
    },
    "early": {"mode": "concat", "d": 64, "hidden": 128, "dropout": 0.1, "modality_dropout": 0.25, **_COMMON},
    "late": {
        "hidden": 64,
        "dropout": 0.1,
        "weights": {"text": 0.6, "face": 0.25, "audio": 0.15},
        "aux_weight": 1.0,
        "temperatures": None,
        "fused_temperature": 1.0,
        **_COMMON,
    },
    "unified": {
        "d": 64,
        "heads": 4,
        "enc_layers": 2,
        "dec_layers": 1,
        "dropout": 0.1,
        "modality_dropout": 0.25,
        "pos_weight": None,
        **_COMMON,
    },
}
FAMILIES = tuple(DEFAULT_HPARAMS)


class CrossmodalEmbraceNet(FusionModel):
    """Projection -> crossmodal transformer (all ordered pairs, Hadamard per target) -> masked
    mean pool per target -> EmbraceNet (sampling in training; expectation at inference, see
    embracenet.py) -> linear classifier over the classes."""

    def __init__(self, dims, n_classes, hparams):
        super().__init__("crossmodal-embracenet", dims, n_classes, hparams)
        h = self.hparams
        self.crossmodal = CrossmodalTransformer(
            self.dims, d=h["d"], heads=h["heads"], layers=h["layers"], dropout=h["dropout"]
        )
        self.embrace = EmbraceNet({m: h["d"] for m in self.modalities}, c=h["c"], p=h["embrace_p"])
        self.drop = nn.Dropout(h["dropout"])
        self.classifier = nn.Linear(h["c"], self.n_classes)  # linear: E[logits] = logits(E[e])

    def forward(self, inp: FusionInput) -> FusionOutput:
        prep = self._prepare(inp, self.hparams["modality_dropout"])
        avail = prep.avail_matrix(self.modalities)
        cm = self.crossmodal(prep.seq, prep.safe_mask, prep.avail)
        pooled = {m: masked_mean(cm[m], prep.mask[m]) for m in self.modalities}
        e = self.embrace(pooled, avail)
        logits = self.classifier(self.drop(e))
        return self._finish(logits, logits.softmax(-1), e, avail.any(1))


class EarlyFusion(FusionModel):
    """Projected pooled vectors (Linear -> tanh) combined by concat | sum | product (a missing
    modality contributes zeros for concat/sum, ones for product) -> MLP classifier."""

    MODES = ("concat", "sum", "product")

    def __init__(self, dims, n_classes, hparams):
        super().__init__("early", dims, n_classes, hparams)
        h = self.hparams
        if h["mode"] not in self.MODES:
            raise ValueError(f"early fusion mode must be one of {self.MODES}, got {h['mode']!r}")
        self.proj = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(self.dims[m], h["d"]), nn.Tanh()) for m in self.modalities}
        )
        fused = h["d"] * len(self.modalities) if h["mode"] == "concat" else h["d"]
        self.hidden = nn.Sequential(nn.Dropout(h["dropout"]), nn.Linear(fused, h["hidden"]), nn.ReLU())
        self.out = nn.Sequential(nn.Dropout(h["dropout"]), nn.Linear(h["hidden"], self.n_classes))

    def forward(self, inp: FusionInput) -> FusionOutput:
        prep = self._prepare(inp, self.hparams["modality_dropout"])
        mode = self.hparams["mode"]
        fill = 1.0 if mode == "product" else 0.0
        vecs = []
        for m in self.modalities:
            v = self.proj[m](prep.pooled[m])
            vecs.append(torch.where(prep.avail[m].unsqueeze(1), v, torch.full_like(v, fill)))
        if mode == "concat":
            z = torch.cat(vecs, dim=1)
        elif mode == "sum":
            z = torch.stack(vecs).sum(0)
        else:
            z = torch.stack(vecs).prod(0)
        emb = self.hidden(z)
        logits = self.out(emb)
        has = prep.avail_matrix(self.modalities).any(1)
        return self._finish(logits, logits.softmax(-1), emb, has)


class LateFusion(FusionModel):
    """Per-modality classifier heads on the pooled vectors (or the class probabilities given in
    FusionInput.probs for a modality, e.g. a pre-trained text model or the FER2013 face CNN),
    averaged with fixed weights renormalised over the AVAILABLE modalities.

    Calibration (temperature scaling, Guo et al. 2017): ``temperatures`` {modality: T} rescales a
    modality's given probabilities (p ** (1/T), renormalised) before the average, and
    ``fused_temperature`` the fused result; both fit on held-out data (the default model's on
    MELD dev and paired RAVDESS clips: benchmarks/voice_emotion/fusion.py).

    dims[m] == 0 declares a probabilities-only modality (no head): it counts as available only
    where FusionInput.probs provides it. Loss: NLL of the fused distribution plus aux_weight x
    the mean cross-entropy of the trainable heads, so each head is also a good unimodal model.
    """

    allow_zero_dims = True

    def __init__(self, dims, n_classes, hparams):
        super().__init__("late", dims, n_classes, hparams)
        h = self.hparams
        w = {**DEFAULT_HPARAMS["late"]["weights"], **(h["weights"] or {})}
        h["weights"] = {m: float(w[m]) for m in MODALITIES if m in w}
        if any(v < 0 for v in h["weights"].values()):
            raise ValueError(f"late fusion weights must be non-negative: {h['weights']}")
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(self.dims[m], h["hidden"]),
                    nn.ReLU(),
                    nn.Dropout(h["dropout"]),
                    nn.Linear(h["hidden"], self.n_classes),
                )
                for m in self.modalities
                if self.dims[m] > 0
            }
        )
        self.register_buffer(
            "weights", torch.tensor([h["weights"].get(m, 0.0) for m in self.modalities]), persistent=False
        )
        temps = h["temperatures"] or {}
        if any(float(t) <= 0 for t in temps.values()) or float(h["fused_temperature"]) <= 0:
            raise ValueError(f"late fusion temperatures must be positive: {temps}, {h['fused_temperature']}")
        self.temps = {m: float(t) for m, t in temps.items()}

    def forward(self, inp: FusionInput) -> FusionOutput:
        prep = self._prepare(inp)
        given = inp.probs or {}
        per, avail, head_logits = [], [], {}
        for m in self.modalities:
            a = prep.avail[m]
            if m in given:
                p = given[m].to(device=a.device, dtype=self.weights.dtype)
                if p.shape != (prep.batch, self.n_classes):
                    raise ValueError(
                        f"{m} probs have shape {tuple(p.shape)}, expected ({prep.batch}, {self.n_classes})"
                    )
                p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
                a = a & torch.isfinite(p).all(1)
                p = torch.nan_to_num(p)
                if self.temps.get(m, 1.0) != 1.0:
                    p = (p.clamp_min(1e-12).log() / self.temps[m]).softmax(-1)
            elif m in self.heads:
                head_logits[m] = self.heads[m](prep.pooled[m])
                p = head_logits[m].softmax(-1)
            else:  # probabilities-only modality without probabilities
                p = torch.zeros(prep.batch, self.n_classes, device=a.device)
                a = torch.zeros_like(a)
            per.append(torch.where(a.unsqueeze(1), p, torch.zeros((), device=p.device, dtype=p.dtype)))
            avail.append(a)
        P = torch.stack(per, 1)  # B, K, C
        A = torch.stack(avail, 1)  # B, K
        w = self.weights.unsqueeze(0) * A.to(P.dtype)
        has = w.sum(1) > 0
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        probs = (w.unsqueeze(-1) * P).sum(1)
        if self.hparams["fused_temperature"] != 1.0:
            probs = (probs.clamp_min(1e-12).log() / float(self.hparams["fused_temperature"])).softmax(-1)
        probs = torch.where(has.unsqueeze(1), probs, torch.full_like(probs, 1.0 / self.n_classes))
        logits = probs.clamp_min(1e-8).log()
        emb = torch.cat([probs, P.flatten(1)], dim=1)
        aux = {f"logits_{m}": v for m, v in head_logits.items()}
        aux.update({f"avail_{m}": avail[i] for i, m in enumerate(self.modalities) if m in head_logits})
        return self._finish(logits, probs, emb, has, aux)

    def loss(self, output: FusionOutput, targets: Tensor) -> Tensor:
        has = output.has_estimate
        tgt = targets.to(output.logits.device)
        total = output.logits.sum() * 0.0
        if bool(has.any()):
            logp = output.logits[has]  # log of the fused probabilities
            t = tgt[has]
            if t.dim() == 1:
                total = total + F.nll_loss(logp, t, weight=self.class_weights)
            else:
                cw = 1.0 if self.class_weights is None else self.class_weights
                total = total - (t.float() * cw * logp).sum(1).mean()
        aux = []
        for m in self.modalities:
            if f"logits_{m}" in output.aux:
                a = output.aux[f"avail_{m}"]
                if bool(a.any()):
                    t = tgt[a] if tgt.dim() == 1 else tgt[a].float()
                    aux.append(F.cross_entropy(output.aux[f"logits_{m}"][a], t, weight=self.class_weights))
        if aux:
            total = total + self.hparams["aux_weight"] * torch.stack(aux).mean()
        return total


_CLASSES = {
    "crossmodal-embracenet": CrossmodalEmbraceNet,
    "early": EarlyFusion,
    "late": LateFusion,
    "unified": UnifiedTransformer,
}


def build_model(family: str, dims: dict[str, int], n_classes: int = 7, **hparams) -> FusionModel:
    """Build a fusion model. dims: modality -> feature dim (any non-empty subset of MODALITIES;
    a single modality gives a unimodal baseline). Unknown family or hparam -> ValueError."""
    if family not in DEFAULT_HPARAMS:
        raise ValueError(f"unknown fusion family {family!r}; choose one of {', '.join(FAMILIES)}")
    defaults = DEFAULT_HPARAMS[family]
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"unknown hparam(s) {unknown} for fusion family {family!r}; known: {sorted(defaults)}")
    merged = {**defaults, **hparams}
    return _CLASSES[family](dict(dims), n_classes, merged)
