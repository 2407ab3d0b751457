"""What `robot-emotion calibrate` measures and what it suggests from it (pure functions on arrays).

Levels are dBFS per VAD frame (`vad.frame_ms`), the unit the webrtcvad energy gate works in:
  * noise floor: percentiles of the frames of the quiet phase (headline: the median);
  * speech level: the power mean of the speech phase's *active* frames (those 6 dB above the
    noise's p90), minus the noise power (the median frame's: a door slam in the quiet phase
    must not count): ITU-T P.56's "active speech level" in spirit. Soft
    frames buried in the noise cannot be counted, but a power mean hardly depends on them
    (dropping the frames 10 dB under the loud ones moves it by < 1 dB), while a median would.
Suggestions (README "Devices and calibration" gives the reasoning):
  * microphone.gain_db brings the speech level to TARGET_SPEECH_DBFS, never lifting the sample
    peak above PEAK_CEILING_DBFS; a current gain within GAIN_DEADBAND_DB of that is kept;
  * vad.aggressiveness from the SNR: >= 30 dB -> 1, >= 20 dB -> 2, else 3;
  * vad.energy_margin_db: the gate (adaptive floor + margin) must clear the noise's loudest
    frames by NOISE_HEADROOM_DB and stay SPEECH_OVER_GATE_DB under the speech median. The
    current margin is kept when it fits, else moved to the nearest bound; 0 (off) where no
    margin fits. The floor is relative, so noisier rooms get a higher absolute gate (in dBFS).
  * vad.threshold (silero): the one fit on development recordings (the key's default,
    benchmarks/vad), raised in steps of THRESHOLD_STEP to the lowest at which the node's own
    segmenter cuts no segment out of the quiet phase: the room's noise alone is not speech.
The audio-video offset comes from one clap: its audio onset (first sample at a quarter of the
peak) against the largest frame-to-frame change of the video within OFFSET_SEARCH_S of it.
"""

from __future__ import annotations

import math

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.vad import MIN_FLOOR_DB

FULL_SCALE_DB = 20 * math.log10(32768.0)  # int16 energy in dB -> dBFS
SILENT_DBFS = -120.0  # digital silence reads as this
MIN_FLOOR_DBFS = MIN_FLOOR_DB - FULL_SCALE_DB  # the webrtcvad floor never goes below this
ACTIVE_ABOVE_NOISE_DB = 6.0
TARGET_SPEECH_DBFS = -26.0
PEAK_CEILING_DBFS = -1.0
GAIN_DEADBAND_DB = 3.0
NOISE_HEADROOM_DB = 3.0
SPEECH_OVER_GATE_DB = 10.0
MIN_ACTIVE_FRAMES = 0.05  # under this share of active frames, nobody spoke
CLAP_OVER_BACKGROUND_DB = 20.0
OFFSET_SEARCH_S = 2.0  # the config's offset range is +-2000 ms
MIN_FRAME_CHANGE = 1.0  # mean absolute grey-level change of a frame that saw the clap
THRESHOLD_STEP = 0.05  # the grid vad.threshold was fit on (benchmarks/vad/fit.py)
MAX_THRESHOLD = 0.9


def frame_levels(x: np.ndarray, frame_len: int) -> np.ndarray:
    """dBFS of each whole frame of int16 audio."""
    n = len(x) // frame_len
    f = x[: n * frame_len].astype(np.float64).reshape(n, frame_len) / 32768.0
    return 10 * np.log10(np.maximum(np.mean(f**2, axis=1), 10 ** (SILENT_DBFS / 10)))


def _pct(v: np.ndarray, ps) -> dict:
    return {f"p{p}": round(float(np.percentile(v, p)), 2) for p in ps}


def measure_levels(quiet: np.ndarray, speech: np.ndarray, frame_ms: int) -> dict:
    """Noise floor and speech level of the two phases (int16 audio, gain 0)."""
    flen = SAMPLE_RATE * frame_ms // 1000
    qn, sp = frame_levels(quiet, flen), frame_levels(speech, flen)
    if len(qn) < 10 or len(sp) < 10:
        raise ValueError("too little audio to measure (a phase is under 10 frames)")
    noise = {"floor_dbfs": round(float(np.median(qn)), 2), **_pct(qn, (10, 50, 90, 99))}
    noise_power = 10 ** (noise["floor_dbfs"] / 10)  # the median: a door slam must not count
    active = sp[sp >= np.percentile(qn, 90) + ACTIVE_ABOVE_NOISE_DB]
    x = speech.astype(np.float64)
    peak = float(np.percentile(np.abs(x), 99.9)) / 32768.0  # a lone glitch is not the peak
    out = {
        "frame_ms": frame_ms,
        "noise": noise,
        "quiet_s": round(len(quiet) / SAMPLE_RATE, 2),
        "speech_s": round(len(speech) / SAMPLE_RATE, 2),
        "clipped_fraction": round(float(np.mean(np.abs(x) >= 32767)), 5),
        "speech": None,
        "snr_db": None,
    }
    power = float(np.mean(10 ** (active / 10))) - noise_power if len(active) else 0.0
    if len(active) < MIN_ACTIVE_FRAMES * len(sp) or power <= 0:
        return out
    level = 10 * math.log10(power)
    out["speech"] = {
        "level_dbfs": round(level, 2),
        **_pct(active, (10, 50, 90)),
        "active_fraction": round(len(active) / len(sp), 3),
        "peak_dbfs": round(20 * math.log10(max(peak, 1e-6)), 2),
    }
    out["snr_db"] = round(level - noise["floor_dbfs"], 2)
    return out


def aggressiveness_for(snr_db: float) -> int:
    return 1 if snr_db >= 30 else 2 if snr_db >= 20 else 3


def suggest(levels: dict, gain_db: float, margin_db: float) -> tuple[dict, list[str]]:
    """{"microphone.gain_db", "vad.aggressiveness", "vad.energy_margin_db", "gate_dbfs"} + notes."""
    sp, nz, notes = levels["speech"], levels["noise"], []
    ideal = min(TARGET_SPEECH_DBFS - sp["level_dbfs"], PEAK_CEILING_DBFS - sp["peak_dbfs"])
    gain = gain_db if abs(ideal - gain_db) <= GAIN_DEADBAND_DB else float(round(ideal))
    gain = float(min(40.0, max(-40.0, gain)))
    if ideal > 40:
        notes.append("speech is very quiet even at +40 dB: raise the input volume (alsamixer/pavucontrol)")
    if levels["clipped_fraction"] > 1e-4:
        notes.append("the input clips: lower the input volume; digital gain cannot undo clipping")
    floor = max(nz["p10"] + gain, MIN_FLOOR_DBFS)
    need = nz["p99"] + gain - floor + NOISE_HEADROOM_DB
    allow = sp["p50"] + gain - floor - SPEECH_OVER_GATE_DB
    if allow < need:
        margin = 0.0
        notes.append(
            f"speech is only {sp['p50'] - nz['p99']:.1f} dB above the noise's loudest frames: "
            "energy gate off (vad.energy_margin_db = 0); a closer microphone would help"
        )
    else:
        margin = min(max(margin_db, math.ceil(need * 2) / 2), math.floor(allow * 2) / 2)
    margin = float(min(60.0, max(0.0, margin)))
    return {
        "microphone.gain_db": gain,
        "vad.aggressiveness": aggressiveness_for(levels["snr_db"]),
        "vad.energy_margin_db": margin,
        "gate_dbfs": round(floor + margin, 2),
        "ideal_gain_db": round(ideal, 2),
    }, notes


def vad_threshold(quiet: np.ndarray, speech: np.ndarray, gain_db: float) -> tuple[dict, list[str]]:
    """silero's threshold for this room (module doc), from the two phases' int16 audio at gain
    0 and the gain the node will apply. Returns {"vad.threshold", "quiet_segments_at_fit",
    "speech_heard"} and notes."""
    from robot_emotion.audio.vad import SileroFrames, StoredFrames, speech_segments
    from robot_emotion.config import VADConfig

    def amplified(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x.astype(np.float64) * 10 ** (gain_db / 20)), -32768, 32767).astype(np.int16)

    def cut(x: np.ndarray, probs: np.ndarray, th: float) -> list[tuple[float, float]]:
        n = probs.size * 512
        cfg = VADConfig(backend="silero", threshold=th)
        return speech_segments(x[:n], cfg, StoredFrames(probs, th))

    fit = VADConfig().threshold
    q, s = amplified(quiet), amplified(speech)
    pq, ps = SileroFrames.probabilities(q), SileroFrames.probabilities(s)
    grid = np.round(np.arange(fit, MAX_THRESHOLD + 1e-9, THRESHOLD_STEP), 2)
    at_fit = len(cut(q, pq, fit))
    th = next((float(t) for t in grid if not cut(q, pq, float(t))), None)
    notes = []
    if th is None:
        th = MAX_THRESHOLD
        notes.append(
            f"the room's noise reads as speech to silero even at vad.threshold {MAX_THRESHOLD}: a closer "
            "microphone, or vad.backend = \"webrtcvad\" with its energy gate"
        )
    elif th > fit:
        notes.append(
            f"the quiet phase made {at_fit} speech segment(s) at the fitted vad.threshold {fit}: raised to {th}"
        )
    heard = sum(b - a for a, b in cut(s, ps, th)) / max(1e-9, s.size / SAMPLE_RATE)
    if heard < MIN_ACTIVE_FRAMES:
        notes.append(f"at vad.threshold {th} silero heard almost none of the speech phase ({heard:.0%})")
    return {"vad.threshold": th, "quiet_segments_at_fit": at_fit, "speech_heard": round(heard, 3)}, notes


def clap_onset(audio: np.ndarray, t0: float) -> tuple[float | None, str]:
    """Capture time of the loudest transient's onset in int16 audio starting at t0."""
    hop = SAMPLE_RATE // 200  # 5 ms
    lev = frame_levels(audio, hop)
    if len(lev) < 20:
        return None, "too little audio in the clap phase"
    k, background = int(np.argmax(lev)), float(np.median(lev))
    if lev[k] - background < CLAP_OVER_BACKGROUND_DB:
        return None, (
            f"no clap heard (the loudest sound was {lev[k] - background:.0f} dB over the "
            f"background, a clap needs {CLAP_OVER_BACKGROUND_DB:.0f})"
        )
    w0, w1 = max(0, (k - 20) * hop), (k + 1) * hop  # up to 100 ms before the loudest frame
    amp = np.abs(audio[w0:w1].astype(np.float64))
    onset = w0 + int(np.argmax(amp >= 0.25 * amp.max()))
    return t0 + onset / SAMPLE_RATE, f"clap heard at {t0 + onset / SAMPLE_RATE:.3f} s"


def frame_change(frames: list[tuple[float, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(times, mean absolute grey-level change from the previous frame) for frames[1:]."""
    ts = np.array([t for t, _ in frames[1:]])
    d = np.array(
        [
            float(np.mean(np.abs(b.astype(np.float32) - a.astype(np.float32))))
            for (_, a), (_, b) in zip(frames, frames[1:])
        ]
    )
    return ts, d


def video_spike(frames: list[tuple[float, np.ndarray]], around: float) -> tuple[float | None, str]:
    """Capture time of the frame that changed most within OFFSET_SEARCH_S of `around`."""
    if len(frames) < 3:
        return None, "too few camera frames in the clap phase"
    ts, d = frame_change(frames)
    near = np.abs(ts - around) <= OFFSET_SEARCH_S
    if not near.any():
        return None, "no camera frame near the clap"
    k = int(np.flatnonzero(near)[np.argmax(d[near])])
    needed = max(MIN_FRAME_CHANGE, 3 * float(np.median(d)))
    if d[k] < needed:
        return None, f"no clap seen (largest frame change {d[k]:.1f} grey levels, needed {needed:.1f})"
    return float(ts[k]), f"clap seen at {ts[k]:.3f} s"


def av_offset_ms(
    audio: np.ndarray, audio_t0: float, frames: list[tuple[float, np.ndarray]]
) -> tuple[float | None, str]:
    """Video lag behind audio in ms (av.offset_ms's sign) from a clap, or (None, why not)."""
    t_audio, why = clap_onset(audio, audio_t0)
    if t_audio is None:
        return None, why
    t_video, why_v = video_spike(frames, t_audio)
    if t_video is None:
        return None, why_v
    return round((t_video - t_audio) * 1000.0, 1), f"{why}, {why_v}"
