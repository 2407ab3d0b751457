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

import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.config import SESSION_ID, shown
from robot_emotion.errors import loads_json, read_bounded, say
from robot_emotion.media import MediaError, read_wav_tolerant

FORMAT = "robot_emotion.session"
RESERVE, RESERVE_BYTES = ".reserve", 64 * 1024
MAX_META_BYTES = 16 * 1024 * 1024  # session.json: config, devices, device events
VERSION = 1


def _wav_header(n_bytes: int) -> bytes:
    return (
        b"RIFF"
        + (36 + n_bytes).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + SAMPLE_RATE.to_bytes(4, "little")
        + (SAMPLE_RATE * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + n_bytes.to_bytes(4, "little")
    )


class SessionWriter:
    """Writes a session folder incrementally. Thread-safe; close() finalises headers."""

    def __init__(
        self,
        folder: str | Path,
        session_id: str,
        unix_start: float,
        config: dict | None,
        devices: dict,
        fps: float = 15.0,
        flush_s: float = 1.0,
        private: bool = True,
    ):
        self.folder = Path(folder)
        # Audio and video of people: only the owner may read them (0700 / 0600) unless the
        # config says otherwise (node.private_sessions = false keeps the process umask).
        self._private = private
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        if private:
            self.folder.chmod(0o700)
        self._lock = threading.Lock()
        self.failure: str | None = None  # set once when a write fails (full disk): recording stops
        self._meta = {
            "format": FORMAT,
            "version": VERSION,
            "session_id": session_id,
            "unix_start": unix_start,
            "sample_rate": SAMPLE_RATE,
            "devices": devices,
            "config": config,
            "complete": False,
            "duration": 0.0,
            "frames": 0,
        }
        self._write_meta()
        # Ballast: freed when the disk fills, so session.json can still say what happened.
        with self._open(RESERVE, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
        self._wav = self._open("audio.wav", "wb")
        self._wav.write(_wav_header(0xFFFFFFFF - 36))  # "unknown length" until close
        self._audio_bytes = 0
        self._events = self._open("events.jsonl", "w", encoding="utf-8")
        self._times = None
        self._video = None
        self._fps = fps
        self._frames = 0
        self._flush_s = flush_s
        self._last_flush = time.monotonic()
        self.closed = False

    def _open(self, name: str, mode: str, **kw):
        path = self.folder / name
        if self._private:  # created 0600 (never briefly world-readable)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            path.chmod(0o600)
        return open(path, mode, **kw)

    def _write_meta(self) -> None:
        with self._open("session.json.tmp", "w") as f:
            f.write(json.dumps(self._meta, indent=1))
        (self.folder / "session.json.tmp").replace(self.folder / "session.json")  # atomic

    def note_device(self, name: str, state: str, t: float) -> None:
        """A device lost or back (session seconds): kept in session.json's ``device_events``."""
        with self._lock:
            self._meta.setdefault("device_events", []).append({"device": name, "state": state, "t": round(t, 3)})
            if not self.closed:
                self._guarded(self._write_meta)

    def _guarded(self, fn, *args) -> None:
        """Run a write; on OSError (full disk, removed folder) stop recording, keep what is there."""
        try:
            fn(*args)
        except Exception as e:  # OSError, or PyAV's errors for the video file
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        t = self._audio_bytes / 2 / SAMPLE_RATE
        self.failure = f"recording stopped at {t:.1f} s: {e}; perception continued"
        say(f"robot-emotion: error: {self.failure}")
        self.closed = True
        self._meta.update(complete=False, stopped=str(e), duration=t, frames=self._frames)
        for step in (
            self._drop_reserve,
            lambda: self._wav.seek(0),
            lambda: self._wav.write(_wav_header(self._audio_bytes)),
            self._wav.close,
            self._events.close,
            self._write_meta,
            lambda: self._times and self._times.close(),
            lambda: self._video and self._video.close(),
        ):
            try:  # finalise what can be: the wav header needs no new space
                step()
            except Exception:
                pass

    def write_audio(self, samples: np.ndarray, t: float | None = None) -> None:
        """Append samples; the first call pads with silence so sample 0 is session time 0.
        Called from the audio callback: it never raises (a failure stops the recording)."""
        with self._lock:
            if not self.closed:
                self._guarded(self._write_audio, samples, t)

    def _write_audio(self, samples: np.ndarray, t: float | None) -> None:
        # Silence where nothing was captured (before the first block, while a microphone was
        # lost), so sample n is always session time n / 16000.
        missing = int(round(t * SAMPLE_RATE)) - self._audio_bytes // 2 if t is not None else 0
        if missing > SAMPLE_RATE // 20 or (self._audio_bytes == 0 and missing > 0):
            pad = np.zeros(missing, np.int16)
            self._wav.write(pad.tobytes())
            self._audio_bytes += pad.size * 2
        self._wav.write(samples.astype("<i2").tobytes())
        self._audio_bytes += samples.size * 2
        self._maybe_flush()

    def write_frame(self, t: float, rgb: np.ndarray) -> None:
        with self._lock:
            if not self.closed:
                self._guarded(self._write_frame, t, rgb)

    def _write_frame(self, t: float, rgb: np.ndarray) -> None:
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

        self._open("video.mp4", "wb").close()  # created 0600 before FFmpeg writes it
        self._video = av.open(
            str(self.folder / "video.mp4"),
            "w",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"},
        )  # no data parked in FFmpeg's buffer
        rate = Fraction(self._fps).limit_denominator(1000)
        self._vstream = self._video.add_stream("libx264", rate=rate)
        self._vstream.width, self._vstream.height = width - width % 2, height - height % 2
        self._vstream.pix_fmt = "yuv420p"
        # One keyframe a second = one fragment a second = at most a second lost on a crash.
        self._vstream.options = {"preset": "veryfast", "crf": "23", "g": str(max(1, round(self._fps)))}
        self._vstream.codec_context.time_base = Fraction(1, 1) / rate
        self._times = self._open("video_times.csv", "w")
        self._times.write("frame,t\n")

    def write_event(self, body: dict) -> None:
        with self._lock:
            if not self.closed:
                self._guarded(self._write_event, body)

    def _write_event(self, body: dict) -> None:
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
            if not self.closed:
                self._guarded(self._close)

    def _close(self) -> None:
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
        self._meta.update(complete=True, duration=self._audio_bytes / 2 / SAMPLE_RATE, frames=self._frames)
        self._drop_reserve()
        self._write_meta()

    def _drop_reserve(self) -> None:
        (self.folder / RESERVE).unlink(missing_ok=True)


@dataclass
class Session:
    """A session folder opened for replay (tolerates a recording cut short)."""

    folder: Path
    meta: dict
    audio: np.ndarray  # int16 mono 16 kHz
    video_path: Path | None
    frame_times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a recorded video is not replayed

    @property
    def fps(self) -> float | None:
        """The camera rate the writer gave the video stream (its pts count frames at it)."""
        cam = (self.meta.get("config") or {}).get("camera") or {}
        fps = cam.get("fps") if isinstance(cam, dict) else None
        return float(fps) if isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps <= 240 else None

    @property
    def session_id(self) -> str:
        """session.json's (validated by read_meta), else the folder's name made a valid id."""
        return self.meta.get("session_id", safe_id(self.folder.name))

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE


def safe_id(name: str) -> str:
    """A file or folder name as a session id: other characters become '_', 64 at most."""
    return re.sub(r"[^\w.:-]", "_", name)[:64]


def read_frame_times(path: Path) -> list[float]:
    """Capture times from video_times.csv ("frame,t"). A torn LAST line (unterminated: a
    killed recording) is dropped; binary data or any other row that is not the next frame
    number with a finite time in order is refused (MediaError), never silently cut."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise MediaError(f"corrupt {path}: not UTF-8 text (binary data?)") from None
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror or e}") from None
    if "\0" in text:
        raise MediaError(f"corrupt {path}: binary data (NUL bytes)")
    lines = text.splitlines()
    if not lines:
        return []  # killed between creating the file and writing its header
    if lines[0].strip() != "frame,t":
        raise MediaError(f"corrupt {path}: expected the header 'frame,t', got {lines[0][:40]!r}")
    times: list[float] = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        try:
            frame, t = int(parts[0]), float(parts[1])
            ok = len(parts) == 2 and frame == len(times) and math.isfinite(t) and (not times or t >= times[-1])
        except (ValueError, IndexError):
            ok = False
        if not ok:
            if n == len(lines) and not text.endswith("\n"):
                break  # the torn last line of a killed recording
            raise MediaError(f"corrupt {path}: line {n} {line[:40]!r} is not frame {len(times)} with a time in order")
        times.append(t)
    return times


# session.json fields the replay relies on, and the JSON types they must have.
_META_TYPES = {
    "session_id": (str,),
    "unix_start": (int, float),
    "sample_rate": (int,),
    "devices": (dict, type(None)),
    "config": (dict, type(None)),
    "complete": (bool,),
}


def read_meta(meta_path: Path) -> dict:
    """session.json as a dict, or MediaError (one line) when it is not a session this reads."""
    try:
        meta = loads_json(read_bounded(meta_path, MAX_META_BYTES).decode("utf-8"))
    except UnicodeDecodeError:
        raise MediaError(f"corrupt {meta_path}: not UTF-8 text (binary data?)") from None
    except ValueError as e:  # not JSON, nested too deeply, a number of 5000 digits, too big
        raise MediaError(f"corrupt {meta_path}: {e}") from None
    except OSError as e:
        raise MediaError(f"cannot read {meta_path}: {e.strerror or e}") from None
    if not isinstance(meta, dict):
        raise MediaError(f"corrupt {meta_path}: expected a JSON object, got a JSON {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise MediaError(f"{meta_path} is not a robot_emotion session (format={meta.get('format')!r})")
    version = meta.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MediaError(f"corrupt {meta_path}: 'version' must be a positive integer, got {version!r}")
    if version > VERSION:
        raise MediaError(f"{meta_path} has session version {version}; this node reads <= {VERSION}")
    for key, types in _META_TYPES.items():
        value = meta.get(key)
        if key in meta and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise MediaError(f"corrupt {meta_path}: '{key}' has the wrong type ({type(value).__name__})")
    if "session_id" in meta and not re.fullmatch(SESSION_ID, meta["session_id"]):
        raise MediaError(
            f"corrupt {meta_path}: 'session_id' must be at most 64 letters, digits, "
            f"'.', ':', '_' or '-' (like node.session_id), got {shown(meta['session_id'])}"
        )
    if not math.isfinite(meta.get("unix_start", 0.0)):
        raise MediaError(f"corrupt {meta_path}: 'unix_start' must be a finite number")
    if meta.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise MediaError(f"{meta_path}: sample_rate {meta['sample_rate']}; sessions are {SAMPLE_RATE} Hz")
    return meta


def open_session(folder: str | Path) -> Session:
    folder = Path(folder)
    meta_path = folder / "session.json"
    if not meta_path.is_file():
        raise MediaError(f"not a session folder (no session.json): {folder}")
    meta = read_meta(meta_path)
    if not (folder / "audio.wav").is_file():
        raise MediaError(f"session {folder} has no audio.wav")
    audio = read_wav_tolerant(folder / "audio.wav")
    video = folder / "video.mp4"
    times_path = folder / "video_times.csv"
    has_video = video.is_file() and video.stat().st_size > 0 and times_path.is_file()
    times = read_frame_times(times_path) if has_video else []
    notes = []
    if video.is_file() and video.stat().st_size > 0 and not times_path.is_file():
        notes.append(f"session {folder.name}: video.mp4 has no video_times.csv (capture times): replaying audio only")
    if has_video:
        from robot_emotion.media import probe_video

        try:
            probe_video(video)
        except MediaError as e:  # e.g. killed before the first video fragment: the audio alone
            has_video, times = False, []
            meta["video_unreadable"] = True
            notes.append(
                f"session {folder.name}: video.mp4 is unreadable ({str(e).rpartition(': ')[2][:80]}): "
                "replaying audio only"
            )
    return Session(folder, meta, audio, video if has_video else None, times, notes)
