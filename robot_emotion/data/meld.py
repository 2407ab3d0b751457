"""MELD.Raw reader: CSV rows + utterance clips, with every known quirk handled and reported.

Layout (as the MELD.Raw tarballs extract; the folders may sit one level deeper, e.g.
MELD.Raw/train/train_splits):
    train_sent_emo.csv   train_splits/dia{D}_utt{U}.mp4
    dev_sent_emo.csv     dev_splits_complete/dia{D}_utt{U}.mp4
    test_sent_emo.csv    output_repeated_splits_test/dia{D}_utt{U}.mp4 (+ final_videos_test*.mp4)
or explicit per-split CSV files and clip folders (`MeldLayout.explicit`).

Quirks (all from the real release):
  * cp1252 mojibake in older CSVs ("heÂ’s") and CSVs that are not UTF-8 at all -> repaired
    (data.meld_text.fix_mojibake; a non-UTF-8 file is read as cp1252);
  * StartTime/EndTime as HH:MM:SS,mmm, H:MM:SS,mmm, and 2-digit fractions ("00:06:47,28" = 47.28 s,
    read as a decimal fraction) -> seconds; the times are informational (clips are pre-cut);
  * overlapping utterances (EndTime > next StartTime) -> kept, counted;
  * Utterance_ID gaps -> kept; dialogue order = Utterance_ID order, counted;
  * the corrupt train dia125_utt3 (and any 0-byte clip) -> skipped, reported;
  * CSV rows without a clip (dev dia110_utt7) -> skipped, reported (their TEXT still serves as
    dialogue context for later turns: it was said);
  * clips without a CSV row (dev dia49_utt4/5, dia66_utt9/10, test dia108_utt2) and files that are
    not utterance clips (test final_videos_test*.mp4) -> skipped, reported.
`MeldSplit.summary()` lists every skip with its reason; nothing is dropped silently.
A CSV cut mid-row or with a short row is not a quirk: MeldError "FILE line N: ..." (exit 3).
This is the one MELD CSV parser: `read_meld_csv` (strict, no media) serves the text branch.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from robot_emotion import EMOTIONS
from robot_emotion.data.meld_text import fix_mojibake
from robot_emotion.errors import InputError

SPLITS = {
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
# Clips that exist in MELD.Raw but cannot be decoded (documented by the dataset's users).
KNOWN_CORRUPT = {("train", 125, 3)}
CLIP_RE = re.compile(r"^dia(\d+)_utt(\d+)\.mp4$")
_TIME_RE = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})(?:[,.](\d{1,3}))?\s*$")


class MeldError(InputError, FileNotFoundError):
    """Missing or malformed MELD files (one-line message)."""


def parse_time(text: str | None) -> float | None:
    """'00:20:57,256' | '0:36:59,425' | '00:06:47,28' -> seconds; None for an empty/odd field."""
    m = _TIME_RE.match(text or "")
    if not m:
        return None
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (float("0." + frac) if frac else 0.0)


@dataclass
class MeldClip:
    split: str
    dialogue_id: int
    utterance_id: int
    speaker: str | None
    text: str
    emotion: str
    sentiment: str | None = None
    start: float | None = None
    end: float | None = None
    path: Path | None = None  # None: the row has no clip (text-only context)

    @property
    def name(self) -> str:
        return f"dia{self.dialogue_id}_utt{self.utterance_id}"

    @property
    def label(self) -> int:
        return EMOTIONS.index(self.emotion)


@dataclass
class MeldSplit:
    name: str
    csv: Path
    clip_dir: Path
    rows: list[MeldClip]  # every CSV row, dialogue order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    notes: dict[str, int] = field(default_factory=dict)  # counted, kept quirks

    @property
    def clips(self) -> list[MeldClip]:
        """Rows with a usable clip, in dialogue order."""
        bad = {n for n, _ in self.skipped}
        return [r for r in self.rows if r.path is not None and r.name not in bad]

    def history(self, clip: MeldClip, max_turns: int | None = None) -> list[tuple[str | None, str]]:
        """Past turns (speaker, text) of the clip's dialogue, oldest first (never the clip itself)."""
        past = [
            (r.speaker, r.text)
            for r in self.rows
            if r.dialogue_id == clip.dialogue_id and r.utterance_id < clip.utterance_id
        ]
        return past if max_turns is None else past[-max_turns:] if max_turns else []

    def summary(self) -> str:
        lines = [
            f"{self.name}: {len(self.rows)} CSV rows, {len(self.clips)} usable clips, "
            f"{len(self.skipped)} skipped" + "".join(f", {v} {k}" for k, v in sorted(self.notes.items()) if v)
        ]
        lines += [f"  skipped {item}: {why}" for item, why in self.skipped]
        return "\n".join(lines)


def _find(root: Path, name: str, want_dir: bool) -> Path | None:
    for cand in [root / name, *root.glob(f"*/{name}"), *root.glob(f"*/*/{name}")]:
        if cand.is_dir() if want_dir else cand.is_file():
            return cand
    return None


@dataclass
class MeldLayout:
    csvs: dict[str, Path]
    clip_dirs: dict[str, Path]

    @classmethod
    def from_root(cls, root: str | Path, splits=("train", "dev", "test")) -> "MeldLayout":
        root = Path(root)
        if not root.is_dir():
            raise MeldError(f"MELD folder not found: {root}")
        csvs, dirs, missing = {}, {}, []
        for s in splits:
            csv_name, dir_name = SPLITS[s]
            c, d = _find(root, csv_name, False), _find(root, dir_name, True)
            if c is None:
                missing.append(csv_name)
            if d is None:
                missing.append(dir_name + "/")
            csvs[s], dirs[s] = c, d
        if missing:
            raise MeldError(f"{root} is not an extracted MELD.Raw folder: missing {', '.join(missing)}")
        return cls(csvs, dirs)

    @classmethod
    def explicit(cls, csvs: dict[str, str | Path], clip_dirs: dict[str, str | Path]) -> "MeldLayout":
        for s, p in csvs.items():
            if not Path(p).is_file():
                raise MeldError(f"MELD {s} CSV not found: {p}")
        for s, p in clip_dirs.items():
            if not Path(p).is_dir():
                raise MeldError(f"MELD {s} clip folder not found: {p}")
        return cls({s: Path(p) for s, p in csvs.items()}, {s: Path(p) for s, p in clip_dirs.items()})

    def split(self, name: str) -> MeldSplit:
        if name not in self.csvs or name not in self.clip_dirs:
            raise MeldError(f"MELD split {name!r} is not in this layout (have {sorted(self.csvs)})")
        return read_split(name, self.csvs[name], self.clip_dirs[name])


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _records(csv_path: Path, limit: int | None = None):
    """Yield (line, {column: value}) per data row; a cut or short row raises MeldError with its line.

    `line` is the row's first physical line (1 = the header). The csv module runs in strict mode,
    so a file cut inside a quoted field fails here instead of swallowing the rest of the file."""
    reader = csv.reader(io.StringIO(_read_text(csv_path), newline=""), strict=True)
    line = 1
    try:
        cols = [c.strip() for c in next(reader, [])]
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise MeldError(f"{csv_path}: not a MELD CSV (missing columns {', '.join(missing)})")
        n = 0
        line = reader.line_num + 1
        for fields in reader:
            if any(f.strip() for f in fields):  # blank lines are not rows
                if len(fields) != len(cols):
                    raise MeldError(
                        f"{csv_path} line {line}: {len(fields)} fields where the header has "
                        f"{len(cols)} (a short or cut row)"
                    )
                if limit is not None and n >= limit:
                    return
                n += 1
                yield line, dict(zip(cols, fields))
            line = reader.line_num + 1
    except csv.Error as e:
        raise MeldError(f"{csv_path} line {line}: malformed CSV row ({e}; is the file cut?)") from None


def read_rows(
    name: str, csv_path: Path, limit: int | None = None, strict: bool = False
) -> tuple[list[MeldClip], list[tuple[str, str]]]:
    """Parse a MELD CSV -> (rows in file order, [(item, reason)] rows left out).

    A row with a bad Dialogue_ID/Utterance_ID or an unknown emotion is left out and reported; with
    strict=True it raises MeldError ("FILE line N: ...") instead. Cut or short rows always raise."""
    csv_path = Path(csv_path)
    rows, bad = [], []
    for line, r in _records(csv_path, limit):
        emo = r["Emotion"].strip().lower()
        try:
            dia, utt = int(r["Dialogue_ID"]), int(r["Utterance_ID"])
        except ValueError:
            item, why = f"{csv_path.name} line {line}", "bad Dialogue_ID/Utterance_ID"
        else:
            item, why = f"dia{dia}_utt{utt}", None if emo in EMOTIONS else f"unknown emotion {emo!r} in the CSV"
        if why is not None:
            if strict:
                raise MeldError(f"{csv_path} line {line}: {why}")
            bad.append((item, why))
            continue
        rows.append(
            MeldClip(
                name,
                dia,
                utt,
                fix_mojibake(r["Speaker"].strip()) or None,
                fix_mojibake(r["Utterance"]).strip(),
                emo,
                (r.get("Sentiment") or "").strip() or None,
                parse_time(r.get("StartTime")),
                parse_time(r.get("EndTime")),
                None,
            )
        )
    return rows, bad


def read_meld_csv(path: str | Path, limit: int | None = None) -> list[MeldClip]:
    """Every row of a labelled MELD-format CSV, in file order (no media needed; the text branch).
    Strict: a malformed or unlabelled row raises MeldError naming its line."""
    path = Path(path)
    if not path.is_file():
        raise MeldError(f"MELD CSV not found: {path}")
    return read_rows(path.stem, path, limit, strict=True)[0]


def read_split(name: str, csv_path: Path, clip_dir: Path) -> MeldSplit:
    csv_path, clip_dir = Path(csv_path), Path(clip_dir)
    if not csv_path.is_file():
        raise MeldError(f"MELD {name} CSV not found: {csv_path}")
    if not clip_dir.is_dir():
        raise MeldError(f"MELD {name} clip folder not found: {clip_dir}")
    rows, skipped = read_rows(name, csv_path)
    seen: dict[tuple[int, int], MeldClip] = {}
    for r in rows:
        key = (r.dialogue_id, r.utterance_id)
        if key in seen:
            skipped.append((r.name, "duplicate CSV row (first one kept)"))
            continue
        seen[key] = r
    rows = sorted(seen.values(), key=lambda r: (r.dialogue_id, r.utterance_id))
    files: dict[tuple[int, int], Path] = {}
    for f in sorted(clip_dir.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        m = CLIP_RE.match(f.name)
        if m is None:
            skipped.append(
                (
                    f.name,
                    "not a dia{D}_utt{U}.mp4 utterance clip"
                    + (" (final_videos_test: full episodes)" if f.name.startswith("final_videos_test") else ""),
                )
            )
            continue
        key = (int(m.group(1)), int(m.group(2)))
        if key not in seen:
            skipped.append((f.name, "clip has no CSV row (no label)"))
            continue
        files[key] = f
    notes = {"overlapping utterances": 0, "dialogues with Utterance_ID gaps": 0}
    prev = None
    for r in rows:
        key = (r.dialogue_id, r.utterance_id)
        f = files.get(key)
        if f is None:
            skipped.append((r.name, "CSV row has no clip (missing in MELD.Raw); its text stays as context"))
        elif (name, *key) in KNOWN_CORRUPT:
            skipped.append((r.name, "known corrupt clip in MELD.Raw"))
        elif f.stat().st_size == 0:
            skipped.append((r.name, "empty clip file (0 bytes)"))
        else:
            r.path = f
        if prev is not None and prev.dialogue_id == r.dialogue_id:
            if r.start is not None and prev.end is not None and r.start < prev.end:
                notes["overlapping utterances"] += 1
            if r.utterance_id != prev.utterance_id + 1:
                notes["dialogues with Utterance_ID gaps"] += 1
        elif r.utterance_id != 0:
            notes["dialogues with Utterance_ID gaps"] += 1
        prev = r
    return MeldSplit(name, csv_path, clip_dir, rows, skipped, notes)


def open_meld(
    root: str | Path | None = None, splits=("train", "dev"), csvs: dict | None = None, clip_dirs: dict | None = None
) -> dict[str, MeldSplit]:
    """Read the named splits from a MELD.Raw root or explicit CSVs + clip folders."""
    layout = MeldLayout.explicit(csvs, clip_dirs) if csvs or clip_dirs else MeldLayout.from_root(root, splits)
    return {s: layout.split(s) for s in splits}


def decode_clip(path: str | Path, face_rate_hz: float):
    """-> (audio int16 16 kHz mono, [(t, rgb frame)] sampled at face_rate_hz, duration s).

    PyAV: audio downmixed + resampled (MELD: 6-channel AAC 48 kHz); frames decoded in order and
    kept when at least 1/face_rate_hz after the last kept one (what FacePipeline.due does live)."""
    from robot_emotion import SAMPLE_RATE
    from robot_emotion.media import MediaError, decode_audio, iter_video

    audio = decode_audio(path)
    frames, last = [], -1e9
    try:
        for t, img in iter_video(path):
            if t - last >= 0.999 / face_rate_hz:
                frames.append((t, img))
                last = t
    except MediaError:
        if audio.size == 0:
            raise
    if audio.size == 0 and not frames:
        raise MediaError(f"{path}: no decodable audio or video")
    dur = max(audio.size / SAMPLE_RATE, frames[-1][0] if frames else 0.0)
    return audio, frames, dur
