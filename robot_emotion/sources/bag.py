"""Replay of a rosbag2 (MCAP or sqlite3) recorded on a robot: its audio and camera topics.

Read with the pure-Python ``rosbags`` library (no ROS install). Audio: audio_common_msgs
``AudioData`` (PCM S16LE bytes; rate and channels from ``bag.audio_rate`` /
``bag.audio_channels``), ``AudioDataStamped`` or ``AudioStamped`` (its ``info`` gives rate
and channels). Camera: sensor_msgs ``Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or
``CompressedImage`` (JPEG/PNG). Topic names come from ``bag.audio_topic`` /
``bag.image_topic`` (``replay --audio-topic/--image-topic``); left empty, the bag's one
topic of that kind is taken.

Times are the messages' header stamps (the bag's receive time where a message has no
header). Session time 0 is the first audio or image stamp, and ``unix_start`` is that stamp,
so the node's output stamps land on the robot's capture clock. Audio chunks are laid on that
timeline: a chunk that starts more than 50 ms after the previous one ended leaves silence
(a dropped chunk keeps the speech after it in place); jitter below that is ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.media import MediaError, to_mono_16k

AUDIO_TYPES = (
    "audio_common_msgs/msg/AudioData",
    "audio_common_msgs/msg/AudioDataStamped",
    "audio_common_msgs/msg/AudioStamped",
)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GAP_S = 0.05


def is_bag(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _reader(path: Path):
    from rosbags.highlevel import AnyReader

    from robot_emotion.sources.ros_types import typestore

    try:
        return AnyReader([path], default_typestore=typestore("drivers"))
    except Exception as e:  # rosbags raises its own errors for a bad metadata.yaml or storage
        raise MediaError(f"cannot read rosbag2 {path}: {str(e).splitlines()[0] if str(e) else e}") from None


def _pick(conns, types, wanted: str, kind: str, path: Path):
    if wanted.lower() == "none":
        return None
    found = [c for c in conns if c.msgtype in types]
    if wanted:
        named = [c for c in conns if c.topic == wanted]
        if not named:
            raise MediaError(
                f"rosbag2 {path} has no topic {wanted} "
                f"(its {kind} topics: {', '.join(sorted({c.topic for c in found})) or 'none'})"
            )
        if named[0].msgtype not in types:
            raise MediaError(f"topic {wanted} in {path} is {named[0].msgtype}, not {kind} ({', '.join(types)})")
        return named
    topics = sorted({c.topic for c in found})
    if len(topics) > 1:
        raise MediaError(
            f"rosbag2 {path} has {len(topics)} {kind} topics ({', '.join(topics)}): choose one with --{kind}-topic"
        )
    return found or None


def _time(msg, bag_ns: int) -> float:
    from robot_emotion.sources.ros_types import stamp_of

    s = stamp_of(msg)
    return s if s is not None else bag_ns * 1e-9


def _pcm(msg, rate: int, channels: int) -> tuple[np.ndarray, int, int]:
    """(float samples, rate, channels) of any of the three audio message types."""
    a = getattr(msg, "audio", msg)  # AudioDataStamped / AudioStamped -> inner
    info = getattr(a, "info", None)
    if hasattr(a, "audio_data"):  # ROS 2 audio_common: typed arrays + info
        d = a.audio_data
        for name, scale in (
            ("int16_data", 32768.0),
            ("float32_data", 1.0),
            ("int32_data", 2.0**31),
            ("int8_data", 128.0),
        ):
            x = np.asarray(getattr(d, name))
            if x.size:
                break
        else:
            x, scale = (np.asarray(d.uint8_data, np.float32) - 128.0), 128.0
        samples = x.astype(np.float32) / scale
    else:  # ros-drivers: PCM S16LE bytes
        raw = np.asarray(a.data, np.uint8).tobytes()
        samples = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    if info is not None and getattr(info, "rate", 0) > 0:
        rate, channels = int(info.rate), max(1, int(info.channels))
    return samples, rate, channels


def open_bag(path: Path, cfg) -> tuple[np.ndarray, object, dict]:
    """(16 kHz mono int16 audio, frames factory or None, meta) of a rosbag2 folder."""
    with _reader(path) as r:
        audio_c = _pick(r.connections, AUDIO_TYPES, cfg.audio_topic, "audio", path)
        image_c = _pick(r.connections, IMAGE_TYPES, cfg.image_topic, "image", path)
        if audio_c is None:
            raise MediaError(
                f"rosbag2 {path} has no audio topic ({', '.join(AUDIO_TYPES)}); the node needs speech to segment"
            )
        chunks, rate, channels = [], cfg.audio_rate, cfg.audio_channels
        for conn, bag_ns, raw in r.messages(connections=audio_c):
            msg = r.deserialize(raw, conn.msgtype)
            x, rate, channels = _pcm(msg, rate, channels)
            chunks.append((_time(msg, bag_ns), x))
        first_image = None
        if image_c is not None:
            for conn, bag_ns, raw in r.messages(connections=image_c):
                first_image = _time(r.deserialize(raw, conn.msgtype), bag_ns)
                break
    if not chunks:
        raise MediaError(f"rosbag2 {path}: the audio topic holds no messages")
    t0 = min([chunks[0][0]] + ([first_image] if first_image is not None else []))
    parts, pos = [], 0  # lay the chunks on the timeline, at the native rate
    for t, x in chunks:
        x = x[: x.size // channels * channels].reshape(-1, channels)
        at = int(round((t - t0) * rate))
        if at > pos + GAP_S * rate:
            parts.append(np.zeros((at - pos, channels), np.float32))
            pos = at
        parts.append(x)
        pos += x.shape[0]
    x = np.concatenate(parts)
    if rate == SAMPLE_RATE and channels == 1:  # int16 PCM comes back bit-exact
        audio = np.clip(np.round(x[:, 0] * 32768.0), -32768, 32767).astype(np.int16)
    else:
        audio = to_mono_16k(x, rate)
    frames = (lambda: _frames(path, image_c[0].topic, t0)) if image_c is not None else None
    return (
        audio,
        frames,
        {
            "unix_start": t0,
            "source": str(path),
            "bag": {
                "audio_topic": audio_c[0].topic,
                "audio_rate": rate,
                "channels": channels,
                "image_topic": image_c[0].topic if image_c else None,
            },
        },
    )


def _image(msg) -> np.ndarray:
    import cv2

    if hasattr(msg, "format"):  # CompressedImage
        bgr = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"a CompressedImage ({msg.format}) did not decode")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    enc, h, w = msg.encoding.lower(), int(msg.height), int(msg.width)
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc)
    if ch is None:
        raise MediaError(f"unsupported Image encoding {msg.encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8)")
    x = np.asarray(msg.data, np.uint8).reshape(h, int(msg.step))[:, : w * ch].reshape(h, w, ch)
    conv = {
        "bgr8": cv2.COLOR_BGR2RGB,
        "rgba8": cv2.COLOR_RGBA2RGB,
        "bgra8": cv2.COLOR_BGRA2RGB,
        "mono8": cv2.COLOR_GRAY2RGB,
    }.get(enc)
    return np.ascontiguousarray(cv2.cvtColor(x, conv) if conv is not None else x)


def _frames(path: Path, topic: str, t0: float):
    """(session time, RGB) of the image topic in time order (a late frame is skipped)."""
    last = -1e9
    with _reader(path) as r:
        conns = [c for c in r.connections if c.topic == topic]
        for conn, bag_ns, raw in r.messages(connections=conns):
            msg = r.deserialize(raw, conn.msgtype)
            t = _time(msg, bag_ns) - t0
            if t <= last:
                continue
            last = t
            yield t, _image(msg)
