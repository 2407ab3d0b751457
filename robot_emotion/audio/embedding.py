"""Cheap voice features for speaker change detection and clustering (no trained model).

Per 10 ms frame: 19 MFCCs (c1..c19 of 40 log-mel bands, 60-7600 Hz, 25 ms window;
c0 = loudness is dropped so the microphone gain does not matter), log-f0 from a
normalised autocorrelation (60-500 Hz, at 8 kHz), a speech mask (within 30 dB of the segment's
95th-percentile frame energy) and a voiced mask (speech and autocorrelation peak > 0.6).

A stretch of audio is summarised by ``VoiceStats``: the mean MFCC vector over its voiced
frames (falling back to all speech frames when fewer than ``MIN_VOICED`` are voiced) and
the mean log-f0 over its voiced frames. Statistics for any [a, b) frame range come from
cumulative sums in O(1), so a sliding-window curve over a 5 s segment costs well under
a millisecond per window.

``voice_distance`` is the root-mean-square difference of the two mean MFCC vectors, in
units of the SESSION's per-coefficient frame standard deviation (``SessionScale``, a
running Welford estimate over every speech frame seen), with log-f0 added as
``PITCH_WEIGHT`` extra dimensions scaled by ``PITCH_SCALE`` (0.12 in log-Hz, ~2 semitones):

    d = sqrt((sum_k ((m1_k - m2_k) / s_k)^2 + w * ((f1 - f2) / 0.12)^2) / (19 + w))

This is a Mahalanobis-type distance with a diagonal, session-wide covariance. It is used
instead of a cosine distance because a cosine needs centred vectors: centred on the
session mean, the windows of a single speaker point in random directions (cosine ~ 1)
until several speakers have been heard, which splits the very first speaker's turns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_emotion import SAMPLE_RATE

HOP = 160                 # 10 ms frames
WIN = 400                 # 25 ms analysis window
N_MFCC = 19               # c1..c19
PITCH_WEIGHT = 1.0        # log-f0 counts as this many MFCC dimensions
PITCH_SCALE = 0.12        # log-Hz difference that counts as one unit (~2 semitones)
MIN_VOICED = 25           # frames; below this the MFCC mean uses all speech frames
MIN_PITCH = 10            # voiced frames needed on both sides for the pitch term
F0_MIN, F0_MAX = 60.0, 500.0
VOICING_THRESHOLD = 0.6
SPEECH_RANGE_DB = 30.0
SILENCE_DB = -60.0

_MFCC_TABLES: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
N_FFT = 512
N_MELS = 40


def _mfcc_tables():
    """Periodic Hann window (400 in 512), HTK mel filterbank (40, 60-7600 Hz), orthonormal DCT-II."""
    global _MFCC_TABLES
    if _MFCC_TABLES is None:
        win = np.zeros(N_FFT)
        off = (N_FFT - WIN) // 2
        win[off:off + WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
        freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
        mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)           # noqa: E731
        pts = 700.0 * (10 ** (np.linspace(mel(60.0), mel(7600.0), N_MELS + 2) / 2595.0) - 1.0)
        lower = (freqs[:, None] - pts[None, :-2]) / (pts[1:-1] - pts[:-2])
        upper = (pts[None, 2:] - freqs[:, None]) / (pts[2:] - pts[1:-1])
        fb = np.maximum(0.0, np.minimum(lower, upper))                 # (257, 40)
        k = np.arange(N_MELS)
        dct = np.cos(np.pi / N_MELS * (k[:, None] + 0.5) * np.arange(N_MFCC + 1)[None, :])
        dct[:, 0] *= 1.0 / np.sqrt(2.0)
        dct *= np.sqrt(2.0 / N_MELS)                                   # (40, 20)
        _MFCC_TABLES = (win, fb, dct)
    return _MFCC_TABLES


def mfcc(x: np.ndarray) -> np.ndarray:
    """(n, 20) MFCCs c0..c19 per 10 ms frame, numerically the same as torchaudio.transforms.MFCC
    (n_fft 512, win 400, hop 160, 40 HTK mels 60-7600 Hz, dB with top_db 80, ortho DCT) but in
    numpy: torch's thread pool stalls badly when the 2 cores are busy (measured 0.7 -> 140 ms)."""
    win, fb, dct = _mfcc_tables()
    n = len(x) // HOP + 1
    xp = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect" if len(x) > N_FFT // 2 else "constant")
    idx = np.arange(n)[:, None] * HOP + np.arange(N_FFT)[None, :]
    power = np.abs(np.fft.rfft(xp[idx] * win, N_FFT)) ** 2
    mel_db = 10.0 * np.log10(np.maximum(power @ fb, 1e-10))
    mel_db = np.maximum(mel_db, mel_db.max() - 80.0)
    return mel_db @ dct


def _frames(x: np.ndarray, length: int) -> np.ndarray:
    """(n, length) frames centred every HOP samples (n = len(x)//HOP + 1, like torchaudio center=True)."""
    n = len(x) // HOP + 1
    xp = np.pad(x, (length // 2, length // 2 + HOP))
    idx = np.arange(n)[:, None] * HOP + np.arange(length)[None, :]
    return xp[idx]


def pitch_track(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log f0, voicing strength) per 10 ms frame: 40 ms normalised autocorrelation at 8 kHz."""
    from scipy.signal import resample_poly
    sr = SAMPLE_RATE // 2
    n = len(x) // HOP + 1
    y = resample_poly(x, 1, 2).astype(np.float32)            # f0 < 500 Hz: 8 kHz is plenty
    L, hop, nfft = 320, HOP // 2, 512                         # 40 ms frames; lags up to 133 < nfft - L
    yp = np.pad(y, (L // 2, L // 2 + hop))
    idx = np.minimum(np.arange(n)[:, None] * hop + np.arange(L)[None, :], len(yp) - 1)
    fr = yp[idx]
    fr = fr - fr.mean(axis=1, keepdims=True)
    win = np.hanning(L).astype(np.float32)
    fr *= win
    ac = np.fft.irfft(np.abs(np.fft.rfft(fr, nfft)) ** 2, nfft)[:, :L]
    wac = np.fft.irfft(np.abs(np.fft.rfft(win, nfft)) ** 2, nfft)[:L]
    ac = ac / np.maximum(ac[:, :1], 1e-12) / np.maximum(wac / wac[0], 1e-3)   # unbias the window taper
    lo, hi = int(sr / F0_MAX), int(sr / F0_MIN)
    k = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(k)), k]
    return np.log(sr / k), strength


@dataclass
class VoiceStats:
    n_speech: int              # speech frames used
    n_voiced: int
    mfcc_mean: np.ndarray | None   # (19,)
    logf0: float | None        # mean log f0 over voiced frames (None if too few)

    @property
    def seconds(self) -> float:
        return self.n_speech * HOP / SAMPLE_RATE


class _Cum:
    """Cumulative sums of masked rows for O(1) range means."""

    def __init__(self, values: np.ndarray, mask: np.ndarray):
        v = values.reshape(len(mask), -1).astype(np.float64) * mask[:, None]
        self.n = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        self.s = np.concatenate([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])

    def count(self, a: int, b: int) -> int:
        return int(self.n[b] - self.n[a])

    def mean(self, a: int, b: int):
        n = self.n[b] - self.n[a]
        return (self.s[b] - self.s[a]) / n if n > 0 else None


class FrameFeatures:
    """Frame-level voice features of one audio segment (see module docstring)."""

    def __init__(self, audio: np.ndarray):
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"voice features expect mono 1-D audio, got shape {x.shape}")
        if x.size < WIN:
            x = np.pad(x, (0, WIN - x.size))
        m = mfcc(x)                                                   # (n, 20)
        self.mfcc = m[:, 1:]
        n = len(self.mfcc)
        energy = 10.0 * np.log10(np.mean(_frames(x, WIN)[:n].astype(np.float64) ** 2, axis=1) + 1e-12)
        ref = np.percentile(energy, 95)
        self.speech = (energy > ref - SPEECH_RANGE_DB) & (energy > SILENCE_DB)
        logf0, strength = pitch_track(x)
        self.logf0 = logf0[:n]
        self.voiced = self.speech & (strength[:n] > VOICING_THRESHOLD)
        self.n = n
        self._all = _Cum(self.mfcc, self.speech)
        self._voi = _Cum(self.mfcc, self.voiced)
        self._f0 = _Cum(self.logf0, self.voiced)

    def stats(self, a: int = 0, b: int | None = None) -> VoiceStats:
        b = self.n if b is None else b
        a, b = max(0, a), min(self.n, b)
        n_speech, n_voiced = self._all.count(a, b), self._voi.count(a, b)
        mean = self._voi.mean(a, b) if n_voiced >= MIN_VOICED else self._all.mean(a, b)
        f0 = self._f0.mean(a, b) if n_voiced >= MIN_PITCH else None
        return VoiceStats(n_speech, n_voiced, mean, float(f0[0]) if f0 is not None else None)


class SessionScale:
    """Running per-coefficient standard deviation of MFCC speech frames over the session."""

    def __init__(self, floor: float = 1e-3):
        self.count = 0
        self.mean = np.zeros(N_MFCC)
        self.m2 = np.zeros(N_MFCC)
        self.floor = floor

    def update(self, feats: FrameFeatures) -> None:
        x = feats.mfcc[feats.speech]
        if len(x) == 0:
            return
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta ** 2 * self.count * n_b / n
        self.count = n

    @property
    def std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones(N_MFCC)
        return np.sqrt(np.maximum(self.m2 / (self.count - 1), self.floor))


def voice_distance(a: VoiceStats, b: VoiceStats, std: np.ndarray,
                   pitch_weight: float = PITCH_WEIGHT) -> float:
    """Session-standardised RMS distance between two voice summaries (module docstring)."""
    if a.mfcc_mean is None or b.mfcc_mean is None:
        return 0.0
    num = float((((a.mfcc_mean - b.mfcc_mean) / std) ** 2).sum())
    den = float(len(std))
    if pitch_weight > 0 and a.logf0 is not None and b.logf0 is not None:
        num += pitch_weight * ((a.logf0 - b.logf0) / PITCH_SCALE) ** 2
        den += pitch_weight
    return float(np.sqrt(num / den))
