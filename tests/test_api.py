"""The embedding API (robot_emotion.api.EmotionNode) on short replays: messages in publish
order with nothing dropped, an utterance and an emotion for every turn, stopping mid-way
without leftover threads, the slow-reader bound, and errors raised as robot_emotion.errors."""

import json
import subprocess
import sys
import threading
import time

import pytest
import zmq

from conftest import NO_PERCEPTION, REPO, free_endpoint
from robot_emotion import EMOTIONS, EmotionNode
from robot_emotion.config import ConfigError, load
from robot_emotion.errors import InputError, RobotEmotionError, UsageError
from robot_emotion.node.runner import JsonlSink


def new_threads(before: set) -> list[str]:
    """Threads started since ``before`` that are still alive (a stopped node leaves none)."""
    deadline = time.monotonic() + 2.0
    while True:
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_importing_the_package_stays_cheap():
    code = (
        "import sys, robot_emotion\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'zmq'})\n"
        "print(heavy()); robot_emotion.EmotionNode; print(heavy())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    # nothing heavy for `import robot_emotion`, nor for naming the API (the node loads them when it starts)
    assert r.stdout.split("\n")[:2] == ["[]", "[]"], r.stdout


def test_messages_in_publish_order_nothing_dropped(short_session, tmp_path):
    folder, truth = short_session
    before = set(threading.enumerate())
    out = tmp_path / "events.jsonl"
    sink = JsonlSink(out)  # the CLI's --out file, written on the publisher thread
    try:
        with EmotionNode.replay(folder, overrides=NO_PERCEPTION, sinks=[sink]) as node:
            msgs = list(node.messages(timeout=60))
            assert not node.running  # the iteration ended because the replay did
    finally:
        sink.close()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert msgs == written and len(msgs) > 10  # the same bodies, in the same order
    assert msgs[0]["topic"] == "ready"
    for topic in {m["topic"] for m in msgs}:
        assert [m["seq"] for m in msgs if m["topic"] == topic] == list(range(sum(m["topic"] == topic for m in msgs)))
    assert sum(m["topic"] == "utterance" for m in msgs) == len(truth["turns"])
    api = node.status()["api"]
    assert api["delivered"] == len(msgs) and api["pending"] == 0 and api["state"] == "stopped"
    assert not node.errors and not node.interrupted
    assert new_threads(before) == []


def test_topics_filter_keeps_only_those(short_session):
    folder, truth = short_session
    with EmotionNode.replay(folder, overrides=NO_PERCEPTION, topics=["speech"]) as node:
        topics = [m["topic"] for m in node.messages(timeout=60)]
    assert set(topics) == {"speech.start", "speech.end"}
    assert topics.count("speech.end") >= len(truth["turns"])


def test_every_turn_has_its_utterance_and_emotion(short_session):
    """With perception (faces off, for time): the final utterance of every turn is followed by
    the final emotion of the same turn; the in-process control applies to the running node."""
    folder, truth = short_session
    before = set(threading.enumerate())
    with EmotionNode.replay(
        folder, overrides={"faces.enabled": False, "publish.endpoint": "tcp://127.0.0.1:*"}
    ) as node:
        assert node.control("ping")["t"] >= 0.0
        with pytest.raises(UsageError, match="unknown cmd"):
            node.control("dance")
        msgs = list(node.messages(timeout=120))
        assert "stages" in node.status() and node.status()["utterances"] == len(truth["turns"])
    finals = [m for m in msgs if m["topic"] == "utterance" and m["final"]]
    assert len(finals) == len(truth["turns"])
    speakers = [u["speaker"] for u in finals]  # A, B, A, B in the truth
    assert speakers[0] != speakers[1] and speakers[::2] == [speakers[0]] * len(speakers[::2])
    for u in finals:
        i = msgs.index(u)
        emotion = next(
            m for m in msgs[i:] if m["topic"] == "emotion" and m["final"] and m["utterance_id"] == u["utterance_id"]
        )
        assert emotion["speaker"] == u["speaker"] and emotion["text"] == u["text"] and u["text"]
        assert emotion["label"] in EMOTIONS
    assert not node.errors
    assert new_threads(before) == []


def test_stop_midway_finishes_quickly_and_leaves_no_threads(short_session):
    folder, truth = short_session
    before = set(threading.enumerate())
    with EmotionNode.replay(folder, overrides=NO_PERCEPTION, speed=1.0) as node:  # recorded pace
        for msg in node.messages(timeout=30):
            if msg["topic"] == "utterance":
                break  # the first turn: stop here
        t0 = time.monotonic()
    stop_s = time.monotonic() - t0
    assert stop_s < 3.0, stop_s  # the recording has ~10 s left
    assert node.interrupted and not node.running and not node.errors
    rest = list(node.messages(timeout=5))  # published before the stop: still readable
    assert sum(m["topic"] == "utterance" for m in rest) < len(truth["turns"]) - 1
    assert new_threads(before) == []
    node.stop()  # again: harmless


def test_slow_reader_stops_the_node_without_losing_messages(short_session):
    folder, _ = short_session
    node = EmotionNode.replay(folder, overrides=NO_PERCEPTION, max_pending=5)
    assert node.wait(60)  # nobody reads: the node stops itself
    assert node.interrupted and node.status()["api"]["peak_pending"] >= 5
    msgs = []
    with pytest.raises(RobotEmotionError, match="fell 5 messages behind"):
        for m in node.messages(timeout=5):
            msgs.append(m)
    assert len(msgs) >= 5 and msgs[0]["topic"] == "ready"
    for topic in {m["topic"] for m in msgs}:  # no gap: every message published was kept
        assert [m["seq"] for m in msgs if m["topic"] == topic] == list(range(sum(m["topic"] == topic for m in msgs)))
    node.stop()  # already raised by messages(): not again


def test_errors_raise_as_robot_emotion_errors(short_session, tmp_path):
    folder, _ = short_session
    before = set(threading.enumerate())
    with pytest.raises(ConfigError, match="vad.aggressiveness"):  # usage (2), at once
        EmotionNode.replay(folder, overrides=NO_PERCEPTION + ["vad.aggressiveness=9"])
    with pytest.raises(ConfigError, match="unknown config key 'vad.loudness'"):
        EmotionNode.replay(folder, config=load(None)[0], overrides={"vad.loudness": 3})
    with pytest.raises(UsageError, match="--speed"):
        EmotionNode.replay(folder, overrides=NO_PERCEPTION, speed=0)
    with pytest.raises(InputError, match="checkpoint not found"):  # input (3), at load
        EmotionNode.replay(folder, overrides={"emotion.model": str(tmp_path / "none.pt")})
    # failures of the background thread while starting are raised by replay() itself
    with pytest.raises(InputError, match="not found") as e:
        EmotionNode.replay(tmp_path / "missing.mp4", overrides=NO_PERCEPTION)
    assert e.value.code == 3
    endpoint = free_endpoint()
    ctx = zmq.Context()
    busy = ctx.socket(zmq.PUB)
    busy.bind(endpoint)
    try:
        with pytest.raises(UsageError, match="cannot bind publisher"):
            EmotionNode.replay(folder, overrides=NO_PERCEPTION[:-1] + [f'publish.endpoint="{endpoint}"'])
    finally:
        busy.close(0)
        ctx.term()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pt"):
        EmotionNode.replay(
            folder, overrides=NO_PERCEPTION[:3] + [f'emotion.model="{junk}"', 'publish.endpoint="tcp://127.0.0.1:*"']
        )
    assert new_threads(before) == []


def test_live_node_on_the_virtual_microphone(pulse):
    """Live (PulseAudio's virtual microphone, spine only): ready, in-process control, stop()."""
    before = set(threading.enumerate())
    node = EmotionNode.live(
        REPO / "launch" / "audio_only.toml", overrides=NO_PERCEPTION + ['control.endpoint="tcp://127.0.0.1:*"']
    )
    try:
        first = node.get(timeout=5)
        assert first["topic"] == "ready" and first["mode"] == "live"
        assert first["devices"]["microphone"] == "running"
        node.control("mute")
        assert node.status()["robot"]["muted"] is True
        status = next(m for m in node.messages(timeout=5) if m["topic"] == "status")
        assert status["sources"]["microphone"] == "running"
    finally:
        node.stop(timeout=30)
    assert not node.running and node.interrupted and not node.errors
    assert new_threads(before) == []


def test_live_without_its_microphone_raises_and_leaves_no_threads():
    before = set(threading.enumerate())
    with pytest.raises(InputError, match="cannot open microphone no-such-microphone") as e:
        EmotionNode.live(
            REPO / "launch" / "audio_only.toml",
            overrides=NO_PERCEPTION
            + ['control.endpoint="tcp://127.0.0.1:*"', 'microphone.device="no-such-microphone"'],
        )
    assert e.value.code == 3
    assert new_threads(before) == []  # stage threads, publisher and control socket all ended
