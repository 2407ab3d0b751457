"""Recorded sessions: a folder that replays exactly what the node saw.

    session.json      format/version, session id, unix start, devices, resolved config
    audio.wav         16 kHz mono int16; header sizes patched on close
    video.mp4         H.264 in FRAGMENTED mp4, so a killed recording still decodes
    video_times.csv   "frame,t": capture time of every video frame (session seconds)
    events.jsonl      every message the node published, one JSON body per line

Everything is flushed at least once a second, so SIGINT/SIGTERM/SIGKILL or a crash
loses at most the last second; readers tolerate a truncated tail.
"""
from __future__ import annotations

import csv
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.media import MediaError, read_wav_tolerant

FORMAT = "robot_emotion.session"
VERSION = 1


def _wav_header(n_bytes: int) -> bytes:
    return (b"RIFF" + (36 + n_bytes).to_bytes(4, "little") + b"WAVEfmt "
            + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
            + SAMPLE_RATE.to_bytes(4, "little") + (SAMPLE_RATE * 2).to_bytes(4, "little")
            + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
            + b"data" + n_bytes.to_bytes(4, "little"))


class SessionWriter:
    """Writes a session folder incrementally. Thread-safe; close() finalises headers."""

    def __init__(self, folder: str | Path, session_id: str, unix_start: float, config: dict | None,
                 devices: dict, fps: float = 15.0, flush_s: float = 1.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._meta = {"format": FORMAT, "version": VERSION, "session_id": session_id,
                      "unix_start": unix_start, "sample_rate": SAMPLE_RATE, "devices": devices,
                      "config": config, "complete": False, "duration": 0.0, "frames": 0}
        self._write_meta()
        self._wav = open(self.folder / "audio.wav", "wb")
        self._wav.write(_wav_header(0xFFFFFFFF - 36))  # "unknown length" until close
        self._audio_bytes = 0
        self._events = open(self.folder / "events.jsonl", "w", encoding="utf-8")
        self._times = None
        self._video = None
        self._fps = fps
        self._frames = 0
        self._flush_s = flush_s
        self._last_flush = time.monotonic()
        self.closed = False

    def _write_meta(self) -> None:
        tmp = self.folder / "session.json.tmp"
        tmp.write_text(json.dumps(self._meta, indent=1))
        tmp.replace(self.folder / "session.json")  # atomic: never a half-written json

    def write_audio(self, samples: np.ndarray, t: float | None = None) -> None:
        """Append samples; the first call pads with silence so sample 0 is session time 0."""
        with self._lock:
            if self.closed:
                return
            if self._audio_bytes == 0 and t is not None and t > 0:
                pad = np.zeros(int(round(t * SAMPLE_RATE)), np.int16)
                self._wav.write(pad.tobytes())
                self._audio_bytes += pad.size * 2
            self._wav.write(samples.astype("<i2").tobytes())
            self._audio_bytes += samples.size * 2
            self._maybe_flush()

    def write_frame(self, t: float, rgb: np.ndarray) -> None:
        with self._lock:
            if self.closed:
                return
            if self._video is None:
                self._open_video(rgb.shape[1], rgb.shape[0])
            import av
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self._frames
            for packet in self._vstream.encode(frame):
                self._video.mux(packet)
            self._times.write(f"{self._frames},{t:.6f}\n")
            self._frames += 1
            self._maybe_flush()

    def _open_video(self, width: int, height: int) -> None:
        import av
        from fractions import Fraction
        self._video = av.open(str(self.folder / "video.mp4"), "w",
                              options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                       "flush_packets": "1"})  # no data parked in FFmpeg's buffer
        rate = Fraction(self._fps).limit_denominator(1000)
        self._vstream = self._video.add_stream("libx264", rate=rate)
        self._vstream.width, self._vstream.height = width - width % 2, height - height % 2
        self._vstream.pix_fmt = "yuv420p"
        # One keyframe a second = one fragment a second = at most a second lost on a crash.
        self._vstream.options = {"preset": "veryfast", "crf": "23", "g": str(max(1, round(self._fps)))}
        self._vstream.codec_context.time_base = Fraction(1, 1) / rate
        self._times = open(self.folder / "video_times.csv", "w")
        self._times.write("frame,t\n")

    def write_event(self, body: dict) -> None:
        with self._lock:
            if self.closed:
                return
            self._events.write(json.dumps(body, separators=(",", ":")) + "\n")
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= self._flush_s:
            self._flush()
            self._last_flush = now

    def _flush(self) -> None:
        self._wav.flush()
        self._events.flush()
        if self._times:
            self._times.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._wav.seek(0)
            self._wav.write(_wav_header(self._audio_bytes))
            self._wav.close()
            self._events.close()
            if self._video is not None:
                for packet in self._vstream.encode(None):
                    self._video.mux(packet)
                self._video.close()
                self._times.close()
            self._meta.update(complete=True, duration=self._audio_bytes / 2 / SAMPLE_RATE,
                              frames=self._frames)
            self._write_meta()


@dataclass
class Session:
    """A session folder opened for replay (tolerates a recording cut short)."""
    folder: Path
    meta: dict
    audio: np.ndarray                      # int16 mono 16 kHz
    video_path: Path | None
    frame_times: list[float] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.meta.get("session_id", self.folder.name)

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE


def read_frame_times(path: Path) -> list[float]:
    times = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                times.append(float(row["t"]))
            except (TypeError, ValueError, KeyError):
                break  # torn last line of a killed recording
    return times


def open_session(folder: str | Path) -> Session:
    folder = Path(folder)
    meta_path = folder / "session.json"
    if not meta_path.is_file():
        raise MediaError(f"not a session folder (no session.json): {folder}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise MediaError(f"corrupt {meta_path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise MediaError(f"{meta_path} is not a robot_emotion session (format={meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise MediaError(f"{meta_path} has session version {meta['version']}; this node reads <= {VERSION}")
    if not (folder / "audio.wav").is_file():
        raise MediaError(f"session {folder} has no audio.wav")
    audio = read_wav_tolerant(folder / "audio.wav")
    video = folder / "video.mp4"
    times_path = folder / "video_times.csv"
    has_video = video.is_file() and video.stat().st_size > 0 and times_path.is_file()
    times = read_frame_times(times_path) if has_video else []
    if has_video:
        from robot_emotion.media import probe_video
        try:
            probe_video(video)
        except MediaError:  # killed before the first video fragment: replay the audio alone
            has_video, times = False, []
            meta["video_unreadable"] = True
    return Session(folder, meta, audio, video if has_video else None, times)
