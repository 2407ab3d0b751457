"""examples/controller.py, the README's controller: as a subprocess against a real
`robot-emotion replay` (perception on: it needs speakers and emotions) on a free endpoint."""

import json
import re
import signal
import subprocess
import sys
import threading
import time

from conftest import REPO, free_endpoint, load_tool, run_cli

TOOL = REPO / "examples" / "controller.py"
LINE = re.compile(r'^(S\d+) sounds (\w+) \((\d\.\d\d)\) -> ([\w -]+): "(.*)"$')


def core_of_tool() -> str:
    text = TOOL.read_text(encoding="utf-8")
    parts = text.split("# --- core ---\n")
    assert len(parts) == 3, "the tool marks its core with two '# --- core ---' lines"
    return parts[1]


def test_readme_shows_the_tool_verbatim():
    core = core_of_tool()
    assert core.count("\n") > 20 and "Subscriber(" in core
    assert f"```python\n{core}```" in (REPO / "README.md").read_text(encoding="utf-8")


def expected_decisions(events: list[dict]) -> list[tuple[str, tuple | None, str]]:
    """(speaker, (label, probability) or None, text) per final turn of a person: the speaker's
    latest emotion estimate when the final utterance was published (events.jsonl's order)."""
    latest, out = {}, []
    for e in events:
        if e["topic"] == "emotion" and e["label"] and e["speaker"]:
            latest[e["speaker"]] = (e["label"], f'{e["probs"][e["label"]]:.2f}')
        elif e["topic"] == "utterance" and e["final"] and e["speaker"] not in (None, "robot"):
            out.append((e["speaker"], latest.get(e["speaker"]), e["text"] or ""))
    return out


def test_controller_prints_one_decision_per_final_turn(short_session, tmp_path):
    folder, truth = short_session
    endpoint = free_endpoint()
    # SIGINT as a terminal's Ctrl-C: a suite started in the background (nohup ... &) runs with
    # SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt
    ctl = subprocess.Popen(
        [sys.executable, str(TOOL), endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(ctl.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        # the controller connects first; the node binds after its models load (~20 s)
        out = tmp_path / "events.jsonl"
        r = run_cli(
            "replay",
            folder,
            "--out",
            out,
            "--quiet",
            "--set",
            "faces.enabled=false",
            "--set",
            f'publish.endpoint="{endpoint}"',
            timeout=600,
        )
        assert r.returncode == 0, r.stderr
        events = [json.loads(line) for line in out.read_text().splitlines()]
        expected = expected_decisions(events)
        deadline = time.monotonic() + 10
        while len(lines) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        ctl.send_signal(signal.SIGINT)  # Ctrl-C: the tool ends quietly
        ctl.wait(timeout=10)
        reader.join(timeout=5)
        err = ctl.stderr.read()
    assert ctl.returncode == 0 and "Traceback" not in err, err
    assert len(expected) == len(truth["turns"])  # one final turn per line of dialogue
    reactions = load_tool("examples/controller").REACTIONS
    got = [LINE.match(line.rstrip("\n")) for line in lines]
    assert all(got), lines
    assert [(m[1], m[5]) for m in got] == [(s, text) for s, _, text in expected]
    for m, (_, estimate, _) in zip(got, expected):
        assert estimate is not None, m[0]  # every speaker has said words by then
        label, p = estimate
        assert (m[2], m[4]) == reactions[label] and m[3] == p, (m[0], label, p)
    # in a replay every turn's provisional emotion precedes its final utterance: each decision
    # is about the turn itself (the label of its final emotion)
    finals = {e["utterance_id"]: e["label"] for e in events if e["topic"] == "emotion" and e["final"]}
    turn_ids = [
        e["utterance_id"]
        for e in events
        if e["topic"] == "utterance" and e["final"] and e["speaker"] not in (None, "robot")
    ]
    assert [finals[i] for i in turn_ids] == [estimate[0] for _, estimate, _ in expected]
