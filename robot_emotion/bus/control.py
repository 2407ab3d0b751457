"""The control socket: behaviour controllers send JSON requests to a ZeroMQ REP socket
(``control.endpoint``: loopback or ipc:// only, since it has no authentication; requests are
capped at 64 KiB) and get one JSON reply each (``{"ok": true}`` or ``{"ok": false, "error": ...}``):

  {"cmd": "robot.speaking", "state": "start", "text": "Hello!"}   the robot's TTS starts
  {"cmd": "robot.speaking", "state": "stop"}                      ... and ends (text optional here too)
  {"cmd": "mute"} / {"cmd": "unmute"}                             stop / resume perceiving audio
  {"cmd": "reset"}                                                forget the dialogue history
  {"cmd": "ping"}                                                 ok once the models are loaded

``bus.client.Controller`` wraps them. What the node does with them: node/robot_voice.py.
"""

from __future__ import annotations

import json
import threading

from robot_emotion.errors import say

MAX_REQUEST_BYTES = 64 * 1024


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def check_endpoint(endpoint: str, publish_endpoint: str | None = None) -> None:
    """Loopback or ipc:// only: anyone who can reach the socket could mute the node. Not the
    publisher's endpoint, nor an ipc:// path a running socket holds (before models load)."""
    from robot_emotion.errors import UsageError
    from robot_emotion.bus.security import check_ipc_free, parse_endpoint, same_endpoint

    try:
        local = parse_endpoint(endpoint).loopback
    except UsageError as e:
        raise UsageError(str(e).replace("publish.endpoint", "control.endpoint")) from None
    if not local:
        raise UsageError(
            f"control.endpoint {endpoint!r} must be a loopback address or ipc:// "
            "(the control socket has no authentication)"
        )
    if publish_endpoint is not None and same_endpoint(endpoint, publish_endpoint):
        raise UsageError(
            f"control.endpoint {endpoint} is also publish.endpoint ({publish_endpoint}): "
            "give each socket its own port or path"
        )
    check_ipc_free(endpoint, "control.endpoint")


class ControlServer:
    """A REP socket in its own thread; requests are applied to the node through ``handle``."""

    def __init__(self, endpoint: str, handle, context=None, publish_endpoint: str | None = None):
        self.endpoint, self.handle, self.publish_endpoint = endpoint, handle, publish_endpoint
        self._ctx = context
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: str | None = None
        self.died: str | None = None  # why the thread ended while the node still ran
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
        from robot_emotion.bus.security import server_context

        ctx, own = server_context(zmq, self.endpoint, self._ctx)  # terminated in _close
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)  # a hostile peer cannot grow us
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
                except (TypeError, ValueError):  # a handler's reply that is not JSON
                    reply = json.dumps({"ok": False, "error": "the node's reply was not JSON"})
                sock.send_string(reply)  # REP: every request gets its one reply
        except BaseException as e:  # the socket itself broke: the node must not go on deaf
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
        except Exception as e:  # RecursionError (deep nesting), a bug in a handler: the socket lives on
            self.rejected += 1
            self.failures += 1
            if self.failures <= 10:  # one line each, not a flood from a hostile client
                say(f"robot-emotion: warning: control request refused: {type(e).__name__}: {_one_line(e)}")
            return {"ok": False, "error": f"request failed: {type(e).__name__}"}

    @property
    def state(self) -> str:
        """'running', or 'failed' once the thread has died (status ``control``)."""
        return (
            "failed"
            if self.died or (self._thread.ident and not self._thread.is_alive() and not self._stop.is_set())
            else "running"
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
