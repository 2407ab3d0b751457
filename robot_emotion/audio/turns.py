"""Turns from pauses: group one speaker's speech segments into the turn a person would name.

People pause inside a turn (150-500 ms at commas, longer while thinking) and change
speakers with gaps of 0-200 ms or overlap, so silence alone cannot find turns. The VAD
(audio/vad.py) cuts at every pause; the speaker tracker (audio/speakers.py) splits a
segment where the voice changes and labels every piece. ``TurnBuilder`` then:

* continues the open turn with a piece of the SAME speaker that starts less than
  ``turn_gap_s`` after the turn's end, as long as the turn stays under ``max_turn_s``;
* closes the open turn at a speaker change (any gap, overlap included), at a pause of
  ``turn_gap_s`` (``gap``), when the turn would pass ``max_turn_s``, at a probe that hears
  another voice (``close``), and at the end of the stream.

A voice change can also be found while a segment is still spoken (perception.py checks the
open segment every ``speakers.live_change_s``): the part before it then closes its turn at
once, as a ``SegmentPart``, instead of waiting for the next pause.

It is pure bookkeeping (no models, no threads): perception.py runs the stages and decides
what to publish. A turn's id is the id of the segment that opened it (plus ".k" when it
opened at the k-th piece of a segment split by a speaker change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.vad import PREROLL_S


@dataclass
class SegmentPart:
    """A stretch of a VAD segment that stands for it, with the same fields. A voice change
    found while the segment is still being spoken closes the turn there and then: the part
    before the change is handed on as a segment of its own (``decided_at`` = the change,
    ``wall`` = when it was found), and what follows becomes the rest of the segment, whose
    pieces are numbered on from ``first_index``."""

    utterance_id: str
    start: float
    end: float
    audio: np.ndarray = field(repr=False)
    audio_t0: float
    decided_at: float
    wall: float
    forced: bool = False
    first_index: int = 0
    overlap_start: bool = False  # it starts at a live cut where the new voice came in over the old one

    @classmethod
    def rest_of(cls, seg, start: float, first_index: int, overlap_start: bool = False) -> "SegmentPart":
        return cls(
            seg.utterance_id,
            start,
            seg.end,
            seg.audio,
            seg.audio_t0,
            seg.decided_at,
            getattr(seg, "wall", 0.0),
            getattr(seg, "forced", False),
            first_index,
            overlap_start,
        )


@dataclass
class Piece:
    """One voice's stretch of a VAD segment (the whole segment when nobody else spoke)."""

    segment: object  # the audio/vad.py SpeechEnd it came from
    index: int  # position among the segment's pieces
    last: bool  # the segment's last piece
    start: float
    end: float
    speaker: str | None = None
    confidence: float | None = None
    overlap: bool = False  # it began while the voice before it still spoke (audio/overlap.py)
    heard_until: float | None = None  # its voice went on under the next piece's until then

    @property
    def key(self) -> str:
        return f"{self.segment.utterance_id}.{self.index}"

    @property
    def pad_from(self) -> float:
        """Earliest audio that is this voice's: the pre-roll for a segment's first piece
        (a piece after a voice change starts at the change)."""
        return max(self.segment.audio_t0, self.start - PREROLL_S) if self.index == 0 else self.start

    @property
    def pad_to(self) -> float:
        """Latest audio that is this voice's: the VAD hangover after a segment's last piece."""
        return max(self.end, self.segment.decided_at) if self.last else self.end


@dataclass
class Turn:
    id: str
    pieces: list[Piece] = field(default_factory=list)
    bodies: list[dict] | None = None  # the last result published for it (provisional)
    dirty: bool = True  # pieces added since `bodies` were computed

    @property
    def start(self) -> float:
        return self.pieces[0].start

    @property
    def end(self) -> float:
        return self.pieces[-1].end

    @property
    def speaker(self) -> str | None:
        return self.pieces[0].speaker

    @property
    def overlap(self) -> bool:
        """The turn began while another voice still spoke (the new speaker took the floor)."""
        return self.pieces[0].overlap

    @property
    def speaker_confidence(self) -> float | None:
        confs = [(p.confidence, p.end - p.start) for p in self.pieces if p.confidence is not None]
        if not confs:
            return None
        return float(sum(c * d for c, d in confs) / max(1e-9, sum(d for _, d in confs)))

    @property
    def spans(self) -> list[list[float]]:
        """[start, end] of the turn's speech, its pauses left out (pieces that touch are one),
        including any stretch it went on under the next speaker's voice."""
        out: list[list[float]] = []
        for p in self.pieces:
            end = max(p.end, p.heard_until or p.end)
            if out and p.start <= out[-1][1] + 1e-6:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([p.start, end])
        return out

    @property
    def segments(self) -> list[str]:
        return list(dict.fromkeys(p.segment.utterance_id for p in self.pieces))

    @property
    def forced(self) -> bool:
        return any(p.segment.forced for p in self.pieces)

    @property
    def wall_end(self) -> float:
        return self.pieces[-1].segment.wall

    def audio(self) -> tuple[float, np.ndarray]:
        """(t0, float32 audio) of the whole turn, pauses included, with the pre-roll and the
        hangover as padding for the recogniser. Consecutive segments tile the timeline (vad.py);
        a hole, should one occur, stays silent."""
        t0, t1 = self.pieces[0].pad_from, self.pieces[-1].pad_to
        out = np.zeros(max(0, int(round((t1 - t0) * SAMPLE_RATE))), np.float32)
        seen = set()
        for p in self.pieces:
            seg = p.segment
            if seg.utterance_id in seen:
                continue
            seen.add(seg.utterance_id)
            src0 = max(0, int(round((t0 - seg.audio_t0) * SAMPLE_RATE)))
            dst0 = max(0, int(round((seg.audio_t0 - t0) * SAMPLE_RATE)))
            n = min(seg.audio.size - src0, out.size - dst0)
            if n > 0:
                out[dst0 : dst0 + n] = seg.audio[src0 : src0 + n].astype(np.float32) / 32768.0
        return t0, out


class TurnBuilder:
    def __init__(self, turn_gap_s: float, max_turn_s: float):
        self.turn_gap_s, self.max_turn_s = float(turn_gap_s), float(max_turn_s)
        self.open: Turn | None = None

    def add(self, piece: Piece) -> list[Turn]:
        """Add a piece; returns the turn it closed, if any (then a new turn is open)."""
        t = self.open
        if t is not None and self._continues(t, piece):
            t.pieces.append(piece)
            t.dirty = True
            return []
        closed = [t] if t is not None else []
        self.open = Turn(self.turn_id(piece), [piece])
        return closed

    @staticmethod
    def turn_id(piece: Piece) -> str:
        """A turn is named after the segment (and piece, after a voice change in it) that opened it."""
        return piece.segment.utterance_id + (f".{piece.index}" if piece.index else "")

    def _continues(self, t: Turn, p: Piece) -> bool:
        same = t.speaker is None or p.speaker is None or p.speaker == t.speaker
        return same and p.start - t.end < self.turn_gap_s and p.end - t.start <= self.max_turn_s

    def gap(self, last_end: float) -> Turn | None:
        """The VAD heard no speech for turn_gap_s after ``last_end``: close the turn that ended there."""
        if self.open is not None and self.open.end <= last_end + 1e-6:
            return self.close()
        return None

    def close(self) -> Turn | None:
        t, self.open = self.open, None
        return t
