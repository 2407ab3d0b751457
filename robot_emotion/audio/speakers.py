"""Who is speaking, from the voice: split speech segments at speaker changes and give each
piece a session speaker id ("S0", "S1", ... in order of appearance).

Voices are GE2E d-vectors (audio/voice_encoder.py: Resemblyzer's pretrained speaker
verification LSTM, 256-d, unit length) compared by cosine. Measured on oracle turns of
real voices (README, "Speakers"): same speaker >= 0.87, different speakers <= 0.54 on
whole turns; 1 s windows are noisier, so short pieces are trusted less (below).

* ``SpeakerChangeDetector``: inside one VAD segment (speakers can change with a 50 ms gap
  or overlap, which no pause detector sees) the voice of the ``window_s`` before each
  candidate point is compared with the ``window_s`` after it; a change is a local minimum
  of that cosine below ``change_threshold``, at least ``min_turn_s`` from the segment's
  ends and from the previous change.
* ``SpeakerClusterer``: online clustering. A piece joins the speaker whose centroid
  (duration-weighted mean d-vector) is most similar if the cosine reaches
  ``cluster_threshold``; otherwise it founds a new speaker. A piece shorter than
  ``RELIABLE_S`` is too short to found a speaker unless it is far from every known voice;
  it goes to the preferred speaker (the open turn's) when it is close enough to it, else
  to the nearest, and it does not move any centroid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot_emotion import SAMPLE_RATE

RELIABLE_S = 1.0          # pieces shorter than this give noisy d-vectors (README figures)
SHORT_MARGIN = 0.15       # a short piece founds a speaker only this far under cluster_threshold
WINDOW_S = 1.0            # change detection: voice before vs after a candidate point
HOP_S = 0.1


@dataclass
class VoicePiece:
    start: float                  # session seconds
    end: float
    embedding: np.ndarray | None  # (256,) unit vector, None when the piece has no audio
    speaker: str | None = None
    confidence: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class SpeakerChangeDetector:
    def __init__(self, encoder, threshold: float = 0.70, min_turn_s: float = 0.8,
                 window_s: float = WINDOW_S, hop_s: float = HOP_S):
        self.encoder, self.threshold = encoder, float(threshold)
        self.min_turn_s, self.window_s, self.hop_s = float(min_turn_s), float(window_s), float(hop_s)
        self.last_curve: tuple[np.ndarray, np.ndarray] | None = None   # (times s, cosines)

    def split(self, audio: np.ndarray, t0: float) -> list[VoicePiece]:
        """Pieces of one voice each (session seconds), with their d-vectors."""
        dur = audio.size / SAMPLE_RATE
        if dur < 2 * max(self.min_turn_s, self.window_s):
            return [VoicePiece(t0, t0 + dur, self.encoder.embed(audio))]
        centres, emb = self.encoder.sliding(audio, window_s=self.window_s, hop_s=self.hop_s)
        starts = centres - self.window_s / 2                      # window k covers [starts[k], +window]
        k_per_window = int(round(self.window_s / self.hop_s))
        # boundary between window k (ending at b) and window k + k_per_window (starting at b)
        left = np.arange(len(emb) - k_per_window)
        b = starts[left] + self.window_s
        cos = np.einsum("ij,ij->i", emb[left], emb[left + k_per_window])
        self.last_curve = (t0 + b, cos)
        cuts: list[float] = []
        radius = max(1, int(round(self.min_turn_s / self.hop_s)))
        for i in np.argsort(cos):                                  # most different first
            if cos[i] >= self.threshold:
                break
            if b[i] < self.min_turn_s or b[i] > dur - self.min_turn_s:
                continue
            lo, hi = max(0, i - radius), min(len(cos), i + radius + 1)
            if cos[i] > cos[lo:hi].min() or any(abs(b[i] - c) < self.min_turn_s for c in cuts):
                continue
            cuts.append(float(b[i]))
        edges = [0.0] + sorted(cuts) + [dur]
        pieces = []
        for a, z in zip(edges[:-1], edges[1:]):
            inside = (starts >= a - 1e-6) & (starts + self.window_s <= z + 1e-6)
            if inside.sum() >= 2:   # reuse the windows: no second encoder pass
                vec = _unit(emb[inside].mean(axis=0))
            else:
                vec = self.encoder.embed(audio[int(a * SAMPLE_RATE):int(z * SAMPLE_RATE)])
            pieces.append(VoicePiece(t0 + a, t0 + z, vec))
        return pieces


@dataclass
class _Speaker:
    id: str
    members: dict = field(default_factory=dict)   # piece key -> duration-weighted d-vector
    centroid: np.ndarray | None = None

    def update(self) -> None:
        self.centroid = _unit(np.sum(list(self.members.values()), axis=0)) if self.members else None


class SpeakerClusterer:
    def __init__(self, threshold: float = 0.75):
        self.threshold = float(threshold)
        self._speakers: list[_Speaker] = []
        self._next = 0

    @property
    def speakers(self) -> list[str]:
        return [s.id for s in self._speakers]

    def _get(self, sid: str | None) -> _Speaker | None:
        return next((s for s in self._speakers if s.id == sid), None)

    def similarity(self, emb: np.ndarray, sid: str | None) -> float | None:
        s = self._get(sid)
        return None if s is None or s.centroid is None else float(emb @ s.centroid)

    def _new(self, key: str, emb: np.ndarray, dur: float) -> _Speaker:
        spk = _Speaker(f"S{self._next}")
        self._next += 1
        self._speakers.append(spk)
        spk.members[key] = emb * dur
        spk.update()
        return spk

    def assign(self, key: str, emb: np.ndarray | None, dur: float,
               prefer: str | None = None) -> tuple[str | None, float]:
        """(speaker id, confidence 0..1) for a piece; ``prefer`` = the open turn's speaker."""
        if emb is None:
            return prefer, 0.0
        if not self._speakers:
            return self._new(key, emb, dur).id, 1.0
        sims = np.array([float(emb @ s.centroid) for s in self._speakers])
        i = int(np.argmax(sims))
        best, smax = self._speakers[i], float(sims[i])
        conf = float(np.clip(0.5 + (smax - self.threshold) / (2 * (1 - self.threshold)), 0, 1))
        if dur < RELIABLE_S:
            if smax < self.threshold - SHORT_MARGIN:
                return self._new(key, emb, dur).id, 0.5
            p = self.similarity(emb, prefer)
            if p is not None and p >= self.threshold - SHORT_MARGIN:
                return prefer, 0.5 * conf
            return best.id, 0.5 * conf
        if smax >= self.threshold:
            best.members[key] = emb * dur
            best.update()
            return best.id, conf
        return self._new(key, emb, dur).id, 1.0 - conf

    def unassign(self, key: str) -> None:
        """Forget a piece (it turned out not to be speech); a speaker left empty is removed."""
        for s in list(self._speakers):
            if s.members.pop(key, None) is not None:
                s.update()
                if not s.members:
                    self._speakers.remove(s)
                    if s.id == f"S{self._next - 1}":
                        self._next -= 1          # ids stay dense: no phantom S2 between S1 and S3

    def merge(self, src: str, dst: str) -> bool:
        """Fold speaker `src` into `dst` (e.g. the face says they are one person)."""
        a, b = self._get(src), self._get(dst)
        if a is None or b is None or a is b:
            return False
        b.members.update(a.members)
        b.update()
        self._speakers.remove(a)
        return True

    def reset(self) -> None:
        self._speakers.clear()
        self._next = 0


class SpeakerTracker:
    """Change detection + clustering: a segment's speech in, pieces with speaker ids out."""

    def __init__(self, cfg=None, encoder=None):
        from robot_emotion.audio.voice_encoder import VoiceEncoder
        change = cfg.change_threshold if cfg is not None else 0.70
        cluster = cfg.cluster_threshold if cfg is not None else 0.75
        min_turn = cfg.min_turn_s if cfg is not None else 0.8
        self.encoder = encoder if encoder is not None else VoiceEncoder()
        self.detector = SpeakerChangeDetector(self.encoder, change, min_turn)
        self.clusterer = SpeakerClusterer(cluster)

    def process(self, audio: np.ndarray, t0: float, key: str,
                prefer: str | None = None) -> list[VoicePiece]:
        """Split ``audio`` (float32, starting at session time t0) and label every piece.
        Piece keys are ``key`` + ".index"; the first piece may continue ``prefer``."""
        pieces = self.detector.split(audio, t0)
        for i, p in enumerate(pieces):
            # after a detected change the voice is by definition not the previous one
            p.speaker, p.confidence = self.clusterer.assign(f"{key}.{i}", p.embedding, p.duration,
                                                            prefer if i == 0 else None)
        return pieces

    def differs(self, audio: np.ndarray, speaker: str | None) -> bool:
        """Probe: is the start of a new segment clearly not ``speaker``'s voice?"""
        if speaker is None:
            return False
        sim = self.clusterer.similarity(self.encoder.embed(audio), speaker)
        return sim is not None and sim < self.clusterer.threshold - SHORT_MARGIN
