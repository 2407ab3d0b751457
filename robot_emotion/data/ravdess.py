"""Labelled emotional speech clips: RAVDESS file names, or a CSV of ``path,label``.

RAVDESS names its files ``03-01-EE-II-SS-RR-AA.flac``: EE emotion, II intensity (01 normal,
02 strong), SS sentence, RR repetition, AA actor (odd male, even female). Its eight emotions
map onto MELD's seven as ../shared/emotion_speech/README.md says (calm counts as neutral).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from robot_emotion import EMOTIONS
from robot_emotion.errors import InputError

RAVDESS_EMOTION = {
    "01": "neutral",
    "02": "neutral",
    "03": "joy",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
RAVDESS_TEXT = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3", ".m4a", ".mp4")


@dataclass(frozen=True)
class Clip:
    path: str
    label: str  # one of EMOTIONS
    speaker: str = ""  # speaker-independent splits group by this
    sentence: str = ""  # RAVDESS: "01" / "02"
    intensity: str = ""  # RAVDESS: "01" normal, "02" strong


def parse_ravdess(path: Path) -> Clip | None:
    """A Clip from a RAVDESS file name, None when the name is not one."""
    parts = path.stem.split("-")
    if len(parts) != 7 or not all(p.isdigit() and len(p) == 2 for p in parts):
        return None
    modality, _channel, emo, inten, sent, _rep, actor = parts
    if modality not in ("01", "03") or emo not in RAVDESS_EMOTION:  # 01 AV, 03 audio-only
        return None
    return Clip(str(path), RAVDESS_EMOTION[emo], f"actor{actor}", sent, inten)


def ravdess_clips(folder) -> list[Clip]:
    """Every RAVDESS-named audio file under folder, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    clips = [
        c
        for f in sorted(folder.rglob("*"))
        if f.suffix.lower() in AUDIO_SUFFIXES
        for c in [parse_ravdess(f)]
        if c is not None
    ]
    if not clips:
        raise InputError(f"{folder}: no RAVDESS-named audio files (03-01-EE-II-SS-RR-AA.flac)")
    return clips


def csv_clips(path) -> list[Clip]:
    """Rows ``path,label[,speaker]`` (a header row is allowed; paths relative to the CSV)."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    clips = []
    for i, row in enumerate(rows, 1):
        if not row or (i == 1 and row[0].strip().lower() == "path"):
            continue
        if len(row) < 2 or row[1].strip().lower() not in EMOTIONS:
            raise InputError(f"{path}:{i}: expected 'path,label' with a label in {', '.join(EMOTIONS)}")
        f = Path(row[0].strip())
        clips.append(
            Clip(
                str(f if f.is_absolute() else path.parent / f),
                row[1].strip().lower(),
                row[2].strip() if len(row) > 2 else "",
            )
        )
    if not clips:
        raise InputError(f"{path}: no labelled clips")
    return clips


def labelled_clips(source) -> list[Clip]:
    """A folder of RAVDESS-named files, or a CSV of path,label."""
    p = Path(source)
    return csv_clips(p) if p.is_file() and p.suffix.lower() == ".csv" else ravdess_clips(p)
