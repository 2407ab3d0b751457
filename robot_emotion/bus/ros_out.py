"""``replay --bag OUT``: the node's messages as ROS4HRI-shaped ROS 2 messages in a rosbag2.

One bag message per ZeroMQ message (the counts match, topic by topic), plus the lists and
links ROS4HRI keeps beside them (README "ROS 2"):

  utterance      -> hri_msgs/LiveSpeech  /humans/voices/<speaker>/speech  (final or incremental text)
                    final with a speaker: + hri_msgs/IdsList /humans/voices/tracked (voices heard so far)
                    final with a person:  + std_msgs/String  /humans/persons/<id>/voice_id
  emotion        -> hri_msgs/Expression  /humans/voices/<speaker>/expression (label, valence, arousal)
  speech.start   -> std_msgs/Bool        /humans/voices/<speaker>/is_speaking  (true)
  speech.end     -> std_msgs/Bool        /humans/voices/<speaker>/is_speaking  (false)
  face           -> hri_msgs/IdsList     /humans/faces/tracked, + one hri_msgs/Expression per
                    track on /humans/faces/<id>/expression
  anything else  -> std_msgs/String      /robot_emotion/<topic> (the JSON body: ready, status, ...)

A voice without a speaker id is ``anonymous_speaker`` (REP-155's name for it). Header stamps
are on the capture clock: the session's ``unix_start`` (from ``ready``) plus the message's
capture time (``end`` of a turn, ``start``/``end`` of a segment, ``t`` otherwise); the bag's own
timestamps are the same, so a replay writes the same bag at any speed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS
from robot_emotion.errors import UsageError

ANONYMOUS = "anonymous_speaker"


def _safe(name) -> str:
    """A ROS topic name token: letters, digits and '_' (ROS ids may not hold '.', '-')."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)) or ANONYMOUS


def check_bag_path(path: str | Path) -> None:
    p = Path(path)
    if p.exists():
        raise UsageError(f"--bag {p}: it exists (rosbag2 writes a new folder)")
    if not p.parent.is_dir():
        raise UsageError(f"--bag {p}: folder {p.parent} does not exist")


class BagSink:
    """A sink (called on the publisher thread) that writes each body into a rosbag2."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        from robot_emotion.sources.ros_types import typestore

        check_bag_path(path)
        self.name, self.path = str(path), Path(path)
        self.store = typestore("drivers")
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=9, storage_plugin=plugin)
        self.writer.open()
        self._conns: dict[str, object] = {}
        self._lock = threading.Lock()
        self.origin = 0.0
        self.voices: list[str] = []
        self.counts: dict[str, int] = {}  # bag topic -> messages written

    def _write(self, topic: str, msgtype: str, msg, stamp: float) -> None:
        if topic not in self._conns:
            self._conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.store)
        data = self.store.serialize_cdr(msg, msgtype)
        from robot_emotion.sources.ros_types import to_ns

        self.writer.write(self._conns[topic], to_ns(stamp), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _header(self, t: float):
        from robot_emotion.sources.ros_types import header

        return header(self.store, self.origin + t)

    def _expression(self, probs: dict | None, valence, arousal, t: float):
        T = self.store.types["hri_msgs/msg/Expression"]
        if not probs:
            return T(header=self._header(t), expression="", valence=0.0, arousal=0.0, confidence=0.0)
        from robot_emotion.sources.ros_types import EXPRESSION

        label = max(probs, key=probs.get)
        if valence is None:
            from robot_emotion.bus.messages import valence_arousal

            valence, arousal = valence_arousal(np.array([probs.get(e, 0.0) for e in EMOTIONS]))
        return T(
            header=self._header(t),
            expression=EXPRESSION.get(label, label),
            valence=float(valence),
            arousal=float(arousal),
            confidence=float(probs[label]),
        )

    def __call__(self, body: dict) -> None:
        with self._lock:
            self._convert(body)

    def _convert(self, b: dict) -> None:
        ty, topic = self.store.types, b.get("topic", "")
        if topic == "ready" and b.get("unix_start"):
            self.origin = float(b["unix_start"])
        voice = _safe(b.get("speaker") or ANONYMOUS)
        if topic == "utterance":
            t, text = float(b["end"]), b.get("text") or ""
            final = bool(b.get("final", True))
            msg = ty["hri_msgs/msg/LiveSpeech"](
                header=self._header(t),
                locale=str(b.get("language") or "en"),
                incremental="" if final else text,
                final=text if final else "",
                confidence=float(b.get("asr_confidence") or 0.0),
            )
            self._write(f"/humans/voices/{voice}/speech", "hri_msgs/msg/LiveSpeech", msg, self.origin + t)
            if final and b.get("speaker"):
                if voice not in self.voices:
                    self.voices.append(voice)
                ids = ty["hri_msgs/msg/IdsList"](header=self._header(t), ids=list(self.voices))
                self._write("/humans/voices/tracked", "hri_msgs/msg/IdsList", ids, self.origin + t)
            if final and b.get("person"):
                link = ty["std_msgs/msg/String"](data=voice)
                self._write(
                    f"/humans/persons/{_safe(b['person']['id'])}/voice_id", "std_msgs/msg/String", link, self.origin + t
                )
        elif topic == "emotion":
            t = float(b["end"])
            msg = self._expression(b.get("probs"), b.get("valence"), b.get("arousal"), t)
            self._write(f"/humans/voices/{voice}/expression", "hri_msgs/msg/Expression", msg, self.origin + t)
        elif topic in ("speech.start", "speech.end"):
            t = float(b["start"] if topic == "speech.start" else b["end"])
            self._write(
                f"/humans/voices/{voice}/is_speaking",
                "std_msgs/msg/Bool",
                ty["std_msgs/msg/Bool"](data=topic == "speech.start"),
                self.origin + t,
            )
        elif topic == "face":
            t = float(b["t"])
            tracks = b.get("tracks") or []
            ids = ty["hri_msgs/msg/IdsList"](header=self._header(t), ids=[f"f{tr['id']}" for tr in tracks])
            self._write("/humans/faces/tracked", "hri_msgs/msg/IdsList", ids, self.origin + t)
            for tr in tracks:
                msg = self._expression(tr.get("expression"), None, None, t)
                self._write(f"/humans/faces/f{tr['id']}/expression", "hri_msgs/msg/Expression", msg, self.origin + t)
        else:
            t = b.get("t")
            stamp = self.origin + float(t) if isinstance(t, (int, float)) else float(b.get("stamp") or 0.0)
            self._write(
                f"/robot_emotion/{_safe(topic)}",
                "std_msgs/msg/String",
                ty["std_msgs/msg/String"](data=json.dumps(b, separators=(",", ":"))),
                stamp,
            )

    def close(self) -> None:
        with self._lock:
            self.writer.close()
