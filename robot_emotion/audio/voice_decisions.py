"""Who-is-speaking decisions as calibrated probabilities, fit on development voices.

The speaker tracker asks these questions of a GE2E d-vector (audio/voice_encoder.py):

* ``same(cos, dur)``: is a piece of ``dur`` seconds whose d-vector has cosine ``cos`` to a
  speaker's voice (centroid) that speaker?  (joining a known speaker or founding a new one)
* ``changed(own, other, dur)``: is the first ``dur`` seconds of a new stretch of speech
  someone else than the open turn's speaker, given its cosine ``own`` to that speaker and
  ``other`` to the nearest other known speaker (0 when nobody else is known)?  (closing a
  turn at a pause, or while the next segment is still spoken)

and, where the asset has it, ``same_identity(cos, dur, narrowband)``: ``same`` asked of the
CAM++ embedding (audio/speaker_identity.py), for a whole piece joining a known speaker or
founding a new one, and ``changed_identity(own, other, dur, narrowband)``: ``changed`` asked
of a whole piece that may continue the open turn. CAM++ separates voices better on a second or more (EER 13 vs 17.6 % on whole dev
clips), but costs 3-4x GE2E's CPU, so the sub-second probes stay on GE2E.

Each is a logistic regression on a handful of features (below), fit by
``benchmarks/voice_decisions/fit.py`` on the conversation corpus's DEVELOPMENT voices
(benchmarks/conversations) and stored with its provenance and its test-split figures in
``assets/voice_decisions.json``. A decision is ``p >= 0.5``: the fit weighs the classes as
they occur in conversation (``changed``) or balanced (``same``), so 0.5 is the decision the
data supports, not a tuned number. (A segment's probes ask ``changed`` up to eight times;
a stricter threshold for them, the one under which "some probe said yes" was most often
right per dev segment, 0.8, was worse end to end on the dev conversations: DER 37.1 vs
34.6 %, 0.81 vs 0.98 utterances per true turn. So 0.5 it is, everywhere.) Short audio gives noisy d-vectors; the ``log(dur)``
terms let the fit trust a 0.3 s probe less than a 2 s turn, which the old hand-set ladder
of margins per duration tried to do by hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_emotion.errors import InputError

ASSET = Path(__file__).resolve().parent.parent / "assets" / "voice_decisions.json"
MIN_DUR_S = 0.1  # (log of a duration: clamp empty audio)


def same_features(cos, dur) -> np.ndarray:
    """(n, 3): cosine, log duration, their product (the cosine counts more on longer audio)."""
    cos, ld = np.asarray(cos, float), np.log(np.maximum(np.asarray(dur, float), MIN_DUR_S))
    return np.stack(np.broadcast_arrays(cos, ld, cos * ld), axis=-1).reshape(-1, 3)


def identity_features(cos, dur, narrowband) -> np.ndarray:
    """(n, 4): ``same_features`` of a CAM++ cosine, and whether the audio is telephone band
    (audio/speaker_identity.narrowband: CAM++ finds all voices more alike there)."""
    nb = np.broadcast_to(np.asarray(narrowband, float), np.shape(np.asarray(cos, float)))
    return np.concatenate([same_features(cos, dur), nb.reshape(-1, 1)], axis=1)


def changed_features(own, other, dur) -> np.ndarray:
    """(n, 5): own and nearest-other cosine, log duration, and each cosine times it."""
    own, other = np.asarray(own, float), np.asarray(other, float)
    ld = np.log(np.maximum(np.asarray(dur, float), MIN_DUR_S))
    return np.stack(np.broadcast_arrays(own, other, ld, own * ld, other * ld), axis=-1).reshape(-1, 5)


def changed_identity_features(own, other, dur, narrowband) -> np.ndarray:
    """(n, 6): ``changed_features`` of CAM++ cosines, and whether the audio is telephone band."""
    x = changed_features(own, other, dur)
    return np.concatenate([x, np.broadcast_to(np.asarray(narrowband, float), x.shape[:1])[:, None]], axis=1)


@dataclass(frozen=True)
class Logistic:
    coef: tuple[float, ...]
    intercept: float

    def prob(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, float) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"coef": [float(c) for c in self.coef], "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, d: dict, n: int) -> "Logistic":
        coef = tuple(float(c) for c in d["coef"])
        if len(coef) != n or not all(math.isfinite(c) for c in coef) or not math.isfinite(float(d["intercept"])):
            raise ValueError(f"expected {n} finite coefficients and an intercept")
        return cls(coef, float(d["intercept"]))


class DecisionsUnreadable(InputError, ValueError):
    """speakers.decisions names a file that is not a pair of fitted models."""


class VoiceDecisions:
    """The two fitted models; ``load()`` reads the shipped asset (or another path)."""

    def __init__(
        self,
        same: Logistic,
        changed: Logistic,
        meta: dict | None = None,
        same_identity: Logistic | None = None,
        changed_identity: Logistic | None = None,
    ):
        self._same, self._changed, self.meta = same, changed, dict(meta or {})
        self._same_identity, self._changed_identity = same_identity, changed_identity

    @property
    def uses_identity(self) -> bool:
        """Whether whole-piece decisions are asked of CAM++ embeddings."""
        return self._same_identity is not None

    @property
    def has_changed_identity(self) -> bool:
        return self._changed_identity is not None

    @classmethod
    def load(cls, path: str | Path = ASSET) -> "VoiceDecisions":
        try:
            d = json.loads(Path(path).read_text())
            ident = Logistic.from_dict(d["same_identity"], 4) if "same_identity" in d else None
            changed_id = Logistic.from_dict(d["changed_identity"], 6) if "changed_identity" in d else None
            same, changed = Logistic.from_dict(d["same"], 3), Logistic.from_dict(d["changed"], 5)
            return cls(same, changed, d.get("fit"), ident, changed_id)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DecisionsUnreadable(f"cannot read speaker decision models {path}: {e}") from None

    def p_same(self, cos, dur) -> np.ndarray:
        return self._same.prob(same_features(cos, dur))

    def p_changed(self, own, other, dur) -> np.ndarray:
        return self._changed.prob(changed_features(own, other, dur))

    def p_same_identity(self, cos, dur, narrowband=False) -> np.ndarray:
        return self._same_identity.prob(identity_features(cos, dur, narrowband))

    def p_changed_identity(self, own, other, dur, narrowband=False) -> np.ndarray:
        return self._changed_identity.prob(changed_identity_features(own, other, dur, narrowband))

    def same(self, cos: float, dur: float) -> bool:
        return bool(self.p_same(cos, dur)[0] >= 0.5)

    def changed(self, own: float, other: float, dur: float) -> bool:
        return bool(self.p_changed(own, other, dur)[0] >= 0.5)

    def save(self, path: str | Path, fit: dict) -> None:
        d = {"same": self._same.to_dict(), "changed": self._changed.to_dict()}
        for name, m in (("same_identity", self._same_identity), ("changed_identity", self._changed_identity)):
            if m is not None:
                d[name] = m.to_dict()
        Path(path).write_text(json.dumps({**d, "fit": fit}, indent=1) + "\n")


_SHARED: VoiceDecisions | None = None


def shipped() -> VoiceDecisions:
    """The shipped models, read once per process."""
    global _SHARED
    if _SHARED is None:
        _SHARED = VoiceDecisions.load()
    return _SHARED
