"""What a controller can rely on (issue 22): a subscriber started BEFORE the node gets `ready`
(ZeroMQ's slow joiner loses the first one: it is repeated until the first utterance), every
session ends with `session.end` and its counts, the control socket works in replays at
--speed 1 and max, and the conventions: `--out -`, `--json` on stdout, `--version`, English
only unless a multilingual recogniser is configured, `make demo` replays."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import zmq

from conftest import NO_PERCEPTION, REPO, free_endpoint, run_cli, shared_file, SHARED

LIGHT = ["--set", "faces.enabled=false"]  # (the control and stream contract need no faces)


def _popen(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "robot_emotion", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _request(ctx, endpoint: str, req: dict, timeout_ms: int = 3000) -> dict:
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    try:
        s.send_json(req)
        return s.recv_json()
    finally:
        s.close()


def test_controller_started_5s_before_a_paced_replay_gets_ready_control_and_session_end(short_session):
    """A real SUB connects 5 s before the node binds; during a --speed 1 replay a controller
    says the robot speaks (status shows it, its words come back as the robot's utterance), and
    the stream ends on session.end whose counts equal what the SUB received."""
    folder, _ = short_session
    pub, ctl = free_endpoint(), free_endpoint()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(pub)
    time.sleep(5.0)
    proc = _popen(
        "replay",
        folder,
        "--speed",
        "1",
        "--control",
        "--quiet",
        "--endpoint",
        pub,
        "--set",
        f'control.endpoint="{ctl}"',
        *LIGHT,
    )
    got, robot_said, spoke_at = [], False, None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if not sub.poll(200):
                continue
            body = json.loads(sub.recv_multipart()[1])
            got.append(body)
            if body["topic"] == "ready" and spoke_at is None:
                assert _request(ctx, ctl, {"cmd": "robot.speaking", "state": "start", "text": "Hello, I am the robot"})[
                    "ok"
                ]
                spoke_at = time.monotonic()
            if spoke_at and not robot_said and time.monotonic() - spoke_at > 2.5:
                assert _request(ctx, ctl, {"cmd": "robot.speaking", "state": "stop"})["ok"]
                robot_said = True
            if body["topic"] == "session.end":
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        ctx.term()
    assert proc.returncode == 0, err
    topics = [b["topic"] for b in got]
    assert "ready" in topics, topics[:10]
    ready = next(b for b in got if b["topic"] == "ready")
    assert ready["unix_start"] > 1e9 and re.fullmatch(r"[0-9a-f]{12}", ready["config_digest"])
    assert ready["language"] == {"asr": "en", "text": "en"}
    status = [b for b in got if b["topic"] == "status"]
    assert status and all(s["ready"] and s["config_digest"] == ready["config_digest"] for s in status)
    assert any(s["robot"]["speaking"] for s in status), "robot.speaking was not honoured"
    robot = [b for b in got if b["topic"] == "utterance" and b["speaker"] == "robot"]
    assert robot and robot[0]["text"] == "Hello, I am the robot"
    people = [b for b in got if b["topic"] == "utterance" and b["speaker"] != "robot" and b["text"]]
    assert people and all(b["language"] == "en" for b in people)
    assert all("speaker" in b for b in got if b["topic"] == "speech.start")
    end = got[-1]
    assert end["topic"] == "session.end" and end["reason"] == "end of input"
    # everything but ready (the first one is lost to the slow joiner, then repeats come)
    received = {}
    for b in got:
        if b["topic"] not in ("status", "ready", "session.end"):
            received[b["topic"]] = received.get(b["topic"], 0) + 1
    assert end["messages"].pop("ready") == 1 and end["messages"] == received
    assert end["utterances"] == sum(
        1 for b in got if b["topic"] == "utterance" and b["final"] and b["speaker"] != "robot" and b.get("speech", True)
    )


def test_replay_at_max_speed_serves_control_writes_stdout_and_splits_latency(short_session):
    """--speed max: the control socket answers (refused while loading, then honoured); --out -
    puts the JSON lines on stdout and nothing else; latency_ms shows backlog apart; the printed
    progress and the stream's last line is session.end."""
    folder, _ = short_session
    ctl = free_endpoint()
    proc = _popen(
        "replay",
        folder,
        "--control",
        "--out",
        "-",
        "--endpoint",
        free_endpoint(),
        "--set",
        f'control.endpoint="{ctl}"',
        *LIGHT,
    )
    ctx = zmq.Context()
    answered = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = _request(ctx, ctl, {"cmd": "robot.speaking", "state": "start", "text": "One moment"}, 1000)
            except zmq.Again:
                continue
            if r["ok"]:
                answered = r
                _request(ctx, ctl, {"cmd": "robot.speaking", "state": "stop"})
                break
            assert "loading" in r["error"]
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.term()
    assert proc.returncode == 0, err
    assert answered is not None and isinstance(answered["t"], float)
    bodies = [json.loads(line) for line in out.splitlines()]  # stdout: JSON lines only
    assert bodies[0]["topic"] == "ready" and bodies[-1]["topic"] == "session.end"
    assert any(b["topic"] == "utterance" and b["speaker"] == "robot" and b["text"] == "One moment" for b in bodies)
    emo = [b["latency_ms"] for b in bodies if b["topic"] == "emotion"]
    assert emo and all(abs(x["backlog"] + x["processing"] - x["total"]) < 0.01 for x in emo)
    # the pipe carries on: export reads `-` from stdin
    r = subprocess.run(
        [sys.executable, "-m", "robot_emotion", "export", "-", "--format", "csv"],
        input=out,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("utterance_id,"), r.stderr


def test_version_json_on_stdout_and_language():
    r = run_cli("--version")
    assert r.returncode == 0 and re.fullmatch(r"robot-emotion \d+\.\d+\.\d+\n", r.stdout)
    r = run_cli("replay", "--demo", "--set", 'asr.language="de"')
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "asr.language" in r.stderr and "English-only" in r.stderr and "asr.model" in r.stderr
    csv = shared_file(SHARED / "meld" / "dev_sent_emo.csv")
    r = run_cli("evaluate", "--meld-csv", csv, "--limit", "8", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # stdout is the JSON alone
    assert "accuracy" in json.dumps(report) and "accuracy" in r.stderr  # the tables went to stderr


def test_diagnostics_go_through_logging(capfd):
    import logging

    from robot_emotion.errors import say

    log = logging.getLogger("robot_emotion")
    say("# shown")
    old = log.level
    log.setLevel(logging.ERROR)  # what an embedding program does to quiet the node
    try:
        say("# hidden")
        say("robot-emotion: error: still one line")
    finally:
        log.setLevel(old)
    assert capfd.readouterr().err == "# shown\nrobot-emotion: error: still one line\n"


def test_make_demo_replays_even_with_a_microphone_present(pulse, dialogue_session):
    """`make demo`'s command (after the set-up) on a machine whose default microphone exists
    (a PulseAudio source): it replays the demo session, it never goes live."""
    make = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:\n\t@(.+)$", make, re.M).group(1)
    command = recipe.split("&&", 1)[1].replace("$(RUN)", re.search(r"^RUN = (.+)$", make, re.M).group(1))
    command = command.replace("$$", "$").replace("$(CURDIR)", str(REPO))
    assert " run" not in command and "replay --demo" in command
    folder, _ = dialogue_session
    r = subprocess.run(
        # (the spine only: what is asserted is where the input comes from, not what is perceived)
        [
            "bash",
            "-c",
            f"{command} --quiet --endpoint {free_endpoint()} " + " ".join(f"--set {s}" for s in NO_PERCEPTION),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**__import__("os").environ, "VENV": sys.prefix, "ROBOT_EMOTION_DEMO": str(folder)},
    )
    assert r.returncode == 0, r.stderr
    assert "ready: replay session" in r.stderr and "ready: live" not in r.stderr


def test_readme_documents_the_stream_contract():
    readme = (REPO / "README.md").read_text()
    for word in ("session.end", "unix_start", "config_digest", "--control", "backlog", "asr.language"):
        assert word in readme, word
