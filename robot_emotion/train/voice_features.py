"""Voice-emotion training features: RAVDESS clips as the node hears them, in a robot's room.

Each clip is trimmed to its speech with the margins a node turn has (the VAD's pre-roll before,
its hangover after), rendered under each training condition (train/augment.py), encoded by
the node's own Whisper encoder the way the node encodes a turn (audio/whisper_short.py), and
pooled (audio/voice_emotion.py's ``pool``): the same features, by the same code, as live.

Conditions (fixed seeds, so a rebuild is identical):
  clean      the clip
  noisy      + noise from speech/noise/noise1-3 at 0-20 dB SNR, level -10..+10 dB
  reverb     through a synthetic room (RT60 0.3-0.8 s, direct-to-reverberant -3..+6 dB)
  telephone  300-3400 Hz through 8 kHz mu-law
  noise10    + noise from noise4-5 (never trained on) at exactly 10 dB SNR: evaluation only
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE as SR
from robot_emotion.audio.vad import PREROLL_S
from robot_emotion.errors import InputError
from robot_emotion.train import augment

TRAIN_CONDITIONS = ("clean", "noisy", "reverb", "telephone")
EVAL_CONDITIONS = ("noise10",)
TRAIN_NOISES = ("noise1.wav", "noise2.wav", "noise3.wav")
EVAL_NOISES = ("noise4.wav", "noise5.wav")
HANGOVER_S = 0.3  # audio a node turn keeps after the speech (vad.py's hangover, about)


def read_clip(path) -> np.ndarray:
    """Mono float32 at 16 kHz (other rates resampled, channels averaged); one-line errors."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError and RuntimeError
        raise InputError(f"cannot read audio {path}: {e}") from None
    x = x.mean(1)
    if sr != SR:  # (scipy, as media.to_mono_16k says why: evaluate-speech reads it)
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), SR)
        x = resample_poly(x, SR // g, int(sr) // g).astype(np.float32)
    if x.size < SR // 10:
        raise InputError(f"{path}: under 0.1 s of audio")
    return x


def speech_span(x: np.ndarray) -> tuple[int, int]:
    """Sample range of the speech: 10 ms frames within 35 dB of the loudest ones, first to last."""
    n = x.size // 160
    db = 10 * np.log10(np.square(x[: n * 160].reshape(n, 160)).mean(1) + 1e-12)
    on = np.flatnonzero(db > np.percentile(db, 98) - 35)
    return (int(on[0]) * 160, int(on[-1] + 1) * 160) if on.size else (0, x.size)


def as_turn(x: np.ndarray) -> np.ndarray:
    """The clip cut the way the node cuts a turn: speech plus pre-roll and hangover."""
    a, b = speech_span(x)
    return x[max(0, a - int(PREROLL_S * SR)) : b + int(HANGOVER_S * SR)]


class Room:
    """Renders a clip under a condition; the randomness is seeded by (clip, condition)."""

    def __init__(self, noise_dir):
        noise_dir = Path(noise_dir)
        self.noises = {}
        for name in TRAIN_NOISES + EVAL_NOISES:
            f = noise_dir / name
            if not f.is_file():
                raise InputError(f"noise clip missing: {f}")
            self.noises[name] = read_clip(f)

    def render(self, x: np.ndarray, cond: str, key: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(f"{key}|{cond}".encode()))
        if cond == "clean":
            return x
        if cond == "noisy":
            noise = self.noises[TRAIN_NOISES[int(rng.integers(len(TRAIN_NOISES)))]]
            y = augment.add_noise(x, noise, float(rng.uniform(0, 20)), rng)
            return augment.at_level(y, float(rng.uniform(-10, 10)))
        if cond == "reverb":
            rir = augment.synthetic_rir(float(rng.uniform(0.3, 0.8)), rng, float(rng.uniform(-3, 6)))
            return augment.reverberate(x, rir)
        if cond == "telephone":
            return augment.telephone(x)
        if cond == "noise10":
            noise = self.noises[EVAL_NOISES[int(rng.integers(len(EVAL_NOISES)))]]
            return augment.add_noise(x, noise, 10.0, rng)
        raise ValueError(f"unknown condition {cond!r}")


def extract(
    clips, conditions, asr, room: Room | None, cache: Path | None = None, progress=None
) -> dict[str, np.ndarray]:
    """{condition: (n_clips, D) pooled features}; cached in an npz keyed by clip paths."""
    from robot_emotion.audio.voice_emotion import pool

    paths = [c.path for c in clips]
    got: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["paths"]) == paths:
            got = {k: z[k] for k in z.files if k != "paths"}
    for cond in conditions:
        if cond in got:
            continue
        rows = []
        for i, c in enumerate(clips):
            x = as_turn(read_clip(c.path))
            y = x if room is None else room.render(x, cond, Path(c.path).name)
            rows.append(pool(asr.whisper_encoder_states(y.astype(np.float32))))
            if progress:
                progress(cond, i + 1, len(clips))
        got[cond] = np.stack(rows).astype(np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, paths=np.array(paths), **got)
    return {k: got[k] for k in conditions}
