"""Who is speaking, from the voice: split speech segments at speaker changes and give each
piece a session speaker id ("S0", "S1", ... in order of appearance).

Voices are GE2E d-vectors (audio/voice_encoder.py: Resemblyzer's pretrained speaker
verification LSTM, 256-d, unit length) compared by cosine. Its equal error rate on the
development voices is 17.6 % on whole clips and 24 % on 0.5 s (benchmarks/speaker_embedding),
so short pieces are trusted less (below).

* ``SpeakerChangeDetector``: inside one VAD segment (speakers can change with a 50 ms gap
  or overlap, which no pause detector sees) windows of the segment are scored against the
  known voices and a Viterbi path picks who speaks when; a cut stays only where the pieces
  on its two sides are different voices by the learned ``changed`` decision.
* ``SpeakerClusterer``: online clustering. A piece continues the open turn's speaker unless
  the ``changed`` decision says otherwise, else joins the most similar known speaker when
  the ``same`` decision accepts it, else founds a new speaker. Where the decisions carry
  CAM++ models (``same_identity``, ``changed_identity``), these whole-piece choices are made on
  CAM++ embeddings (audio/speaker_identity.py: fewer identity errors on a second or more of
  speech), while the sub-second probes and the split inside a segment stay on GE2E (as good at
  0.5 s, 3-4x cheaper).

The decisions are calibrated logistic models of cosine and duration fit on development
voices (audio/voice_decisions.py, benchmarks/voice_decisions/fit.py), not hand-set margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE

RELIABLE_S = 1.5  # pieces shorter than this do not move a speaker's voice (noisy d-vectors)
PROBE_TIMES_S = (0.32, 0.4, 0.5, 0.6, 0.8, 1.0, RELIABLE_S)  # probes after speakers.probe_s: when
# to ask again whether a new segment's voice changed (each asks ~10 ms)
STAND_IN_S = 1.6  # with fewer than 2 known voices: a segment's first/last 1.6 s stand in
MAX_MEMBERS = 200  # pieces a speaker keeps one by one (older ones are summed: _Speaker)


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

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def identity_pair(self) -> tuple | None:
        """(CAM++ vector, narrowband) as the clusterer takes it, or None."""
        return None if self.identity is None else (self.identity, self.narrowband)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class SpeakerChangeDetector:
    """Voice changes inside one segment, decided against the KNOWN voices.

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
    ):
        self.encoder, self.decisions = encoder, decisions
        self.min_turn_s, self.window_s, self.hop_s = float(min_turn_s), float(window_s), float(hop_s)
        self.switch_penalty = float(switch_penalty)
        self.last_path: tuple[np.ndarray, np.ndarray] | None = None  # (window centres s, speaker index)

    def split(self, audio: np.ndarray, t0: float, centroids: np.ndarray | None = None) -> list[VoicePiece]:
        """Pieces of one voice each (session seconds), with their d-vectors. ``centroids``
        (k, 256) are the known speakers' voices."""
        dur = audio.size / SAMPLE_RATE
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


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a + b


@dataclass
class _Speaker:
    id: str
    # piece key -> (d-vector, CAM++ vector or None), each duration-weighted (the latest pieces)
    members: dict = field(default_factory=dict)
    older: tuple = (None, None)  # the sums of the members folded out of `members`
    centroid: np.ndarray | None = None  # GE2E voice
    identity: np.ndarray | None = None  # CAM++ voice (None until a piece brought one)

    def update(self) -> None:
        # A node runs for days: keep the latest MAX_MEMBERS pieces by key (a piece may still be
        # taken back, `unassign`) and fold the older ones into one sum; the centroid is the same.
        while len(self.members) > MAX_MEMBERS:
            v = self.members.pop(next(iter(self.members)))
            self.older = (_add(self.older[0], v[0]), _add(self.older[1], v[1]))
        sums = [self.older[j] for j in (0, 1)]
        for v in self.members.values():
            sums = [_add(sums[j], v[j]) for j in (0, 1)]
        self.centroid, self.identity = (None if x is None else _unit(x) for x in sums)

    def add(self, key: str, emb: np.ndarray, ident: tuple | None, dur: float) -> None:
        self.members[key] = (emb * dur, None if ident is None else ident[0] * dur)
        self.update()

    @property
    def empty(self) -> bool:
        return not self.members and self.older == (None, None)


class SpeakerClusterer:
    def __init__(self, decisions):
        self.decisions = decisions
        self._speakers: list[_Speaker] = []
        self._next = 0

    @property
    def speakers(self) -> list[str]:
        return [s.id for s in self._speakers]

    def _get(self, sid: str | None) -> _Speaker | None:
        return next((s for s in self._speakers if s.id == sid), None)

    def voice(self, sid: str | None) -> tuple[np.ndarray | None, float]:
        """(GE2E centroid, seconds of speech in it) of a speaker. Members are stored as unit
        d-vector x duration, so their norms are the seconds."""
        s = self._get(sid)
        if s is None or s.centroid is None:
            return None, 0.0
        parts = [v[0] for v in s.members.values()] + ([s.older[0]] if s.older[0] is not None else [])
        return s.centroid, float(sum(np.linalg.norm(v) for v in parts))

    def centroids(self) -> np.ndarray | None:
        """(k, 256) voices of the speakers heard so far."""
        cs = [s.centroid for s in self._speakers if s.centroid is not None]
        return np.stack(cs) if cs else None

    def _new(self, key: str, emb: np.ndarray, ident: tuple | None, dur: float) -> _Speaker:
        spk = _Speaker(f"S{self._next}")
        self._next += 1
        self._speakers.append(spk)
        spk.add(key, emb, ident, dur)
        return spk

    def _p_same(self, spks: list[_Speaker], emb: np.ndarray, ident, dur: float) -> np.ndarray:
        """``same``'s probability that the piece is each of ``spks``: on CAM++ embeddings
        (``ident`` = (vector, narrowband)) where the decisions have that model and every one
        of them has a CAM++ voice."""
        d = self.decisions
        if ident is not None and d.uses_identity and all(s.identity is not None for s in spks):
            return d.p_same_identity(np.array([float(ident[0] @ s.identity) for s in spks]), dur, ident[1])
        return d.p_same(np.array([float(emb @ s.centroid) for s in spks]), dur)

    def changed(self, sid: str | None, emb: np.ndarray, ident, dur: float) -> bool | None:
        """Is the piece someone else than speaker ``sid`` (the open turn's)? ``changed`` on
        its cosines to that voice and to the nearest other: CAM++'s where the decisions have
        that model and every speaker has a CAM++ voice, else GE2E's. None: no such voice."""
        spk = self._get(sid)
        if spk is None or spk.centroid is None:
            return None
        d, others = self.decisions, [s for s in self._speakers if s is not spk]
        if ident is not None and d.has_changed_identity and all(s.identity is not None for s in self._speakers):
            v, own = ident[0], float(ident[0] @ spk.identity)
            other = max((float(v @ s.identity) for s in others), default=0.0)
            return bool(d.p_changed_identity(own, other, dur, ident[1])[0] >= 0.5)
        own = float(emb @ spk.centroid)
        return d.changed(own, max((float(emb @ s.centroid) for s in others), default=0.0), dur)

    def assign(
        self, key: str, emb: np.ndarray | None, dur: float, prefer: str | None = None, ident: tuple | None = None
    ) -> tuple[str | None, float]:
        """(speaker id, confidence 0..1) for a piece; ``prefer`` = the open turn's speaker,
        ``ident`` the piece's (CAM++ vector, narrowband) if the tracker computes one. The open turn's
        voice goes on unless ``changed`` says it did; otherwise the likeliest known voice if
        ``same`` accepts it, else a new speaker. The confidence is ``same``'s probability for
        the voice chosen."""
        if emb is None:
            return prefer, 0.0
        if not self._speakers:
            return self._new(key, emb, ident, dur).id, 1.0
        if self.changed(prefer, emb, ident, dur) is False:
            spk = self._get(prefer)
            return self._keep(spk, key, emb, ident, dur), float(self._p_same([spk], emb, ident, dur)[0])
        p = self._p_same(self._speakers, emb, ident, dur)
        i = int(np.argmax(p))
        if p[i] >= 0.5:
            return self._keep(self._speakers[i], key, emb, ident, dur), float(p[i])
        return self._new(key, emb, ident, dur).id, float(1.0 - p[i])

    @staticmethod
    def _keep(spk: _Speaker, key: str, emb: np.ndarray, ident: tuple | None, dur: float) -> str:
        if dur >= RELIABLE_S:  # a short piece's embedding is too noisy to move a voice
            spk.add(key, emb, ident, dur)
        return spk.id

    def join(self, key: str, emb: np.ndarray, dur: float, sid: str, ident: tuple | None = None) -> tuple[str, float]:
        """Give a piece to a known speaker (the split already decided whose voice it is)."""
        spk = self._get(sid)
        return self._keep(spk, key, emb, ident, dur), float(self._p_same([spk], emb, ident, dur)[0])

    def unassign(self, key: str) -> None:
        """Forget a piece (it turned out not to be speech); a speaker left empty is removed."""
        for s in list(self._speakers):
            if s.members.pop(key, None) is not None:
                s.update()
                if s.empty:
                    self._speakers.remove(s)
                    if s.id == f"S{self._next - 1}":
                        self._next -= 1  # ids stay dense: no phantom S2 between S1 and S3

    def merge(self, src: str, dst: str) -> bool:
        """Fold speaker `src` into `dst` (e.g. the face says they are one person)."""
        a, b = self._get(src), self._get(dst)
        if a is None or b is None or a is b:
            return False
        b.members.update(a.members)
        b.older = (_add(b.older[0], a.older[0]), _add(b.older[1], a.older[1]))
        b.update()
        self._speakers.remove(a)
        return True

    def reset(self) -> None:
        self._speakers.clear()
        self._next = 0


class SpeakerTracker:
    """Change detection + clustering: a segment's speech in, pieces with speaker ids out."""

    def __init__(self, cfg=None, encoder=None, identity=None):
        from robot_emotion.audio.speaker_identity import IdentityEncoder
        from robot_emotion.audio.voice_decisions import VoiceDecisions, shipped
        from robot_emotion.audio.voice_encoder import VoiceEncoder
        from robot_emotion.shared_models import shared

        path = cfg.decisions if cfg is not None else ""
        self.decisions = VoiceDecisions.load(path) if path else shipped()
        min_turn = cfg.min_turn_s if cfg is not None else 0.8
        self.encoder = encoder if encoder is not None else shared(("voice_encoder", "cpu"), VoiceEncoder)
        if identity is None and self.decisions.uses_identity:
            identity = shared(("identity_encoder", "cpu"), IdentityEncoder)
        self.identity = identity if self.decisions.uses_identity else None  # CAM++, or None: GE2E only
        self.detector = SpeakerChangeDetector(self.encoder, self.decisions, min_turn)
        self.clusterer = SpeakerClusterer(self.decisions)

    def process(self, audio: np.ndarray, t0: float, key: str, prefer: str | None = None) -> list[VoicePiece]:
        """Split ``audio`` (float32, starting at session time t0) and label every piece.
        Piece keys are ``key`` + ".index"; the first piece may continue ``prefer``."""
        return self.label(self.split(audio, t0), key, prefer)

    def split(self, audio: np.ndarray, t0: float) -> list[VoicePiece]:
        """The pieces of one voice each (with their samples), against the voices known so far."""
        pieces = self.detector.split(audio, t0, self.clusterer.centroids())
        for p in pieces:
            i0, i1 = (int(round((x - t0) * SAMPLE_RATE)) for x in (p.start, p.end))
            p.audio = audio[max(0, i0) : i1]
        return pieces

    def _identify(self, p: VoicePiece) -> None:
        """CAM++ only for a piece that is labelled (a live check labels just the first)."""
        if self.identity is not None and p.identity is None and p.audio is not None:
            from robot_emotion.audio.speaker_identity import narrowband

            p.identity, p.narrowband = self.identity.embed(p.audio), narrowband(p.audio)

    def label(self, pieces: list[VoicePiece], key: str, prefer: str | None = None, index0: int = 0) -> list[VoicePiece]:
        """Give the pieces of ``split`` speaker ids (keys ``key``.index0, .index0+1, ...)."""
        ids: dict[int, str] = {}  # voice of the split -> speaker id given to it
        for i, p in enumerate(pieces):
            k = f"{key}.{index0 + i}"
            self._identify(p)
            if p.voice in ids:  # A B A inside one segment: the second A is A
                p.speaker, p.confidence = self.clusterer.join(k, p.embedding, p.duration, ids[p.voice], p.identity_pair)
                continue
            # after a detected change the voice is by definition not the previous one
            # a piece the split found to be a voice not heard before may found a speaker even
            # when short: the split already checked it against its neighbour as a whole
            dur = max(p.duration, RELIABLE_S) if p.new_voice else p.duration
            p.speaker, p.confidence = self.clusterer.assign(
                k, p.embedding, dur, prefer if i == 0 else None, p.identity_pair
            )
            if p.voice is not None and p.speaker is not None:
                ids[p.voice] = p.speaker
        return pieces

    def may_have_changed(self, head: np.ndarray, tail: np.ndarray) -> bool:
        """A cheap trigger for ``split`` on a segment still in progress: might the voice of
        its last RELIABLE_S (``tail``) not be that of its first (``head``)? Generous on
        purpose (a false alarm costs one split, ~0.1 s; the split decides)."""
        cents = self.clusterer.centroids()
        same = self.decisions.same
        if cents is None or len(cents) < 2:
            return not same(float(head @ tail), RELIABLE_S)
        h, t = cents @ head, cents @ tail
        return int(np.argmax(h)) != int(np.argmax(t)) or not same(float(t.max()), RELIABLE_S)

    def differs(self, audio: np.ndarray, speaker: str | None) -> bool:
        """Probe: is the start of a new segment not ``speaker``'s voice? The ``changed``
        decision on its cosine to that voice and to the nearest other known one, and on how
        much of it there is (a probe at 0.25 s must be a clearer case than one at 1.5 s: the
        fit learns how much clearer from the dev voices). On GE2E: CAM++ at the 1 and 1.5 s
        probes was worse end to end on the dev conversations (benchmarks/voice_decisions)."""
        if speaker is None:
            return False
        return bool(self.clusterer.changed(speaker, self.encoder.embed(audio), None, audio.size / SAMPLE_RATE))
