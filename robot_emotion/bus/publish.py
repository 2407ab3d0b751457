"""ZeroMQ publisher: the node's face to the robot.

One thread owns the PUB socket (create, use, close in that thread). Stages hand it
bodies through a queue; it stamps ``v``, ``seq`` (per topic), ``session`` and ``stamp``,
sends [topic, JSON] with NOBLOCK and a small send high-water mark (a slow or dead
subscriber costs dropped messages, never a stalled pipeline), mirrors every body to
the session's events.jsonl / ``--out`` file, and emits ``status`` at ``status_hz``.

Late and early subscribers: ZeroMQ delivers nothing to a SUB whose connection is not up yet
(a controller started before the node joins ~100 ms after the bind, when ``ready`` has gone),
so ``ready`` is sent again with each ``status`` (``repeat``: 1, 2, ...) until the first
``utterance``; those repeats go on the wire only, not into the files. ``status`` itself
carries the session's state (ready, ``unix_start``, config digest) for whoever joins later.
``session.end`` is the last message of every session, with the count of each topic.

Who may subscribe, and how big a subscription may be, is security.py's policy: loopback
by default, CURVE keys (or ``publish.allow_insecure``) for any other address.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from typing import Callable

from robot_emotion.bus import messages, security
from robot_emotion.errors import UsageError, say


def _security_for(endpoint: str, options) -> security.ServerSecurity:
    """The socket's security from a PublishConfig (None: loopback only, no keys)."""
    return security.server_security(
        endpoint,
        getattr(options, "server_secret_key", ""),
        getattr(options, "authorized_keys", ""),
        getattr(options, "allow_insecure", False),
    )


def check_endpoint(options) -> security.ServerSecurity:
    """Validate publish.endpoint, its keys and policy, and that it can be bound -- in ~10 ms,
    so a bad or busy endpoint is one line (exit 2) before any model loads. Binds a throwaway
    socket on a private context; terminating the context releases the port at once."""
    import zmq

    sec = _security_for(options.endpoint, options)
    if sec.endpoint.transport == "inproc":
        return sec  # only reachable inside the node's own context
    security.check_ipc_free(options.endpoint)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if sec.endpoint.ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        sock.bind(options.endpoint)
        bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    except zmq.ZMQError as e:
        raise UsageError(f"cannot bind publisher to {options.endpoint}: {zmq.strerror(e.errno)}") from None
    finally:
        sock.close()
        ctx.term()
    if not (sec.curve or sec.insecure or security.bound_is_loopback(bound)):
        raise UsageError(
            f"publish.endpoint {options.endpoint} bound {bound}, which is not loopback: "
            "set CURVE keys or publish.allow_insecure = true"
        )
    return sec


class Publisher:
    def __init__(
        self,
        endpoint: str,
        session_id: str,
        sndhwm: int = 100,
        status_hz: float = 1.0,
        status_fn: Callable[[], dict] | None = None,
        sinks: list[Callable[[dict], None]] = (),
        context=None,
        options=None,
    ):
        self.endpoint, self.session_id = endpoint, session_id
        self.options = options  # PublishConfig: keys, allow_insecure (None = loopback, no keys)
        self.security: security.ServerSecurity | None = None
        self.sndhwm, self.status_period = sndhwm, 1.0 / status_hz
        self.status_fn = status_fn
        self.sinks = list(sinks)
        self._ctx = context
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.seq: dict[str, int] = {}
        self.sent = 0
        # PUB drops silently per subscriber at its HWM (the subscriber sees seq gaps);
        # this counts only messages ZeroMQ refused outright.
        self.dropped = 0
        # (topic, speech end -> publish ms, utterance_id, final, early) for the benchmark
        self.latencies: deque[tuple[str, float, str | None, bool | None, bool]] = deque(maxlen=20000)
        self.error: str | None = None
        self.bound: str | None = None
        self._failed_sinks: set = set()
        self.sink_failures: list[str] = []  # one line per failed output (--out, session file)
        self.latched_ready: dict | None = None  # the ready body, re-sent until the first utterance
        self.counts: dict[str, int] = {}  # messages per topic (status and ready repeats aside)
        self._ended = False  # session.end sent: nothing follows it

    def start(self) -> None:
        self.security = _security_for(self.endpoint, self.options)  # UsageError/InputError
        self._thread.start()
        self._ready.wait(5.0)
        if self.error:
            raise UsageError(self.error)

    def publish(self, body: dict) -> None:
        """Queue a body (must hold "topic"); never blocks the caller."""
        self._q.put(body)

    def pending(self) -> int:
        return self._q.qsize()

    def _open(self, zmq):
        """(context, socket, authenticator), or None with self.error set."""
        sec = self.security
        # a ZAP authenticator serves the whole context: with CURVE it is this socket's own
        ctx, self._own_ctx = security.server_context(zmq, self.endpoint, self._ctx)
        auth = security.start_authenticator(ctx, sec)
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.sndhwm)
        sock.setsockopt(zmq.LINGER, 200)
        security.configure_server_socket(sock, sec)
        try:
            security.check_ipc_free(self.endpoint)  # ZeroMQ would take a live node's path
        except UsageError as e:
            self.error = str(e)
        # a just-closed publisher may still hold the port briefly
        for attempt in range(20 if self.error is None else 0):
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE or attempt == 19:
                    self.error = f"cannot bind publisher to {self.endpoint}: {zmq.strerror(e.errno)}"
                    break
                time.sleep(0.1)
        if self.error is None:
            self.bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # resolves "tcp://127.0.0.1:*"
            if not (sec.curve or sec.insecure or security.bound_is_loopback(self.bound)):
                self.error = (
                    f"publish.endpoint {self.endpoint} bound {self.bound}, which is not "
                    "loopback: set CURVE keys or publish.allow_insecure = true"
                )
        if self.error is None:
            if sec.insecure:
                say(security.insecure_warning(self.bound))
            return ctx, sock, auth
        self._close(ctx, sock, auth)
        return None

    def _close(self, ctx, sock, auth) -> None:
        sock.close()
        if auth is not None:
            auth.stop()
        if self._own_ctx:
            ctx.term()

    def _run(self) -> None:
        import zmq

        opened = self._open(zmq)
        self._ready.set()
        if opened is None:
            return
        ctx, sock, auth = opened
        next_status = time.monotonic() + self.status_period
        try:
            while True:
                timeout = max(0.0, next_status - time.monotonic())
                try:
                    body = self._q.get(timeout=min(timeout, 0.05))
                except queue.Empty:
                    body = None
                if body is not None:
                    self._send(sock, zmq, body)
                elif self._stop.is_set():
                    break
                if self.status_fn and time.monotonic() >= next_status and not self._ended:
                    next_status += self.status_period
                    self._send(sock, zmq, {"topic": "status", **self.status_fn()})
                    if self.latched_ready is not None and "utterance" not in self.counts:
                        self.latched_ready["repeat"] = self.latched_ready.get("repeat", 0) + 1
                        self._send(sock, zmq, dict(self.latched_ready), mirror=False)
        finally:
            self._close(ctx, sock, auth)

    def _send(self, sock, zmq, body: dict, mirror: bool = True) -> None:
        topic = body["topic"]
        wall_end = body.pop("_wall_end", None)  # internal: when speech end was decided
        picked = body.pop("_picked", None)  # internal (--speed max): when a stage took it up
        if topic == "ready" and self.latched_ready is None:
            self.latched_ready = dict(body)
        elif topic == "session.end":
            self._ended = True
            body["messages"] = dict(self.counts)  # what a subscriber should have received
        seq = self.seq.get(topic, 0)
        self.seq[topic] = seq + 1
        if mirror and topic != "status":
            self.counts[topic] = self.counts.get(topic, 0) + 1
        body.update(v=messages.SCHEMA_VERSION, seq=seq, session=self.session_id, stamp=time.time())
        if wall_end is not None:
            ms = (time.monotonic() - wall_end) * 1000.0
            lat = body.setdefault("latency_ms", {})
            lat["total"] = ms
            if picked is not None:  # queued behind a replay that reads ahead: shown apart
                lat["backlog"] = max(0.0, (picked - wall_end) * 1000.0)
                lat["processing"] = ms - lat["backlog"]
            self.latencies.append((topic, ms, body.get("utterance_id"), body.get("final"), bool(body.get("early"))))
        messages.validate(body)
        frames = messages.encode(body)
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1
        clean = json.loads(frames[1])
        for sink in self.sinks if mirror else ():
            if sink in self._failed_sinks:
                continue
            try:
                sink(clean)
            except Exception as e:  # a full disk or a closed pipe must not stop the bus
                self._sink_failed(sink, e)

    def _sink_failed(self, sink, e: Exception) -> None:
        """Reported once, on stderr and in status ``outputs``; the sink is dropped, ZeroMQ goes on."""
        name = getattr(sink, "name", None) or type(sink).__name__
        self._failed_sinks.add(sink)
        self.sink_failures.append(f"output {name} failed: {e}; the ZeroMQ stream continued")
        say(f"robot-emotion: error: {self.sink_failures[-1]}")

    def outputs(self) -> dict:
        return {
            getattr(s, "name", None) or type(s).__name__: ("failed" if s in self._failed_sinks else "ok")
            for s in self.sinks
        }

    def stop(self, timeout: float = 5.0) -> None:
        """Drain what is queued, send it, close the socket."""
        self._stop.set()
        self._thread.join(timeout=timeout)
