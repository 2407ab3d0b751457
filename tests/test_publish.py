"""The ZeroMQ API on real loopback sockets."""

import threading
import time

import zmq

from conftest import free_endpoint
from robot_emotion.bus import messages
from robot_emotion.bus.client import Subscriber
from robot_emotion.bus.publish import Publisher
from conftest import by_topic, collect, spine_cfg


def _wait_connected(pub: Publisher, sub: Subscriber) -> None:
    """PUB/SUB slow joiner: publish probes until the subscriber sees one."""
    for _ in range(100):
        pub.publish({"topic": "status", "uptime": 0, "stages": {}, "queues": {}, "dropped": {}, "sources": {}})
        if sub.recv(timeout_ms=50) is not None:
            return
    raise AssertionError("subscriber never connected")


def test_subscriber_receives_topics_in_order_with_schema():
    ep = free_endpoint()
    status = lambda: {"uptime": 1.0, "stages": {}, "queues": {}, "dropped": {}, "sources": {}}  # noqa: E731
    pub = Publisher(ep, "sess-1", status_hz=50, status_fn=status)
    pub.start()
    with Subscriber(ep, topics=["speech", "status"]) as sub:
        _wait_connected(pub, sub)
        for i in range(5):
            pub.publish({"topic": "speech.start", "utterance_id": str(i), "start": float(i)})
            pub.publish(
                {
                    "topic": "utterance",
                    "utterance_id": str(i),
                    "start": 0.0,
                    "end": 1.0,
                    "speaker": None,
                    "face_track": None,
                    "text": None,
                    "final": True,
                }
            )  # not subscribed
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            m = sub.recv(timeout_ms=100)
            if m and m["topic"] == "speech.start":
                got.append(m)
        statuses = [m for m in (sub.recv(timeout_ms=100) for _ in range(5)) if m]
    pub.stop()
    assert [m["seq"] for m in got] == list(range(5))
    assert all(m["session"] == "sess-1" and m["v"] == messages.SCHEMA_VERSION for m in got)
    assert all(isinstance(m["stamp"], float) for m in got)
    assert any(m["topic"] == "status" for m in statuses)  # status at status_hz, uninvited


def test_gaps_are_reported():
    ep = free_endpoint()
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.bind(ep)
    with Subscriber(ep, topics=["speech"]) as sub:
        for seq in [0, 1, 2, 5, 6]:
            body = {
                "topic": "speech.start",
                "v": 1,
                "seq": seq,
                "session": "s",
                "stamp": 0.0,
                "utterance_id": "x",
                "start": 0.0,
            }
            for _ in range(50 if seq == 0 else 1):  # first one repeatedly, to get past the join
                raw.send_multipart(messages.encode(body))
                if seq == 0 and sub.recv(timeout_ms=20):
                    break
        seen = [sub.recv(timeout_ms=500)["seq"] for _ in range(4)]
    raw.close()
    assert seen == [1, 2, 5, 6] and sub.gaps == 2


def test_stalled_subscriber_never_blocks_the_publisher():
    ep = free_endpoint()
    pub = Publisher(ep, "s", sndhwm=10)
    pub.start()
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)  # connects, subscribes to everything, never reads
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(ep)
    time.sleep(0.3)
    payload = "x" * 20000
    t0 = time.perf_counter()
    for i in range(3000):  # 60 MB: far more than the socket buffers and HWM can hold
        pub.publish({"topic": "speech.start", "utterance_id": payload, "start": float(i)})
    enqueue_s = time.perf_counter() - t0
    pub.stop(timeout=20)
    drain_s = time.perf_counter() - t0
    alive = pub._thread.is_alive()
    stalled.close()
    assert enqueue_s < 1.0  # the pipeline side never waits for the socket
    assert not alive and drain_s < 10  # the publisher thread never blocked on the dead reader
    # ZeroMQ PUB drops silently for that subscriber once its HWM is full: nothing was refused
    # at our end, and the subscriber would see the loss as sequence gaps.
    assert pub.sent == 3000


def test_stalled_subscriber_does_not_slow_the_node(short_session):
    folder, _ = short_session
    ep = free_endpoint()
    cfg = spine_cfg(f'publish.endpoint="{ep}"', "publish.sndhwm=5")
    t0 = time.perf_counter()
    baseline, _ = collect(cfg, folder)
    base_s = time.perf_counter() - t0
    ctx = zmq.Context.instance()
    stalled = ctx.socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(ep)
    t0 = time.perf_counter()
    events, node = collect(cfg, folder)
    stalled_s = time.perf_counter() - t0
    stalled.close()
    assert stalled_s < base_s * 3 + 1.0
    assert by_topic(events, "utterance") == by_topic(baseline, "utterance")


def test_live_subscriber_sees_the_replay(short_session):
    """A controller connected during a replay receives the same utterances the node logged."""
    folder, _ = short_session
    ep = free_endpoint()
    cfg = spine_cfg(f'publish.endpoint="{ep}"')
    received = []
    ready, replayed = threading.Event(), threading.Event()

    def listen():
        with Subscriber(ep, topics=["utterance"]) as sub:
            ready.set()
            while True:  # until the replay is over and the stream is quiet (loading may take seconds)
                m = sub.recv(timeout_ms=1000)
                if m is not None:
                    received.append(m)
                elif replayed.is_set():
                    break

    th = threading.Thread(target=listen)
    th.start()
    ready.wait()
    time.sleep(0.3)  # let the SUB connect before the replay's first utterance
    try:
        events, _ = collect(cfg, folder, speed=2.0)
    finally:
        replayed.set()
    th.join(timeout=10)
    assert [m["utterance_id"] for m in received] == [e["utterance_id"] for e in by_topic(events, "utterance")]


def test_monitor_command_prints_the_stream(short_session):
    import subprocess
    import sys
    from conftest import REPO

    folder, _ = short_session
    ep = free_endpoint()
    mon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "monitor",
            "--endpoint",
            ep,
            "--topics",
            "speech,utterance",
            "--count",
            "6",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    time.sleep(2.0)  # the monitor's SUB connects before the node publishes
    collect(spine_cfg(f'publish.endpoint="{ep}"'), folder, speed=2.0)
    out, err = mon.communicate(timeout=60)
    assert mon.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 6 and "speech.start" in lines[0]
    assert any("utterance" in x for x in lines)


def test_port_is_free_the_moment_the_publisher_stops():
    """A node restarted on the same endpoint binds at once, even with a subscriber connected
    to the old one (check_endpoint does not retry: a busy port is a one-line error)."""
    from robot_emotion.config import PublishConfig
    from robot_emotion.bus.publish import check_endpoint

    ep = free_endpoint()
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(ep)
    try:
        for i in range(20):
            pub = Publisher(ep, f"s{i}", sndhwm=10)
            pub.start()
            for k in range(50):
                pub.publish({"topic": "speech.start", "utterance_id": str(k), "start": float(k)})
            pub.stop()
            check_endpoint(PublishConfig(endpoint=ep))  # raises UsageError if still held
    finally:
        sub.close()
