"""`robot-emotion plot`: one PNG that shows a session at a glance (matplotlib, Agg backend).

Lanes, top to bottom: the VAD's segments with their speech.start / speech.end ticks; one lane
per speaker with its turns as bars coloured by emotion and the transcript written inside;
a lane for turns without a known voice (non-speech, speaker null); the active speaker (the
face track each turn was matched to); one lane per face track (present / speaking). Under
the lanes, the emotion latency of every turn (first provisional and final message).
Time and lanes have a fixed scale, so text keeps a readable size: sessions longer than a
minute wrap into one row per minute, and minutes in which nothing happened are left out.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from robot_emotion import EMOTIONS
from robot_emotion.errors import InputError
from robot_emotion.cli.session_events import SessionEvents, PublishedTurn, load_session_events

EMOTION_COLORS = {
    "neutral": "#c7c7c7",
    "joy": "#ffd23f",
    "sadness": "#7fb3e6",
    "anger": "#f07f68",
    "surprise": "#f7a95c",
    "fear": "#b39ddb",
    "disgust": "#8cc084",
}
NO_ESTIMATE = "#ffffff"
NON_SPEECH = "#e6e6e6"
# dark, saturated: face tracks must not read as the pastel emotion colours
TRACK_COLORS = (
    "#1f4e79",
    "#8b1e3f",
    "#1b7a4a",
    "#5b3c88",
    "#7a4b1e",
    "#0f7c8c",
    "#a0306e",
    "#4d6b1f",
    "#3d3d3d",
    "#b3541e",
    "#2d6cb5",
    "#6e2c2c",
)
HATCH = "#b0b0b0"  # light hatch: text written over it stays readable

DPI = 100
INCH_PER_S = 0.6  # a 2 s turn gets ~85 pt: two lines of ~20 characters
ROW_S = 60.0  # longer sessions wrap: one row per minute (~38 in wide)
MAX_ROWS = 100  # ~4.5 in a row: Agg draws at most 65536 px (655 in) high
MIN_W = 12.0
LEFT_IN, RIGHT_IN = 1.3, 0.3
SPEAKER_LANE_IN, SMALL_LANE_IN = 0.62, 0.32
HEADER_IN, ROW_TOP_IN, LANES_GAP_IN, LATENCY_IN, ROW_BOTTOM_IN = 0.5, 0.3, 0.2, 1.3, 0.55
FONT = 7.5


def _runs(times: list[float], gap: float) -> list[tuple[float, float]]:
    """Runs of samples no more than `gap` apart, each widened a little so one sample shows."""
    runs: list[tuple[float, float]] = []
    for t in sorted(times):
        if runs and t - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return [(a - gap / 3, b + gap / 3) for a, b in runs]


def face_tracks(events: SessionEvents) -> dict[int, dict[str, list[tuple[float, float]]]]:
    """{track id: {'present': [(t0, t1)], 'speaking': [(t0, t1)]}} from the face messages."""
    ts = [f["t"] for f in events.faces]
    steps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
    gap = 1.6 * (steps[len(steps) // 2] if steps else 0.2)  # a missed message is no gap
    seen: dict[int, list[float]] = {}
    speaking: dict[int, list[float]] = {}
    for f in events.faces:
        for tr in f.get("tracks") or []:
            seen.setdefault(tr["id"], []).append(f["t"])
            if tr.get("speaking"):
                speaking.setdefault(tr["id"], []).append(f["t"])
    return {
        tid: {"present": _runs(seen[tid], gap), "speaking": _runs(speaking.get(tid, []), gap)} for tid in sorted(seen)
    }


def _lanes(events: SessionEvents, tracks: dict) -> list[tuple[str, str, float]]:
    """(kind, key, height in inches), top to bottom."""
    lanes = [("speech", "segments", SMALL_LANE_IN)]
    lanes += [("speaker", s, SPEAKER_LANE_IN) for s in events.speakers]
    if any(not t.is_speech for t in events.turns):
        lanes.append(("other", "no speaker", SPEAKER_LANE_IN))
    if tracks or any(t.face_track is not None for t in events.turns):
        lanes.append(("active", "active face", SMALL_LANE_IN))
    lanes += [("track", str(tid), SMALL_LANE_IN) for tid in tracks]
    return lanes


def rows(events: SessionEvents) -> list[tuple[float, float]]:
    """The time windows drawn one under the other: ROW_S each, leaving out the windows in which
    nothing happened (a session left running for an hour stays a few rows)."""
    x1 = max(events.duration, 1.0) + 0.5
    if x1 <= ROW_S:
        return [(0.0, x1)]
    busy: set[int] = set()

    def mark(a: float, b: float) -> None:
        k0, k1 = int(a // ROW_S), int(b // ROW_S)
        if k1 - k0 >= MAX_ROWS:  # checked before the range is walked
            k1 = k0 + MAX_ROWS
        busy.update(range(k0, k1 + 1))
        if len(busy) > MAX_ROWS:
            raise InputError(
                f"{events.source}: more than {MAX_ROWS} minutes with events; a timeline "
                f"of that many rows would be over the image size limit (plot a part of it)"
            )

    for t in events.turns:
        mark(t.start, t.end)
    for s in events.segments:
        mark(s["start"], s["end"])
    for o in events.onsets:
        mark(o["start"], o["start"])
    for f in events.faces:
        if f.get("tracks"):
            mark(f["t"], f["t"])
    return [(k * ROW_S, (k + 1) * ROW_S) for k in sorted(busy)] or [(0.0, ROW_S)]


def _row_height(lanes_h: float) -> float:
    return ROW_TOP_IN + lanes_h + LANES_GAP_IN + LATENCY_IN + ROW_BOTTOM_IN


def figure_size(events: SessionEvents) -> tuple[float, float]:
    """(width, height) in inches."""
    x0, x1 = rows(events)[0]
    width = max(MIN_W, LEFT_IN + RIGHT_IN + INCH_PER_S * (x1 - x0))
    lanes_h = sum(h for _, _, h in _lanes(events, face_tracks(events)))
    return width, HEADER_IN + len(rows(events)) * _row_height(lanes_h)


def _fit_text(text: str, width_pt: float, lines: int, size: float) -> str:
    """The text wrapped to the bar's width, cut with '…' after `lines` lines."""
    per_line = int(width_pt / (0.56 * size))
    if per_line < 3 or lines < 1:
        return ""
    wrapped = textwrap.wrap(" ".join(text.split()), per_line) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: max(1, per_line - 1)].rstrip() + "…"
    return "\n".join(wrapped)


def _track_color(tid) -> str:
    return TRACK_COLORS[int(tid) % len(TRACK_COLORS)] if tid is not None else "#7f7f7f"


def _turn_caption(turn: PublishedTurn) -> tuple[str, str]:
    """(header, body): 'joy 0.61' / the transcript (non-speech and unknown voices say so)."""
    if not turn.speech:
        return "non-speech", ""
    head = f"{turn.label} {turn.prob:.2f}" if turn.label and turn.prob is not None else "no estimate"
    if turn.speaker is None:
        head = "speaker ? · " + head
    return head, turn.text or ""


def plot_timeline(events: SessionEvents, out: str | Path) -> tuple[int, int]:
    """Write the PNG; returns its (width, height) in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tracks = face_tracks(events)
    lanes = _lanes(events, tracks)
    lanes_h = sum(h for _, _, h in lanes)
    w_in, h_in = figure_size(events)
    if max(w_in, h_in) * DPI >= 65536:  # Agg's limit: refused now, not after drawing
        raise InputError(
            f"{events.source}: the timeline would be {w_in * DPI:.0f}x{h_in * DPI:.0f} px "
            f"({len(rows(events))} rows of {len(lanes)} lanes), over the image size limit"
        )
    fig = plt.figure(figsize=(w_in, h_in), dpi=DPI)
    left, width = LEFT_IN / w_in, (w_in - LEFT_IN - RIGHT_IN) / w_in
    for i, (x0, x1) in enumerate(rows(events)):
        lanes_top = h_in - HEADER_IN - i * _row_height(lanes_h) - ROW_TOP_IN
        ax = fig.add_axes((left, (lanes_top - lanes_h) / h_in, width, lanes_h / h_in))
        lat_top = lanes_top - lanes_h - LANES_GAP_IN
        lax = fig.add_axes((left, (lat_top - LATENCY_IN) / h_in, width, LATENCY_IN / h_in), sharex=ax)
        _draw_row(ax, events, tracks, lanes, x0, x1, width * w_in * 72 / (x1 - x0))
        _latency_panel(lax, events, x0, x1, legend=i == 0)

    handles = [Patch(facecolor=EMOTION_COLORS[e], edgecolor="#333333", label=e) for e in EMOTIONS]
    handles += [
        Patch(facecolor=NO_ESTIMATE, edgecolor="#333333", hatch="///", hatchcolor=HATCH, label="no estimate"),
        Patch(facecolor=NON_SPEECH, edgecolor="#333333", hatch="///", hatchcolor=HATCH, label="non-speech"),
        Patch(facecolor="white", edgecolor="#999999", linestyle="--", label="not final"),
    ]
    fig.legend(
        handles=handles,
        ncol=len(handles),
        fontsize=8,
        loc="upper left",
        frameon=False,
        bbox_to_anchor=(left - 0.1 / w_in, 1 - 0.22 / h_in),
        handlelength=1.6,
        columnspacing=1.2,
    )
    n_speech = sum(t.is_speech for t in events.turns)
    fig.text(
        left,
        1 - 0.06 / h_in,
        f"{events.session or Path(events.source).name}: {len(events.turns)} turns ({n_speech} speech), "
        f"{len(events.speakers)} speakers, {len(tracks)} face tracks, {events.duration:.1f} s   "
        f"│ green tick: speech.start, dark tick: speech.end (red: forced cut)",
        fontsize=9,
        va="top",
    )
    try:
        fig.savefig(sys.stdout.buffer if str(out) == "-" else out, dpi=DPI, format="png")
    except OSError as e:
        raise InputError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return int(round(w_in * DPI)), int(round(h_in * DPI))


def _draw_row(ax, events: SessionEvents, tracks: dict, lanes: list, x0: float, x1: float, pt_per_s: float) -> None:
    """The lanes for session time [x0, x1]."""

    def inside(a, b):
        return b >= x0 and a <= x1

    ax.set_xlim(x0, x1)
    lanes_h = sum(h for _, _, h in lanes)
    tops, y = {}, lanes_h  # lane -> (bottom, height), inches from the bottom of the lanes
    for kind, key, h in lanes:
        tops[(kind, key)] = (y - h, h)
        y -= h
    ax.set_ylim(0, lanes_h)
    ax.set_yticks([tops[(k, key)][0] + tops[(k, key)][1] / 2 for k, key, _ in lanes])
    ax.set_yticklabels([_lane_label(k, key) for k, key, _ in lanes], fontsize=8)
    for y0, _ in tops.values():
        ax.axhline(y0, color="#dddddd", lw=0.6, zorder=0)

    # VAD segments with their onset / end ticks
    y0, h = tops[("speech", "segments")]
    for seg in (s for s in events.segments if inside(s["start"], s["end"])):
        ax.broken_barh(
            [(seg["start"], seg["end"] - seg["start"])],
            (y0 + 0.3 * h, 0.4 * h),
            facecolors="#eeeeee",
            edgecolors="#aaaaaa",
            lw=0.5,
            hatch="xx" if seg.get("dropped") else None,
            hatchcolor=HATCH,
        )
        ax.vlines(seg["end"], y0 + 0.1 * h, y0 + 0.9 * h, lw=1.2, color="#c0392b" if seg.get("forced") else "#555555")
    for on in (o for o in events.onsets if inside(o["start"], o["start"])):
        ax.vlines(on["start"], y0 + 0.1 * h, y0 + 0.9 * h, color="#2e8b57", lw=1.2)

    # turns: one lane per speaker, the rest in "no speaker"; text starts where the row does
    for turn in (t for t in events.turns if inside(t.start, t.end)):
        y0, h = tops[("speaker", turn.speaker) if turn.is_speech else ("other", "no speaker")]
        dur = max(turn.end - turn.start, 0.02)
        color = EMOTION_COLORS.get(turn.label, NO_ESTIMATE) if turn.speech else NON_SPEECH
        ax.broken_barh(
            [(turn.start, dur)],
            (y0 + 0.06 * h, 0.88 * h),
            facecolors=color,
            edgecolors="#333333" if turn.final else "#999999",
            lw=0.8,
            linestyle="-" if turn.final else "--",
            hatch="///" if not turn.speech or not turn.label else None,
            hatchcolor=HATCH,
        )
        a = max(turn.start, x0)
        width_pt = (min(turn.start + dur, x1) - a) * pt_per_s - 4
        head, body = _turn_caption(turn)
        lines = int((0.88 * h * 72 - 3) / (FONT * 1.2)) - 1
        ax.text(
            a + 2 / pt_per_s,
            y0 + 0.92 * h,
            _fit_text(head, width_pt, 1, FONT - 1),
            fontsize=FONT - 1,
            va="top",
            ha="left",
            color="#333333",
            style="italic",
            clip_on=True,
        )
        ax.text(
            a + 2 / pt_per_s,
            y0 + 0.92 * h - (FONT + 1) / 72,
            _fit_text(body, width_pt, lines, FONT),
            fontsize=FONT,
            va="top",
            ha="left",
            linespacing=1.05,
            clip_on=True,
        )
        if turn.face_track is not None and ("active", "active face") in tops:
            ay0, ah = tops[("active", "active face")]
            ax.broken_barh(
                [(turn.start, dur)], (ay0 + 0.15 * ah, 0.7 * ah), facecolors=_track_color(turn.face_track), alpha=0.8
            )
            label = _fit_text(f"{turn.speaker or '?'} → face {turn.face_track}", width_pt, 1, FONT - 1)
            ax.text(a + 2 / pt_per_s, ay0 + ah / 2, label, fontsize=FONT - 1, va="center", color="white", clip_on=True)

    # face tracks: present (thin) and speaking (thick)
    for tid, runs in tracks.items():
        y0, h = tops[("track", str(tid))]
        col = _track_color(tid)
        ax.broken_barh(
            [(a, b - a) for a, b in runs["present"] if inside(a, b)],
            (y0 + 0.4 * h, 0.2 * h),
            facecolors=col,
            alpha=0.45,
        )
        ax.broken_barh(
            [(a, b - a) for a, b in runs["speaking"] if inside(a, b)], (y0 + 0.15 * h, 0.7 * h), facecolors=col
        )

    _time_ticks(ax, pt_per_s)
    ax.tick_params(axis="x", labelbottom=False, labeltop=True, top=True, labelsize=8)
    ax.grid(axis="x", which="both", color="#ececec", lw=0.6)
    ax.grid(axis="x", which="major", color="#d6d6d6", lw=0.8)
    ax.set_axisbelow(True)


def _time_ticks(ax, pt_per_s: float) -> None:
    """Labelled ticks >= ~100 pt apart, unlabelled 1 s ticks when they are >= 8 pt apart."""
    from matplotlib.ticker import MultipleLocator

    major = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300) if s * pt_per_s >= 100), 600)
    ax.xaxis.set_major_locator(MultipleLocator(major))
    if major > 1 and pt_per_s >= 8:
        ax.xaxis.set_minor_locator(MultipleLocator(1))


def _lane_label(kind: str, key: str) -> str:
    return {
        "speech": "speech (VAD)",
        "other": "non-speech /\nno speaker",
        "active": "active face",
        "track": f"face {key}",
    }.get(kind, key)


def _latency_panel(lax, events: SessionEvents, x0: float, x1: float, legend: bool) -> None:
    """Emotion latency per turn at the turn's end: the first (provisional) and the final
    message. One y scale for the session, so rows compare."""
    every = [t for t in events.turns if t.emotion_ms is not None]
    lax.set_ylabel("emotion\nlatency (ms)", fontsize=8)
    if events.backlog:  # --speed max: queueing behind the reader is not latency
        lax.set_ylabel("emotion latency\n(ms, backlog\nleft out)", fontsize=8)
    lax.set_xlabel("session time (s)", fontsize=8)
    lax.tick_params(labelsize=8)
    lax.grid(color="#e8e8e8", lw=0.6)
    if not every:
        lax.text(0.5, 0.5, "no emotion messages", transform=lax.transAxes, ha="center", va="center", fontsize=8)
        lax.set_yticks([])
        return
    lax.set_ylim(0, 1.35 * max(max(t.emotion_ms, t.first_emotion_ms or 0) for t in every))
    for t in (t for t in every if x0 <= t.end <= x1):
        lax.vlines(t.end, 0, t.emotion_ms, color="#999999", lw=0.8)
        if t.first_emotion_ms is not None and abs(t.first_emotion_ms - t.emotion_ms) > 0.5:
            lax.plot([t.end], [t.first_emotion_ms], "o", mfc="white", mec="#333333", ms=4)
        lax.plot([t.end], [t.emotion_ms], "s", mfc=EMOTION_COLORS.get(t.label, "#999999"), mec="#333333", ms=5)
        lax.annotate(
            f"{t.emotion_ms:.0f}",
            (t.end, t.emotion_ms),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=FONT - 1,
        )
    if legend:
        lax.plot([], [], "s", mfc="#c7c7c7", mec="#333333", label="final")
        lax.plot([], [], "o", mfc="white", mec="#333333", label="first (provisional)")
        lax.legend(fontsize=7, loc="upper left", frameon=False, ncol=2)


def run_plot(args) -> int:
    events = load_session_events(args.source)
    w, h = plot_timeline(events, args.out)
    print(
        f"# timeline written to {args.out} ({w}x{h} px, {len(events.turns)} turns, {len(rows(events))} row(s))",
        file=sys.stderr,
    )
    return 0
