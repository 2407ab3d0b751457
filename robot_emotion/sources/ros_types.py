"""ROS 2 message types for rosbag2 in and out, without ROS on the machine (``rosbags``).

rosbags ships the common ROS 2 types (std_msgs, sensor_msgs); the audio and ROS4HRI ones
are defined here from their .msg files and registered in a typestore:

* audio_common_msgs, two generations that share a package name: ros-drivers/audio_common
  (``AudioData``: ``uint8[] data`` of PCM bytes, ``AudioDataStamped``) and the ROS 2
  audio_common (``AudioStamped``: header + ``Audio`` {``AudioData`` with int16/float32/...
  arrays, ``AudioInfo`` rate/channels}). Their ``AudioData`` clash, so the typestore used for
  a bag without stored definitions holds the ros-drivers one; MCAP bags (and sqlite3 bags
  from Iron on) carry their own definitions, which win (AnyReader reads them).
* hri_msgs (ROS4HRI, REP-155): ``LiveSpeech``, ``Expression``, ``IdsList``, as in hri_msgs
  2.x. The output bag stores these definitions, so a reader needs no hri_msgs package.
"""

from __future__ import annotations

import numpy as np

from robot_emotion.errors import InputError

PIP_HINT = "pip install 'robot-emotion[ros]' (or: pip install rosbags==0.11.9)"

AUDIO_DRIVERS = {
    "audio_common_msgs/msg/AudioData": "uint8[] data\n",
    "audio_common_msgs/msg/AudioDataStamped": "std_msgs/Header header\naudio_common_msgs/AudioData audio\n",
    "audio_common_msgs/msg/AudioInfo": (
        "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\nstring coding_format\n"
    ),
}
# the ROS 2 audio_common (AudioStamped); registered only where a bag lacks its definitions
AUDIO_ROS2 = {
    "audio_common_msgs/msg/AudioData": (
        "float32[] float32_data\nint32[] int32_data\nint16[] int16_data\nint8[] int8_data\nuint8[] uint8_data\n"
    ),
    "audio_common_msgs/msg/AudioInfo": "int32 format\nint32 channels\nint32 rate\nint32 chunk\n",
    "audio_common_msgs/msg/Audio": "audio_common_msgs/AudioData audio_data\naudio_common_msgs/AudioInfo info\n",
    "audio_common_msgs/msg/AudioStamped": "std_msgs/Header header\naudio_common_msgs/Audio audio\n",
}
HRI = {
    "hri_msgs/msg/IdsList": "std_msgs/Header header\nstring[] ids\n",
    "hri_msgs/msg/LiveSpeech": (
        "std_msgs/Header header\nstring locale\nstring incremental\nstring final\nfloat64 confidence\n"
    ),
    "hri_msgs/msg/Expression": (
        "std_msgs/Header header\n"
        'string NEUTRAL="neutral"\nstring ANGRY="angry"\nstring SAD="sad"\nstring HAPPY="happy"\n'
        'string SURPRISED="surprised"\nstring DISGUSTED="disgusted"\nstring SCARED="scared"\n'
        "string expression\nfloat32 valence\nfloat32 arousal\nfloat32 confidence\n"
    ),
}
# MELD's seven labels -> hri_msgs/Expression constants
EXPRESSION = {
    "neutral": "neutral",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprise": "surprised",
    "fear": "scared",
    "disgust": "disgusted",
}


def _rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise InputError(f"rosbag2 support needs the rosbags library: {PIP_HINT}") from None


def typestore(audio: str = "drivers"):
    """A ROS 2 Humble typestore with the audio (``drivers`` or ``ros2``) and hri_msgs types."""
    _rosbags()
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name, text in {**(AUDIO_DRIVERS if audio == "drivers" else AUDIO_ROS2), **HRI}.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def header(store, stamp: float, frame_id: str = ""):
    """std_msgs/Header at unix seconds ``stamp`` (the capture clock)."""
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    ns = to_ns(stamp)
    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id=frame_id)


def to_ns(stamp: float) -> int:
    """Unix seconds -> integer nanoseconds; seconds and fraction apart (stamp * 1e9 in one
    float64 would round to ~256 ns at today's epoch)."""
    sec = int(np.floor(stamp))
    return max(0, sec * 1_000_000_000 + int(round((stamp - sec) * 1e9)))


def stamp_of(msg) -> float | None:
    h = getattr(msg, "header", None)
    if h is None:
        return None
    s = h.stamp.sec + h.stamp.nanosec * 1e-9
    return s if s > 0 else None
