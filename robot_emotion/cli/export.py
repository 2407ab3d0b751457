"""`robot-emotion export`: a session's final turns as SRT / WebVTT subtitles, RTTM or CSV.

Only final utterances count (the last body per `utterance_id`). Subtitles and RTTM hold the
speech of known voices (`speech: true` with a speaker); CSV holds every final utterance,
non-speech included, with its emotion and latencies.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

from robot_emotion.errors import InputError
from robot_emotion.cli.session_events import SessionEvents, PublishedTurn, load_session_events

FORMATS = ("srt", "vtt", "rttm", "csv")

CSV_COLUMNS = (
    "utterance_id",
    "start",
    "end",
    "speaker",
    "face_track",
    "speech",
    "text",
    "emotion",
    "probability",
    "asr_ms",
    "utterance_latency_ms",
    "emotion_latency_ms",
    "final",
)


def timestamp(seconds: float, sep: str) -> str:
    """HH:MM:SS,mmm (SRT, sep=',') or HH:MM:SS.mmm (WebVTT, sep='.'), rounded to the ms."""
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def caption(turn: PublishedTurn) -> str:
    """'S0: text [joy]': one line; no estimate -> no bracket."""
    text = " ".join((turn.text or "").split()) or "…"
    text = text.replace("-->", "->")  # would end a cue's timing line in either format
    emotion = f" [{turn.label}]" if turn.label else ""
    return f"{turn.speaker}: {text}{emotion}"


def _cues(events: SessionEvents) -> list[PublishedTurn]:
    return [t for t in events.turns if t.is_speech and t.end > t.start]


def to_srt(events: SessionEvents) -> str:
    blocks = [
        f"{i}\n{timestamp(t.start, ',')} --> {timestamp(t.end, ',')}\n{caption(t)}\n"
        for i, t in enumerate(_cues(events), 1)
    ]
    return "\n".join(blocks)


def to_vtt(events: SessionEvents) -> str:
    blocks = [
        f"{t.utterance_id}\n{timestamp(t.start, '.')} --> {timestamp(t.end, '.')}\n{caption(t)}\n"
        for t in _cues(events)
    ]
    return "\n".join(["WEBVTT\n"] + blocks)


def rttm_file_id(events: SessionEvents) -> str:
    """RTTM's <file> field: the session id (or the source's name), without whitespace."""
    name = events.session or Path(events.source).stem
    return re.sub(r"\s+", "_", name) or "session"


def to_rttm(events: SessionEvents) -> str:
    fid = rttm_file_id(events)
    lines = [
        f"SPEAKER {fid} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>" for t in _cues(events)
    ]
    return "".join(line + "\n" for line in lines)


def _num(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def to_csv(events: SessionEvents) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in events.turns:
        w.writerow(
            [
                t.utterance_id,
                f"{t.start:.3f}",
                f"{t.end:.3f}",
                t.speaker or "",
                "" if t.face_track is None else t.face_track,
                int(t.speech),
                t.text or "",
                t.label or "",
                _num(t.prob, 4),
                _num(t.asr_ms, 1),
                _num(t.utterance_ms, 1),
                _num(t.emotion_ms, 1),
                int(t.final),
            ]
        )
    return buf.getvalue()


WRITERS = {"srt": to_srt, "vtt": to_vtt, "rttm": to_rttm, "csv": to_csv}


def export_text(source: str | Path, fmt: str) -> str:
    return WRITERS[fmt](load_session_events(source))


def run_export(args) -> int:
    text = export_text(args.source, args.format)
    if not args.out or args.out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"# {args.format} written to {args.out}", file=sys.stderr)
    return 0
