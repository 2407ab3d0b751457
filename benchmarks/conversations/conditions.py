"""The acoustic conditions of the corpus: clean, telephone, reverb (pyroomacoustics), noisy.

``render(conv, lib)`` mixes a laid-out conversation (make_corpus.layout) under its condition;
``render(conv, lib, "clean")`` is the dry version of the same conversation.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf

from benchmarks.conversations.voices import SPEECH_DBFS, SR, Library, fade, frame_db
from robot_emotion.train.augment import telephone

CONDITIONS = ("clean", "telephone", "reverb", "noisy")
FLOOR_DBFS = -60.0  # a gaussian floor everywhere: never digital silence
SNR_DB = (0.0, 20.0)  # noisy: noise under the whole conversation
RT60_S = (0.3, 0.8)  # reverb: drawn target
PEAK = 0.9  # a louder conversation is scaled down as a whole, never clipped


def placed_speech(p) -> list:
    """Absolute speech times of a placed clip ``p = (clip, at)``."""
    return [(p[1] + a, p[1] + b) for a, b in p[0].voiced]


def condition_params(lib, rng, cond: str, voices: list) -> dict:
    if cond == "noisy":
        files = sorted((lib.shared / "speech" / "noise").glob("*.wav"))
        f = files[int(rng.integers(0, len(files)))]
        return {
            "snr_db": rng.uniform(*SNR_DB),
            "noise_file": str(f.relative_to(lib.shared)),
            "noise_offset": int(rng.integers(0, sf.info(str(f)).frames)),
        }
    if cond == "reverb":
        dims = [rng.uniform(4.0, 9.0), rng.uniform(3.5, 7.0), rng.uniform(2.6, 3.5)]
        mic = [dims[0] / 2, 0.8, 1.1]  # the robot, in front of one wall
        pos = {}
        for v in voices + ["_nonspeech"]:
            while True:  # 1-4 m from the robot, 0.5 m clear of the walls
                p = [rng.uniform(0.5, dims[0] - 0.5), rng.uniform(0.5, dims[1] - 0.5), rng.uniform(1.1, 1.8)]
                if 1.0 <= np.linalg.norm(np.subtract(p, mic)) <= 4.0:
                    break
            pos[v] = [round(c, 3) for c in p]
        return {
            "rt60_target": rng.uniform(*RT60_S),
            "room": [round(c, 3) for c in dims],
            "mic": [round(c, 3) for c in mic],
            "positions": pos,
        }
    return {}


def rirs(params: dict) -> tuple[dict, float]:
    """One RIR per source, cut so the direct path sits at sample 0 (truth stays on it). The
    image-source RT60 overshoots Sabine's, so the absorption is corrected once on one source."""
    import pyroomacoustics as pra

    names = list(params["positions"])

    def room(rt, srcs):
        e_abs, order = pra.inverse_sabine(rt, params["room"])
        r = pra.ShoeBox(params["room"], fs=SR, materials=pra.Material(e_abs), max_order=order)
        for s in srcs:
            r.add_source(params["positions"][s])
        r.add_microphone(params["mic"])
        r.compute_rir()
        return r

    target = params["rt60_target"]
    probe = room(target, names[:1])
    design = target * target / float(np.mean(probe.measure_rt60()))
    r = room(min(max(design, 0.1), target), names)
    out = {}
    for k, s in enumerate(names):
        h = np.asarray(r.rir[0][k], dtype=np.float64)
        out[s] = h[int(np.argmax(np.abs(h))) :]
    return out, float(np.mean(r.measure_rt60()))


def segments(conv: dict) -> list:
    """[(speaker, start, end)] of every placed clip's speech, sorted."""
    return sorted((t["spk"], a, b) for t in conv["turns"] for p in t["clips"] for a, b in placed_speech(p))


def active_rms(x: np.ndarray, spans) -> float:
    """RMS of x over the 10 ms frames inside the given speech spans."""
    db = frame_db(x)
    on = np.zeros(len(db), bool)
    for a, b in spans:
        on[int(a * 100) : int(b * 100) + 1] = True
    on &= db > -100
    return float(np.sqrt(np.mean(10 ** (db[on] / 10)))) if on.any() else 1e-9


def render(conv: dict, lib: Library, condition: str | None = None) -> np.ndarray:
    """The float mix of a laid-out conversation under ``condition`` (default: its own);
    render(conv, lib, "clean") is the dry version of any conversation."""
    cond = conv["condition"] if condition is None else condition
    n = int(round(conv["duration"] * SR))
    tracks = {v: np.zeros(n) for v in conv["gain_db"]}
    for t in conv["turns"]:
        for c, at in t["clips"]:
            x = lib.audio(c) * 10 ** (conv["gain_db"][t["spk"]] / 20)
            i = int(round(at * SR))
            tracks[t["spk"]][i : i + len(x)] += x[: n - i]
    ns_track = np.zeros(n)
    for e in conv["nonspeech"]:
        src = lib.read(e["file"])
        i0, k = int(round(e["offset"] * SR)), int(round((e["end"] - e["start"]) * SR))
        x = np.resize(src[i0:], k)  # np.resize repeats the clip if it is too short
        level = 10 ** ((SPEECH_DBFS + e["level_db"]) / 20)  # RMS relative to the speech level
        x = fade(x) * (level / max(np.sqrt(np.mean(x**2)), 1e-9))
        i = int(round(e["start"] * SR))
        ns_track[i : i + k] += x[: n - i]
    params = conv["params"]
    if cond == "reverb":
        from scipy.signal import fftconvolve

        h = conv.get("_rirs") or rirs(params)[0]  # make_conversation computed them already
        conv["_rirs"] = h
        for v in tracks:  # each voice at its own place, level kept (gain_db stays the truth)
            spans = [(a, b) for s, a, b in segments(conv) if s == v]
            wet = fftconvolve(tracks[v], h[v])[:n]
            tracks[v] = wet * (active_rms(tracks[v], spans) / active_rms(wet, spans))
        if ns_track.any():
            wet = fftconvolve(ns_track, h["_nonspeech"])[:n]
            ns_track = wet * np.sqrt(np.sum(ns_track**2) / max(np.sum(wet**2), 1e-20))
    speech = sum(tracks.values())
    mix = speech + ns_track
    if cond == "noisy":
        src = lib.read(params["noise_file"])
        noise = np.resize(np.roll(src, -params["noise_offset"]), n)
        spans = [(a, b) for _, a, b in segments(conv)]
        level = active_rms(speech, spans) * 10 ** (-params["snr_db"] / 20)
        mix = mix + noise * (level / max(np.sqrt(np.mean(noise**2)), 1e-9))
    mix = mix + np.random.default_rng(conv["seed"]).normal(0.0, 10 ** (FLOOR_DBFS / 20), n)
    if cond == "telephone":
        mix = telephone(mix)
    return mix


def to_pcm(mix: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    if peak > PEAK:  # loud bursts / low SNR: scale the whole conversation, never clip
        mix = mix * (PEAK / peak)
    return np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)
