"""Crossmodal transformer (Tsai et al. 2019, MulT) as used by Xie, Sidulova & Park (2021).

Block "A->B": the target modality B gives the queries, the source A gives keys and values.
    x = LayerNorm(q_B + MHA(q_B, k_A, v_A))      (key_padding_mask from A's seq_mask)
    y = LayerNorm(x + FFN(x)),  FFN = Linear(d, 2d) -> ReLU -> Linear(2d, d)
For every target the outputs of its incoming blocks are combined by Hadamard product
(Attention_T = out_{F->T} * out_{A->T}), over the AVAILABLE sources only: an unavailable source
contributes the multiplicative identity, so a missing modality cannot influence the others.
A target with no available source (per sample) keeps its own projected sequence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_positions(T: int, d: int, device=None, dtype=torch.float32) -> Tensor:
    """(T, d) fixed sinusoidal position encodings (Vaswani et al.)."""
    pos = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe.to(dtype)


class PositionalEncoding(nn.Module):
    """Adds sinusoidal positions; cached table (not saved in checkpoints) grows on demand."""

    def __init__(self, d: int, max_len: int = 512):
        super().__init__()
        self.d = d
        self.register_buffer("pe", sinusoidal_positions(max_len, d), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        if T > self.pe.shape[0]:
            self.pe = sinusoidal_positions(T, self.d, device=x.device)
        return x + self.pe[:T].to(x.dtype)


class CrossmodalBlock(nn.Module):
    """One MulT crossmodal layer (post-norm, as described in the paper)."""

    def __init__(self, d: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, target: Tensor, source: Tensor, source_mask: Tensor) -> Tensor:
        """target (B, Tq, d) queries; source (B, Tk, d) keys/values; source_mask (B, Tk) True=valid
        (must have >= 1 True per row)."""
        a, _ = self.attn(target, source, source, key_padding_mask=~source_mask, need_weights=False)
        x = self.norm1(target + self.drop(a))
        return self.norm2(x + self.drop(self.ffn(x)))


class CrossmodalTransformer(nn.Module):
    """Projection to d + position encoding, then a stack of crossmodal blocks for every ordered
    pair A->B of the given modalities, then the per-target Hadamard combination."""

    def __init__(self, dims: dict[str, int], d: int = 64, heads: int = 4, layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.modalities = tuple(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], d) for m in self.modalities})
        self.pos = PositionalEncoding(d)
        self.blocks = nn.ModuleDict(
            {
                f"{a}_to_{b}": nn.ModuleList(CrossmodalBlock(d, heads, dropout) for _ in range(layers))
                for b in self.modalities
                for a in self.modalities
                if a != b
            }
        )
        self.in_drop = nn.Dropout(dropout)

    def project(self, seq: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.in_drop(self.pos(self.proj[m](seq[m]))) for m in self.modalities}

    def forward(
        self, seq: dict[str, Tensor], safe_mask: dict[str, Tensor], avail: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """seq: modality -> (B, T_m, D_m); safe_mask: (B, T_m) bool with >= 1 True per row;
        avail: (B,) bool. Returns target modality -> (B, T_target, d) combined representation."""
        x = self.project(seq)
        out = {}
        for b in self.modalities:
            combined = None
            any_src = None
            for a in self.modalities:
                if a == b:
                    continue
                h = x[b]
                for blk in self.blocks[f"{a}_to_{b}"]:
                    h = blk(h, x[a], safe_mask[a])
                # unavailable source -> multiplicative identity (no influence on the target)
                av = avail[a].view(-1, 1, 1)
                h = torch.where(av, h, torch.ones((), dtype=h.dtype, device=h.device))
                combined = h if combined is None else combined * h
                any_src = avail[a] if any_src is None else (any_src | avail[a])
            if combined is None:  # single-modality model: nothing to attend to
                out[b] = x[b]
            else:
                out[b] = torch.where(any_src.view(-1, 1, 1), combined, x[b])
        return out
