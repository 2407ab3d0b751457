"""Subscriber client for behaviour controllers.

    from robot_emotion.bus.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5556", topics=["emotion"]) as sub:
        for msg in sub:                      # decoded dict bodies
            print(msg["label"], msg["probs"][msg["label"]])

Sequence numbers are per topic; ``sub.gaps`` counts messages missed (e.g. dropped at a
full high-water mark or sent before we connected). Anything on the wire that is not a
well-formed message (wrong frame count, not UTF-8 JSON, not an object, a missing or mistyped
``topic``/``seq``/``session``, a known topic without its required fields) is skipped and
counted in ``sub.malformed`` (the last reason in ``sub.last_malformed``): a controller never
crashes on someone else's bytes. With ``server_key`` + ``client_key`` the socket uses CURVE
(README "ZeroMQ API": ``robot-emotion keys``).
"""

from __future__ import annotations

import json
import time
from typing import Iterator

from robot_emotion.bus import messages


class MalformedMessage(ValueError):
    pass


def parse_message(frames: list[bytes]) -> dict:
    """The body of a [topic, JSON] message, or MalformedMessage saying what is wrong."""
    if len(frames) != 2:
        raise MalformedMessage(f"expected 2 frames [topic, json], got {len(frames)}")
    try:
        topic = frames[0].decode("utf-8")
        body = json.loads(frames[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedMessage(f"body is not UTF-8 JSON: {type(e).__name__}") from None
    if not isinstance(body, dict):
        raise MalformedMessage(f"body is a JSON {type(body).__name__}, not an object")
    if body.get("topic") != topic:
        raise MalformedMessage(f"body topic {body.get('topic')!r} differs from the topic frame {topic!r}")
    seq = body.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MalformedMessage(f"{topic}: seq must be an integer >= 0, got {seq!r}")
    if not isinstance(body.get("session"), str):
        raise MalformedMessage(f"{topic}: session must be a string, got {body.get('session')!r}")
    # unknown topics (a newer node) pass with a valid envelope; known ones carry their fields
    missing = [k for k in messages.REQUIRED.get(topic, ()) if k not in body]
    if missing:
        raise MalformedMessage(f"{topic} message missing {missing}")
    return body


class _Socket:
    """One ZeroMQ socket, closed on ``close()`` or at the end of a ``with`` block."""

    sock = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Subscriber(_Socket):
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5556",
        topics: list[str] = ("",),
        rcvhwm: int = 1000,
        context=None,
        server_key=None,
        client_key=None,
        watch: bool = False,
    ):
        """server_key: the server's public key (server.key, or its 40-character Z85 text);
        client_key: this client's key pair file (client.key_secret); watch: follow the
        connection (``connection()``: did anything answer, was the handshake refused)."""
        import zmq

        from robot_emotion.bus.security import configure_client_socket

        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.SUB)
        try:
            configure_client_socket(self.sock, server_key, client_key)
        except Exception:
            self.sock.close(0)
            raise
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if endpoint.startswith("tcp://["):
            self.sock.setsockopt(zmq.IPV6, 1)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self._mon = self.sock.get_monitor_socket() if watch else None  # before connect: every event
        self._state = {"connected": False, "handshake": None}
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            from robot_emotion.errors import UsageError

            raise UsageError(f"cannot connect to {endpoint!r}: {zmq.strerror(e.errno)}") from None
        self._last: dict[tuple[str, str], int] = {}
        self.gaps = 0
        self.received = 0
        self.malformed = 0
        self.last_malformed: str | None = None

    def recv(self, timeout_ms: int | None = None) -> dict | None:
        """The next well-formed message, or None if none came within timeout_ms."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while True:
            if deadline is not None:
                left_ms = max(0, int((deadline - time.monotonic()) * 1000))
                if not self.sock.poll(left_ms):
                    return None
            try:
                body = parse_message(self.sock.recv_multipart())
            except MalformedMessage as e:
                self.malformed += 1
                self.last_malformed = str(e)
                continue
            key = (body["session"], body["topic"])
            last = self._last.get(key)
            if last is not None and body["seq"] > last + 1:
                self.gaps += body["seq"] - last - 1
            self._last[key] = body["seq"]
            self.received += 1
            return body

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield self.recv()

    def connection(self) -> dict:
        """(watch=True) {"connected": a peer accepted the connection, "handshake": None, "ok",
        "refused" (the server's authenticator denied this client's key) or "failed" (wrong
        server key, or CURVE on one side only)}."""
        if self._mon is None:
            return dict(self._state)
        from zmq.utils.monitor import recv_monitor_message

        zmq = self._zmq
        while self._mon.poll(0):
            event = recv_monitor_message(self._mon)["event"]
            if event == zmq.EVENT_CONNECTED:
                self._state["connected"] = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._state["handshake"] = "ok"
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._state["handshake"] = "refused"
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._state["handshake"] = "failed"
        return dict(self._state)

    def close(self) -> None:
        if getattr(self, "_mon", None) is not None:
            self.sock.disable_monitor()
            self._mon.close(0)
            self._mon = None
        self.sock.close()


class Controller(_Socket):
    """Tell the node what the robot does (its control socket, README "Control API").

        from robot_emotion.bus.client import Controller
        with Controller("tcp://127.0.0.1:5557") as ctl:
            ctl.robot_speaking("Hello, how are you?")   # the robot's TTS starts
            ...                                          # play the speech
            ctl.robot_done()                             # its words become the robot's turn
            ctl.mute(); ctl.unmute(); ctl.reset()

    Every call waits for the node's reply (``timeout_ms``) and raises ``RuntimeError`` with
    the node's message if the request was refused, ``TimeoutError`` if no reply came.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5557", timeout_ms: int = 2000, context=None):
        import zmq

        self._zmq, self.endpoint, self.timeout_ms = zmq, endpoint, timeout_ms
        self._ctx = context or zmq.Context.instance()
        self._connect()

    def _connect(self) -> None:
        self.sock = self._ctx.socket(self._zmq.REQ)
        self.sock.setsockopt(self._zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def request(self, cmd: str, **fields) -> dict:
        import json

        self.sock.send_string(json.dumps({"cmd": cmd, **fields}))
        if not self.sock.poll(self.timeout_ms):
            self.sock.close()  # a REQ socket without its reply is stuck: start afresh
            self._connect()
            raise TimeoutError(f"no reply from {self.endpoint} within {self.timeout_ms} ms")
        reply = json.loads(self.sock.recv())
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error", "refused"))
        return reply

    def wait_ready(self, timeout_s: float = 120.0) -> dict:
        """Until the node answers ``ping`` (its models take 10-20 s to load on a small CPU)."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.request("ping")
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def robot_speaking(self, text: str | None = None) -> dict:
        return self.request("robot.speaking", state="start", text=text)

    def robot_done(self, text: str | None = None) -> dict:
        return self.request("robot.speaking", state="stop", text=text)

    def mute(self) -> dict:
        return self.request("mute")

    def unmute(self) -> dict:
        return self.request("unmute")

    def reset(self) -> dict:
        return self.request("reset")
