"""Media decoding: audio and video files -> 16 kHz mono int16 audio and timed RGB frames.

PyAV (bundled FFmpeg) decodes mp4/mkv/mov/avi, including MELD's 6-channel 48 kHz AAC;
soundfile reads wav/flac. Every failure becomes a MediaError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.errors import InputError

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"}
AUDIO_EXTS = {".wav", ".flac", ".ogg"}


class MediaError(InputError, RuntimeError):
    """Unreadable, missing or unsuitable media (one-line message)."""


@dataclass
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int


def _av():
    import av  # imported lazily: the spine's audio-only paths never need FFmpeg

    return av


def audio_info(path: str | Path) -> AudioInfo:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError with long text
        raise MediaError(f"cannot read audio file {path}: {str(e).splitlines()[0]}") from None
    return AudioInfo(info.samplerate, info.channels, info.frames)


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """float (n,) or (n, ch) at any rate -> int16 mono 16 kHz (polyphase resampling)."""
    # scipy's resample_poly, not torchaudio.functional.resample: the node's input for every
    # replayed video and resampled file; torchaudio's windowed-sinc filter gives other samples
    # (max 0.015-0.028 apart at peak 0.25-0.35, ~7% RMS, on white noise from 22.05-48 kHz), so
    # the published events of a replay would change.
    from math import gcd
    from scipy.signal import resample_poly

    x = samples.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = gcd(rate, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def read_audio_file(path: str | Path, resample: bool = False) -> np.ndarray:
    """Read wav/flac as 16 kHz mono int16. Other formats are refused unless resample=True."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"audio file not found: {path}")
    info = audio_info(path)
    if (info.sample_rate != SAMPLE_RATE or info.channels != 1) and not resample:
        raise MediaError(
            f"{path.name} is {info.sample_rate} Hz, {info.channels} channel(s); the node needs "
            f"16000 Hz mono (pass --resample, or: sox {path.name} -r 16000 -c 1 out.wav)"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise MediaError(f"cannot decode {path}: {str(e).splitlines()[0]}") from None
    return to_mono_16k(data, rate)


def read_wav_tolerant(path: str | Path) -> np.ndarray:
    """Read a session's audio.wav even when the writer was killed before fixing the header.

    The recorder writes a canonical 44-byte PCM header and appends samples; the sizes in
    the header are patched on close. After a crash they are stale, so trust the file size.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 44 or raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise MediaError(f"{path} is not a WAV file")
    rate = int.from_bytes(raw[24:28], "little")
    channels = int.from_bytes(raw[22:24], "little")
    bits = int.from_bytes(raw[34:36], "little")
    if (rate, channels, bits) != (SAMPLE_RATE, 1, 16):
        raise MediaError(f"{path} is {rate} Hz/{channels} ch/{bits} bit; sessions are 16000 Hz mono 16 bit")
    pos = 12  # walk chunks to find "data" (a foreign writer may add LIST chunks)
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if cid == b"data":
            body = raw[pos + 8 :]
            if 0 < size <= len(body):
                body = body[:size]
            body = body[: len(body) // 2 * 2]  # drop a torn last sample
            return np.frombuffer(body, dtype="<i2").astype(np.int16)
        pos += 8 + size + (size & 1)
    raise MediaError(f"{path} has no data chunk")


def probe_video(path: str | Path) -> tuple[bool, bool]:
    """(has_video, has_audio) for a container, or MediaError."""
    av = _av()
    try:
        with av.open(str(path)) as c:
            return bool(c.streams.video), bool(c.streams.audio)
    except (av.error.FFmpegError, UnicodeDecodeError, IndexError) as e:
        raise MediaError(f"cannot open media {path}: {e}") from None


def _decode_packets(container, stream, counter: dict):
    """Frames of one stream, packet by packet: a corrupt packet (a smashed keyframe, one bad
    JPEG in an MJPEG AVI) is skipped and counted in ``counter["packets"]`` instead of ending
    the decode there; the decoder resyncs at the next good packet."""
    av = _av()
    for packet in container.demux(stream):
        counter["total"] += bool(packet.size)
        try:
            frames = packet.decode()  # packet.pts None / size 0: the flush packet at the end
        except av.error.FFmpegError:
            counter["packets"] += 1
            counter["missing_s"] += float(packet.duration * stream.time_base) if packet.duration else 0.0
            continue
        yield from frames


def decode_audio(path: str | Path) -> np.ndarray:
    """The first audio track of a container, downmixed and resampled to 16 kHz mono int16.
    A corrupt packet becomes silence of its length (the audio stays in time with the video)."""
    av = _av()
    chunks, n = [], 0
    counter = {"packets": 0, "total": 0, "missing_s": 0.0}
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path} has no audio track")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in _decode_packets(c, c.streams.audio[0], counter):
                if counter["missing_s"] > 0 and chunks:
                    pad = np.zeros(int(round(counter["missing_s"] * SAMPLE_RATE)), np.int16)
                    chunks.append(pad)
                    counter["missing_s"] = 0.0
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
        if not chunks:
            raise MediaError(f"cannot decode audio of {path}: {e}") from None
        # A truncated file: keep what decoded (no data is thrown away).
    n = sum(c.size for c in chunks)
    return np.concatenate(chunks).astype(np.int16) if n else np.zeros(0, np.int16)


class VideoFrames:
    """(t, RGB uint8 frame) of a file's first video stream; iterate once.

    t comes from ``times`` (a session's capture times, row n = the frame whose pts is n frame
    periods after the stream's start, so a skipped frame never shifts the later ones) or from
    the pts. Corrupt packets are skipped, not the end of the video: ``skipped`` counts the
    frames lost (bad packets, and frames missing between decoded ones in a session)."""

    def __init__(self, path: str | Path, times: list[float] | None = None, fps: float | None = None):
        self.path, self.times, self.fps = path, times, fps
        self.skipped = 0
        self.decoded = 0

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        av = _av()
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, UnicodeDecodeError, IndexError) as e:
            raise MediaError(f"cannot open video {self.path}: {e}") from None
        with container:
            if not container.streams.video:
                return
            stream = container.streams.video[0]
            # Slice threads only: frame threads cost 2x the CPU (demo video: 0.56 vs 0.27 s) for a
            # lower wall time that a replay, whose stages keep both cores busy, never sees.
            stream.thread_type = "SLICE"
            counter = {"packets": 0, "total": 0, "missing_s": 0.0}
            rate = self.fps or (float(stream.guessed_rate) if stream.guessed_rate else None)
            start = stream.start_time or 0
            last = -1
            try:
                for frame in _decode_packets(container, stream, counter):
                    if self.times is None:
                        t = float(frame.pts * stream.time_base) if frame.pts is not None else self.decoded / 25.0
                    else:
                        i = last + 1
                        if frame.pts is not None and rate:
                            i = int(round(float((frame.pts - start) * stream.time_base) * rate))
                        if i >= len(self.times):
                            break
                        if i <= last:  # a duplicate pts: the row is taken
                            continue
                        self.skipped += i - last - 1  # rows whose frames did not decode
                        last, t = i, self.times[i]
                    self.decoded += 1
                    yield t, frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError:
                pass  # truncated tail: stop at the last decodable frame
            if self.times is None and counter["packets"]:  # the bad packets and the frames that
                self.skipped += max(counter["packets"], counter["total"] - self.decoded)  # needed them


def iter_video(path: str | Path, times: list[float] | None = None, fps: float | None = None) -> VideoFrames:
    """Yield (t, RGB uint8 frame); see VideoFrames (its ``skipped`` counts corrupt frames)."""
    return VideoFrames(path, times, fps)
