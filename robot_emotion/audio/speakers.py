"""Who is speaking, from the voice: split speech segments at speaker changes and give each
piece a session speaker id ("S0", "S1", ... in order of appearance).

Voices are GE2E d-vectors (audio/voice_encoder.py: Resemblyzer's pretrained speaker
verification LSTM, 256-d, unit length) compared by cosine. Its equal error rate on the
development voices is 17.6 % on whole clips and 24 % on 0.5 s (benchmarks/speaker_embedding),
so short pieces are trusted less (below).

* ``SpeakerChangeDetector`` (audio/speaker_split.py): inside one VAD segment (speakers can
  change with a 50 ms gap or overlap, which no pause detector sees) a small model trained on
  development voices cuts where the voice changes (audio/speaker_change.py); without it
  (``speakers.split = "viterbi"``), GE2E windows against the known voices and a Viterbi path.
* ``SpeakerClusterer``: online clustering. A piece continues the open turn's speaker unless
  the ``changed`` decision says otherwise, else joins the most similar known speaker when
  the ``same`` decision accepts it, else founds a new speaker. Where the decisions carry
  CAM++ models (``same_identity``, ``changed_identity``), these whole-piece choices are made on
  CAM++ embeddings (audio/speaker_identity.py: fewer identity errors on a second or more of
  speech), while the sub-second probes stay on GE2E (as good at 0.5 s, 3-4x cheaper).

The decisions are calibrated logistic models of cosine and duration fit on development
voices (audio/voice_decisions.py, benchmarks/voice_decisions/fit.py), not hand-set margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.speaker_split import SpeakerChangeDetector, VoicePiece

RELIABLE_S = 1.5  # pieces shorter than this do not move a speaker's voice (noisy d-vectors)
PROBE_TIMES_S = (0.32, 0.4, 0.5, 0.6, 0.8, 1.0, RELIABLE_S)  # probes after speakers.probe_s: when
# to ask again whether a new segment's voice changed (each asks ~10 ms)
MAX_MEMBERS = 200  # pieces a speaker keeps one by one (older ones are summed: _Speaker)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


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
        change = overlap = None
        if cfg is None or cfg.split in ("learned", "both"):
            from robot_emotion.audio.speaker_change import load

            change = load(cfg.change_model if cfg is not None else "")
            which = cfg.overlap_model if cfg is not None else ""
            if which != "off":
                from robot_emotion.audio.overlap import load as load_overlap

                overlap = load_overlap(which)
        if identity is None and (self.decisions.uses_identity or change is not None):
            identity = shared(("identity_encoder", "cpu"), IdentityEncoder)
        self.identity = identity if self.decisions.uses_identity else None  # CAM++, or None: GE2E only
        self.detector = SpeakerChangeDetector(
            self.encoder,
            self.decisions,
            min_turn,
            change_model=change,
            identity=identity if change else None,
            overlap_model=overlap,
            fallback=cfg is not None and cfg.split == "both",
        )
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
        """CAM++ for a piece that is labelled (a live check labels just the first), unless the
        split already pooled it from the states its change model read."""
        if self.identity is not None and p.audio is not None:
            from robot_emotion.audio.speaker_identity import narrowband

            if p.identity is None:
                p.identity = self.identity.embed(p.audio)
            p.narrowband = narrowband(p.audio)

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
