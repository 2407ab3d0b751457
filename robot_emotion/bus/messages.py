"""Wire schema: ZeroMQ multipart [topic, UTF-8 JSON].

Every body carries ``v`` (schema version), ``topic``, ``seq`` (per-topic counter from 0),
``session`` and ``stamp`` (unix seconds at publish). The node builds the bodies of speech and
utterances with the builders below (one shape per topic, wherever it is published from); the
publisher thread fills in seq/session/stamp. No pickle on the wire.
"""

from __future__ import annotations

import json
import math

import numpy as np

from robot_emotion import EMOTIONS

# v2: an `utterance` is a speaker's TURN (several pauses), published provisionally at each pause
# (`final: false`) and once more when the turn closes (`final: true`, same utterance_id);
# `emotion` follows it. speech.start/end mark pauses (segments), not turns.
SCHEMA_VERSION = 2

TOPICS = (
    "speech.start",
    "speech.end",
    "utterance",
    "utterance.partial",
    "emotion",
    "face",
    "status",
    "device",
    "ready",
    "session.end",
)

# Fields every body of a topic must carry (the contract controllers rely on).
REQUIRED = {
    "speech.start": ("utterance_id", "start"),
    "speech.end": ("utterance_id", "start", "end"),
    "utterance": ("utterance_id", "start", "end", "speaker", "face_track", "text", "final"),
    "utterance.partial": ("utterance_id", "start", "end", "text"),
    "emotion": (
        "utterance_id",
        "start",
        "end",
        "speaker",
        "face_track",
        "text",
        "final",
        "label",
        "probs",
        "modalities",
        "model",
        "latency_ms",
    ),
    "face": ("t", "tracks"),
    "status": ("uptime", "stages", "queues", "dropped", "sources"),
    "device": ("device", "state", "t"),  # a camera / microphone lost or restored
    "ready": ("t", "mode", "devices", "models", "load_s"),  # models loaded, devices open (repeated: publish.py)
    "session.end": ("t", "reason", "utterances", "messages"),  # the last message of every session
}
COMMON = ("v", "topic", "seq", "session", "stamp")

# Fields that depend on wall-clock time; everything else is reproducible in replay.
WALL_FIELDS = ("stamp", "latency_ms", "wall", "load_s", "wall_s")


# ---- builders: every speech.* / utterance* body is made here, so controllers see one shape ----
def speech_start(utterance_id: str, start: float, t: float, speaker: str | None = None, barge_in: bool = False) -> dict:
    """A VAD segment began (``speaker`` is null for a person, "robot" for the robot's voice)."""
    body = {"topic": "speech.start", "utterance_id": utterance_id, "start": start, "t": t}
    if barge_in:
        body["barge_in"] = True
    body["speaker"] = speaker
    return body


def speech_end(
    utterance_id: str, start: float, end: float, t: float, forced: bool, dropped: bool, speaker: str | None = None
) -> dict:
    """A VAD segment ended (a pause, or ``forced`` at vad.max_utterance_s; ``dropped``: too short)."""
    body = {
        "topic": "speech.end",
        "utterance_id": utterance_id,
        "start": start,
        "end": end,
        "forced": forced,
        "dropped": dropped,
        "t": t,
    }
    if speaker is not None:
        body["speaker"] = speaker
    return body


def utterance(
    utterance_id: str,
    *,
    final: bool,
    start: float,
    end: float,
    speaker: str | None,
    text: str | None,
    segments: list,
    spans: list,
    forced: bool = False,
    overlap: bool = False,
    speech: bool = True,
    speaker_confidence: float | None = None,
    person: dict | None = None,
    face_track: int | None = None,
    face_confidence: float | None = None,
    asr_confidence: float | None = None,
    language: str | None = None,
    latency_ms: dict | None = None,
    text_end: float | None = None,
) -> dict:
    """A speaker's turn (README "ZeroMQ API"). ``text_end`` marks an early estimate: the words
    heard up to then (``early: true``)."""
    body = {"topic": "utterance", "utterance_id": utterance_id, "final": final}
    if text_end is not None:
        body["early"] = True
    body.update(
        speech=speech,
        start=start,
        end=end,
        speaker=speaker,
        speaker_confidence=speaker_confidence,
        person=person,
        face_track=face_track,
        face_confidence=face_confidence,
        text=text,
    )
    if text_end is not None:
        body["text_end"] = text_end
    body.update(
        asr_confidence=asr_confidence,
        language=language,
        duration=end - start,
        segments=segments,
        spans=spans,
        forced=forced,
        overlap=overlap,
        latency_ms={} if latency_ms is None else latency_ms,
    )
    return body


def partial(utterance_id: str, start: float, end: float, text: str) -> dict:
    """The words of a segment still being spoken (``utterance.partial``)."""
    return {"topic": "utterance.partial", "utterance_id": utterance_id, "start": start, "end": end, "text": text}


class SchemaError(ValueError):
    pass


def _clean(obj):
    """Round floats (stable JSON across runs) and reject NaN/inf."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise SchemaError("non-finite number in message")
        return round(obj, 6)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalar
        return _clean(obj.item())
    return obj


def validate(body: dict) -> None:
    topic = body.get("topic")
    if topic not in REQUIRED:
        raise SchemaError(f"unknown topic {topic!r}")
    missing = [k for k in COMMON + REQUIRED[topic] if k not in body]
    if missing:
        raise SchemaError(f"{topic} message missing {missing}")
    if topic == "emotion" and body["probs"] is not None:
        if set(body["probs"]) != set(EMOTIONS):
            raise SchemaError("emotion probs must have the 7 MELD labels")


def encode(body: dict) -> list[bytes]:
    body = _clean(body)
    return [body["topic"].encode(), json.dumps(body, separators=(",", ":")).encode("utf-8")]


def decode(frames: list[bytes]) -> dict:
    if len(frames) != 2:
        raise SchemaError(f"expected 2 frames [topic, json], got {len(frames)}")
    body = json.loads(frames[1].decode("utf-8"))
    if body.get("topic") != frames[0].decode():
        raise SchemaError("topic frame and body topic differ")
    return body


def reproducible(body: dict) -> dict:
    """The body without wall-clock fields: equal across replays of the same session."""
    return {k: v for k, v in body.items() if k not in WALL_FIELDS}


# (valence -1..1, arousal 0..1) of each class: approximate placements on Russell's circumplex
# (Russell 1980; Posner, Russell & Peterson 2005). Surprise is near neutral valence because
# MELD's surprise is as often unwelcome as welcome. A documented mapping, not a trained head:
# no data here labels valence or arousal.
CIRCUMPLEX = {
    "neutral": (0.0, 0.2),
    "joy": (0.8, 0.6),
    "sadness": (-0.7, 0.25),
    "anger": (-0.6, 0.85),
    "surprise": (0.1, 0.85),
    "fear": (-0.65, 0.8),
    "disgust": (-0.65, 0.5),
}


def valence_arousal(probs: np.ndarray) -> tuple[float, float]:
    va = np.array([CIRCUMPLEX[e] for e in EMOTIONS])
    v, a = np.asarray(probs, float) @ va / max(float(np.sum(probs)), 1e-12)
    return round(float(v), 4), round(float(a), 4)
