"""The voice's emotion: a linear read-out of the Whisper encoder states of a turn.

The node's recogniser already encodes every turn (audio/whisper_short.py keeps the encoding);
this branch pools those states (``pool``: mean and standard deviation over the turn's frames),
standardises them, subtracts the speaker's own baseline (``SpeakerBaselines``: the running
mean of that voice's earlier turns, shrunk towards zero while there are few) and applies a
multinomial logistic regression with a temperature. Trained on RAVDESS's 20 actors under a
robot's room conditions by ``python -m robot_emotion.train.voice_emotion`` (model card:
assets/voice_emotion.md). It costs well under a millisecond on top of the encoder.

Why the baseline: a voice's pooled states say as much about the speaker and the room as about
the emotion; measured against the same voice's other turns, what is left is how this turn
differs (held-out actors: unweighted accuracy 0.69 without, 0.75 with; the card has the table).
The output is class probabilities over MELD's seven emotions, calibrated (temperature fit on
held-out actors), so fusion can weigh it against the text and the face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS
from robot_emotion.errors import InputError

ASSET = Path(__file__).resolve().parent.parent / "assets" / "voice_emotion.npz"
ENCODER = "faster-whisper:tiny.en short-window encoder (audio/whisper_short.py)"


def pool(states: np.ndarray) -> np.ndarray:
    """(T, d) encoder states -> (2d,) mean and standard deviation over the frames."""
    s = np.asarray(states, np.float32)
    return np.concatenate([s.mean(0), s.std(0)]).astype(np.float32)


@dataclass(frozen=True)
class VoiceEmotion:
    mean: np.ndarray  # (D,) feature standardisation
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (C, D)
    intercept: np.ndarray  # (C,)
    temperature: float  # fit on held-out actors' logits
    prior: float  # baseline shrinkage: the mean of n turns counts n / (n + prior)
    labels: tuple[str, ...]
    card: dict  # provenance and validation figures

    def standardize(self, feats: np.ndarray) -> np.ndarray:
        return (np.asarray(feats, np.float32) - self.mean) / self.scale

    def probs(self, z: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Class probabilities (``labels`` order) of standardised, baseline-relative features
        z: (D,) -> (C,), (n, D) -> (n, C)."""
        logits = np.atleast_2d(z) @ self.coef.T + self.intercept
        logits = logits / (self.temperature if calibrated else 1.0)
        e = np.exp(logits - logits.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        return p[0] if np.ndim(z) == 1 else p

    def save(self, path) -> None:
        np.savez(
            path,
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept=self.intercept,
            temperature=np.float64(self.temperature),
            prior=np.float64(self.prior),
            labels=np.array(self.labels),
            card=np.array(json.dumps(self.card, indent=1)),
        )

    @classmethod
    def load(cls, path=None) -> "VoiceEmotion":
        path = Path(path) if path else ASSET
        try:
            z = np.load(path, allow_pickle=False)
            m = cls(
                z["mean"],
                z["scale"],
                z["coef"],
                z["intercept"],
                float(z["temperature"]),
                float(z["prior"]),
                tuple(str(s) for s in z["labels"]),
                json.loads(str(z["card"])),
            )
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"voice-emotion model {path} is unreadable: {e}") from None
        if m.labels != EMOTIONS:
            raise InputError(f"voice-emotion model {path} has labels {m.labels}, the node uses {EMOTIONS}")
        d = m.mean.shape[0]
        if m.scale.shape != (d,) or m.coef.shape != (len(EMOTIONS), d) or m.intercept.shape != (len(EMOTIONS),):
            raise InputError(f"voice-emotion model {path}: inconsistent shapes")
        return m


class SpeakerBaselines:
    """Each voice's running mean of standardised features (the speaker's baseline).

    ``relative(speaker, z)`` is z minus the mean of that speaker's earlier turns, shrunk by
    n / (n + prior) (no turns yet, or no speaker id: z itself); ``add`` counts a finished turn.
    Only final turns are added, in the order they close, so a replay gives the same numbers; a
    turn scored again under the same key (re-finalised) replaces its earlier contribution.
    """

    KEYS = 64  # re-finalising happens within a few turns; older keys are forgotten

    def __init__(self, prior: float):
        self.prior = float(prior)
        self._sum: dict[str, np.ndarray] = {}
        self._n: dict[str, int] = {}
        self._added: dict = {}

    def relative(self, speaker: str | None, z: np.ndarray) -> np.ndarray:
        n = self._n.get(speaker, 0) if speaker is not None else 0
        return z - self._sum[speaker] / (n + self.prior) if n else z

    def add(self, speaker: str | None, z: np.ndarray, key=None) -> None:
        if key is not None and key in self._added:
            old_spk, old_z = self._added.pop(key)
            self._sum[old_spk] -= old_z
            self._n[old_spk] -= 1
        if speaker is None:
            return
        z = np.asarray(z, np.float64)
        self._sum[speaker] = self._sum.get(speaker, 0.0) + z
        self._n[speaker] = self._n.get(speaker, 0) + 1
        if key is not None:
            self._added[key] = (speaker, z)
            while len(self._added) > self.KEYS:
                del self._added[next(iter(self._added))]

    def turns(self, speaker: str | None) -> int:
        return self._n.get(speaker, 0)
