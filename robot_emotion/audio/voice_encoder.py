"""Pretrained speaker embedding: Resemblyzer's GE2E d-vector encoder, rebuilt in torch.

The PyPI package ``resemblyzer`` (Apache-2.0) ships its trained weights (``pretrained.pt``)
inside the wheel. It is installed with ``pip install --no-deps`` (scripts/setup.sh) because
its declared dependencies pull the broken ``webrtcvad`` sdist and librosa, and it is never
imported: ``resemblyzer/__init__.py`` imports librosa. We only locate the weights file and
rebuild the small network (3-layer LSTM 40->256, Linear 256->256, ReLU, L2 norm of the last
layer's final hidden state) and its input features here.

Input features reproduce ``resemblyzer.audio``: the utterance is first scaled up (never down)
to -30 dBFS RMS, then a 40-band mel power spectrogram (librosa defaults: 25 ms periodic Hann
window, 10 ms hop, centred frames with zero padding, slaney mel scale and slaney area norm,
power 2, NO log). Without the log the network sees absolute energies, so the volume
normalisation is part of the model, not a nicety.

Audio in is mono 16 kHz, float in [-1, 1] (int16 is accepted and scaled by 1/32768).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_emotion import SAMPLE_RATE
from robot_emotion.errors import InputError

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: 100 mel frames per second
N_MELS = 40
PARTIAL_FRAMES = 160  # the 1.6 s windows the model was trained on
PARTIALS_PER_S = 1.3  # resemblyzer's embed_utterance defaults
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1  # resemblyzer measures dBFS against 32767, not 32768
EMBED_DIM = 256
PIP_HINT = "pip install --no-deps resemblyzer==0.1.4 (scripts/setup.sh does this)"


class VoiceEncoderUnavailable(InputError, RuntimeError):
    """The resemblyzer package or its pretrained.pt is not installed or cannot be read."""


def packaged_file(package: str, rel: str, error: type[Exception], what: str, hint: str) -> Path:
    """``rel`` inside the installed ``package``, found without importing it (a wheel that
    ships weights whose own code is never run); ``error`` names what is missing."""
    spec = importlib.util.find_spec(package)  # top-level: does not run __init__.py
    if spec is None or not spec.submodule_search_locations:
        raise error(f"{what} missing: package '{package}' is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise error(f"{what} missing: {path} not found; {hint}")
    return path


def weights_path() -> Path:
    """pretrained.pt inside the installed resemblyzer package."""
    return packaged_file("resemblyzer", "pretrained.pt", VoiceEncoderUnavailable, "speaker encoder weights", PIP_HINT)


def _slaney_mel(f: np.ndarray) -> np.ndarray:
    """Hz -> slaney mel: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    mel[log_region] = 15.0 + np.log(f[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _slaney_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    log_region = m >= 15.0
    f[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
    return f


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangles, 0-8 kHz, each scaled to unit area (slaney norm);
    the same matrix as librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).

    Not torchaudio.functional.melscale_fbanks(norm="slaney", mel_scale="slaney"): it equals this
    bit for bit only when built in float64, which it does only under torch's process-wide
    default dtype (not safe while the node's threads make tensors); in float32 5% of the entries
    differ (up to 1.7e-8), which can move the speaker embeddings, and importing torchaudio would add
    ~0.2 s and ~7 MB to the live node (tests/test_dsp.py checks the float64 equality)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _slaney_hz(
        np.linspace(_slaney_mel(np.array([0.0]))[0], _slaney_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2)
    )
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / width[:-1, None]
    falling = ramps[2:] / width[1:, None]
    fb = np.maximum(0.0, np.minimum(rising, falling))
    return (fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def as_float_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"voice encoder expects mono 1-D audio, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32, copy=False)


def normalize_volume(audio: np.ndarray) -> np.ndarray:
    """Scale up to -30 dBFS RMS, never down (resemblyzer's normalize_volume, increase_only)."""
    x = as_float_audio(audio)
    rms = float(np.sqrt(np.mean((x.astype(np.float64) * INT16_MAX) ** 2))) if x.size else 0.0
    if rms == 0.0:  # digital silence: resemblyzer would return NaNs
        return x
    change_db = TARGET_DBFS - 20.0 * np.log10(rms / INT16_MAX)
    return x if change_db < 0 else (x * np.float32(10.0 ** (change_db / 20.0))).astype(np.float32)


_TABLES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # device -> (filterbank, window)


def _mel_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """(frames, 40) float32 mel power spectrogram of already-normalised audio, on ``device``."""
    if str(device) not in _TABLES:  # tiny constants; a race only builds them twice
        _TABLES[str(device)] = (
            torch.from_numpy(mel_filterbank()).to(device),
            torch.hann_window(N_FFT, periodic=True, device=device),
        )
    fbank, window = _TABLES[str(device)]
    spec = torch.stft(
        torch.from_numpy(np.ascontiguousarray(x)).to(device),
        N_FFT,
        HOP,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return (fbank @ spec.abs().pow(2)).T.contiguous()


def mel(audio: np.ndarray, normalize: bool = True) -> np.ndarray:
    """(1 + len // 160, 40) float32 mel power frames, the encoder's input (volume-normalised
    first unless ``normalize`` is False)."""
    x = normalize_volume(audio) if normalize else as_float_audio(audio)
    with torch.inference_mode():
        return _mel_tensor(x, torch.device("cpu")).numpy()


def partial_starts(n_samples: int) -> list[int]:
    """Frame offsets of the 1.6 s partials of resemblyzer's embed_utterance (rate 1.3/s,
    last partial kept if >= 75 % of it is real audio; always at least one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round(SAMPLE_RATE / PARTIALS_PER_S / HOP))  # 77 frames
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


class _GE2E(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMBED_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:  # (batch, frames, 40) -> (batch, 256)
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)  # all-zero (silence) stays 0


class VoiceEncoder:
    """Load once, then ``embed`` whole utterances or ``sliding`` windows (numpy in and out).

    Only inference runs here (no state between calls), under torch.inference_mode; torch's
    global thread settings are left alone.
    """

    def __init__(self, device: str = "cpu"):
        path = weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        except Exception as e:  # truncated download, incompatible pickle, ...
            raise VoiceEncoderUnavailable(f"cannot read speaker encoder weights {path}: {e}") from e
        self.device = torch.device(device)
        self.net = _GE2E()
        # The checkpoint also holds GE2E's training-only similarity scale/bias: ignore just those.
        self.net.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
        self.net.eval().to(self.device)

    def _run(self, mels: torch.Tensor) -> np.ndarray:
        return self.net(mels).float().cpu().numpy()

    def embed(self, audio: np.ndarray, pad_short: bool = False) -> np.ndarray:
        """(256,) L2-normalised embedding of one utterance: the renormalised mean of the
        embeddings of 1.6 s partials overlapping at 1.3 per second (resemblyzer's
        embed_utterance). Audio under 1.6 s runs the LSTM over its real frames only, unless
        ``pad_short`` zero-pads it to 1.6 s as resemblyzer does. Measured on 0.5-1.0 s pieces
        of real speech (benchmarks/speaker_embedding/measure_voice_encoder.py), padding raises the cosines of
        different voices more than those of one voice: one threshold errs on 12-19 % of
        pairs over real frames, 15-23 % padded (on clean read speech alone, padding is
        slightly better: 1.5-4 % vs 4-5 %)."""
        x = normalize_volume(audio)
        if x.size == 0:
            raise ValueError("voice encoder got empty audio")
        starts = partial_starts(x.size)
        if len(starts) == 1 and x.size < PARTIAL_FRAMES * HOP and not pad_short:
            with torch.inference_mode():
                return self._run(_mel_tensor(x, self.device)[None])[0]
        # Like resemblyzer: zero-pad so the last partial is whole, then slice the mel frames.
        x = np.pad(x, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * HOP - x.size)))
        with torch.inference_mode():
            m = _mel_tensor(x, self.device)
            partials = self._run(torch.stack([m[s : s + PARTIAL_FRAMES] for s in starts]))
        mean = partials.mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def sliding(self, audio: np.ndarray, window_s: float = 1.6, hop_s: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of windows sliding over ``audio``: (centres in seconds from the start
        of ``audio``, (n, 256) embeddings). One LSTM call with the windows as the batch.
        The default hop costs ~14 ms of one CPU thread per second of audio (0.1 s: ~21 ms).
        The volume is normalised once over all of ``audio`` (not per window) so a level
        change between speakers still shows. The last window is aligned to the end of the
        audio so the tail is covered; audio shorter than one window gives one window."""
        x = normalize_volume(audio)
        if x.size == 0:
            raise ValueError("voice encoder got empty audio")
        win = max(1, int(round(window_s * SAMPLE_RATE / HOP)))
        hop = max(1, int(round(hop_s * SAMPLE_RATE / HOP)))
        with torch.inference_mode():
            m = _mel_tensor(x, self.device)
            n = m.shape[0]
            if n <= win:
                starts = [0]
                win = n
            else:
                starts = list(range(0, n - win + 1, hop))
                if starts[-1] + win < n:
                    starts.append(n - win)
            windows = m.unfold(0, win, 1)[starts].transpose(1, 2).contiguous()  # (n_windows, win, 40)
            embeds = self._run(windows)
        centres = (np.asarray(starts) + (win - 1) / 2) * HOP / SAMPLE_RATE
        return centres, embeds
