"""Unified multimodal transformer (after Le et al., IEEE Access): one encoder over
[CLS; text tokens; face tokens; audio tokens], then one learned query per emotion in a
transformer decoder attending to the encoder output, a linear -> 1 per query and a sigmoid per
emotion (multi-label), trained with weighted BCE.

Tokens are projected to d, get sinusoidal positions (within their modality) and a learned
modality-type embedding; padding steps and unavailable modalities are masked out of attention.
Published probs = sigmoid scores renormalised to sum to 1; embedding = the CLS output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FusionInput, FusionModel, FusionOutput
from .crossmodal import PositionalEncoding

TOKEN_ORDER = ("text", "face", "audio")  # [CLS; T; F; A]


class UnifiedTransformer(FusionModel):
    def __init__(self, dims, n_classes, hparams):
        super().__init__("unified", dims, n_classes, hparams)
        h = self.hparams
        d = h["d"]
        self.order = tuple(m for m in TOKEN_ORDER if m in self.modalities)
        self.proj = nn.ModuleDict({m: nn.Linear(self.dims[m], d) for m in self.modalities})
        self.type_emb = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in self.modalities})
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = PositionalEncoding(d)
        enc = nn.TransformerEncoderLayer(d, h["heads"], 2 * d, h["dropout"], batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, h["enc_layers"], enable_nested_tensor=False)
        dec = nn.TransformerDecoderLayer(d, h["heads"], 2 * d, h["dropout"], batch_first=True)
        self.decoder = nn.TransformerDecoder(dec, h["dec_layers"])
        self.queries = nn.Parameter(torch.randn(self.n_classes, d) * 0.02)
        # one linear -> 1 per emotion query
        self.score_w = nn.Parameter(torch.randn(self.n_classes, d) * d**-0.5)
        self.score_b = nn.Parameter(torch.zeros(self.n_classes))
        pw = h["pos_weight"]
        if pw is None:  # default: balance one-vs-rest for single-label data (1 positive in C)
            pw = [float(self.n_classes - 1)] * self.n_classes
        else:
            pw = [float(v) for v in (pw.tolist() if isinstance(pw, Tensor) else pw)]
            if len(pw) != self.n_classes:
                raise ValueError(f"pos_weight has {len(pw)} entries, the model has {self.n_classes} classes")
        h["pos_weight"] = pw
        self.register_buffer("pos_weight", torch.tensor(pw), persistent=False)

    def forward(self, inp: FusionInput) -> FusionOutput:
        prep = self._prepare(inp, self.hparams["modality_dropout"])
        B = prep.batch
        toks = [self.cls.expand(B, -1, -1)]
        valid = [torch.ones(B, 1, dtype=torch.bool, device=self.cls.device)]
        for m in self.order:
            toks.append(self.pos(self.proj[m](prep.seq[m])) + self.type_emb[m])
            valid.append(prep.mask[m])  # already False at padding and where m is unavailable
        x = torch.cat(toks, 1)
        pad = ~torch.cat(valid, 1)
        mem = self.encoder(x, src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(B, -1, -1)
        hq = self.decoder(q, mem, memory_key_padding_mask=pad)
        logits = (hq * self.score_w).sum(-1) + self.score_b  # (B, C)
        s = torch.sigmoid(logits)
        probs = s / s.sum(1, keepdim=True).clamp_min(1e-12)
        has = prep.avail_matrix(self.modalities).any(1)
        return self._finish(logits, probs, mem[:, 0], has)

    def loss(self, output: FusionOutput, targets: Tensor) -> Tensor:
        """Weighted BCE (pos_weight per class, class_weights as per-class loss weights) on
        one-hot (from (B,) class indices) or multi-hot (B, C) targets."""
        has = output.has_estimate
        if not bool(has.any()):
            return output.logits.sum() * 0.0
        y = self._multi_hot(targets.to(output.logits.device), self.n_classes)[has]
        return F.binary_cross_entropy_with_logits(
            output.logits[has], y, weight=self.class_weights, pos_weight=self.pos_weight
        )
