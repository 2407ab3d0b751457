"""Every failure a user can cause: ONE line `robot-emotion: error: ...`, the documented exit code
(2 usage/config, 3 input, 4 runtime), no traceback -- through the real CLI, one row per failure.

Every row but one fails before any model loads (`quick`: no "# loading" progress line on stderr);
a checkpoint whose dims differ from the text encoder's is only known once that encoder loaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import time
import typing
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from robot_emotion import config as C

# The node prints "# loading <stage>" before each model loads (runner.build_perception): a row
# refused before any model loads has none of these lines; the row that needs a model has them.
LOADING = "# loading "
META = {"format": "robot_emotion.session", "version": 1, "session_id": "t", "unix_start": 0.0, "sample_rate": 16000}


def _wav(path: Path, seconds: float = 1.0) -> None:
    """A real 16 kHz mono recording (quiet noise): a replay source that would load every model."""
    x = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 30).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(x.tobytes())


def _session(meta: bytes, times: bytes | None = None):
    """A session folder with the given session.json (and video_times.csv + a video stub)."""

    def make(folder: Path) -> None:
        folder.mkdir()
        (folder / "session.json").write_bytes(meta)
        _wav(folder / "audio.wav")
        if times is not None:
            (folder / "video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
            (folder / "video_times.csv").write_bytes(times)

    return make


def _checkpoint(family="late", dims=None, labels=None, n_classes=7):
    """A checkpoint saved with the project's own writer, as `robot-emotion train` would."""

    def make(path: Path) -> None:
        from robot_emotion import EMOTIONS
        from robot_emotion.models import build_model, save_checkpoint

        d = dims or {"text": 0, "face": 0}
        save_checkpoint(
            path,
            build_model(family, d, n_classes),
            family=family,
            dims=d,
            hparams={},
            labels=labels or EMOTIONS[:n_classes],
            training={},
            metrics={},
            encoders={
                "text": {"id": "text_emotion@all-MiniLM-L6-v2", "version": "80877497727e"},
                "face": {"id": "fer2013-mini-xception", "version": "1"},
            },
        )

    return make


def _text(content: str | bytes):
    def make(path: Path) -> None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return make


def _busy_port():
    """A real socket holding a loopback port for the duration of the row."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


BINARY = bytes(range(256)) * 8
MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
MELD_ROW = '1,"Oh, hi!",Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
# id, args ({tmp} = the row's folder, {wav} = a real recording there, {busy} = a port held open),
# files to create, exit code, fragment of the one line, quick (refused before any model loads)
ROWS = [
    # session folders a user hands to replay
    ("session-json-array", ["replay", "{tmp}/s"], {"s": _session(b"[1, 2, 3]")}, 3, "expected a JSON object", True),
    (
        "session-version-string",
        ["replay", "{tmp}/s"],
        {"s": _session(json.dumps({**META, "version": "2"}).encode())},
        3,
        "'version' must be a positive integer",
        True,
    ),
    ("session-json-binary", ["replay", "{tmp}/s"], {"s": _session(BINARY)}, 3, "session.json", True),
    (
        "session-unix-start-nan",
        ["replay", "{tmp}/s"],
        {"s": _session(json.dumps({**META, "unix_start": math.nan}).encode())},
        3,
        "unix_start",
        True,
    ),
    (
        "video-times-binary",
        ["replay", "{tmp}/s"],
        {"s": _session(json.dumps(META).encode(), BINARY)},
        3,
        "video_times.csv",
        True,
    ),
    (
        "video-times-bad-row",
        ["replay", "{tmp}/s"],
        {"s": _session(json.dumps(META).encode(), b"frame,t\n0,0.0\nbanana\n1,0.1\n")},
        3,
        "line 3",
        True,
    ),
    # config files and --set
    (
        "launch-calibration-not-a-path",
        ["replay", "{wav}", "--launch", "{tmp}/l.toml"],
        {"l.toml": _text("calibration = 42\n")},
        2,
        "'calibration' must be the path",
        True,
    ),
    (
        "history-max-turns-negative",
        ["replay", "{wav}", "--set", "node.history_max_turns=-5"],
        {},
        2,
        "node.history_max_turns",
        True,
    ),
    (
        "min-face-px-bigger-than-frame",
        ["replay", "{wav}", "--set", "faces.min_face_px=500"],
        {},
        2,
        "faces.min_face_px",
        True,
    ),
    (
        "speaker-threshold-nan",
        ["replay", "{wav}", "--set", "speakers.min_turn_s=nan"],
        {},
        2,
        "speakers.min_turn_s",
        True,
    ),
    (
        "nan-in-calibration-file",
        ["replay", "{wav}", "--calibration", "{tmp}/c.toml"],
        {"c.toml": _text("[av]\noffset_ms = nan\n")},
        2,
        "av.offset_ms",
        True,
    ),
    (
        "min-utterance-above-max",
        ["replay", "{wav}", "--set", "vad.min_utterance_ms=10000", "--set", "vad.max_utterance_s=1"],
        {},
        2,
        "vad.min_utterance_ms",
        True,
    ),
    ("missing-checkpoint-file", ["replay", "{wav}", "--model", "{tmp}/nope.pt"], {}, 3, "checkpoint not found", True),
    # arguments
    ("speed-nan", ["replay", "{wav}", "--speed", "nan"], {}, 2, "--speed", True),
    ("speed-inf", ["replay", "{wav}", "--speed", "inf"], {}, 2, "--speed", True),
    ("speed-negative", ["replay", "{wav}", "--speed", "-2"], {}, 2, "--speed", True),
    ("replay-out-is-a-folder", ["replay", "{wav}", "--out", "{tmp}"], {}, 2, "is a folder", True),
    (
        "replay-out-in-a-missing-folder",
        ["replay", "{wav}", "--out", "{tmp}/no/such/x.jsonl"],
        {},
        2,
        "does not exist",
        True,
    ),
    ("run-out-is-a-folder", ["run", "--out", "{tmp}", "--duration", "1"], {}, 2, "is a folder", True),
    (
        "record-onto-a-file",
        ["record", "{tmp}/taken.txt", "--duration", "1"],
        {"taken.txt": _text("x")},
        2,
        "it is a file",
        True,
    ),
    ("record-duration-negative", ["record", "{tmp}/new", "--duration", "-1"], {}, 2, "--duration", True),
    ("run-duration-nan", ["run", "--duration", "nan"], {}, 2, "--duration", True),
    # checkpoints that would fail at the first utterance: refused while the emotion stage loads
    (
        "checkpoint-with-5-labels",
        ["replay", "{wav}", "--model", "{tmp}/five.pt"],
        {"five.pt": _checkpoint(n_classes=5)},
        3,
        "are not the node's 7 emotions",
        True,
    ),
    (
        "checkpoint-with-other-dims",
        [
            "replay",
            "{wav}",
            "--model",
            "{tmp}/dims.pt",
            "--set",
            "asr.enabled=false",
            "--set",
            "speakers.enabled=false",
        ],
        {"dims.pt": _checkpoint("early", {"text": 300, "face": 128})},
        3,
        "300-dimensional",
        True,  # refused from the text model's description, before it loads
    ),
    # the publisher's endpoint: bound before any model loads (publish.check_endpoint)
    ("endpoint-bad-address", ["replay", "{wav}", "--endpoint", "tcp://300.1.1.1:1"], {}, 2, "300.1.1.1", True),
    ("endpoint-busy-port", ["replay", "{wav}", "--endpoint", "tcp://127.0.0.1:{busy}"], {}, 2, "127.0.0.1", True),
    # MELD CSVs and the evaluation's outputs: refused before the model loads (data/meld.py, evaluate.py)
    (
        "meld-csv-cut-mid-row",
        ["evaluate", "--meld-csv", "{tmp}/cut.csv"],
        {"cut.csv": _text(MELD_HEADER + MELD_ROW + '2,"Well, I nev')},
        3,
        "line 3",
        True,
    ),
    (
        "meld-csv-short-row",
        ["evaluate", "--meld-csv", "{tmp}/short.csv"],
        {"short.csv": _text(MELD_HEADER + MELD_ROW + "2,Okay,Ross,neutral\n" + MELD_ROW)},
        3,
        "line 3",
        True,
    ),
    (
        "evaluate-json-is-a-folder",
        ["evaluate", "--meld-csv", "{tmp}/ok.csv", "--json", "{tmp}"],
        {"ok.csv": _text(MELD_HEADER + MELD_ROW)},
        2,
        "--json",
        True,
    ),
]


@pytest.mark.parametrize("name,args,files,code,fragment,quick", [pytest.param(*r, id=r[0]) for r in ROWS])
def test_one_line_error_and_exit_code(tmp_path, name, args, files, code, fragment, quick):
    _wav(tmp_path / "speech.wav", 3.0)
    for rel, make in files.items():
        make(tmp_path / rel)
    busy = _busy_port()
    try:
        port = busy.getsockname()[1]
        argv = [a.format(tmp=tmp_path, wav=tmp_path / "speech.wav", busy=port) for a in args]
        t0 = time.monotonic()
        r = run_cli(*argv, timeout=300)
        wall = time.monotonic() - t0  # for the message only: this machine's load varies
    finally:
        busy.close()
    err = r.stderr.strip().splitlines()
    errors = [line for line in err if line.startswith("robot-emotion: error:")]
    assert r.returncode == code, f"{name}: exit {r.returncode}, stderr:\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(errors) == 1 and errors[0] == err[-1], f"want one error line, last: {r.stderr[-2000:]}"
    assert fragment in errors[0], errors[0]
    loading = [line for line in err if line.startswith(LOADING)]
    if quick:
        assert not loading, f"{name}: refused only after models started loading ({wall:.1f} s): {loading}"
    else:
        assert loading, f"{name}: no '{LOADING}...' progress line: the quick rows' check proves nothing"


# ---- the config table itself: every field has a rule, refuses NaN/inf and other types ----


def _fields():
    hints = typing.get_type_hints(C.Config)
    for section, sect_type in hints.items():
        for name, typ in typing.get_type_hints(sect_type).items():
            yield section, name, typ


def test_every_config_field_has_a_rule():
    fields = {(s, n) for s, n, _ in _fields()}
    rules = {(s, n) for s, table in C.RULES.items() for n in table}
    assert not fields - rules, f"fields without a range or choice set: {sorted(fields - rules)}"
    assert not rules - fields, f"rules for fields that do not exist: {sorted(rules - fields)}"
    defaults = C.Config()
    for s, n, _ in _fields():  # the defaults pass their own rules, and consistency holds
        assert C.RULES[s][n].ok(getattr(getattr(defaults, s), n)), f"default of {s}.{n} fails its rule"
    C.check_consistent(defaults)


@pytest.mark.parametrize("section,name,typ", [pytest.param(*f, id=f"{f[0]}.{f[1]}") for f in _fields()])
def test_every_field_refuses_wrong_types_and_non_finite_numbers(section, name, typ):
    wrong = {bool: "3", int: "1.5", float: '"x"', str: "7"}[typ]
    with pytest.raises(C.ConfigError, match=rf"'{section}\.{name}'"):
        C.load(None, overrides=[f"{section}.{name}={wrong}"])
    if typ is float:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(C.ConfigError, match=rf"'{section}\.{name}' must be a finite number"):
                C.load(None, overrides=[f"{section}.{name}={value}"])
    if typ in (int, float) and name not in ("offset_ms", "gain_db", "min_logprob"):
        with pytest.raises(C.ConfigError, match=rf"'{section}\.{name}'"):  # no count, size,
            C.load(None, overrides=[f"{section}.{name}=-1000000"])  # rate or time < 0


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["vad.min_utterance_ms=10000", "vad.max_utterance_s=1"], "vad.min_utterance_ms"),
        (["faces.min_face_px=300", "faces.max_face_px=200"], "faces.min_face_px"),
        (["camera.height=240", "faces.min_face_px=300"], "faces.min_face_px"),
        (["node.history_max_turns=4"], "node.history_max_turns"),
        (["speakers.probe_s=5", "vad.max_utterance_s=4"], "speakers.probe_s"),
    ],
)
def test_fields_that_must_agree(overrides, key):
    with pytest.raises(C.ConfigError, match=rf"'{key}'"):
        C.load(None, overrides=overrides)
    if len(overrides) > 1:  # each value alone is in range: only the combination is refused
        for item in overrides:
            C.load(None, overrides=[item])


def test_config_replaced_by_code_is_checked_too():
    cfg = dataclasses.replace(
        C.Config(), vad=dataclasses.replace(C.Config().vad, min_utterance_ms=5000, max_utterance_s=2.0)
    )
    with pytest.raises(C.ConfigError, match="vad.min_utterance_ms"):
        C.from_dict(cfg.to_dict())
