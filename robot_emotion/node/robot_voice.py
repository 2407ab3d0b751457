"""The robot's own voice, and what the controllers' requests do to the node.

Requests arrive on the control socket (bus/control.py; ``bus.client.Controller`` sends them):
robot.speaking start/stop, mute/unmute, reset, ping.

While the robot speaks, the microphone hears it: a VAD segment that starts inside a
robot-speaking interval (padded for the audio path's latency and the room's echo) is the
robot's, not a person's: it is dropped (``control.robot_voice = "drop"``, counted in status)
or published as speech.start/end with ``speaker: "robot"`` (``"mark"``), never handed to
speakers, ASR or emotion. A person talking OVER the robot is still heard: when the level stays
``control.barge_in_db`` above the robot's own level (its 80th percentile while it speaks) for
150 ms, ``speech.start`` fires with ``barge_in: true`` and that segment is a human one. When
the robot stops, its text enters the dialogue history as the robot's turn (text context for
the next human turn) and is published as an ``utterance`` with ``speaker: "robot"`` and
``final: true``.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from robot_emotion.audio.vad import SpeechEnd, SpeechStart
from robot_emotion.bus import messages
from robot_emotion.node.dialogue import DialogueTurn

LEAD_S = 0.2  # audio reaches the VAD a little after the controller says "start"
ECHO_TAIL_S = 0.5  # ... and the room still rings after "stop"
BARGE_IN_S = 0.15  # this long above the robot's level: a person is talking over it
MIN_REFERENCE_S = 0.4  # robot audio needed before its level is trusted


class RobotVoice:
    """Robot-speaking intervals, the robot's level, barge-in and mute (audio-thread side)."""

    def __init__(self, barge_in_db: float = 8.0, block_s: float = 0.03):
        self.barge_in_db, self.block_s = barge_in_db, block_s
        self._lock = threading.Lock()
        self.intervals: list[list[float]] = []  # [start, end or inf] in session seconds
        self.text: str | None = None
        self.muted = False
        self._levels: deque[float] = deque(maxlen=400)  # dBFS of blocks while the robot speaks
        self._above = 0.0
        self.barge_in_ids: set[str] = set()
        self.robot_segments = 0

    # ---- control side -------------------------------------------------------------------
    def start(self, t: float, text: str | None) -> None:
        with self._lock:
            if not self.speaking:
                self.intervals.append([t, float("inf")])
                self._levels.clear()
                self._above = 0.0
            self.text = text or self.text

    def stop(self, t: float, text: str | None) -> tuple[float, float, str | None] | None:
        """(start, end, text) of the robot's turn that just ended, or None if it was not speaking."""
        with self._lock:
            if not self.speaking:
                return None
            self.intervals[-1][1] = t
            del self.intervals[:-20]  # a robot that talks for days
            turn = (self.intervals[-1][0], t, text or self.text)
            self.text = None
            return turn

    @property
    def speaking(self) -> bool:
        return bool(self.intervals) and self.intervals[-1][1] == float("inf")

    # ---- audio side ---------------------------------------------------------------------
    def covers(self, t: float) -> bool:
        """Is capture time t inside a robot-speaking interval (padded)?"""
        with self._lock:
            return any(a - LEAD_S <= t <= b + ECHO_TAIL_S for a, b in self.intervals)

    def on_block(self, t: float, samples: np.ndarray, open_id: str | None) -> str | None:
        """Track the robot's level; returns the open segment's id when a barge-in starts now."""
        if not self.covers(t):
            self._above = 0.0
            return None
        x = samples.astype(np.float32) / 32768.0
        db = 10.0 * np.log10(float(np.mean(x * x)) + 1e-10)
        n_ref = len(self._levels)
        ref = float(np.percentile(self._levels, 80)) if n_ref * self.block_s >= MIN_REFERENCE_S else None
        if ref is not None and db > ref + self.barge_in_db:
            self._above += x.size / 16000.0
        else:
            self._above = 0.0
            self._levels.append(db)  # barge-in audio must not raise the robot's reference
        if self._above >= BARGE_IN_S and open_id is not None and open_id not in self.barge_in_ids:
            self.barge_in_ids.add(open_id)
            return open_id
        return None

    def is_robot(self, utterance_id: str, start: float) -> bool:
        """A segment that began while the robot spoke, and nobody talked over it."""
        return utterance_id not in self.barge_in_ids and self.covers(start)


class RobotVoiceControl:
    """The Node's side of it, composed into the Node: the robot's own voice in the audio thread
    (barge-in, its segments dropped or marked) and the controllers' requests (control thread).
    ``publish`` sends one message body; ``history`` is the dialogue history; ``open_segment()``
    says which VAD segment is open (id, start) or None."""

    def __init__(self, robot: RobotVoice, robot_voice: str, publish, history, clock, open_segment):
        self.robot, self.robot_voice = robot, robot_voice
        self._publish, self._history, self._clock, self._open_segment = publish, history, clock, open_segment
        self._robot_turns = 0

    def check_barge_in(self, t: float, samples) -> None:
        seg = self._open_segment()
        uid = self.robot.on_block(t, samples, seg[0] if seg else None)
        if uid is not None:  # a person talks over the robot: that is speech
            self._publish(messages.speech_start(uid, seg[1], t + samples.size / 16000, barge_in=True))

    def robot_segment(self, ev) -> bool:
        """Is this VAD event the robot's own voice? Then it is dropped or marked, never perceived."""
        if not self.robot.intervals or not self.robot.is_robot(ev.utterance_id, ev.start):
            return False
        if isinstance(ev, SpeechEnd):
            self.robot.robot_segments += 1
        if self.robot_voice == "mark":
            if isinstance(ev, SpeechStart):
                self._publish(messages.speech_start(ev.utterance_id, ev.start, ev.decided_at, speaker="robot"))
            else:
                self._publish(
                    messages.speech_end(
                        ev.utterance_id, ev.start, ev.end, ev.decided_at, ev.forced, ev.dropped, speaker="robot"
                    )
                )
        return True

    def on_control(self, req: dict) -> dict:
        """A controller's request (bus/control.py; control thread)."""
        cmd, t = req["cmd"], self._clock.now()
        if cmd == "robot.speaking":
            state, text = req.get("state"), req.get("text")
            if state not in ("start", "stop") or not (text is None or isinstance(text, str)):
                raise ValueError("robot.speaking needs state 'start' or 'stop' and an optional text string")
            if state == "start":
                self.robot.start(t, text)
            else:
                turn = self.robot.stop(t, text)
                if turn is not None and turn[2]:
                    self._robot_turn(*turn)
        elif cmd in ("mute", "unmute"):
            self.robot.muted = cmd == "mute"
        elif cmd == "reset":
            self._history.clear()
        elif cmd != "ping":  # ping: is the node up (models loaded)?
            raise ValueError(f"unknown cmd {cmd!r} (robot.speaking, mute, unmute, reset, ping)")
        return {"t": t}

    def _robot_turn(self, start: float, end: float, text: str) -> None:
        """The robot's words: a turn in the dialogue history (context for the next human turn)."""
        self._robot_turns += 1
        uid = f"robot-{self._robot_turns}"
        self._history.add(DialogueTurn(uid, "robot", text, start, end))
        self._publish(
            messages.utterance(
                uid, final=True, start=start, end=end, speaker="robot", text=text, segments=[], spans=[[start, end]]
            )
        )
