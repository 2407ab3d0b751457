"""Text helpers for MELD-style dialogue: mojibake repair and past-only context.

The MELD CSV itself is read by data/meld.py (`read_rows`, `read_meld_csv`); the helpers here work on
its rows (anything with dialogue_id, utterance_id, speaker and text) and on live text.
"""

from __future__ import annotations

import re


# Old MELD releases carry cp1252 text decoded the wrong way: UTF-8 bytes read as cp1252/latin-1
# ("â€™" for "’"), or cp1252 bytes read as latin-1 then re-encoded ("Â’", bare "\x92").
_MOJIBAKE = {
    "â€™": "’",
    "â€˜": "‘",
    "â€œ": "“",
    "â€\x9d": "”",
    "â€": "”",
    "â€¦": "…",
    "â€”": "—",
    "â€“": "–",
    "Â’": "’",
    "Â‘": "‘",
    "Â“": "“",
    "Â”": "”",
    "Â…": "…",
    "Â—": "—",
    "Â–": "–",
    "Â\xa0": " ",
    "\x92": "’",
    "\x91": "‘",
    "\x93": "“",
    "\x94": "”",
    "\x85": "…",
    "\x96": "–",
    "\x97": "—",
    "\xa0": " ",
}
_MOJIBAKE_RE = re.compile("|".join(re.escape(k) for k in sorted(_MOJIBAKE, key=len, reverse=True)))
_MARKERS = ("Ã", "Â", "â€", "\x85", "\x91", "\x92", "\x93", "\x94", "\x96", "\x97", "\xa0")


def fix_mojibake(text: str) -> str:
    """Repair cp1252/latin-1 mojibake, e.g. "heÂ’s" -> "he’s", "itâ€™s" -> "it’s"."""
    if not any(m in text for m in _MARKERS):
        return text
    try:  # the whole string is one consistent round of mis-decoding
        fixed = text.encode("cp1252").decode("utf-8")
        if not any(m in fixed for m in ("Ã", "â€")):
            text = fixed
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    text = _MOJIBAKE_RE.sub(lambda m: _MOJIBAKE[m.group(0)], text)
    return text.replace("Â", "")


def group_dialogues(utts: list) -> dict[int, list]:
    """Dialogue_ID -> its utterances ordered by Utterance_ID (ids may have gaps)."""
    dias: dict[int, list] = {}
    for u in utts:
        dias.setdefault(u.dialogue_id, []).append(u)
    return {d: sorted(us, key=lambda u: u.utterance_id) for d, us in sorted(dias.items())}


def with_past_context(utts: list, max_turns: int | None = None):
    """Yield (utterance, history) where history = [(speaker, text)] of PAST turns only, oldest first.

    Yields in the input order of `utts`; history never contains the utterance itself or later ones.
    """
    dias = group_dialogues(utts)
    hist: dict[tuple[int, int], list[tuple[str | None, str]]] = {}
    for d, us in dias.items():
        for j, u in enumerate(us):
            past = us[:j] if max_turns is None else us[max(0, j - max_turns) : j]
            hist[(d, u.utterance_id)] = [(p.speaker, p.text) for p in past]
    for u in utts:
        yield u, hist[(u.dialogue_id, u.utterance_id)]
