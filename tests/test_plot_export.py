"""`robot-emotion plot` / `export`: a session's final turns as a timeline PNG and as
SRT / WebVTT / RTTM / CSV, on a hand-written events file (exact content) and on real node output."""

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import free_endpoint, run_cli
from robot_emotion.cli.export import CSV_COLUMNS, timestamp
from robot_emotion.cli.session_events import load_session_events
from robot_emotion.cli.timeline_plot import DPI, EMOTION_COLORS, figure_size

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")


def _probs(label, p):
    probs = {e: round((1 - p) / 6, 4) for e in EMOTIONS}
    probs[label] = p
    return probs


class Events:
    """Bodies as the node publishes them (seq per topic, common fields)."""

    def __init__(self):
        self.bodies, self.seq = [], {}

    def pub(self, topic, **fields):
        seq = self.seq.get(topic, 0)
        self.seq[topic] = seq + 1
        self.bodies.append({"topic": topic, **fields, "v": 2, "seq": seq, "session": "unit 1", "stamp": 0.0})

    def turn(
        self,
        uid,
        start,
        end,
        speaker,
        text,
        label=None,
        p=None,
        final=True,
        speech=True,
        face=None,
        lat=(200.0, 700.0, 710.0),
    ):
        utt = dict(
            utterance_id=uid,
            speech=speech,
            start=start,
            end=end,
            speaker=speaker,
            face_track=face,
            text=text,
            latency_ms={"asr": lat[0], "total": lat[1]},
        )
        if final is not None:
            utt["final"] = final
        self.pub("utterance", **utt)
        if speech:
            emo = dict(
                utterance_id=uid,
                start=start,
                end=end,
                speaker=speaker,
                face_track=face,
                text=text,
                label=label,
                probs=_probs(label, p) if label else None,
                modalities={"text": True, "audio": False, "face": face is not None},
                model="late:test",
                latency_ms={"text": 50.0, "fusion": 1.0, "total": lat[2]},
            )
            if final is not None:
                emo["final"] = final
            self.pub("emotion", **emo)

    def write(self, path):
        path.write_text("".join(json.dumps(b) + "\n" for b in self.bodies))
        return path


def known_session(path):
    ev = Events()
    ev.pub("face", t=0.0, tracks=[{"id": 0, "box": [0, 0, 10, 10], "speaking": False}])
    ev.pub("speech.start", utterance_id="0", start=0.5, t=0.7)
    ev.pub("speech.end", utterance_id="0", start=0.5, end=2.25, forced=False, dropped=False, t=2.35)
    # provisional first, then the final version with more text and another emotion
    ev.turn("0", 0.5, 1.2, "S0", "Hello", "anger", 0.5, final=False, face=0, lat=(100.0, 300.0, 310.0))
    ev.turn("0", 0.5, 2.25, "S0", "Hello there, robot", "joy", 0.8125, final=True, face=0)
    ev.pub("face", t=0.2, tracks=[{"id": 0, "box": [0, 0, 10, 10], "speaking": True}])
    ev.turn("1", 2.5, 3.0, None, None, speech=False)  # a door: non-speech
    ev.turn("2", 3.1, 4.0, None, "who is that", "surprise", 0.4)  # words, no known voice
    ev.turn("3", 61.002, 65.5, "S1", 'It said "stop" --> and went', None)  # no estimate; quotes; -->
    ev.turn("4", 3725.25, 3727.0, "S10", "an hour later", "sadness", 0.6, final=None)  # no `final`: final
    return ev.write(path)


SRT = """1
00:00:00,500 --> 00:00:02,250
S0: Hello there, robot [joy]

2
00:01:01,002 --> 00:01:05,500
S1: It said "stop" -> and went

3
01:02:05,250 --> 01:02:07,000
S10: an hour later [sadness]
"""

VTT = """WEBVTT

0
00:00:00.500 --> 00:00:02.250
S0: Hello there, robot [joy]

3
00:01:01.002 --> 00:01:05.500
S1: It said "stop" -> and went

4
01:02:05.250 --> 01:02:07.000
S10: an hour later [sadness]
"""

RTTM = """SPEAKER unit_1 1 0.500 1.750 <NA> <NA> S0 <NA> <NA>
SPEAKER unit_1 1 61.002 4.498 <NA> <NA> S1 <NA> <NA>
SPEAKER unit_1 1 3725.250 1.750 <NA> <NA> S10 <NA> <NA>
"""

CSV = """utterance_id,start,end,speaker,face_track,speech,text,emotion,probability,asr_ms,utterance_latency_ms,emotion_latency_ms,final
0,0.500,2.250,S0,0,1,"Hello there, robot",joy,0.8125,200.0,700.0,710.0,1
1,2.500,3.000,,,0,,,,200.0,700.0,,1
2,3.100,4.000,,,1,who is that,surprise,0.4000,200.0,700.0,710.0,1
3,61.002,65.500,S1,,1,"It said ""stop"" --> and went",,,200.0,700.0,710.0,1
4,3725.250,3727.000,S10,,1,an hour later,sadness,0.6000,200.0,700.0,710.0,1
"""


@pytest.fixture()
def known(tmp_path):
    return known_session(tmp_path / "events.jsonl")


@pytest.mark.parametrize("fmt,expected", [("srt", SRT), ("vtt", VTT), ("rttm", RTTM), ("csv", CSV)])
def test_exports_of_known_turns_are_exact(known, fmt, expected):
    r = run_cli("export", known, "--format", fmt)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected


def test_export_to_a_file_and_from_a_session_folder(known, tmp_path):
    out = tmp_path / "subs.srt"
    r = run_cli("export", tmp_path, "--format", "srt", "--out", out)  # the folder holds events.jsonl
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and out.read_text() == SRT


def test_timestamps_round_to_the_millisecond():
    assert timestamp(0.0, ",") == "00:00:00,000"
    assert timestamp(59.9996, ".") == "00:01:00.000"
    assert timestamp(3600 * 12 + 0.0014, ",") == "12:00:00,001"


def test_final_version_is_the_last_body_per_id(known):
    ev = load_session_events(known)
    by_id = {t.utterance_id: t for t in ev.turns}
    assert [t.utterance_id for t in ev.turns] == ["0", "1", "2", "3", "4"]
    assert by_id["0"].text == "Hello there, robot" and by_id["0"].label == "joy" and by_id["0"].end == 2.25
    assert by_id["0"].first_emotion_ms == 310.0 and by_id["0"].emotion_ms == 710.0
    assert by_id["4"].final and not by_id["1"].speech
    assert ev.speakers == ["S0", "S1", "S10"]


def _one_line_error(r, code, fragment):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("robot-emotion"), err
    assert fragment in err, err


def test_bad_inputs_give_one_line_errors(known, tmp_path):
    _one_line_error(run_cli("export", tmp_path / "nope.jsonl", "--format", "csv"), 3, "not found")
    _one_line_error(run_cli("plot", tmp_path / "nope.jsonl", "--out", tmp_path / "x.png"), 3, "not found")
    r = run_cli("export", known, "--format", "txt")  # argparse: usage, then the error line
    assert r.returncode == 2 and "invalid choice: 'txt'" in r.stderr.splitlines()[-1] and not r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "events.jsonl").write_text("")
    _one_line_error(run_cli("plot", empty, "--out", tmp_path / "x.png"), 3, "no events")
    bad = tmp_path / "bad.jsonl"
    lines = known.read_text().splitlines()
    bad.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    _one_line_error(run_cli("export", bad, "--format", "csv"), 3, "bad.jsonl:3")
    _one_line_error(run_cli("export", tmp_path / "nope_dir", "--format", "csv"), 3, "nope_dir")
    _one_line_error(run_cli("plot", known, "--out", tmp_path / "no_dir" / "x.png"), 3, "cannot write")
    _one_line_error(
        run_cli("export", known, "--format", "srt", "--out", tmp_path / "no_dir" / "x.srt"), 3, "cannot write"
    )
    assert not (tmp_path / "x.png").exists()


def test_a_session_without_turns_plots_and_exports_empty(tmp_path):
    ev = Events()
    for i in range(3):
        ev.pub("status", uptime=float(i), t=float(i), stages={}, queues={}, dropped={}, sources={})
    quiet = ev.write(tmp_path / "quiet.jsonl")
    r = run_cli("plot", quiet, "--out", tmp_path / "q.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "q.png").size == (1200, round(figure_size(load_session_events(quiet))[1] * DPI))
    assert run_cli("export", quiet, "--format", "srt").stdout == ""
    assert run_cli("export", quiet, "--format", "csv").stdout == ",".join(CSV_COLUMNS) + "\n"


def test_a_truncated_last_line_is_tolerated(known, tmp_path):
    cut = tmp_path / "cut.jsonl"
    cut.write_text(known.read_text() + '{"topic": "utterance", "utterance_id": "9", "sta')
    r = run_cli("export", cut, "--format", "srt")
    assert r.returncode == 0 and r.stdout == SRT


def _png_stats(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    packed = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    return img, len(np.unique(packed))  # (np.unique of rows, axis=0, took ~20 s on a large figure)


def _has_color(img, hex_color, min_pixels=50):
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(img.astype(int) - rgb) <= 2, axis=-1).sum()) >= min_pixels


def test_plot_of_known_turns_draws_their_emotions(known, tmp_path):
    out = tmp_path / "t.png"
    r = run_cli("plot", known, "--out", out)
    assert r.returncode == 0, r.stderr
    img, n_colors = _png_stats(out)
    w, h = figure_size(load_session_events(known))
    assert img.shape[:2] == (round(h * DPI), round(w * DPI))
    assert n_colors > 50 and (img < 250).any(axis=-1).mean() > 0.03  # drawn, not a blank canvas
    # the final emotions have bars; the provisional one's colour (anger) appears only in the legend
    assert _has_color(img, EMOTION_COLORS["joy"], 500) and _has_color(img, EMOTION_COLORS["sadness"], 500)
    assert _has_color(img, EMOTION_COLORS["anger"], 20) and not _has_color(img, EMOTION_COLORS["anger"], 500)


def test_many_speakers_make_a_taller_figure(tmp_path):
    ev = Events()
    for i in range(14):
        ev.turn(str(i), i * 1.5, i * 1.5 + 1.2, f"S{i}", f"line number {i}", EMOTIONS[i % 7], 0.7)
    many = load_session_events(ev.write(tmp_path / "many.jsonl"))
    two = Events()
    for i in range(14):
        two.turn(str(i), i * 1.5, i * 1.5 + 1.2, f"S{i % 2}", f"line number {i}", EMOTIONS[i % 7], 0.7)
    few = load_session_events(two.write(tmp_path / "few.jsonl"))
    assert figure_size(many)[0] == figure_size(few)[0]
    assert figure_size(many)[1] > figure_size(few)[1] + 12 * 0.5  # one lane per speaker
    out = tmp_path / "many.png"
    assert run_cli("plot", many.source, "--out", out).returncode == 0
    img, _ = _png_stats(out)
    for e in EMOTIONS:
        assert _has_color(img, EMOTION_COLORS[e], 1000), e


# --- real node output ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_events(short_session, tmp_path_factory):
    """The short two-speaker session (audio + video) replayed through the full node."""
    folder, truth = short_session
    out = tmp_path_factory.mktemp("node") / "events.jsonl"
    r = run_cli("replay", folder, "--out", out, "--quiet", "--endpoint", free_endpoint(), timeout=600)
    assert r.returncode == 0, r.stderr
    return out, truth


def test_plot_of_real_node_output(node_events, tmp_path):
    events_file, truth = node_events
    ev = load_session_events(events_file)
    assert len(ev.speakers) == 2 and ev.faces and any(t.label for t in ev.turns)
    out = tmp_path / "timeline.png"
    r = run_cli("plot", events_file, "--out", out)
    assert r.returncode == 0, r.stderr
    img, n_colors = _png_stats(out)
    w, h = figure_size(ev)
    assert img.shape[:2] == (round(h * DPI), round(w * DPI)) and img.shape[1] >= 1200
    assert n_colors > 50 and (img < 250).any(axis=-1).mean() > 0.03
    for t in ev.turns:  # every final emotion has a bar of its colour
        if t.label:
            assert _has_color(img, EMOTION_COLORS[t.label], 300), t.label


def test_exports_of_real_node_output_parse_back(node_events):
    events_file, truth = node_events
    turns = [t for t in load_session_events(events_file).turns]
    speech = [t for t in turns if t.is_speech]
    assert len(speech) >= len(truth["turns"]) - 1

    srt = run_cli("export", events_file, "--format", "srt").stdout
    blocks = [b.splitlines() for b in srt.strip().split("\n\n")]
    assert [int(b[0]) for b in blocks] == list(range(1, len(speech) + 1))
    for b, t in zip(blocks, speech):
        m = re.fullmatch(r"(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})", b[1])
        a = [int(x) for x in m.groups()]
        assert abs(a[0] * 3600 + a[1] * 60 + a[2] + a[3] / 1000 - t.start) < 0.001
        assert abs(a[4] * 3600 + a[5] * 60 + a[6] + a[7] / 1000 - t.end) < 0.001
        assert b[2].startswith(f"{t.speaker}: ") and (not t.label or b[2].endswith(f"[{t.label}]"))

    vtt = run_cli("export", events_file, "--format", "vtt").stdout
    assert vtt.startswith("WEBVTT\n\n")
    assert len(re.findall(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$", vtt, re.M)) == len(speech)

    rttm = run_cli("export", events_file, "--format", "rttm").stdout.splitlines()
    assert len(rttm) == len(speech)
    for line, t in zip(rttm, speech):
        f = line.split()
        assert len(f) == 10 and f[0] == "SPEAKER" and f[2] == "1" and f[7] == t.speaker
        assert abs(float(f[3]) - t.start) < 0.001 and abs(float(f[4]) - (t.end - t.start)) < 0.002

    rows = list(csv.DictReader(io.StringIO(run_cli("export", events_file, "--format", "csv").stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(turns)
    assert len({r["utterance_id"] for r in rows}) == len(rows)  # one row per turn: finals only
    for r, t in zip(rows, turns):
        assert r["text"] == (t.text or "") and r["emotion"] == (t.label or "")
        if t.label:
            assert abs(float(r["probability"]) - t.probs[t.label]) < 1e-4 and float(r["emotion_latency_ms"]) > 0
