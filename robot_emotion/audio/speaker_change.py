"""Where the voice changes inside one speech segment: a small learned model.

Speakers change with a 50 ms gap or while the other still speaks, which no pause detector
sees, so a VAD segment may hold two voices. This model reads the frame-level states of the
pretrained CAM++ speaker network (audio/speaker_identity.py ``IdentityEncoder.frames``: 512
channels every 20 ms, trained on 200k speakers to tell voices apart) and says, per frame, how
likely a change of speaker is within 0.1 s. Beside the states it reads how alike the voices of
the 0.5 / 1 / 1.5 s on either side of each frame are (``IdentityEncoder.contrast``: cosines of
CAM++ embeddings pooled from the same states). The states projected to 64, the contrasts beside
them, one bidirectional GRU of 32 per direction and a linear output: 55k parameters, trained on the conversation corpus's
development voices (benchmarks/speaker_change/train.py), which also fits the one threshold
and reports change detection on the test voices. Reading the pretrained speaker states rather
than the spectrum is what lets a model fit on a few dozen voices carry over to unseen ones.

A cut is the highest frame of each run of frames at or above the threshold; cuts closer than
``min_piece_s`` to an end of the segment or to a stronger cut are dropped (a piece that short
has too little voice to say whose it is).

The checkpoint (robot_emotion/assets/speaker_change.pt) describes itself: the network's
sizes, the encoder whose states it reads, the threshold and where they were fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_emotion.audio.speaker_identity import FRAME_DIM, FRAME_S
from robot_emotion.errors import InputError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "speaker_change.pt"
TOLERANCE_S = 0.1  # a frame this close to a change is a positive (training target)
WINDOWS = (25, 50, 75)  # states (0.5, 1, 1.5 s) on each side whose voices are compared
FRAME_T0 = 0.0125  # centre of frame 0: 25 ms fbank window, two 10 ms frames per state


class ChangeNet(nn.Module):
    """(batch, frames, 512) CAM++ states and (batch, frames, len(windows)) contrasts ->
    (batch, frames) change logits."""

    def __init__(
        self,
        dim: int = FRAME_DIM,
        windows: tuple[int, ...] = WINDOWS,
        proj: int = 64,
        hidden: int = 32,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.windows = tuple(int(w) for w in windows)
        self.config = {"dim": dim, "windows": list(self.windows), "proj": proj, "hidden": hidden, "dropout": dropout}
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, proj) if proj else None  # proj 0: the contrasts alone
        self.gru = nn.GRU(proj + len(self.windows), hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        h = contrast if self.proj is None else torch.cat([torch.relu(self.proj(self.drop(x))), contrast], -1)
        return self.out(self.gru(h)[0]).squeeze(-1)


def frame_times(n: int) -> np.ndarray:
    """Seconds from the segment start of each CAM++ state's centre."""
    return FRAME_T0 + FRAME_S * np.arange(n)


def peaks(p: np.ndarray, threshold: float, min_piece_s: float) -> list[float]:
    """Cut times (s from the segment start): the top of each run of frames with p >=
    threshold, strongest first, none within ``min_piece_s`` of an end or of a kept cut."""
    t = frame_times(p.size)
    dur = FRAME_S * p.size
    above = np.flatnonzero(p >= threshold)
    if above.size == 0:
        return []
    runs = np.split(above, np.flatnonzero(np.diff(above) > 1) + 1)
    tops = sorted((run[np.argmax(p[run])] for run in runs), key=lambda i: -p[i])
    cuts: list[float] = []
    for i in tops:
        c = float(t[i])
        if c >= min_piece_s and dur - c >= min_piece_s and all(abs(c - k) >= min_piece_s for k in cuts):
            cuts.append(c)
    return sorted(cuts)


class ChangeModelUnavailable(InputError, RuntimeError):
    """The speaker change checkpoint is missing or unreadable."""


def read_checkpoint(path: Path, what: str, error: type[Exception]) -> tuple[ChangeNet, dict]:
    """A ChangeNet checkpoint (this model's, or another target's: audio/overlap.py) and its
    fields; a truncated or foreign file raises ``error`` ("cannot load {what} {path}: ...")."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        net = ChangeNet(**ck["config"])
        net.load_state_dict(ck["state"])
    except Exception as e:
        raise error(f"cannot load {what} {path}: {e}") from None
    return net, ck


def write_checkpoint(path: Path, net: ChangeNet, threshold: float, fit: dict, **extra) -> None:
    """What ``read_checkpoint`` reads: the network's sizes and weights, its threshold, where
    they were fit, and any ``extra`` fields."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"config": net.config, "state": state, "threshold": float(threshold), **extra, "fit": fit}, path)


class SpeakerChangeModel:
    """``cuts(frames, identity, min_piece_s)`` -> change times inside a segment."""

    def __init__(self, path: str | Path = ASSET, device: str = "cpu"):
        path = Path(path)
        self.net, ck = read_checkpoint(path, "speaker change model", ChangeModelUnavailable)
        self.threshold = float(ck["threshold"])
        self.fit = ck.get("fit", {})
        self.device = torch.device(device)
        self.net.eval().to(self.device)

    @property
    def windows(self) -> tuple[int, ...]:
        return self.net.windows

    def probabilities(self, frames: np.ndarray, contrast: np.ndarray) -> np.ndarray:
        """Per-frame probability of a speaker change within 0.1 s."""
        if len(frames) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            x, c = (torch.from_numpy(np.asarray(a, np.float32))[None].to(self.device) for a in (frames, contrast))
            return torch.sigmoid(self.net(x, c))[0].float().cpu().numpy()

    def cuts(self, frames: np.ndarray, identity, min_piece_s: float) -> list[float]:
        """Change times (s from its start) inside one segment whose CAM++ states are ``frames``
        (``identity.frames(audio)``; ``identity`` also pools the windows compared)."""
        p = self.probabilities(frames, identity.contrast(frames, self.windows))
        return peaks(p, self.threshold, min_piece_s)

    @staticmethod
    def save(path: Path, net: ChangeNet, threshold: float, fit: dict) -> None:
        write_checkpoint(path, net, threshold, fit)


def load(path: str | Path = "") -> SpeakerChangeModel:
    """The model at ``path`` ("" = the shipped one), loaded once per process and file."""
    from robot_emotion.shared_models import file_key, shared

    path = Path(path) if path else ASSET
    if not path.is_file():
        raise ChangeModelUnavailable(f"no speaker change model at {path}")
    return shared(("speaker_change", *file_key(path)), lambda: SpeakerChangeModel(path))
