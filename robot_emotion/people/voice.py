"""A person's voice from a recording (enrolment, the benchmark) and from a live session.

Both take the voice the way the node's speaker tracker keeps it (audio/speakers.py): the
node's VAD cuts the speech, the tracker splits it at voice changes and clusters the pieces,
and a speaker's voice is its cluster's duration-weighted centroid. The node matches that
centroid against the store as the speaker's speech accumulates (PeopleLink), so the
benchmark's "identify in another recording" is the same computation on the same input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.errors import InputError

AUDIO_FILES = (".wav", ".flac", ".ogg")
VIDEO_FILES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4a")


@dataclass
class Voice:
    embedding: np.ndarray  # (256,) unit
    seconds: float  # speech behind it
    speaker: str  # the tracker's id in the recording
    voices: dict  # every voice found: id -> seconds of speech


def read_recording(path: str | Path) -> np.ndarray:
    """16 kHz mono int16 of a wav/flac file, a video's audio track or a session folder."""
    from robot_emotion.media import decode_audio, read_audio_file, read_wav_tolerant

    p = Path(path)
    if p.is_dir():
        if not (p / "audio.wav").is_file():
            raise InputError(f"{p} is not a session folder (no audio.wav)")
        return read_wav_tolerant(p / "audio.wav")
    if p.suffix.lower() in AUDIO_FILES:
        return read_audio_file(p, resample=True)
    if p.suffix.lower() in VIDEO_FILES:
        return decode_audio(p)
    raise InputError(f"cannot enrol from {p}: expected a wav/flac file, a video or a session folder")


def speaker_voice(clusterer, sid: str) -> tuple[np.ndarray | None, float]:
    """(centroid, seconds of speech in it) of a session speaker."""
    return clusterer.voice(sid)


def voice_of(audio: np.ndarray, tracker, vad_cfg=None, speaker: str | None = None) -> Voice:
    """The voice of ``speaker`` (default: whoever speaks most) in a recording."""
    from robot_emotion.audio.vad import Segmenter, SpeechEnd
    from robot_emotion.config import VADConfig

    tracker.clusterer.reset()
    seg = Segmenter(vad_cfg or VADConfig())
    x = np.asarray(audio, np.int16)
    block = SAMPLE_RATE * 30 // 1000
    events = [e for i in range(0, x.size, block) for e in seg.push(i / SAMPLE_RATE, x[i : i + block])]
    events += seg.flush(x.size / SAMPLE_RATE)
    prev, n, pieces = None, 0, []
    for e in events:
        if not isinstance(e, SpeechEnd) or e.dropped:
            continue
        a0, a1 = int(e.start * SAMPLE_RATE), int(e.end * SAMPLE_RATE)
        got = tracker.process(x[a0:a1].astype(np.float32) / 32768.0, e.start, f"r{n}", prev)
        prev, n = got[-1].speaker, n + 1
        pieces += got
    # every piece of the voice, weighted by its length (the tracker's centroid leaves pieces
    # under 1.5 s out, which would drop most of a recording cut by pauses)
    voices: dict[str, list] = {}
    for p in pieces:
        if p.speaker is not None and p.embedding is not None:
            acc = voices.setdefault(p.speaker, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + p.embedding * p.duration, acc[1] + p.duration
    if not voices:
        raise InputError("no speech found in the recording")
    sid = speaker or max(voices, key=lambda k: voices[k][1])
    if sid not in voices:
        raise InputError(f"no voice {sid} in the recording (found: {', '.join(voices)})")
    emb, sec = voices[sid]
    emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
    voices = {k: round(v[1], 2) for k, v in voices.items()}
    return Voice(emb, sec, sid, voices)


class PeopleLink:
    """The node's side: session speaker id -> stored person (``person`` in messages).

    The store is re-read when its file changes (an enrolment while the node runs counts at
    once). With ``people.remember`` a voice that matches nobody is stored as an anonymous
    person once ``remember_after_s`` of its speech is heard, so the next session knows it."""

    def __init__(self, cfg, store, matcher):
        self.cfg, self.store, self.matcher = cfg, store, matcher
        self._stamp = None
        self._ids, self._names, self._mat = [], [], np.zeros((0, 256), np.float32)
        self._remembered: dict[str, str] = {}  # session speaker -> person stored this session

    def _reload(self) -> None:
        stamp = self.store.mtime()
        if stamp != self._stamp:
            self._ids, self._names, self._mat, _ = self.store.voices()
            self._stamp = stamp

    def person(self, speaker: str | None, clusterer) -> dict | None:
        if speaker is None:
            return None
        voice, seconds = speaker_voice(clusterer, speaker)
        if voice is None:
            return None
        self._reload()
        i, p = self.matcher.identify(voice, seconds, self._mat)
        if i is None and self.cfg.remember and seconds >= self.cfg.remember_after_s and speaker not in self._remembered:
            self._remembered[speaker] = self.store.add(None, voice, seconds, source="remembered")
            self._reload()
            i, p = self.matcher.identify(voice, seconds, self._mat)
        if i is None:
            return None
        return {"id": self._ids[i], "name": self._names[i], "confidence": round(p, 4)}

    def reset(self) -> None:
        self._remembered.clear()

    def close(self) -> None:
        self.store.close()
