"""Load shedding on a busy robot (issue 24): robot_emotion/node/load.py and the Node that holds it.

The policy on lag sequences (levels in order, hysteresis, counters, shed_s); a real live node
over a recording at recorded pace that sheds and still finishes every turn; a replay that never sheds."""

import pytest

from robot_emotion.bus import messages
from robot_emotion.config import load
from robot_emotion.node.load import CALM_S, ESCALATE_S, LEVELS, LoadShedder
from robot_emotion.node.runner import paced_live, replay

ENDPOINT = 'publish.endpoint="tcp://127.0.0.1:*"'
BUDGET = 1000.0


def _feed(s: LoadShedder, lag_ms: float, t0: float, t1: float, step: float = 0.03, busy: bool = True) -> float:
    """Observe ``lag_ms`` every ``step`` s (an audio block) from t0 up to t1; -> the next time."""
    t = t0
    while t < t1 - 1e-9:
        s.observe(lag_ms, t, busy)
        t = round(t + step, 6)
    return t


# ---- the policy ---------------------------------------------------------------------------


def test_the_order_is_partial_then_incremental_then_faces():
    assert LEVELS == ("partial", "incremental", "faces")


def test_levels_go_up_in_order_at_most_one_per_escalate_s():
    s = LoadShedder(BUDGET)
    s.observe(900, 0.0)  # under the budget: nothing shed
    assert s.level == 0 and s.shedding == ()
    s.observe(1200, 1.0)  # over it: the first level at once
    assert s.level == 1 and s.shedding == ("partial",)
    _feed(s, 5000, 1.03, 1.0 + ESCALATE_S)  # still over, but not a second level within ESCALATE_S
    assert s.level == 1
    seen = [s.level]
    t = 1.0 + ESCALATE_S
    while t < 10:
        s.observe(5000, t)
        seen.append(s.level)
        t = round(t + 0.03, 6)
    assert [lv for i, lv in enumerate(seen) if i == 0 or lv != seen[i - 1]] == [1, 2, 3]
    assert s.shedding == LEVELS and s.level == len(LEVELS)  # the top holds
    assert s.changes == 3 and s.peak_lag_ms == 5000


def test_hysteresis_leaves_one_level_after_calm_s_under_half_the_budget():
    s = LoadShedder(BUDGET)
    t = _feed(s, 3000, 0.0, 2 * ESCALATE_S + 0.1)
    assert s.level == 3
    t = _feed(s, 700, t, t + 4 * CALM_S)  # between half and the budget: holds
    assert s.level == 3
    t = _feed(s, 400, t, t + CALM_S - 0.5)  # under half, not long enough yet
    assert s.level == 3
    t = _feed(s, 1200, t, t + 0.03)  # a spike: the calm starts again (and no level
    assert s.level == 3  # to go up to)
    t = _feed(s, 400, t, t + CALM_S - 0.5)
    assert s.level == 3
    t = _feed(s, 400, t, t + 0.6)
    assert s.level == 2 and s.shedding == ("partial", "incremental")
    t = _feed(s, 400, t, t + CALM_S + 0.1)
    assert s.level == 1
    t = _feed(s, 400, t, t + CALM_S + 0.1)
    assert s.level == 0 and s.shedding == ()
    _feed(s, 0, t, t + 5 * CALM_S)
    assert s.level == 0


def test_a_silent_robot_proves_nothing():
    """Calm counts only while speech or work comes in (busy): silence keeps the level."""
    s = LoadShedder(BUDGET)
    t = _feed(s, 3000, 0.0, 0.1)
    assert s.level == 1
    t = _feed(s, 0, t, t + 3 * CALM_S, busy=False)
    assert s.level == 1
    _feed(s, 0, t, t + CALM_S + 0.1, busy=True)
    assert s.level == 0


def test_every_refusal_is_counted_and_shed_s_is_the_time_each_kind_was_shed():
    s = LoadShedder(BUDGET)
    assert all(s.allow(k) for k in LEVELS) and s.shed == dict.fromkeys(LEVELS, 0)
    s.observe(2000, 10.0)  # level 1 from t=10
    assert not s.allow("partial") and not s.allow("partial")
    assert s.allow("incremental") and s.allow("faces")
    s.observe(2000, 11.0)  # level 2 from t=11
    assert not s.allow("incremental")
    s.observe(2000, 12.0)  # level 3 from t=12
    assert not s.allow("faces")
    assert s.shed == {"partial": 2, "incremental": 1, "faces": 1}
    assert s.shed_s(13.0) == pytest.approx({"partial": 3.0, "incremental": 2.0, "faces": 1.0})
    t, down = 12.0, None
    while down is None:  # the lag falls: down to level 2 after CALM_S
        t = round(t + 0.05, 6)
        s.observe(100, t)
        down = t if s.level == 2 else None
    assert 12.0 + CALM_S <= down <= 12.0 + CALM_S + 0.1
    t = _feed(s, 100, t + 0.05, t + 1.0, step=0.05)
    assert s.level == 2
    shed = s.shed_s(t + 1.0)
    assert shed["faces"] == pytest.approx(down - 12.0)  # faces no longer shed
    assert shed["partial"] == pytest.approx(t + 1.0 - 10.0)  # still shed
    snap = s.snapshot(t + 1.0)
    assert snap["level"] == 2 and snap["shedding"] == ["partial", "incremental"]
    assert snap["shed"] == {"partial": 2, "incremental": 1, "faces": 1}
    assert snap["level_s"] == pytest.approx(t + 1.0 - down, abs=0.06) and snap["enabled"]
    assert snap["lag_ms"] == 100 and snap["peak_lag_ms"] == 2000 and snap["budget_ms"] == BUDGET


@pytest.mark.parametrize("shedder", [LoadShedder(BUDGET, enabled=False), LoadShedder(0.0)], ids=["replay", "budget-0"])
def test_disabled_never_sheds_but_reports_the_lag(shedder):
    _feed(shedder, 60000, 0.0, 10.0)
    assert shedder.level == 0 and all(shedder.allow(k) for k in LEVELS)
    snap = shedder.snapshot(10.0)
    assert snap["shed"] == dict.fromkeys(LEVELS, 0) and snap["shed_s"] == dict.fromkeys(LEVELS, 0.0)
    assert snap["lag_ms"] == 60000 and not snap["enabled"] and snap["shedding"] == []


# ---- a real node ----------------------------------------------------------------------------


def _topic(events, name):
    return sorted((e for e in events if e["topic"] == name), key=lambda e: e["seq"])


@pytest.mark.slow
def test_a_live_node_over_budget_sheds_says_so_and_still_finishes_every_turn(short_session):
    """A real live node (all stages) over a 4-turn recording at recorded pace, fed as its devices
    would feed it. A budget of 2 ms is less than any queued work waits: the node is over it
    whenever work queues, as a node on a starved core is over a real budget. (20 ms, the budget
    this test had, is no longer crossed for long on an idle machine since a segment's decodes
    run beside the utterance thread: it passed only when other tests loaded the machine.)"""
    folder, truth = short_session
    cfg, _ = load(None, overrides=[ENDPOINT, "node.lag_budget_ms=2"])
    events = []
    node = paced_live(cfg, str(folder), sinks=[events.append])
    assert not node.errors, node.errors
    status = _topic(events, "status")
    assert status and all(s["mode"] == "live" and "load" in s for s in status)
    # status said what was shed, while it was shed
    assert any(
        s["load"]["level"] > 0
        and s["load"]["shedding"] == list(LEVELS[: s["load"]["level"]])
        and s["load"]["level_s"] >= 0
        for s in status
    )
    end = node.status()["load"]
    print(f"live node, budget 2 ms: {end}")
    assert end["changes"] >= 1 and end["peak_lag_ms"] > 2
    assert end["shed"]["incremental"] > 0 and end["shed_s"]["partial"] > 0  # counted, and timed
    assert end["shed_s"]["partial"] >= end["shed_s"]["incremental"] >= end["shed_s"]["faces"]
    # every turn still has its final utterance and emotion; the queue is empty at the end
    finals = [u for u in _topic(events, "utterance") if u["final"]]
    emotions = [e for e in _topic(events, "emotion") if e["final"]]
    assert len(finals) == len(truth["turns"]) == node.utterances
    assert {e["utterance_id"] for e in emotions} == {u["utterance_id"] for u in finals}
    assert all(u["text"] for u in finals)
    assert node.segments.qsize() == 0
    assert _topic(events, "session.end")[-1]["reason"] == "end of input"


@pytest.mark.slow
def test_a_replay_never_sheds(short_session):
    """Even with a budget of 1 ms at --speed max (everything waits): level 0, nothing shed, and
    the events are those of a replay with the default budget."""
    folder, _ = short_session
    runs = []
    for budget in ("1", "1000"):
        cfg, _ = load(None, overrides=[ENDPOINT, f"node.lag_budget_ms={budget}"])
        events = []
        node = replay(cfg, str(folder), speed="max", sinks=[events.append])
        assert not node.errors, node.errors
        runs.append((events, node))
    (events, node), (default, _) = runs
    end = node.status()["load"]
    assert end["peak_lag_ms"] > 1 and not end["enabled"]  # the lag is reported ...
    assert end["level"] == 0 and end["changes"] == 0  # ... and nothing is shed
    assert end["shed"] == dict.fromkeys(LEVELS, 0) and end["shed_s"] == dict.fromkeys(LEVELS, 0.0)
    assert all(s["load"]["level"] == 0 for s in _topic(events, "status"))
    for name in ("utterance", "emotion", "face", "utterance.partial", "speech.end"):
        a = [messages.reproducible(e) for e in _topic(events, name)]
        b = [messages.reproducible(e) for e in _topic(default, name)]
        assert a == b, name


def test_the_bench_contention_table_shows_lag_and_what_was_shed():
    """bench --contention: the paced replay (never sheds) beside the live run, with shed counts."""
    from robot_emotion.cli.bench_table import format_table

    lat = {"emotion first": (300.0, 900.0, 10), "emotion final": (800.0, 2000.0, 10)}
    load_ = {
        "peak_lag_ms": 2057.0,
        "shed": {"partial": 0, "incremental": 6, "faces": 3},
        "shed_s": {"partial": 11.2, "incremental": 7.0, "faces": 1.4},
    }
    row = {
        "config": "full",
        "rtf": [0.2],
        "latency": lat,
        "latency_halves_p95": {"emotion final": (2100.0, 1900.0)},
        "paced_cpu_share": 0.4,
        "peak_rss_mb": 1500,
        "paced_load": {"peak_lag_ms": 1500.0, "shed": {}, "shed_s": {}},
        "live": {
            "latency": lat,
            "latency_halves_p95": {},
            "load": load_,
            "status_lag_ms": [1.0, 500.0],
            "skipped": {"provisional": 1, "partial": 0, "incremental": 3},
        },
    }
    table = format_table([row], "demo", None, "1 busy process(es)")
    lines = {
        ln.split(" | ")[1]: ln
        for ln in table.splitlines()
        if ln.startswith("| full | replay (") or ln.startswith("| full | live")
    }
    assert "0 (0 s), 0 (0 s), 0 (0 s)" in lines["replay (never sheds)"]
    live = lines["live semantics"]
    assert "300 / 900" in live and "2057 / " in live and "0 (11 s), 6 (7 s), 3 (1 s)" in live and "| 1, 0, 3 |" in live
    assert "live semantics" not in format_table([{k: v for k, v in row.items() if k != "live"}], "demo")


def test_a_live_node_decodes_beside_the_utterance_thread_and_estimates_early(short_session):
    """Live, the decodes of a segment while it is spoken run on the recogniser's own thread
    (speech_in_progress.py): the segment's end does not wait behind one. Over the 4-turn
    recording at recorded pace with the default budget: decodes ran and were timed, each turn
    got an early estimate from words heard before its pause, ahead of its full result, and every
    turn still ends in one final utterance and emotion with text."""
    folder, truth = short_session
    cfg, _ = load(None, overrides=[ENDPOINT])
    events = []
    node = paced_live(cfg, str(folder), sinks=[events.append])
    assert not node.errors, node.errors
    stages = node.status()["stages"]
    assert stages["asr_incremental"]["n"] > 0
    finals = [u for u in _topic(events, "utterance") if u["final"]]
    assert len(finals) == len(truth["turns"]) == node.utterances and all(u["text"] for u in finals)
    emotions = _topic(events, "emotion")
    assert {e["utterance_id"] for e in emotions if e["final"]} == {u["utterance_id"] for u in finals}
    early = [e for e in emotions if e.get("early")]
    assert len(early) >= len(truth["turns"]) - 1  # (a turn's first segment may be too short to decode)
    for e in early:
        assert e["text_end"] <= e["end"] + 1e-6 and e["text"]
        full = [x for x in emotions if x["utterance_id"] == e["utterance_id"] and not x.get("early")]
        assert full and events.index(e) < events.index(full[0])
