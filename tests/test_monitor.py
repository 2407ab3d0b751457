"""Subscriber and `robot-emotion monitor` on a real loopback socket: malformed messages are
skipped and counted (never a crash), every topic prints as a readable line or as JSON."""

import json
import subprocess
import sys
import time

import pytest
import zmq

from conftest import REPO, free_endpoint
from robot_emotion import EMOTIONS
from robot_emotion.bus import messages
from robot_emotion.bus.client import Subscriber

# The kinds users hit (one frame, bad JSON, JSON that is not an object, a missing
# topic/seq/session, a non-string session) and a few more of each family.
MALFORMED = {
    "single frame": [b"status"],
    "three frames": [b"status", b"{}", b"x"],
    "bad json": [b"status", b"{not json"],
    "not utf-8": [b"status", b"\xff\xfe{}"],
    "json array": [b"status", b"[1, 2]"],
    "json string": [b"status", b'"status"'],
    "missing topic": [b"status", json.dumps({"seq": 0, "session": "s"}).encode()],
    "topic differs": [b"status", json.dumps({"topic": "face", "seq": 0, "session": "s"}).encode()],
    "missing seq": [
        b"speech.start",
        json.dumps({"topic": "speech.start", "session": "s", "utterance_id": "0", "start": 0.0}).encode(),
    ],
    "seq not int": [
        b"speech.start",
        json.dumps({"topic": "speech.start", "seq": "0", "session": "s", "utterance_id": "0", "start": 0.0}).encode(),
    ],
    "missing session": [
        b"speech.start",
        json.dumps({"topic": "speech.start", "seq": 0, "utterance_id": "0", "start": 0.0}).encode(),
    ],
    "session not str": [
        b"speech.start",
        json.dumps({"topic": "speech.start", "seq": 0, "session": 7, "utterance_id": "0", "start": 0.0}).encode(),
    ],
    "missing field": [b"emotion", json.dumps({"topic": "emotion", "seq": 0, "session": "s"}).encode()],
    "deep nesting": [b"status", b"[" * 100000 + b"]" * 100000],
}


def _body(topic: str, seq: int, **fields) -> dict:
    return {"v": messages.SCHEMA_VERSION, "topic": topic, "seq": seq, "session": "mon", "stamp": 1.0, **fields}


PROBS = {e: (0.6 if e == "joy" else 0.4 / 6) for e in EMOTIONS}
VALID = [
    _body("speech.start", 0, utterance_id="0", start=0.5, t=0.8),
    _body("speech.end", 0, utterance_id="0", start=0.5, end=2.0, forced=False, dropped=False, t=2.1),
    _body("utterance.partial", 0, utterance_id="0", start=0.5, end=1.5, text="hello th"),
    _body(
        "utterance",
        0,
        utterance_id="0",
        final=True,
        speech=True,
        start=0.5,
        end=2.0,
        speaker="S0",
        face_track=1,
        text="hello there",
        segments=["0"],
    ),
    _body(
        "emotion",
        0,
        utterance_id="0",
        final=True,
        start=0.5,
        end=2.0,
        speaker="S0",
        face_track=1,
        text="hello there",
        label="joy",
        probs=PROBS,
        modalities={"text": True, "audio": True, "face": False},
        model="m",
        latency_ms={"total": 120.0},
    ),
    _body(
        "face",
        0,
        t=2.2,
        frame_size=[640, 480],
        tracks=[{"id": 1, "box": [1, 2, 3, 4], "speaking": True, "expression": PROBS}],
    ),
    _body(
        "status",
        0,
        uptime=3.0,
        t=2.5,
        stages={"asr": {"median_ms": 80.0, "p95_ms": 120.0, "n": 3}},
        queues={"audio": 0, "segments": 1},
        dropped={"frames": 2},
        sources={"microphone": "running"},
        utterances=1,
    ),
    _body("robot.gaze", 0, target={"x": 1, "y": 2}, note="from a newer node"),
]
EXPECT = ["speech.start", "speech.end", "partial", "utterance", "emotion", "face", "[status]", "[robot.gaze]"]
# well-formed for the Subscriber, but a field of the wrong type: only the readable mode cannot print it
WRONG_TYPE = _body("speech.start", 1, utterance_id="1", start="soon")


class RawPublisher:
    """An XPUB that sends arbitrary frames and knows when a subscriber has joined."""

    def __init__(self):
        self.ep = free_endpoint()
        self.sock = zmq.Context.instance().socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.ep)

    def wait_for_subscriber(self, timeout_s: float = 20.0) -> None:
        assert self.sock.poll(int(timeout_s * 1000)), "nobody subscribed"
        self.sock.recv()
        time.sleep(0.1)  # the other subscriptions of a multi-topic SUB

    def send_interleaved(self, valid=VALID, extra=()) -> None:
        """Malformed messages between the valid ones, all of them before the last valid one
        (the monitor exits at --count valid messages)."""
        bad = list(MALFORMED.values()) + [messages.encode(b) for b in extra]
        for i, body in enumerate(valid[:-1]):
            if i < len(bad):
                self.sock.send_multipart(bad[i])
            self.sock.send_multipart(messages.encode(body))
        for frames in bad[len(valid) - 1 :]:
            self.sock.send_multipart(frames)
        self.sock.send_multipart(messages.encode(valid[-1]))

    def close(self):
        self.sock.close()


@pytest.fixture()
def raw_pub():
    pub = RawPublisher()
    yield pub
    pub.close()


def test_subscriber_skips_and_counts_every_malformed_kind(raw_pub):
    with Subscriber(raw_pub.ep) as sub:
        raw_pub.wait_for_subscriber()
        for i, (kind, frames) in enumerate(MALFORMED.items()):
            raw_pub.sock.send_multipart(frames)
            raw_pub.sock.send_multipart(messages.encode(_body("speech.start", i, utterance_id=kind, start=0.0)))
            got = sub.recv(timeout_ms=3000)
            assert got is not None and got["utterance_id"] == kind, kind  # skipped, the next one arrives
            assert sub.malformed == i + 1, kind
        assert sub.recv(timeout_ms=200) is None
    assert sub.received == len(MALFORMED) and sub.gaps == 0


def test_subscriber_timeout_holds_across_a_flood_of_malformed(raw_pub):
    with Subscriber(raw_pub.ep) as sub:
        raw_pub.wait_for_subscriber()
        for _ in range(500):
            raw_pub.sock.send_multipart([b"x"])
        t0 = time.monotonic()
        assert sub.recv(timeout_ms=300) is None
        assert time.monotonic() - t0 < 1.0 and sub.malformed == 500


def _monitor(ep: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "monitor",
            "--endpoint",
            ep,
            "--count",
            str(len(VALID)),
            "--timeout",
            "20",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_monitor_prints_every_topic_readably_in_order_and_counts_malformed(raw_pub):
    mon = _monitor(raw_pub.ep)
    raw_pub.wait_for_subscriber()
    raw_pub.send_interleaved(extra=[WRONG_TYPE])
    out, err = mon.communicate(timeout=60)
    assert mon.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == len(VALID)
    for line, word in zip(lines, EXPECT):
        assert word in line, (word, line)
        assert "{'" not in line and "': " not in line  # no Python dict reprs
    assert "'hello there'" in lines[3] and "joy" in lines[4] and "#1 speaking joy" in lines[5]
    assert "asr=80/120ms" in lines[6] and "microphone=running" in lines[6]
    assert 'target={"x":1,"y":2}' in lines[7]
    # all the malformed kinds reached the monitor before its last valid message
    n_bad = len(MALFORMED) + 1
    assert f"# {len(VALID)} message(s), {n_bad} malformed skipped" in err, err


def test_monitor_json_lines_parse_one_by_one(raw_pub):
    mon = _monitor(raw_pub.ep, "--json")
    raw_pub.wait_for_subscriber()
    raw_pub.send_interleaved()
    out, err = mon.communicate(timeout=60)
    assert mon.returncode == 0, err
    bodies = [json.loads(line) for line in out.splitlines()]
    assert bodies == [json.loads(messages.encode(b)[1]) for b in VALID]  # as sent, in order
    assert f"{len(MALFORMED)} malformed skipped" in err


def test_monitor_curve_flags_go_together(raw_pub, tmp_path):
    import zmq.auth

    _, secret = zmq.auth.create_certificates(tmp_path, "c")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "monitor",
            "--endpoint",
            raw_pub.ep,
            "--client-key",
            secret,
            "--count",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
