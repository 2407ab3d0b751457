"""Measures on transcripts: the loop guard's word budget, and word error rate.

Pure functions on text, shared by the recogniser (audio/asr.py, audio/whisper_short.py) and
its tests. The conversation scorer (benchmarks/conversations/score.py) does not use them: its
WER is jiwer's after Whisper's English text normaliser, as published figures are.
"""

from __future__ import annotations

import re
import unicodedata


def word_budget(seconds: float) -> int:
    """More words than this cannot have been said: ~4 words/s is fast speech."""
    return int(4.5 * seconds + 4)


def looping(text: str, seconds: float) -> bool:
    """A decoding loop: more words than the audio can hold, or text that compresses like a
    repetition (zlib ratio > 2.4, Whisper's own threshold for its fallback)."""
    import zlib

    if not text:
        return False
    raw = text.encode("utf-8")
    return len(text.split()) > word_budget(seconds) or (len(raw) > 60 and len(raw) / len(zlib.compress(raw)) > 2.4)


_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
}


def normalize_text(text: str) -> list[str]:
    """Lower-case words with punctuation removed (apostrophes kept inside words)."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"[^a-z0-9' ]+", " ", t.replace("-", " "))
    words = [w.strip("'") for w in t.split()]
    return [_NUMBERS.get(w, w) for w in words if w]


def wer(ref: str, hyp: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / len(ref), after normalize_text."""
    r, h = normalize_text(ref), normalize_text(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return edit_distance(r, h) / len(r)


def edit_distance(ref_words: list[str], hyp_words: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp_words) + 1))
    for i, rw in enumerate(ref_words, 1):
        cur = [i] + [0] * len(hyp_words)
        for j, hw in enumerate(hyp_words, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]
