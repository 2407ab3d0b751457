"""Active speaker: which face track's mouth moves with the speech.

Rule (assign_active_speaker):
  1. Tracks with no mouth-activity sample inside [t0, t1] are not candidates.
  2. level_k = mean activity of track k inside [t0, t1]. A track is "moving" when
     level_k >= floor (default 0.03, above the ~0-0.03 a still mouth reads at 5 Hz).
     No moving candidate -> (None, 0.0).
  3. corr_k = Pearson correlation, over the samples of track k inside [t0 - pad, t1 + pad]
     (pad 1 s: the silence around the utterance is what makes the correlation informative),
     between its activity and the audio energy averaged over the same causal window the mouth
     activity uses (tracker.MOUTH_WINDOW_S) ending at each sample time. 0 when either side is
     flat or fewer than 3 samples.
  4. share_k = level_k / sum of the levels of all candidates (how much of the visible mouth
     motion during the utterance is this face's).
  5. score_k = 0.5 share_k + 0.5 max(corr_k, 0); the moving candidate with the highest score
     wins, confidence = clip(score_best - 0.5 score_second, 0, 1) (score_second = 0 when alone).
Energy may be in any unit (RMS, power, dB above floor): only its shape matters.
"""

from __future__ import annotations

import numpy as np

from robot_emotion.vision.tracker import MOUTH_WINDOW_S

ACTIVITY_FLOOR = 0.03
PAD_S = 1.0


def _energy_at(times: np.ndarray, audio_times: np.ndarray, audio_energy: np.ndarray, window_s: float) -> np.ndarray:
    """Mean energy over (t - window_s, t] for each t (interpolated where the window is empty)."""
    out = np.empty(len(times))
    csum = np.concatenate([[0.0], np.cumsum(audio_energy)])
    lo = np.searchsorted(audio_times, times - window_s, side="right")
    hi = np.searchsorted(audio_times, times, side="right")
    for i, (a, b) in enumerate(zip(lo, hi)):
        out[i] = (csum[b] - csum[a]) / (b - a) if b > a else np.interp(times[i], audio_times, audio_energy)
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) < 1e-9 or np.std(y) < 1e-9:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def assign_active_speaker(
    track_series: dict,
    audio_times,
    audio_energy,
    t0: float,
    t1: float,
    floor: float = ACTIVITY_FLOOR,
    pad_s: float = PAD_S,
    window_s: float = MOUTH_WINDOW_S,
) -> tuple[int | None, float]:
    """track_series: {track_id: (times, mouth_activity)} -> (track id or None, confidence 0..1)."""
    audio_times = np.asarray(audio_times if audio_times is not None else [], np.float64).reshape(-1)
    audio_energy = np.asarray(audio_energy if audio_energy is not None else [], np.float64).reshape(-1)
    if len(audio_times) != len(audio_energy):
        raise ValueError(f"audio_times ({len(audio_times)}) and audio_energy ({len(audio_energy)}) differ in length")
    if len(audio_times) > 1 and np.any(np.diff(audio_times) < 0):
        order = np.argsort(audio_times, kind="stable")
        audio_times, audio_energy = audio_times[order], audio_energy[order]
    levels, corrs = {}, {}
    for tid, (times, act) in track_series.items():
        times, act = np.asarray(times, np.float64), np.asarray(act, np.float64)
        inside = (times >= t0) & (times <= t1) & np.isfinite(act)
        if not inside.any():
            continue
        levels[tid] = float(act[inside].mean())
        near = (times >= t0 - pad_s) & (times <= t1 + pad_s) & np.isfinite(act)
        corrs[tid] = (
            _corr(act[near], _energy_at(times[near], audio_times, audio_energy, window_s)) if len(audio_times) else 0.0
        )
    moving = [tid for tid, lv in levels.items() if lv >= floor]
    if not moving:
        return None, 0.0
    total = sum(levels.values())
    scores = {tid: 0.5 * levels[tid] / total + 0.5 * max(corrs[tid], 0.0) for tid in moving}
    ranked = sorted(scores, key=scores.get, reverse=True)
    second = scores[ranked[1]] if len(ranked) > 1 else 0.0
    return ranked[0], float(np.clip(scores[ranked[0]] - 0.5 * second, 0.0, 1.0))
