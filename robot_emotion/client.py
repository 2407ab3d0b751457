"""Subscriber client for behaviour controllers.

    from robot_emotion.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5556", topics=["emotion"]) as sub:
        for msg in sub:                      # decoded dict bodies
            print(msg["label"], msg["probs"][msg["label"]])

Sequence numbers are per topic; ``sub.gaps`` counts messages missed (e.g. dropped at a
full high-water mark or sent before we connected).
"""
from __future__ import annotations

from typing import Iterator

from robot_emotion import messages


class Subscriber:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:5556", topics: list[str] = ("",),
                 rcvhwm: int = 1000, context=None):
        import zmq
        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(endpoint)
        self._last: dict[tuple[str, str], int] = {}
        self.gaps = 0
        self.received = 0

    def recv(self, timeout_ms: int | None = None) -> dict | None:
        """One decoded message, or None on timeout."""
        if timeout_ms is not None and not self.sock.poll(timeout_ms):
            return None
        body = messages.decode(self.sock.recv_multipart())
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

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
