"""A robot's room for training audio: noise at a given SNR, reverberation, telephone band, level.

Used to train the voice-emotion branch (train/voice_emotion.py) and to render the conversation
corpus's telephone condition (benchmarks/conversations/conditions.py). Deterministic: every
random choice comes from the ``rng`` passed in.
"""

from __future__ import annotations

import numpy as np

from robot_emotion import SAMPLE_RATE as SR


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x plus a random stretch of noise (looped if short) at snr_db, measured against x's RMS
    over its loud half (the pauses of a clip must not lower the speech level)."""
    start = int(rng.integers(0, max(1, noise.size)))
    n = np.resize(np.roll(noise, -start), x.size)
    frames = np.square(x[: x.size // 160 * 160].reshape(-1, 160)).mean(1)
    level = np.sqrt(np.mean(np.sort(frames)[len(frames) // 2 :])) if len(frames) else rms(x)
    return x + n * (level * 10 ** (-snr_db / 20) / max(rms(n), 1e-9))


def synthetic_rir(rt60: float, rng: np.random.Generator, direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """A room impulse response: a direct path, then exponentially decaying noise with the
    given RT60 (60 dB of decay), a standard stand-in for a measured room."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.normal(0.0, 1.0, n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 60 dB
    tail[: int(0.002 * SR)] = 0.0  # first reflection after 2 ms
    tail *= 10 ** (-direct_to_reverb_db / 20) / max(np.sqrt(np.sum(tail**2)), 1e-9)
    h = tail
    h[0] = 1.0
    return h


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """x through the RIR, cut to x's length and brought back to x's RMS (float64).

    torchaudio's FFT convolution, in float64: the same as scipy.signal.fftconvolve within 1e-12
    for float64 input (measured 8e-16) and within 1e-6 for float32 input, where scipy takes the
    FFT of x in float32 (measured 8e-8 at peak 0.5); tests/test_dsp.py checks both."""
    import torch
    from torchaudio.functional import fftconvolve

    y = fftconvolve(torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(np.asarray(rir, np.float64))).numpy()[
        : x.size
    ]
    return y * (rms(x) / max(rms(y), 1e-9))


def telephone(x: np.ndarray) -> np.ndarray:
    """300-3400 Hz band, through 8 kHz with 8-bit mu-law (G.711-like), back to 16 kHz."""
    # scipy, not torchaudio: torchaudio has no 6th-order Butterworth in second-order sections
    # (its biquads are 2nd order; lfilter/filtfilt of a 12th-order band-pass in (b, a) form is
    # ill-conditioned), its resampler is another filter (differs from resample_poly by ~7% RMS
    # on white noise), and its mu_law_encoding has 256 levels where this codec rounds to 255
    # (max difference 0.035): the corpus's telephone condition and the trained voice-emotion
    # model would change.
    from scipy.signal import butter, resample_poly, sosfiltfilt

    y = resample_poly(sosfiltfilt(butter(6, [300, 3400], "bandpass", fs=SR, output="sos"), x), 1, 2)
    mu = 255.0
    c = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1.0)) / np.log1p(mu)
    c = np.round(c * 127.0) / 127.0
    y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu
    y = sosfiltfilt(butter(6, [300, 3400], "bandpass", fs=SR // 2, output="sos"), y)
    return resample_poly(y, 2, 1)[: len(x)]


def at_level(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Scaled by gain_db, then brought under full scale (a hot microphone clips, we do not)."""
    y = x * 10 ** (gain_db / 20)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (0.99 / peak) if peak > 0.99 else y
