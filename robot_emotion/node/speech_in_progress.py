"""While a segment is still being spoken: what the node can already decide.

A part perception.Perception holds (``Perception.live``); the utterance thread calls these,
in order, with the segment's audio so far:
  on_probe(probe)          after speakers.probe_s and 1.5 s of a new segment: a clearly different
                           voice than the open turn's closes that turn now, not at this segment's end
  on_turn_so_far(item)     every speakers.live_change_s: a voice change INSIDE the segment (quick
                           exchanges: no pause between speakers) closes the turn before it now;
                           every asr.incremental_s: decode the turn so far (audio/incremental.py;
                           live, on the recogniser thread, so a segment's end never waits for it)
  speculate(seg)           at the segment's end, on the second core: transcribe the turn it most
                           likely makes while the speaker encoder splits and labels it
  early_result(seg)        at the segment's end, first of all: the turn it most likely makes,
                           scored on the words decoded so far (``early: true``, emotion.early)
  transcribe_partial(part) ``utterance.partial``
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.turns import Piece, SegmentPart, Turn, TurnBuilder
from robot_emotion.bus import messages


# ---- what the Node hands over while a segment is spoken (node/segment_schedule.py) -----------
@dataclass
class PartialAudio:
    """The audio of an utterance still in progress (for `utterance.partial`)."""

    utterance_id: str
    start: float
    end: float
    audio: np.ndarray
    audio_t0: float
    wall: float


class SpeakerProbe(PartialAudio):
    """The first speakers.probe_s of a segment still in progress (has the voice changed?)."""


@dataclass
class TurnSoFar(PartialAudio):
    """The open segment, every asr.incremental_s (decode the turn so far, audio/incremental.py)
    and every speakers.live_change_s (close the turn at a voice change inside it)."""

    decode: bool = True
    check_voice: bool = False
    agree: bool = True  # the decode joins the ones whose agreement fixes a prefix (not the
    # half-step one for the early estimate: WER 8.0 -> 9.2% when it did)


@dataclass
class EarlyText:
    """The last decode of the turn so far (on_turn_so_far): its words, up to ``until``, and the
    audio it decoded (the early estimate's voice is read from that audio's encoding, which the
    recogniser keeps: whisper_short.py)."""

    segment: str
    turn: str
    origin: float
    until: float
    text: str
    confidence: float | None
    audio: np.ndarray


@dataclass
class LiveCut:
    """Voice changes found while segment ``segment`` is spoken: the turns before ``at`` are closed."""

    segment: str
    at: float
    next_index: int  # the index of the next piece of the segment
    heard: list  # the speakers of the closed parts, in order
    overlap: bool = False  # the voice after ``at`` came in over the one before it


class SpeechInProgress:
    """Perception's handling of the segment being spoken (see the module's docstring).

    It uses its Perception's public side only: the stages (asr, speakers, emotion), the turn
    builder, the node link (stats, history, queue) and finalize / prompt / face_data /
    active_speaker / person; it owns the decodes and cuts of the segment in progress."""

    def __init__(self, perception):
        self.p = perception
        self._hyp = None  # partial decodes of the open turn (incremental.py)
        self._pool = None  # the second core's recogniser thread (speculate)
        self._cut: LiveCut | None = None  # voice changes found in the segment being spoken
        self._head = None  # ((segment, from), d-vector of its first 1.5 s)
        self._early = None  # EarlyText: the last decode of the segment being spoken
        self._decoding = None  # live: (segment, Future) of the decode running on the recogniser thread

    def hypotheses(self, origin: float):
        """The open turn's partial decodes when they decode audio from ``origin``, else None."""
        return self._hyp if self._hyp is not None and self._hyp.matches(origin) else None

    def segment_over(self) -> None:
        """The segment was handed over whole: its early decode and live cuts are spent."""
        self._decode_failed()
        self._early = None
        self._cut = None

    def _decode_failed(self) -> None:
        """Live: a decode that failed on the recogniser thread fails the utterance thread, as
        one run in place would (the node reports it); nothing is lost in the future."""
        d = self._decoding
        if d is not None and d[1].done():
            self._decoding = None
            d[1].result()

    def close(self) -> None:
        """The node stopped: let the recogniser thread go (a process may run many sessions)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def rest_of(self, seg):
        """The segment less the part a voice change found during its speech already closed."""
        c = self._cut
        if c is not None and c.segment == seg.utterance_id:
            return SegmentPart.rest_of(seg, c.at, c.next_index, c.overlap)
        return seg

    def prefer(self, segment: str) -> str | None:
        """The voice a segment's first piece most likely continues: the open turn's; in the
        rest of a segment cut twice (A | B | ...), the voice before the last one (A B A, as a
        split of the whole segment would give it: one voice's pieces are often only ~0.7 alike)."""
        if self.p.turns.open is not None:
            return self.p.turns.open.speaker
        c = self._cut
        return c.heard[-2] if c is not None and c.segment == segment and len(c.heard) >= 2 else None

    def speculate(self, seg):
        """Two cores: while the speaker encoder splits and labels the segment, transcribe
        the turn it most likely makes (the open turn continued when the pause is shorter
        than the turn gap, else a new one) in a second thread. _result uses it only if the
        turn came out exactly so (same audio, same prompt), which is the same transcript it
        would compute itself; otherwise it was wasted work."""
        if self.p.asr is None or self.p.speakers is None:
            return None
        turn = self._likely_turn(seg)
        t0, audio = turn.audio()
        prompt = self.p.prompt(turn)
        hyp = self._hyp if self._hyp is not None and self._hyp.matches(t0) else None
        key = (t0, audio.size, prompt)
        return self._recogniser().submit(lambda: (key, self.p.asr.transcribe(audio, prompt=prompt, hypotheses=hyp)))

    def _recogniser(self):
        """The second core's recogniser thread (one worker: what is submitted runs in order)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        return self._pool

    def on_probe(self, probe) -> list[dict]:
        """The first ``speakers.probe_s`` of a segment still in progress: if it is clearly
        another voice than the open turn's, that turn is over now (not at this segment's end)."""
        t = self.p.turns.open
        if t is None or self.p.speakers is None or probe.start - t.end >= self.p.turns.turn_gap_s:
            return []
        t0 = time.perf_counter()
        a0 = max(0, int(round((probe.start - probe.audio_t0) * SAMPLE_RATE)))
        differs = self.p.speakers.differs(probe.audio[a0:].astype(np.float32) / 32768.0, t.speaker)
        self.p.link.stats.add("speaker_probe", (time.perf_counter() - t0) * 1000.0)
        return self.p.finalize(self.p.turns.close()) if differs else []

    def on_turn_so_far(self, item) -> list[dict]:
        """The segment still being spoken: close the turn at a voice change inside it
        (``item.check_voice``), decode the turn it is likely to continue or start, so far
        (``item.decode``, audio/incremental.py)."""
        self._decode_failed()
        bodies = self._voice_change_so_far(self._so_far(item)) if item.check_voice else []

        # a decode that serves only the early estimate (item.agree false), and the early text
        # features, are of no use once a later decode of the segment waits (it replaces them): skipped,
        # the events are the same (a replay at --speed max then does ~2 s less work per 30 s)
        def later() -> bool:  # (asked when needed: the queue grows while a decode runs)
            return self.p.link.queued(
                lambda it: isinstance(it, TurnSoFar) and it.decode and it.utterance_id == item.utterance_id
            )

        if item.decode and self.p.asr is not None and (item.agree or not later()):
            seg = self._so_far(item)  # (Turn.audio() pads it as it will the real one)
            turn = self._likely_turn(seg)
            t0, audio = turn.audio()
            if self._hyp is None or not self._hyp.matches(t0):
                from robot_emotion.audio.incremental import Hypotheses

                self._hyp = Hypotheses(t0)
            hyp, prompt = self._hyp, self.p.prompt(turn)
            prepare = self.p.emotion is not None and self.p.cfg.emotion.early
            past = self.p.past_turns(turn.start) if prepare else []

            def decode() -> None:
                began = time.perf_counter()
                tr = self.p.asr.transcribe(audio, prompt=prompt, hypotheses=hyp, update=item.agree)
                self.p.link.stats.add("asr_incremental", (time.perf_counter() - began) * 1000.0)
                early = EarlyText(item.utterance_id, turn.id, t0, item.end, tr.text.strip(), tr.confidence, audio)
                self._early = early
                if prepare and early.text and not later():
                    began = time.perf_counter()  # the early estimate's text features, now rather than at the pause
                    self.p.emotion.prepare_text(past, turn.speaker, early.text)
                    self.p.link.stats.add("text_early", (time.perf_counter() - began) * 1000.0)

            if self.p.link.mode != "live":
                decode()  # a replay decodes here, in order: its events must not depend on the machine's speed
            elif self._decoding is not None and not self._decoding[1].done():
                # the one before still runs: decodes must not pile up on a slow core (counted,
                # as the backlog policy counts the decodes it skips)
                self.p.link.stats.add("asr_incremental_busy", 1.0)
            else:
                # on the recogniser thread: a decode (0.1-0.4 s, more on a busy core) no longer
                # holds the utterance thread when the segment ends, so the early estimate need
                # not wait for it (early_result)
                self._decoding = (item.utterance_id, self._recogniser().submit(decode))
        return bodies

    def early_result(self, seg) -> list[dict]:
        """The first estimate at a pause, before the tail is transcribed: the turn the segment
        most likely makes (as speculate), scored on the words its last incremental decode heard
        (up to ``text_end``, at most asr.incremental_s before the pause). ~45 ms (the text
        model) instead of the ~200 ms of the full result, which follows as usual. Only when
        this segment was decoded while spoken and heard words; ``early: true`` marks both
        messages, ``speaker`` is the open turn's or null (the segment is not labelled yet).
        Live, the segment's last decode may still run on the recogniser thread: the estimate
        uses the one before it, and waits only when the segment has no other."""
        d = self._decoding
        if d is not None and d[0] == seg.utterance_id and not d[1].done():
            e = self._early
            if e is None or e.segment != seg.utterance_id:
                d[1].result()
        e = self._early
        if (
            e is None
            or self.p.emotion is None
            or not self.p.cfg.emotion.early
            or not e.text
            or e.segment != seg.utterance_id
        ):
            return []
        turn = self._likely_turn(seg)
        if turn.id != e.turn or abs(turn.pieces[0].pad_from - e.origin) > 1e-6:
            return []
        tracks = self.p.face_data(turn.start, seg.end)
        face_track, face_conf = self.p.active_speaker(turn.start, seg.end, tracks) if tracks else (None, None)
        body = messages.utterance(
            turn.id,
            final=False,
            start=turn.start,
            end=seg.end,
            speaker=turn.speaker,
            person=self.p.person(turn.speaker),
            face_track=face_track,
            face_confidence=face_conf if face_track is not None else None,
            text=e.text,
            text_end=e.until,
            asr_confidence=e.confidence,
            language=self.p.cfg.asr.language,
            segments=turn.segments,
            spans=turn.spans,
            overlap=turn.overlap,
        )
        emo = self.p.score_emotion(body, e.audio, tracks.get(face_track) if face_track is not None else None)
        emo.update(final=False, early=True, text_end=e.until, person=body["person"])
        self.p.link.stats.add("early", 1.0)
        return [dict(b, _wall_end=seg.wall) for b in (body, emo)]

    def _so_far(self, item) -> SegmentPart:
        """The segment being spoken (less any part already closed) as a segment ending now."""
        return self.rest_of(
            SegmentPart(
                item.utterance_id, item.start, item.end, item.audio, item.audio_t0, decided_at=item.end, wall=item.wall
            )
        )

    def _voice_change_so_far(self, seg: SegmentPart) -> list[dict]:
        """Quick exchanges hold several turns in one segment (no pause between speakers). A
        cheap check (the d-vectors of the segment's first and last 1.5 s, ~12 ms each) asks
        whether the voice may have changed; only then the segment so far is split (~0.1 s).
        The turn before the first change is closed and published now, not at the pause."""
        from robot_emotion.audio.speakers import RELIABLE_S

        start, end, uid, first = seg.start, seg.end, seg.utterance_id, seg.first_index
        if self.p.speakers is None or end - start < RELIABLE_S + self.p.speakers.detector.min_turn_s:
            return []
        began = time.perf_counter()

        def span(a: float, b: float) -> np.ndarray:
            i0, i1 = (int(round((x - seg.audio_t0) * SAMPLE_RATE)) for x in (a, b))
            return seg.audio[max(0, i0) : i1].astype(np.float32) / 32768.0

        enc = self.p.speakers.encoder
        if self._head is None or self._head[0] != (uid, start):
            self._head = ((uid, start), enc.embed(span(start, start + RELIABLE_S)))
        maybe = self.p.speakers.may_have_changed(self._head[1], enc.embed(span(end - RELIABLE_S, end)))
        pieces = self.p.speakers.split(span(start, end), start) if maybe else []
        self.p.link.stats.add("speaker_live", (time.perf_counter() - began) * 1000.0)
        if len(pieces) < 2:
            return []
        cut = pieces[1].start
        part = SegmentPart(uid, start, cut, seg.audio, seg.audio_t0, decided_at=cut, wall=seg.wall, first_index=first)
        v = self.p.speakers.label(pieces[:1], uid, self.prefer(uid), first)[0]
        bodies = []
        before = Piece(part, first, False, start, cut, v.speaker, v.confidence, seg.overlap_start, v.heard_until)
        for closed in self.p.turns.add(before):
            bodies += self.p.finalize(closed)
        heard = self._cut.heard if self._cut is not None and self._cut.segment == uid else []
        self._cut = LiveCut(uid, cut, first + 1, heard + [v.speaker], pieces[1].overlap)
        self._hyp = None  # its partial decodes heard the next voice too: not a prefix for this turn
        self.p.link.stats.add("turns_cut_live", 1.0)
        return bodies + self.p.finalize(self.p.turns.close())

    def _likely_turn(self, seg) -> Turn:
        """The turn a segment most likely makes: the open turn continued when the pause before
        it is shorter than the turn gap (as TurnBuilder will decide, barring a new voice), else
        a new turn of its own."""
        piece = Piece(seg, getattr(seg, "first_index", 0), True, seg.start, seg.end)
        piece.overlap = getattr(seg, "overlap_start", False)
        t = self.p.turns.open
        if t is not None and seg.start - t.end < self.p.turns.turn_gap_s:
            return Turn(t.id, t.pieces + [piece])
        return Turn(TurnBuilder.turn_id(piece), [piece])

    def transcribe_partial(self, part) -> dict | None:
        t0 = time.perf_counter()
        text = self.p.asr.transcribe(part.audio.astype(np.float32) / 32768.0).text.strip()
        self.p.link.stats.add("asr_partial", (time.perf_counter() - t0) * 1000.0)
        return messages.partial(part.utterance_id, part.start, part.end, text)
