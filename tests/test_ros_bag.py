"""ROS 2 without ROS: a rosbag2 written here (real speech + a real face video) replays through
the node, and the node's ROS4HRI-shaped output bag reads back with rosbags, its message
counts equal to the ZeroMQ stream's."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from conftest import FACE_CLIP, SHARED, run_cli, shared_file

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install 'robot-emotion[ros]')")

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from robot_emotion.config import BagConfig
from robot_emotion.media import iter_video
from robot_emotion.sources.ros_types import header, to_ns, typestore
from robot_emotion.sources.replay import open_recording

LIBRI = SHARED / "speech" / "librispeech"
T0 = 1_760_000_000.25  # the robot's capture clock (unix seconds) at the first message


def speech() -> np.ndarray:
    gap = np.zeros(16000, np.float32)
    parts = [gap]
    for name in ("spk1_snt1", "spk2_snt1"):
        x, sr = sf.read(shared_file(LIBRI / f"{name}.wav"), dtype="float32")
        assert sr == 16000
        parts += [x, gap]
    return (np.concatenate(parts) * 32767).astype(np.int16)


def write_bag(path, storage, audio: np.ndarray, ros2_audio: bool, compressed: bool, fps=5.0):
    """100 ms audio chunks and camera frames of the real face video, as a robot records them."""
    import cv2

    ts = typestore("ros2" if ros2_audio else "drivers")
    T = ts.types
    atype = "audio_common_msgs/msg/AudioStamped" if ros2_audio else "audio_common_msgs/msg/AudioData"
    itype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    dur = audio.size / 16000
    frames = []
    for t, rgb in iter_video(shared_file(FACE_CLIP)):  # every 1/fps s of the video
        if t < dur and (not frames or t >= frames[-1][0] + 1 / fps - 1e-6):
            frames.append((t, rgb))
    with Writer(path, version=9, storage_plugin=storage) as w:
        ca = w.add_connection("/audio/audio", atype, typestore=ts)
        ci = w.add_connection("/camera/image_raw" + ("/compressed" if compressed else ""), itype, typestore=ts)
        events = []
        for i in range(0, audio.size, 1600):
            t, x = i / 16000, audio[i : i + 1600]
            if ros2_audio:
                data = T["audio_common_msgs/msg/AudioData"](
                    float32_data=np.zeros(0, np.float32),
                    int32_data=np.zeros(0, np.int32),
                    int16_data=x.copy(),
                    int8_data=np.zeros(0, np.int8),
                    uint8_data=np.zeros(0, np.uint8),
                )
                info = T["audio_common_msgs/msg/AudioInfo"](format=8, channels=1, rate=16000, chunk=1600)
                msg = T[atype](
                    header=header(ts, T0 + t), audio=T["audio_common_msgs/msg/Audio"](audio_data=data, info=info)
                )
            else:
                msg = T[atype](data=np.frombuffer(x.astype("<i2").tobytes(), np.uint8))
            events.append((t, ca, atype, msg))
        for t, rgb in frames:
            if compressed:
                ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                msg = T[itype](header=header(ts, T0 + t, "camera"), format="jpeg", data=jpg.ravel())
            else:
                h, w_ = rgb.shape[:2]
                msg = T[itype](
                    header=header(ts, T0 + t, "camera"),
                    height=h,
                    width=w_,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=w_ * 3,
                    data=rgb.ravel().copy(),
                )
            events.append((t, ci, itype, msg))
        for t, conn, typ, msg in sorted(events, key=lambda e: e[0]):
            w.write(conn, to_ns(T0 + t), ts.serialize_cdr(msg, typ))
    return frames


def test_sqlite3_bag_with_raw_audio_and_images_reads_exactly(tmp_path):
    audio = speech()
    frames = write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, audio, ros2_audio=False, compressed=False)
    rec = open_recording(tmp_path / "bag", bag=BagConfig())
    # AudioData has no header: bag times; 100 ms chunks back to back give the same samples
    assert rec.audio.size == audio.size and np.array_equal(rec.audio, audio)
    assert rec.meta["unix_start"] == pytest.approx(T0) and rec.meta["bag"]["image_topic"] == "/camera/image_raw"
    got = list(rec.frames())
    assert len(got) == len(frames)
    assert [t for t, _ in got] == pytest.approx([t for t, _ in frames], abs=1e-6)
    assert np.array_equal(got[3][1], frames[3][1])  # rgb8 pixels unchanged
    r = run_cli("replay", str(tmp_path / "bag"), "--audio-topic", "/nope", "--quiet")
    assert r.returncode == 3 and "no topic /nope" in r.stderr and r.stderr.count("\n") == 1


def test_mcap_bag_replays_and_the_output_bag_matches_the_stream(tmp_path):
    audio = speech()
    write_bag(tmp_path / "in", StoragePlugin.MCAP, audio, ros2_audio=True, compressed=True)
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    r = run_cli(
        "replay",
        str(tmp_path / "in"),
        "--bag",
        str(out),
        "--out",
        str(events),
        "--quiet",
        "--set",
        'publish.endpoint="tcp://127.0.0.1:*"',
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    stream = [json.loads(line) for line in events.read_text().splitlines()]
    ready = next(m for m in stream if m["topic"] == "ready")
    assert ready["unix_start"] == pytest.approx(T0)
    finals = [m for m in stream if m["topic"] == "utterance" and m["final"]]
    assert len(finals) == 2 and all(m["text"] for m in finals)
    assert any(m["topic"] == "face" and m["tracks"] for m in stream)  # the face video came through
    with AnyReader([out]) as reader:  # the definitions travel in the bag: no typestore given
        counts = Counter(c.topic for c in reader.connections for _ in reader.messages(connections=[c]))
        speech_msgs = [
            (reader.deserialize(raw, c.msgtype), c.topic)
            for c, _, raw in reader.messages([c for c in reader.connections if c.topic.endswith("/speech")])
        ]
    by = Counter(m["topic"] for m in stream)

    def total(suffix):
        return sum(n for topic, n in counts.items() if topic.endswith(suffix))

    assert total("/speech") == by["utterance"]
    assert total("/expression") - sum(n for t, n in counts.items() if t.startswith("/humans/faces/f")) == by["emotion"]
    assert total("/is_speaking") == by["speech.start"] + by["speech.end"]
    assert counts["/humans/faces/tracked"] == by["face"]
    assert sum(n for t, n in counts.items() if t.startswith("/humans/faces/f")) == sum(
        len(m["tracks"]) for m in stream if m["topic"] == "face"
    )
    for topic in set(by) - {"utterance", "emotion", "speech.start", "speech.end", "face"}:
        assert counts[f"/robot_emotion/{topic.replace('.', '_')}"] == by[topic], topic
    # the final transcripts, on the capture clock
    finals_ros = [
        (m.final, m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, topic) for m, topic in speech_msgs if m.final
    ]
    assert [f[0] for f in finals_ros] == [m["text"] for m in finals]
    assert [f[1] for f in finals_ros] == pytest.approx([T0 + m["end"] for m in finals], abs=1e-6)
    assert finals_ros[0][2] == f"/humans/voices/{finals[0]['speaker']}/speech"
