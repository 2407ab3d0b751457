"""Small MELD CSV reader for the text branch: mojibake repair, row parsing, dialogue grouping.

Only the columns the text model needs are interpreted; the full MELD.Raw reader (media, timestamps)
is data/meld.py.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from robot_emotion import EMOTIONS

REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")

# Old MELD releases carry cp1252 text decoded the wrong way: UTF-8 bytes read as cp1252/latin-1
# ("â€™" for "’"), or cp1252 bytes read as latin-1 then re-encoded ("Â’", bare "\x92").
_MOJIBAKE = {
    "â€™": "’", "â€˜": "‘", "â€œ": "“", "â€\x9d": "”", "â€": "”", "â€¦": "…", "â€”": "—", "â€“": "–",
    "Â’": "’", "Â‘": "‘", "Â“": "“", "Â”": "”", "Â…": "…", "Â—": "—", "Â–": "–", "Â\xa0": " ",
    "\x92": "’", "\x91": "‘", "\x93": "“", "\x94": "”", "\x85": "…", "\x96": "–", "\x97": "—",
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


@dataclass(frozen=True)
class Utterance:
    dialogue_id: int
    utterance_id: int
    speaker: str | None
    text: str
    emotion: str | None  # one of EMOTIONS, or None when the CSV carries no label

    @property
    def label(self) -> int:
        if self.emotion is None:
            raise ValueError(f"dia{self.dialogue_id}_utt{self.utterance_id} has no emotion label")
        return EMOTIONS.index(self.emotion)


def read_meld_csv(path: str | Path, limit: int | None = None) -> list[Utterance]:
    """Read a MELD *_sent_emo.csv; raises ValueError/FileNotFoundError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MELD CSV not found: {path}")
    out: list[Utterance] = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a MELD CSV, missing columns {missing}")
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            emo = (row.get("Emotion") or "").strip().lower() or None
            if emo is not None and emo not in EMOTIONS:
                raise ValueError(f"{path}: row {i + 2}: unknown emotion {emo!r}")
            try:
                dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
            except ValueError:
                raise ValueError(f"{path}: row {i + 2}: bad Dialogue_ID/Utterance_ID") from None
            speaker = fix_mojibake((row.get("Speaker") or "").strip()) or None
            out.append(Utterance(dia, utt, speaker, fix_mojibake(row["Utterance"]).strip(), emo))
    return out


def group_dialogues(utts: list[Utterance]) -> dict[int, list[Utterance]]:
    """Dialogue_ID -> its utterances ordered by Utterance_ID (ids may have gaps)."""
    dias: dict[int, list[Utterance]] = {}
    for u in utts:
        dias.setdefault(u.dialogue_id, []).append(u)
    return {d: sorted(us, key=lambda u: u.utterance_id) for d, us in sorted(dias.items())}


def with_past_context(utts: list[Utterance], max_turns: int | None = None):
    """Yield (utterance, history) where history = [(speaker, text)] of PAST turns only, oldest first.

    Yields in the input order of `utts`; history never contains the utterance itself or later ones.
    """
    dias = group_dialogues(utts)
    hist: dict[tuple[int, int], list[tuple[str | None, str]]] = {}
    for d, us in dias.items():
        for j, u in enumerate(us):
            past = us[:j] if max_turns is None else us[max(0, j - max_turns):j]
            hist[(d, u.utterance_id)] = [(p.speaker, p.text) for p in past]
    for u in utts:
        yield u, hist[(u.dialogue_id, u.utterance_id)]
