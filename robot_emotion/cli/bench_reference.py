"""The reference row of `robot-emotion bench`: stock faster-whisper on the same speech.

The node's latencies only mean something next to what a plain Whisper call costs on the same
machine at the same moment (the development machines are shared and busy). So, in the same
bench run, the stock ``WhisperModel.transcribe`` -- its 30 s window, its default beam (5),
temperature 0, on the node's own model files (``load_faster_whisper``: same folder, device,
compute type and threads as the node's ASR) -- transcribes every speech segment the node's VAD
cuts from the bench source, and its median becomes the unit of the ratio table.
"""

from __future__ import annotations

import time

import numpy as np

from robot_emotion import SAMPLE_RATE


def speech_segments(cfg, source: str) -> list[tuple[float, float]]:
    """(start, end) seconds of every speech segment the node's VAD publishes for the source
    (a replay of the VAD alone at --speed max: the same segments the full node sees)."""
    from robot_emotion.node.runner import replay

    found: list[tuple[float, float]] = []

    def collect(body: dict) -> None:
        if body.get("topic") == "speech.end" and not body.get("dropped") and body.get("speaker") != "robot":
            found.append((float(body["start"]), float(body["end"])))

    node = replay(cfg, source, speed="max", sinks=[collect], perception=None, progress=None)
    if node.errors:
        raise RuntimeError(node.errors[0])
    return found


def whisper_path(cfg) -> str:
    """The node's faster-whisper model folder (asr.model, or the embedded default)."""
    from robot_emotion.audio.asr import default_whisper_path

    if cfg.asr.backend == "faster-whisper" and cfg.asr.model:
        return cfg.asr.model
    return default_whisper_path()


def stock_whisper(cfg, source: str, repeats: int = 1) -> dict:
    """Median / p95 ms of stock WhisperModel.transcribe over the source's speech segments."""
    from robot_emotion.audio.asr import _model_name, load_faster_whisper
    from robot_emotion.compute import resolve_device
    from robot_emotion.sources.replay import open_recording

    audio = open_recording(source).audio.astype(np.float32) / 32768.0
    segments = speech_segments(cfg, source)
    if not segments:
        return {"error": "the VAD found no speech in the source"}
    device = resolve_device(cfg.node.device)
    path = whisper_path(cfg)
    model = load_faster_whisper(path, device=device)
    clips = [audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in segments]

    def transcribe(clip) -> str:
        # stock call: 30 s window, default beam_size (5), no VAD filter; temperature 0 only
        parts, _info = model.transcribe(clip, temperature=0.0)
        return " ".join(p.text.strip() for p in parts)

    transcribe(clips[0])  # the first call pays one-off set-up costs
    ms, words = [], 0
    for _ in range(max(1, repeats)):
        for clip in clips:
            t0 = time.perf_counter()
            words += len(transcribe(clip).split())
            ms.append((time.perf_counter() - t0) * 1000.0)
    seconds = [e - s for s, e in segments]
    return {
        "what": "faster_whisper.WhisperModel.transcribe (30 s window, beam 5, temperature 0)",
        "model": path,
        "model_name": _model_name(path),
        "device": device,
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "n": len(ms),
        "segments": len(segments),
        "segment_s_median": float(np.median(seconds)),
        "words": words // max(1, repeats),
    }


def ratios(latency: dict, reference_ms: float) -> dict[str, list[float]]:
    """Each latency group's [median, p95] as a multiple of the reference median."""
    if not reference_ms or reference_ms <= 0:
        return {}
    return {k: [v[0] / reference_ms, v[1] / reference_ms] for k, v in latency.items()}
