"""The control socket survives anything a client sends (issue 25): deep nesting, huge numbers,
a handler that fails -- one line on stderr, ``ok: false``, and the next request is answered.
A control thread that dies anyway shows in ``status`` and ends a live node with an error."""

import json
import time

import pytest
import zmq

from conftest import REPO, free_endpoint
from robot_emotion.bus.control import MAX_REQUEST_BYTES, ControlServer


def _request(ctx, endpoint: str, payload: bytes, timeout_ms: int = 3000) -> dict | None:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(payload)
        return json.loads(sock.recv()) if sock.poll(timeout_ms) else None
    finally:
        sock.close()


def _handler(req: dict) -> dict:
    if req["cmd"] == "boom":
        raise KeyError("a bug in the node's handler")
    if req["cmd"] != "ping":
        raise ValueError(f"unknown cmd {req['cmd']!r}")
    return {"t": 1.0}


HOSTILE = [
    ("deep-list", b"[" * 60000),  # RecursionError in json (under the 64 KiB cap)
    ("deep-dict", b'{"a":' * 12000),
    ("deep-valid", b'{"cmd":"ping","x":' + b"[" * 25000 + b"]" * 25000 + b"}"),
    ("huge-int", b'{"cmd":"ping","n":' + b"9" * 5000 + b"}"),
    ("binary", bytes(range(256)) * 10),
    ("handler-bug", b'{"cmd":"boom"}'),
]


@pytest.mark.parametrize("name,payload", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_request_is_refused_and_the_socket_lives_on(name, payload, capfd):
    assert len(payload) < MAX_REQUEST_BYTES
    endpoint = free_endpoint()
    server = ControlServer(endpoint, _handler)
    server.start()
    ctx = zmq.Context()
    try:
        reply = _request(ctx, endpoint, payload)
        assert reply is not None and reply["ok"] is False, reply
        assert _request(ctx, endpoint, b'{"cmd":"ping"}') == {"ok": True, "t": 1.0}
        assert server.state == "running" and server.died is None
    finally:
        server.stop()
        ctx.term()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) <= 1, err  # at most one warning line


def test_warnings_are_bounded_for_a_flood_of_failing_requests(capfd):
    endpoint = free_endpoint()
    server = ControlServer(endpoint, _handler)
    server.start()
    ctx = zmq.Context()
    try:
        for _ in range(30):
            assert _request(ctx, endpoint, b"[" * 20000)["ok"] is False
    finally:
        server.stop()
        ctx.term()
    lines = capfd.readouterr().err.strip().splitlines()
    assert server.failures == 30 and len(lines) == 10, lines


def test_a_control_thread_that_dies_shows_in_its_state(capfd):
    """Anything beyond Exception (here SystemExit from the handler) ends the thread: one
    error line, ``state`` says failed and ``died`` says why (the live loop ends on it)."""

    def fatal(req):
        raise SystemExit("gone")

    endpoint = free_endpoint()
    server = ControlServer(endpoint, fatal)
    server.start()
    ctx = zmq.Context()
    try:
        assert _request(ctx, endpoint, b'{"cmd":"ping"}', timeout_ms=500) is None
        deadline = time.monotonic() + 3
        while server.state != "failed" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.state == "failed"
        assert "SystemExit" in server.died
    finally:
        server.stop()
        ctx.term()
    err = capfd.readouterr().err
    assert err.startswith("robot-emotion: error: control socket") and "Traceback" not in err, err


def test_live_node_ends_with_an_error_when_its_control_thread_dies(pulse):
    """A live node (PulseAudio's virtual microphone, spine only) whose control thread died:
    ``status.robot.control`` says failed and the run ends with the error (not deaf and silent)."""
    from robot_emotion import EmotionNode
    from robot_emotion.errors import RobotEmotionError

    overrides = [
        "asr.enabled=false",
        "speakers.enabled=false",
        "faces.enabled=false",
        "emotion.enabled=false",
        'publish.endpoint="tcp://127.0.0.1:*"',
        f'control.endpoint="{free_endpoint()}"',
    ]
    node = EmotionNode.live(REPO / "launch" / "audio_only.toml", overrides=overrides)
    try:
        assert node.get(timeout=10)["topic"] == "ready"
        runner_node = node.node
        assert node.status()["robot"]["control"] == "running"

        def fatal(req):  # fault injection: a failure beyond Exception
            raise SystemExit("injected")

        runner_node.control_server.handle = fatal
        ctx = zmq.Context()
        try:
            _request(ctx, runner_node.control_server.bound, b'{"cmd":"ping"}', timeout_ms=500)
        finally:
            ctx.term()
        deadline = time.monotonic() + 10
        while node.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not node.running
        assert any("control socket" in e for e in node.errors), node.errors
    finally:
        try:
            node.stop(timeout=30)
        except RobotEmotionError:
            pass
