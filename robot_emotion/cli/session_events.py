"""Read what a node published (a session's events.jsonl or `replay --out`) back into turns.

The node publishes every turn several times: `utterance` + `emotion` with `final: false`
after each of its segments and once more with `final: true` (same `utterance_id`). The
LAST body per id is the turn's final version (a body without `final` is final: older
files and truncated sessions). `PublishedTurn` joins a final utterance with its emotion.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from robot_emotion.config import shown
from robot_emotion.errors import InputError, loads_json, printable


@dataclass
class PublishedTurn:
    """One final utterance (a speaker's turn) with its emotion, as published."""

    utterance_id: str
    start: float
    end: float
    speech: bool  # false: no words recognised (noise, applause, a door)
    speaker: str | None
    face_track: int | None
    text: str | None
    final: bool  # false only where the session stopped before the turn closed
    label: str | None = None  # emotion label; None = no estimate / no emotion message
    probs: dict | None = None
    asr_ms: float | None = None  # utterance latency_ms.asr
    utterance_ms: float | None = None  # utterance latency_ms.total (final body)
    emotion_ms: float | None = None  # emotion latency_ms.total (final body)
    first_emotion_ms: float | None = None  # emotion latency_ms.total of the first (provisional) body

    @property
    def prob(self) -> float | None:
        return None if not self.label or not self.probs else self.probs.get(self.label)

    @property
    def is_speech(self) -> bool:
        """Speech from a known voice: what subtitles and RTTM are made of."""
        return self.speech and self.speaker is not None


@dataclass
class SessionEvents:
    source: str
    session: str | None
    turns: list[PublishedTurn]  # final versions, by start time
    segments: list[dict]  # speech.end bodies (start, end, forced, dropped)
    onsets: list[dict]  # speech.start bodies (start, t)
    faces: list[dict] = field(default_factory=list)  # face bodies (t, tracks)
    backlog: bool = False  # a --speed max replay: latencies are processing times

    @property
    def duration(self) -> float:
        ends = [t.end for t in self.turns] + [s["end"] for s in self.segments]
        ends += [s["start"] for s in self.onsets] + [f["t"] for f in self.faces]
        return max(ends, default=0.0)

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns if t.speaker is not None}, key=natural_key)


def natural_key(text: str):
    """'S2' before 'S10'; '7' before '7.1' before '10'."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text))]


def events_path(source: str | Path) -> Path:
    """The events file of a session folder, or the file itself."""
    path = Path(source)
    if path.is_dir():
        path = path / "events.jsonl"
        if not path.is_file():
            raise InputError(f"{source}: no events.jsonl in this folder (not a recorded session)")
    elif not path.is_file():
        raise InputError(f"{source}: not found")
    return path


def read_bodies(source: str | Path) -> list[dict]:
    """Every JSON body of the file. A truncated LAST line (a killed recording) is skipped;
    anything else that is not a JSON object is refused with its line number."""
    path = Path("<stdin>") if str(source) == "-" else events_path(source)
    try:  # "-": the lines of `replay --out -` piped in
        lines = (sys.stdin.read() if str(source) == "-" else path.read_text(encoding="utf-8")).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    bodies = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = loads_json(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break  # the tail a crash leaves
            raise InputError(f"{path}:{i}: not a JSON line (expected one published body per line)") from None
        except ValueError as e:  # nested too deeply, a number of thousands of digits
            raise InputError(f"{path}:{i}: not a published body ({e})") from None
        if not isinstance(body, dict) or "topic" not in body:
            raise InputError(f"{path}:{i}: not a published body (no 'topic')")
        bodies.append(body)
    return bodies


def last_per_id(bodies: list[dict], topic: str) -> dict[str, dict]:
    """The last body of `topic` per utterance_id: the final version of each turn."""
    out: dict[str, dict] = {}
    for b in bodies:
        if b["topic"] == topic and b.get("utterance_id") is not None:
            out[str(b["utterance_id"])] = b
    return out


def _latency(body: dict | None, key: str) -> float | None:
    """latency_ms[key]; for "total", the node's processing time where a --speed max replay
    queued the work (latency_ms.backlog is then the queueing, shown apart)."""
    lat = (body or {}).get("latency_ms")
    if not isinstance(lat, dict):
        return None
    return lat.get("processing", lat.get(key)) if key == "total" else lat.get(key)


def _turn(utt: dict, emo: dict | None, first_emo: dict | None) -> PublishedTurn:
    return PublishedTurn(
        utterance_id=str(utt["utterance_id"]),
        start=float(utt["start"]),
        end=float(utt["end"]),
        speech=utt.get("speech", True) is not False,
        speaker=utt.get("speaker"),
        face_track=utt.get("face_track"),
        text=utt.get("text"),
        final=utt.get("final", True) is not False,
        label=(emo or {}).get("label"),
        probs=(emo or {}).get("probs"),
        asr_ms=_latency(utt, "asr"),
        utterance_ms=_latency(utt, "total"),
        emotion_ms=_latency(emo, "total"),
        first_emotion_ms=_latency(first_emo, "total"),
    )


def turns_from(bodies: list[dict]) -> list[PublishedTurn]:
    utts = last_per_id(bodies, "utterance")
    emos = last_per_id(bodies, "emotion")
    first_emos: dict[str, dict] = {}
    for b in bodies:
        if b["topic"] == "emotion":
            first_emos.setdefault(str(b.get("utterance_id")), b)
    turns = [_turn(u, emos.get(uid), first_emos.get(uid)) for uid, u in utts.items()]
    return sorted(turns, key=lambda t: (t.start, natural_key(t.utterance_id)))


def load_session_events(source: str | Path) -> SessionEvents:
    """Turns, segments and face tracks of a session folder or an events file."""
    bodies = read_bodies(source)
    if not bodies:
        raise InputError(
            f"{source}: no events (a generated session holds none: "
            f"`robot-emotion replay SESSION --out events.jsonl` writes them)"
        )
    try:
        turns = turns_from(bodies)
        segments = sorted(last_per_id(bodies, "speech.end").values(), key=lambda b: b["start"])
        onsets = sorted((b for b in bodies if b["topic"] == "speech.start"), key=lambda b: b["start"])
        faces = sorted((b for b in bodies if b["topic"] == "face"), key=lambda b: b["t"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{source}: a body lacks a field the schema requires ({e})") from None
    session = next((b.get("session") for b in bodies if b.get("session")), None)
    backlog = any("backlog" in (b.get("latency_ms") or {}) for b in bodies if isinstance(b.get("latency_ms"), dict))
    events = SessionEvents(str(source), session, turns, segments, onsets, faces, backlog)
    check_extent(events, session_length(source))
    return events


MAX_SESSION_S = 31 * 86400.0  # an events file alone: no node runs a month in one session
EARLIEST_S = -5.0  # frame times may precede 0 by the AV offset (at most 2 s)


def session_length(source: str | Path) -> float | None:
    """Seconds of audio a session folder holds (its audio.wav's size), None for an events file."""
    wav = Path(source) / "audio.wav"
    if not Path(source).is_dir() or not wav.is_file():
        return None
    return max(0, wav.stat().st_size - 44) / 2 / 16000


def check_extent(events: SessionEvents, length: float | None) -> None:
    """Every time must lie in the session: plot and export size their work by these times
    (one turn from -1e308 to 1e308 grew `plot` to 24 GB), so a time outside is refused."""
    last = MAX_SESSION_S if length is None else length + 5.0
    where = f"the session's {length:.1f} s of audio" if length is not None else f"{EARLIEST_S:g}..{MAX_SESSION_S:.0f} s"
    times = [(f"turn {t.utterance_id}", x) for t in events.turns for x in (t.start, t.end)]
    times += [(f"speech.end {b.get('utterance_id')}", b[k]) for b in events.segments for k in ("start", "end")]
    times += [(f"speech.start {b.get('utterance_id')}", b["start"]) for b in events.onsets]
    times += [("face", b["t"]) for b in events.faces]
    for what, x in times:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not EARLIEST_S <= x <= last:
            raise InputError(f"{events.source}: {printable(what)[:80]} has time {shown(x)}, outside {where}")
