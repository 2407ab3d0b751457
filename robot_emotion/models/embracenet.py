"""EmbraceNet (Choi & Lee 2019): docking layers + the embracement layer.

Docking: per modality Linear(d_k, c) -> ReLU, giving d^(k) in R^c.
Embracement: for every feature i in 1..c draw ONE modality r_i ~ Multinomial(1, p) and keep its
value, e_i = sum_k r_i^(k) d_i^(k). p is the modality prior renormalised over the modalities that
are AVAILABLE for the sample, so a missing modality is never selected.

Inference (module.eval()) is deterministic: instead of sampling we use the EXPECTATION of the
embracement, e = sum_k p_k d^(k) (the reference samples at test time too). Followed by a linear
classifier this gives exactly the expected logits of the stochastic model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EmbraceNet(nn.Module):
    def __init__(self, in_dims: dict[str, int], c: int = 256, p: dict[str, float] | None = None):
        super().__init__()
        self.modalities = tuple(in_dims)
        self.c = c
        self.docking = nn.ModuleDict({m: nn.Sequential(nn.Linear(in_dims[m], c), nn.ReLU()) for m in self.modalities})
        prior = [float((p or {}).get(m, 1.0)) for m in self.modalities]
        if any(v < 0 for v in prior) or sum(prior) <= 0:
            raise ValueError(f"EmbraceNet modality prior must be non-negative and not all zero: {p}")
        self.register_buffer("prior", torch.tensor(prior), persistent=False)

    def selection_probs(self, avail: Tensor) -> Tensor:
        """avail (B, K) bool -> p (B, K), the prior renormalised over available modalities.
        Rows with nothing available get the plain prior (their output is discarded anyway)."""
        p = self.prior.to(avail.device).unsqueeze(0) * avail.float()
        s = p.sum(1, keepdim=True)
        fallback = (self.prior / self.prior.sum()).to(avail.device).expand_as(p)
        return torch.where(s > 0, p / s.clamp_min(1e-12), fallback)

    def forward(self, feats: dict[str, Tensor], avail: Tensor) -> Tensor:
        """feats: modality -> (B, d_k); avail: (B, K) bool in self.modalities order. -> (B, c)."""
        docked = torch.stack([self.docking[m](feats[m]) for m in self.modalities], dim=1)  # B,K,c
        p = self.selection_probs(avail)
        if self.training:
            B, K, c = docked.shape
            idx = torch.multinomial(p, c, replacement=True)  # (B, c): one modality per feature
            r = torch.nn.functional.one_hot(idx, K).to(docked.dtype).transpose(1, 2)  # B,K,c
            return (r * docked).sum(1)
        # deterministic inference: expectation of the embracement over r ~ Multinomial(1, p)
        return (p.unsqueeze(-1).to(docked.dtype) * docked).sum(1)
