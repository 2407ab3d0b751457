"""The robot talks back: a control socket for the behaviour controllers, and the robot's own voice.

Controllers send JSON requests to a ZeroMQ REP socket (``control.endpoint``: loopback or
ipc:// only, since it has no authentication; requests are capped at 64 KiB) and get one JSON reply each (``{"ok": true}`` or ``{"ok": false, "error": ...}``):

  {"cmd": "robot.speaking", "state": "start", "text": "Hello!"}   the robot's TTS starts
  {"cmd": "robot.speaking", "state": "stop"}                      ... and ends (text optional here too)
  {"cmd": "mute"} / {"cmd": "unmute"}                             stop / resume perceiving audio
  {"cmd": "reset"}                                                forget the dialogue history
  {"cmd": "ping"}                                                 ok once the models are loaded

``client.Controller`` wraps them. While the robot speaks, the microphone hears it: a VAD
segment that starts inside a robot-speaking interval (padded for the audio path's latency
and the room's echo) is the robot's, not a person's: it is dropped (``control.robot_voice =
"drop"``, counted in status) or published as speech.start/end with ``speaker: "robot"``
(``"mark"``), never handed to speakers, ASR or emotion. A person talking OVER the robot is
still heard: when the level stays ``control.barge_in_db`` above the robot's own level (its
80th percentile while it speaks) for 150 ms, ``speech.start`` fires with ``barge_in: true``
and that segment is a human one. When the robot stops, its text enters the dialogue history
as the robot's turn (text context for the next human turn) and is published as an
``utterance`` with ``speaker: "robot"`` and ``final: true``.
"""
from __future__ import annotations

import json
import threading
from collections import deque

import numpy as np

from robot_emotion.audio.vad import SpeechEnd, SpeechStart
from robot_emotion.dialogue import Turn
from robot_emotion.errors import say

LEAD_S = 0.2            # audio reaches the VAD a little after the controller says "start"
ECHO_TAIL_S = 0.5       # ... and the room still rings after "stop"
BARGE_IN_S = 0.15       # this long above the robot's level: a person is talking over it
MIN_REFERENCE_S = 0.4   # robot audio needed before its level is trusted
MAX_REQUEST_BYTES = 64 * 1024


class RobotVoice:
    """Robot-speaking intervals, the robot's level, barge-in and mute (audio-thread side)."""

    def __init__(self, barge_in_db: float = 8.0, block_s: float = 0.03):
        self.barge_in_db, self.block_s = barge_in_db, block_s
        self._lock = threading.Lock()
        self.intervals: list[list[float]] = []   # [start, end or inf] in session seconds
        self.text: str | None = None
        self.muted = False
        self._levels: deque[float] = deque(maxlen=400)    # dBFS of blocks while the robot speaks
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
            del self.intervals[:-20]                      # a robot that talks for days
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
            self._levels.append(db)        # barge-in audio must not raise the robot's reference
        if self._above >= BARGE_IN_S and open_id is not None and open_id not in self.barge_in_ids:
            self.barge_in_ids.add(open_id)
            return open_id
        return None

    def is_robot(self, utterance_id: str, start: float) -> bool:
        """A segment that began while the robot spoke, and nobody talked over it."""
        return utterance_id not in self.barge_in_ids and self.covers(start)


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def check_endpoint(endpoint: str, publish_endpoint: str | None = None) -> None:
    """Loopback or ipc:// only: anyone who can reach the socket could mute the node. Not the
    publisher's endpoint, nor an ipc:// path a running socket holds (before models load)."""
    from robot_emotion.errors import UsageError
    from robot_emotion.security import check_ipc_free, parse_endpoint, same_endpoint
    try:
        local = parse_endpoint(endpoint).loopback
    except UsageError as e:
        raise UsageError(str(e).replace("publish.endpoint", "control.endpoint")) from None
    if not local:
        raise UsageError(f"control.endpoint {endpoint!r} must be a loopback address or ipc:// "
                         "(the control socket has no authentication)")
    if publish_endpoint is not None and same_endpoint(endpoint, publish_endpoint):
        raise UsageError(f"control.endpoint {endpoint} is also publish.endpoint ({publish_endpoint}): "
                         "give each socket its own port or path")
    check_ipc_free(endpoint, "control.endpoint")


class ControlServer:
    """A REP socket in its own thread; requests are applied to the node through ``handle``."""

    def __init__(self, endpoint: str, handle, context=None, publish_endpoint: str | None = None):
        self.endpoint, self.handle, self.publish_endpoint = endpoint, handle, publish_endpoint
        self._ctx = context
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: str | None = None
        self.died: str | None = None      # why the thread ended while the node still ran
        self.bound: str | None = None
        self.requests = self.rejected = self.failures = 0
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

    def start(self) -> None:
        from robot_emotion.errors import UsageError
        check_endpoint(self.endpoint, self.publish_endpoint)
        self._thread.start()
        self._ready.wait(5.0)
        if self.error:
            raise UsageError(self.error)

    def _run(self) -> None:
        import zmq
        from robot_emotion.security import server_context
        ctx, own = server_context(zmq, self.endpoint, self._ctx)   # terminated in _close
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)   # a hostile peer cannot grow us
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.endpoint)
            self.bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        except zmq.ZMQError as e:
            self.error = f"cannot bind control socket to {self.endpoint}: {e}"
            self._close(ctx, sock, own)
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart()
                try:
                    reply = json.dumps(self._answer(frames))
                except (TypeError, ValueError):   # a handler's reply that is not JSON
                    reply = json.dumps({"ok": False, "error": "the node's reply was not JSON"})
                sock.send_string(reply)          # REP: every request gets its one reply
        except BaseException as e:        # the socket itself broke: the node must not go on deaf
            self.died = f"control socket {self.endpoint} stopped: {type(e).__name__}: {_one_line(e)}"
            say(f"robot-emotion: error: {self.died}")
        finally:
            self._close(ctx, sock, own)

    @staticmethod
    def _close(ctx, sock, own: bool) -> None:
        sock.close()
        if own:
            ctx.term()

    def _answer(self, frames: list[bytes]) -> dict:
        self.requests += 1
        try:
            req = json.loads(frames[-1].decode("utf-8"))
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ValueError("a request is a JSON object with a string 'cmd'")
            return {"ok": True, **(self.handle(req) or {})}
        except (ValueError, UnicodeDecodeError, TypeError) as e:
            self.rejected += 1
            return {"ok": False, "error": _one_line(e)}
        except Exception as e:   # RecursionError (deep nesting), a bug in a handler: the socket lives on
            self.rejected += 1
            self.failures += 1
            if self.failures <= 10:      # one line each, not a flood from a hostile client
                say(f"robot-emotion: warning: control request refused: {type(e).__name__}: {_one_line(e)}")
            return {"ok": False, "error": f"request failed: {type(e).__name__}"}

    @property
    def state(self) -> str:
        """'running', or 'failed' once the thread has died (status ``control``)."""
        return "failed" if self.died or (self._thread.ident and not self._thread.is_alive()
                                         and not self._stop.is_set()) else "running"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


class NodeControl:
    """The Node's side of it (pipeline.Node mixes this in): the robot's own voice in the audio
    thread (barge-in, its segments dropped or marked), and the controllers' requests (control
    thread)."""

    def _check_barge_in(self, block, samples) -> None:
        seg = self.segmenter.open_segment()
        uid = self.robot.on_block(block.t, samples, seg[0] if seg else None)
        if uid is not None:                    # a person talks over the robot: that is speech
            self.publisher.publish({"topic": "speech.start", "utterance_id": uid, "start": seg[1],
                                    "t": block.t + samples.size / 16000, "barge_in": True,
                                    "speaker": None})

    def _robot_segment(self, ev) -> bool:
        """The robot's own voice (see control.py): dropped or marked, never perceived."""
        if not self.robot.intervals or not self.robot.is_robot(ev.utterance_id, ev.start):
            return False
        if isinstance(ev, SpeechEnd):
            self.robot.robot_segments += 1
        if self.cfg.control.robot_voice == "mark":
            body = {"topic": "speech.start" if isinstance(ev, SpeechStart) else "speech.end",
                    "utterance_id": ev.utterance_id, "start": ev.start, "t": ev.decided_at,
                    "speaker": "robot"}
            if isinstance(ev, SpeechEnd):
                body.update(end=ev.end, forced=ev.forced, dropped=ev.dropped)
            self.publisher.publish(body)
        return True

    def on_control(self, req: dict) -> dict:
        """A controller's request (control.py; control thread)."""
        cmd, t = req["cmd"], self.clock.now()
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
            self.history.clear()
        elif cmd != "ping":                    # ping: is the node up (models loaded)?
            raise ValueError(f"unknown cmd {cmd!r} (robot.speaking, mute, unmute, reset, ping)")
        return {"t": t}

    def _robot_turn(self, start: float, end: float, text: str) -> None:
        """The robot's words: a turn in the dialogue history (context for the next human turn)."""
        self._robot_turns += 1
        uid = f"robot-{self._robot_turns}"
        self.history.add(Turn(uid, "robot", text, start, end))
        self.publisher.publish({"topic": "utterance", "utterance_id": uid, "final": True, "speech": True,
                                "start": start, "end": end, "speaker": "robot", "face_track": None,
                                "text": text, "duration": end - start, "segments": [], "spans": [[start, end]],
                                "forced": False})
