"""Did a piece start while another voice was still speaking? A small learned model.

One microphone hears two people at once when the next speaker starts before the last one
has finished (a fifth to a third of speaker changes in conversation) and when a listener
drops a backchannel. The speaker change model (audio/speaker_change.py) cuts a segment where
the voice changes; this model says, per frame, how likely two voices sound at once, so the
piece after a cut can be flagged ``overlap: true`` (README "ZeroMQ API"): the new speaker
took the floor over the old one.

It is the change model's network (``ChangeNet``: CAM++ frame states projected to 64, one
bidirectional GRU of 32 per direction, a linear output) with another target and without
the window contrasts, so it reads the very states the change model already computed for the
segment: no second pass over the audio. Trained on the conversation corpus's development
voices (benchmarks/overlap/train.py), which also fits the one threshold and reports on the
test voices.

A piece starts in overlap when a frame within ``ONSET_S`` of its start reaches the threshold:
the node's cut lies within about 0.25 s of the true change, and an overlap at a change lasts a
median 0.25 s in the corpus (after Heldner & Edlund 2010), so the window (set, not fit) looks a
little before the cut and half a second after it. Where that overlap ends (``overlap_end``),
the turn talked over stops speaking: its ``spans`` run on to there (audio/turns.py).

The checkpoint (robot_emotion/assets/overlap.pt) describes itself: the network's sizes, the
threshold, the onset window and where they were fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robot_emotion.audio.speaker_change import ChangeNet, frame_times, read_checkpoint, write_checkpoint
from robot_emotion.audio.speaker_identity import FRAME_S
from robot_emotion.errors import InputError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "overlap.pt"
ONSET_S = (-0.2, 0.5)  # frames this far before / after a piece's start decide its flag


class OverlapModelUnavailable(InputError, RuntimeError):
    """The overlap checkpoint is missing or unreadable."""


def overlap_end(
    p: np.ndarray, start_s: float, threshold: float, onset_s: tuple[float, float] = ONSET_S
) -> float | None:
    """None when the per-frame overlap probabilities ``p`` of a segment stay under
    ``threshold`` within ``onset_s`` of ``start_s`` (seconds from the segment start); else
    where that overlap ends: the first frame under the threshold after the last one over it
    in the window (never before ``start_s``)."""
    t = frame_times(p.size)
    near = np.flatnonzero((t >= start_s + onset_s[0]) & (t <= start_s + onset_s[1]) & (p >= threshold))
    if near.size == 0:
        return None
    below = np.flatnonzero(p[near[-1] :] < threshold)
    end = t[near[-1] + below[0]] if below.size else FRAME_S * p.size
    return max(float(end), start_s)


def at_onset(p: np.ndarray, start_s: float, threshold: float, onset_s: tuple[float, float] = ONSET_S) -> bool:
    """Whether a piece starting at ``start_s`` began over another voice (``overlap_end``)."""
    return overlap_end(p, start_s, threshold, onset_s) is not None


class OverlapModel:
    """``probabilities(frames)`` -> per-frame P(two voices); ``onsets(frames, starts)`` ->
    which of the pieces starting at ``starts`` began in overlap."""

    def __init__(self, path: str | Path = ASSET, device: str = "cpu"):
        path = Path(path)
        self.net, ck = read_checkpoint(path, "overlap model", OverlapModelUnavailable)
        self.threshold = float(ck["threshold"])
        self.onset_s = tuple(float(x) for x in ck.get("onset_s", ONSET_S))
        self.fit = ck.get("fit", {})
        self.device = torch.device(device)
        self.net.eval().to(self.device)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame probability that two or more voices sound at once."""
        if len(frames) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(frames, np.float32))[None].to(self.device)
            c = torch.zeros(1, x.shape[1], 0, device=self.device)  # no window contrasts
            return torch.sigmoid(self.net(x, c))[0].float().cpu().numpy()

    def onsets(self, frames: np.ndarray, starts: list[float]) -> list[float | None]:
        """For each piece start (s from the segment start): None when it began alone, else
        where the other voice under it stops (``overlap_end``)."""
        if not starts:
            return []
        p = self.probabilities(frames)
        return [overlap_end(p, s, self.threshold, self.onset_s) for s in starts]

    @staticmethod
    def save(path: Path, net: ChangeNet, threshold: float, fit: dict) -> None:
        write_checkpoint(path, net, threshold, fit, onset_s=list(ONSET_S))


def load(path: str | Path = "") -> OverlapModel:
    """The model at ``path`` ("" = the shipped one), loaded once per process and file."""
    from robot_emotion.shared_models import file_key, shared

    path = Path(path) if path else ASSET
    if not path.is_file():
        raise OverlapModelUnavailable(f"no overlap model at {path}")
    return shared(("overlap", *file_key(path)), lambda: OverlapModel(path))
