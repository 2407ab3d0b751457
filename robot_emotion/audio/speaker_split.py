"""Split one speech segment into pieces of one voice each (audio/speakers.py labels them).

Two ways:

* the learned model (audio/speaker_change.py): CAM++ frame states in, per-frame change
  probability out, a cut at each peak over its threshold (fit on development voices);
* GE2E windows against the KNOWN voices and a Viterbi path (below), each cut then checked by
  the learned ``changed`` decision: without the model (``speakers.split = "viterbi"``), or
  where it finds no change (``"both"``, the default, chosen on the dev conversations).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE

STAND_IN_S = 1.6  # with fewer than 2 known voices: a segment's first/last 1.6 s stand in


@dataclass
class VoicePiece:
    start: float  # session seconds
    end: float
    embedding: np.ndarray | None  # (256,) unit vector, None when the piece has no audio
    identity: np.ndarray | None = None  # (192,) CAM++ unit vector, when the tracker uses one
    narrowband: bool = False  # telephone-band audio (speaker_identity.narrowband)
    audio: np.ndarray | None = field(default=None, repr=False)  # its samples (a view), for CAM++
    speaker: str | None = None
    confidence: float | None = None
    voice: int | None = None  # which voice of the split (known or stand-in) it matched
    new_voice: bool = False  # that voice is a stand-in: not one of the speakers known
    overlap: bool = False  # it starts while the voice before it still speaks (audio/overlap.py)
    heard_until: float | None = None  # its voice goes on under the next piece's until then (overlap)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def identity_pair(self) -> tuple | None:
        """(CAM++ vector, narrowband) as the clusterer takes it, or None."""
        return None if self.identity is None else (self.identity, self.narrowband)


class SpeakerChangeDetector:
    """Voice changes inside one segment: the learned model's cuts (``change_model``), and
    where it finds none (``fallback``) or without it, cuts decided against the KNOWN voices:

    Comparing 1 s windows with each other does not work with this encoder: on real read
    speech the cosine of adjacent windows of ONE sentence falls to 0.33-0.75 while windows
    across a real change give 0.39-0.58. A window against a speaker's
    centroid (averaged over whole turns) is steadier. So: every ``window_s`` window (hop
    ``hop_s``) is scored against each known speaker, a Viterbi path over the speakers with a
    ``switch_penalty`` picks who speaks when, runs shorter than ``min_turn_s`` are absorbed,
    and a cut is kept only where the learned ``changed`` decision calls each whole piece
    another voice than the one beside it. With fewer than two known voices, windows of the
    segment stand in for the voices not yet known (below).
    """

    def __init__(
        self,
        encoder,
        decisions,
        min_turn_s: float = 0.8,
        window_s: float = 1.0,
        hop_s: float = 0.2,
        switch_penalty: float = 0.3,
        change_model=None,
        identity=None,
        fallback: bool = False,
        overlap_model=None,
    ):
        self.encoder, self.decisions = encoder, decisions
        # the learned split: a SpeakerChangeModel reading the CAM++ states of ``identity``
        self.change_model, self.identity = (change_model, identity) if identity is not None else (None, None)
        self.fallback = fallback  # where the model finds no change, the known voices may (Viterbi)
        self.overlap_model = overlap_model if self.change_model is not None else None  # reads the same states
        self.min_turn_s, self.window_s, self.hop_s = float(min_turn_s), float(window_s), float(hop_s)
        self.switch_penalty = float(switch_penalty)
        self.last_path: tuple[np.ndarray, np.ndarray] | None = None  # (window centres s, speaker index)

    def split(self, audio: np.ndarray, t0: float, centroids: np.ndarray | None = None) -> list[VoicePiece]:
        """Pieces of one voice each (session seconds) with their d-vectors (and the CAM++ vector
        of a segment left whole by the learned model). ``centroids`` (k, 256): the known voices."""
        frames = None
        if self.change_model is not None and audio.size >= 2 * self.min_turn_s * SAMPLE_RATE:
            frames = self.identity.frames(audio)
        pieces = self._split(audio, t0, centroids, frames)
        if frames is not None and len(pieces) == 1:
            # one voice: its CAM++ vector is the states the model read, pooled (exactly ``embed``
            # of the segment, without a second pass). Not for the pieces of a cut segment: CAM++
            # gates every state with the whole input's mean, so each piece is embedded on its own
            # (pooled pieces: dev DER 24.9 against 23.0 %).
            pieces[0].identity = self.identity.pool(frames)
        return pieces

    def _split(self, audio: np.ndarray, t0: float, centroids, frames) -> list[VoicePiece]:
        dur = audio.size / SAMPLE_RATE
        if frames is not None:
            pieces = self._learned(audio, t0, frames)
            if len(pieces) > 1 or not self.fallback:
                return pieces
            whole = pieces  # no cut: the one piece is the whole segment, already embedded
        else:
            whole = [VoicePiece(t0, t0 + dur, self.encoder.embed(audio))]
        if dur < 2 * max(self.min_turn_s, self.window_s):
            return whole
        # With fewer than two known voices, windows of the segment itself stand in for voices not
        # heard before (the first turns of a session, a newcomer answering within 100 ms): the
        # first window and the one least like it (or like the one known voice). Pieces split on
        # a stand-in must then also differ outright (``same`` says no), since a stand-in
        # resembles the very audio it was cut from.
        known = 0 if centroids is None else len(centroids)
        stand_ins = []
        if known < 2 and dur >= 2 * STAND_IN_S:
            # farthest-point seeds: the window least like the known voice (or like the first window)
            _, wins = self.encoder.sliding(audio, window_s=STAND_IN_S, hop_s=0.4)
            ref = centroids[0] if known else wins[0]
            far = wins[int(np.argmin(wins @ ref))]
            if float(far @ ref) < 0.85:
                stand_ins = [far] if known else [wins[0], far]
        if known + len(stand_ins) < 2:
            return whole
        cands = np.vstack(([centroids] if known else []) + ([np.stack(stand_ins)] if stand_ins else []))
        centres, emb = self.encoder.sliding(audio, window_s=self.window_s, hop_s=self.hop_s)
        path = _viterbi(emb @ cands.T, self.switch_penalty)
        self.last_path = (t0 + centres, path)
        cuts = [0.5 * (centres[i] + centres[i + 1]) for i in range(len(path) - 1) if path[i] != path[i + 1]]
        edges = [0.0]
        for c in cuts:  # no piece shorter than min_turn_s
            if c - edges[-1] >= self.min_turn_s and dur - c >= self.min_turn_s:
                edges.append(c)
        edges.append(dur)
        pieces = [
            VoicePiece(t0 + a, t0 + z, self.encoder.embed(audio[int(a * SAMPLE_RATE) : int(z * SAMPLE_RATE)]))
            for a, z in zip(edges[:-1], edges[1:])
        ]
        # keep a cut only where each whole piece, heard after the other, is another voice
        out = [pieces[0]]
        for p in pieces[1:]:
            a, b = out[-1].embedding @ cands.T, p.embedding @ cands.T
            ia, ib = int(np.argmax(a)), int(np.argmax(b))
            d = self.decisions
            clear = ia != ib and d.changed(b[ia], b[ib], p.duration) and d.changed(a[ib], a[ia], out[-1].duration)
            if clear and max(ia, ib) >= known:  # a stand-in involved: demand more
                clear = not d.same(float(out[-1].embedding @ p.embedding), min(p.duration, out[-1].duration))
            if clear:
                out.append(p)
            else:  # one voice after all: join (and re-embed the joined piece)
                x = audio[int((out[-1].start - t0) * SAMPLE_RATE) : int((p.end - t0) * SAMPLE_RATE)]
                out[-1] = VoicePiece(out[-1].start, p.end, self.encoder.embed(x))
        if len(out) == 1:
            return whole
        for p in out:
            p.voice = int(np.argmax(p.embedding @ cands.T))
            p.new_voice = p.voice >= known
        return out

    def _learned(self, audio: np.ndarray, t0: float, frames: np.ndarray) -> list[VoicePiece]:
        """Cut where the speaker change model finds a change; who each piece is, the
        clusterer decides (a cut the model got wrong then joins the same speaker)."""
        cuts = self.change_model.cuts(frames, self.identity, self.min_turn_s)
        edges = [0.0, *cuts, audio.size / SAMPLE_RATE]
        ends = [0, *(int(c * SAMPLE_RATE) for c in cuts), audio.size]  # (the last piece: to the last sample)
        # whether a piece began over the voice before it, and till when: asked at each cut (the
        # segment's own start follows a pause, or a live cut that made that decision already)
        over = [
            None,
            *(self.overlap_model.onsets(frames, cuts) if self.overlap_model is not None else [None] * len(cuts)),
        ]
        pieces = []
        for a, z, i, j, o in zip(edges[:-1], edges[1:], ends[:-1], ends[1:], over):
            pieces.append(VoicePiece(t0 + a, t0 + z, self.encoder.embed(audio[i:j]), overlap=o is not None))
            if o is not None:  # the voice before the cut went on under this one
                pieces[-2].heard_until = t0 + o
        return pieces


def _viterbi(scores: np.ndarray, penalty: float) -> np.ndarray:
    """Best state path through (n, k) scores with a fixed cost for every switch."""
    n, k = scores.shape
    total, back = scores[0].copy(), np.zeros((n, k), int)
    for i in range(1, n):
        stay = total
        best_prev = int(np.argmax(total))
        switch = total[best_prev] - penalty
        back[i] = np.where(stay >= switch, np.arange(k), best_prev)
        total = np.maximum(stay, switch) + scores[i]
    path = np.zeros(n, int)
    path[-1] = int(np.argmax(total))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path
