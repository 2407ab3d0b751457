"""The one interface every fusion family shares: FusionInput -> model -> FusionOutput.

Conventions
-----------
* Modalities are always named and ordered as ``MODALITIES``; ``FusionInput.available`` is (B, 3)
  in that order even when a model uses only some of them (a text-only baseline ignores the
  other columns).
* A modality that is missing for a sample (``available`` False) never influences the output:
  ``FusionModel._prepare`` zeroes its sequence and pooled vector before any family sees them,
  and every family masks it out explicitly as well.
* Padded steps (``seq_mask`` False) are zeroed too, so padding content is irrelevant.
* A sample with no modality available gets ``has_estimate`` False, uniform ``probs``, zero
  logits/embedding and is excluded from the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODALITIES = ("text", "audio", "face")


@dataclass
class FusionInput:
    seqs: dict[str, Tensor]  # modality -> (B, T_m, D_m) sequences (may be zero-padded)
    seq_mask: dict[str, Tensor]  # modality -> (B, T_m) bool, True = valid step
    pooled: dict[str, Tensor]  # modality -> (B, D_m)
    available: Tensor  # (B, 3) bool, order MODALITIES
    probs: dict[str, Tensor] | None = None  # optional per-modality class probabilities (B, C)

    @property
    def batch_size(self) -> int:
        return int(self.available.shape[0])

    def to(self, device) -> "FusionInput":
        mv = lambda d: None if d is None else {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return FusionInput(mv(self.seqs), mv(self.seq_mask), mv(self.pooled), self.available.to(device), mv(self.probs))

    def with_available(self, available: Tensor) -> "FusionInput":
        """Same features, different availability (e.g. to evaluate with a modality missing)."""
        return dataclasses.replace(self, available=available.to(self.available.device).bool())


@dataclass
class FusionOutput:
    logits: Tensor  # (B, C)
    probs: Tensor  # (B, C); uniform where has_estimate is False
    embedding: Tensor  # (B, E) fused embedding (t-SNE)
    has_estimate: Tensor  # (B,) bool
    aux: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # family-specific extras


@dataclass
class Prepared:
    """Normalised, sanitised view of a FusionInput for the modalities a model uses."""

    seq: dict[str, Tensor]  # (B, T, D) zero at padding and for unavailable samples
    mask: dict[str, Tensor]  # (B, T) bool, real valid steps (False everywhere if unavailable)
    safe_mask: dict[str, Tensor]  # mask with >= 1 True per row (keeps attention NaN-free)
    pooled: dict[str, Tensor]  # (B, D) zero for unavailable samples
    avail: dict[str, Tensor]  # (B,) bool
    batch: int

    def avail_matrix(self, modalities) -> Tensor:
        return torch.stack([self.avail[m] for m in modalities], dim=1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, T, D) over steps where mask (B, T) is True; 0 for rows with no valid step."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def _as_class_weights(w, n_classes: int):
    if w is None:
        return None
    w = [float(v) for v in (w.tolist() if isinstance(w, Tensor) else w)]
    if len(w) != n_classes:
        raise ValueError(f"class_weights has {len(w)} entries but the model has {n_classes} classes")
    return w


class FusionModel(nn.Module):
    """Base class: input normalisation, modality dropout, output finishing, default CE loss."""

    allow_zero_dims = False  # only `late` accepts probabilities-only modalities (dim 0)

    def __init__(self, family: str, dims: dict[str, int], n_classes: int, hparams: dict):
        super().__init__()
        unknown = [m for m in dims if m not in MODALITIES]
        if unknown or not dims:
            raise ValueError(f"dims must name some of {MODALITIES}, got {sorted(dims)}")
        bad = {m: d for m, d in dims.items() if int(d) < (0 if self.allow_zero_dims else 1)}
        if bad:
            raise ValueError(f"feature dims must be positive for {family!r}, got {bad}")
        self.family = family
        self.modalities = tuple(m for m in MODALITIES if m in dims)
        self.dims = {m: int(dims[m]) for m in self.modalities}
        self.n_classes = int(n_classes)
        hparams = dict(hparams)
        hparams["class_weights"] = _as_class_weights(hparams.get("class_weights"), self.n_classes)
        self.hparams = hparams  # plain, JSON-able: stored in checkpoints to rebuild the model
        cw = hparams["class_weights"]
        self.register_buffer(
            "class_weights", None if cw is None else torch.tensor(cw, dtype=torch.float32), persistent=False
        )

    # ---- input -------------------------------------------------------------------------
    def _prepare(self, inp: FusionInput, modality_dropout: float = 0.0) -> Prepared:
        avail_all = inp.available
        if avail_all.dim() != 2 or avail_all.shape[1] != len(MODALITIES):
            raise ValueError(
                f"available must be (B, {len(MODALITIES)}) in order {MODALITIES}, got {tuple(avail_all.shape)}"
            )
        B = avail_all.shape[0]
        ref = next(self.parameters(), None)  # inputs follow the model's device and dtype
        device = ref.device if ref is not None else avail_all.device
        dtype = ref.dtype if ref is not None else torch.float32
        avail_all = avail_all.to(device)
        seqs, masks, safe, pooled, avail = {}, {}, {}, {}, {}
        for m in self.modalities:
            D = self.dims[m]
            a = avail_all[:, MODALITIES.index(m)].bool()
            s = inp.seqs.get(m) if inp.seqs else None
            p = inp.pooled.get(m) if inp.pooled else None
            if D == 0:  # declared without features (e.g. a probabilities-only modality in `late`)
                p = None
                mk = torch.zeros(B, 1, dtype=torch.bool, device=device)
                s = torch.zeros(B, 1, 0, device=device, dtype=dtype)
            elif s is not None:
                if s.dim() != 3 or s.shape[0] != B or s.shape[2] != D:
                    raise ValueError(f"{m} sequence has shape {tuple(s.shape)}, expected (B={B}, T, {D})")
                s = s.to(device=device, dtype=dtype)
                mk = inp.seq_mask.get(m) if inp.seq_mask else None
                mk = torch.ones(s.shape[:2], dtype=torch.bool, device=device) if mk is None else mk.to(device).bool()
                if mk.shape != s.shape[:2]:
                    raise ValueError(f"{m} seq_mask has shape {tuple(mk.shape)}, expected {tuple(s.shape[:2])}")
            elif p is not None:  # pooled only: a length-1 sequence
                s = p.to(device=device, dtype=dtype).unsqueeze(1)
                mk = torch.ones(B, 1, dtype=torch.bool, device=device)
            else:  # modality not given at all: unavailable
                s = torch.zeros(B, 1, D, device=device, dtype=dtype)
                mk = torch.zeros(B, 1, dtype=torch.bool, device=device)
                a = torch.zeros_like(a)
            if p is None:
                p = masked_mean(torch.nan_to_num(s), mk)
            elif p.shape != (B, D):
                raise ValueError(f"{m} pooled has shape {tuple(p.shape)}, expected ({B}, {D})")
            mk = mk & a.unsqueeze(1)
            s = torch.where(mk.unsqueeze(-1), s, torch.zeros((), device=device, dtype=dtype))
            p = torch.where(
                a.unsqueeze(1), p.to(device=device, dtype=dtype), torch.zeros((), device=device, dtype=dtype)
            )
            sm = mk.clone()
            sm[:, 0] |= ~mk.any(1)
            seqs[m], masks[m], safe[m], pooled[m], avail[m] = s, mk, sm, p, a
        prep = Prepared(seqs, masks, safe, pooled, avail, B)
        if self.training and modality_dropout > 0 and len(self.modalities) > 1:
            self._drop_modalities(prep, modality_dropout)
        return prep

    def _drop_modalities(self, prep: Prepared, q: float) -> None:
        """Training-time modality dropout: each available modality is marked unavailable with
        probability q, keeping at least one available modality per sample."""
        A = prep.avail_matrix(self.modalities)
        keep = A & (torch.rand(A.shape, device=A.device) >= q)
        lost_all = A.any(1) & ~keep.any(1)
        if lost_all.any():  # restore one random available modality
            pick = (torch.rand(A.shape, device=A.device) * A).argmax(1)
            keep[lost_all, pick[lost_all]] = True
        for i, m in enumerate(self.modalities):
            a = keep[:, i]
            prep.avail[m] = a
            prep.mask[m] = prep.mask[m] & a.unsqueeze(1)
            prep.seq[m] = prep.seq[m] * a.view(-1, 1, 1).to(prep.seq[m].dtype)
            prep.pooled[m] = prep.pooled[m] * a.view(-1, 1).to(prep.pooled[m].dtype)
            sm = prep.mask[m].clone()
            sm[:, 0] |= ~sm.any(1)
            prep.safe_mask[m] = sm

    # ---- output ------------------------------------------------------------------------
    def _finish(
        self, logits: Tensor, probs: Tensor, embedding: Tensor, has: Tensor, aux: dict | None = None
    ) -> FusionOutput:
        C = logits.shape[1]
        h = has.unsqueeze(1)
        zero = torch.zeros((), device=logits.device, dtype=logits.dtype)
        logits = torch.where(h, logits, zero)
        probs = torch.where(h, probs, torch.full((), 1.0 / C, device=probs.device, dtype=probs.dtype))
        embedding = torch.where(h, embedding, zero)
        return FusionOutput(logits, probs, embedding, has, aux or {})

    # ---- loss --------------------------------------------------------------------------
    def loss(self, output: FusionOutput, targets: Tensor) -> Tensor:
        """Cross-entropy (weighted by class_weights) over samples that have an estimate.
        targets: (B,) class indices, or (B, C) one-hot / soft targets."""
        has = output.has_estimate
        if not bool(has.any()):
            return output.logits.sum() * 0.0
        tgt = targets.to(output.logits.device)
        tgt = tgt[has] if tgt.dim() == 1 else tgt[has].float()
        return F.cross_entropy(output.logits[has], tgt, weight=self.class_weights)

    @staticmethod
    def _multi_hot(targets: Tensor, n_classes: int) -> Tensor:
        if targets.dim() == 1:
            return F.one_hot(targets.long(), n_classes).float()
        return targets.float()
