"""MELD.Raw reader: layout, quirks (mojibake, times, gaps, overlaps, corrupt / missing / extra
clips, final_videos_test*), the skip summary, one-line errors, and the real dev CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from robot_emotion.data.meld import COLUMNS, MeldError, MeldLayout, open_meld, parse_time, read_meld_csv, read_rows

SHARED_MELD = Path(os.environ.get("MELD_DIR", Path(__file__).resolve().parents[2] / "shared" / "meld"))
COLS = list(COLUMNS)


def _write_csv(path: Path, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLS)
        for i, r in enumerate(rows):
            w.writerow([i + 1, *r])


def _clip(folder: Path, name: str, size: int = 64):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\x00" * size)


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "MELD.Raw"
    root.mkdir()
    tr, dv, te = root / "train" / "train_splits", root / "dev_splits_complete", root / "output_repeated_splits_test"
    _write_csv(
        root / "train_sent_emo.csv",
        [
            ("Hi there.", "Ross", "neutral", "neutral", 0, 0, 1, 1, "00:01:00,000", "00:01:02,500"),
            ("HeÂ’s here!", "Joey", "joy", "positive", 0, 1, 1, 1, "0:01:02,100", "0:01:04,000"),  # overlap
            ("Later turn.", "Ross", "anger", "negative", 0, 3, 1, 1, "00:01:05,28", "00:01:06,000"),  # gap, 2-digit
            ("Broken.", "Monica", "sadness", "negative", 125, 3, 1, 1, "00:02:00,000", "00:02:01,000"),
        ],
    )
    for n in ("dia0_utt0.mp4", "dia0_utt1.mp4", "dia0_utt3.mp4", "dia125_utt3.mp4"):
        _clip(tr, n)
    _write_csv(
        root / "dev_sent_emo.csv",
        [
            ("One.", "Rachel", "fear", "negative", 110, 6, 2, 2, "00:00:01,000", "00:00:02,000"),
            ("Missing clip.", "Phoebe", "surprise", "positive", 110, 7, 2, 2, "00:00:02,000", "00:00:03,000"),
            ("Empty file.", "Phoebe", "disgust", "negative", 111, 0, 2, 2, "00:00:04,000", "00:00:05,000"),
        ],
    )
    for n in ("dia110_utt6.mp4", "dia49_utt4.mp4", "dia49_utt5.mp4", "dia66_utt9.mp4", "dia66_utt10.mp4"):
        _clip(dv, n)
    _clip(dv, "dia111_utt0.mp4", size=0)
    # test: a cp1252 file (not UTF-8 at all), an extra clip, final_videos_test*
    _write_csv(
        root / "test_sent_emo.csv",
        [
            ("It\u2019s fine\u2026", "Chandler", "neutral", "neutral", 108, 1, 3, 3, "00:00:01,000", "00:00:02,000"),
        ],
        encoding="cp1252",
    )
    for n in ("dia108_utt1.mp4", "dia108_utt2.mp4", "final_videos_testdia0_utt0.mp4"):
        _clip(te, n)
    return root


def test_times():
    assert parse_time("00:20:57,256") == pytest.approx(1257.256)
    assert parse_time("0:36:59,425") == pytest.approx(2219.425)
    assert parse_time("00:06:47,28") == pytest.approx(407.28)
    assert parse_time("") is None and parse_time("garbage") is None


def test_quirks_and_summary(raw):
    s = open_meld(raw, ("train", "dev", "test"))
    tr, dv, te = s["train"], s["dev"], s["test"]
    assert [c.name for c in tr.clips] == ["dia0_utt0", "dia0_utt1", "dia0_utt3"]
    assert tr.rows[1].text == "He’s here!"  # mojibake repaired
    assert tr.rows[2].start == pytest.approx(65.28)
    assert tr.notes["overlapping utterances"] == 1
    assert tr.notes["dialogues with Utterance_ID gaps"] >= 1
    assert tr.history(tr.rows[2]) == [("Ross", "Hi there."), ("Joey", "He’s here!")]  # past only
    assert dict(tr.skipped)["dia125_utt3"].startswith("known corrupt")
    why = dict(dv.skipped)
    assert "no clip" in why["dia110_utt7"] and "empty" in why["dia111_utt0"]
    for n in ("dia49_utt4.mp4", "dia49_utt5.mp4", "dia66_utt9.mp4", "dia66_utt10.mp4"):
        assert "no CSV row" in why[n]
    assert [c.name for c in dv.clips] == ["dia110_utt6"]
    # dia110_utt7 has no clip but is still dialogue context for later turns
    assert [r.name for r in dv.rows][:2] == ["dia110_utt6", "dia110_utt7"]
    assert te.rows[0].text == "It’s fine…"  # cp1252 file decoded
    why = dict(te.skipped)
    assert "no CSV row" in why["dia108_utt2.mp4"] and "final_videos_test" in why["final_videos_testdia0_utt0.mp4"]
    text = "\n".join(x.summary() for x in s.values())
    for item in (
        "dia125_utt3",
        "dia110_utt7",
        "dia111_utt0",
        "dia49_utt4.mp4",
        "dia66_utt10.mp4",
        "dia108_utt2.mp4",
        "final_videos_testdia0_utt0.mp4",
    ):
        assert f"skipped {item}:" in text
    assert "dev: 3 CSV rows, 1 usable clips, 6 skipped" in text


def test_missing_files_one_line(tmp_path, raw):
    with pytest.raises(MeldError) as e:
        open_meld(tmp_path / "nope")
    assert "not found" in str(e.value) and "\n" not in str(e.value)
    (raw / "dev_sent_emo.csv").unlink()
    with pytest.raises(MeldError) as e:
        open_meld(raw, ("train", "dev"))
    assert "missing dev_sent_emo.csv" in str(e.value) and "\n" not in str(e.value)
    lay = MeldLayout.explicit({"train": raw / "train_sent_emo.csv"}, {"train": raw / "train" / "train_splits"})
    assert len(lay.split("train").clips) == 3
    with pytest.raises(MeldError):
        MeldLayout.explicit({"dev": raw / "dev_sent_emo.csv"}, {})


def test_real_dev_csv():
    f = SHARED_MELD / "dev_sent_emo.csv"
    if not f.is_file():
        pytest.skip(f"{f} is absent (real MELD CSVs live in ../shared/meld)")
    rows, bad = read_rows("dev", f)
    assert len(rows) == 1109 and not bad
    assert all(r.start is not None and r.end is not None for r in rows)
    assert len({r.dialogue_id for r in rows}) == 114


def test_cut_or_short_rows_name_their_line(tmp_path, raw):
    """A CSV cut mid-row (inside a quoted field or between fields) or with a short row is an
    InputError naming the file and the row's line, in both the split reader and the text reader."""
    from robot_emotion.errors import EXIT_INPUT, InputError

    good = (raw / "train_sent_emo.csv").read_bytes()
    lines = good.split(b"\r\n")
    cases = {
        "cut_in_quotes.csv": b"\r\n".join(lines[:3]) + b'\r\n4,"Later tu',  # line 4
        "cut_between_fields.csv": b"\r\n".join(lines[:3]) + b"\r\n4,Later turn.,Ross",
        "short_row.csv": b"\r\n".join([lines[0], lines[1], b"2,Hi,Joey,joy", *lines[3:]]),  # line 3
    }
    for name, body in cases.items():
        f = tmp_path / name
        f.write_bytes(body)
        for read in (lambda: read_rows("train", f), lambda: read_meld_csv(f)):
            with pytest.raises(MeldError) as e:
                read()
            msg = str(e.value)
            assert isinstance(e.value, InputError) and e.value.code == EXIT_INPUT
            assert msg.startswith(f"{f} line {3 if name == 'short_row.csv' else 4}:") and "\n" not in msg, msg
    # blank lines (a trailing newline or two) are not rows
    (tmp_path / "blank.csv").write_bytes(good + b"\r\n\r\n")
    assert len(read_rows("train", tmp_path / "blank.csv")[0]) == 4
    # the split reader leaves a row with an unknown emotion out and reports it; the text reader refuses it
    bad = tmp_path / "bad_emotion.csv"
    bad.write_bytes(good.replace(b",anger,", b",rage,"))
    rows, skipped = read_rows("train", bad)
    assert len(rows) == 3 and skipped == [("dia0_utt3", "unknown emotion 'rage' in the CSV")]
    with pytest.raises(MeldError, match=r"line 4: unknown emotion 'rage'"):
        read_meld_csv(bad)


def test_text_reader_is_the_split_reader(raw):
    """read_meld_csv returns the same parsed rows as the split reader (one parser), in file order."""
    f = raw / "train_sent_emo.csv"
    text_rows = read_meld_csv(f)
    split_rows, _ = read_rows("train", f)
    assert [(r.name, r.speaker, r.text, r.emotion) for r in text_rows] == [
        (r.name, r.speaker, r.text, r.emotion) for r in split_rows
    ]
    assert text_rows[1].text == "He’s here!" and read_meld_csv(f, limit=2)[-1].name == "dia0_utt1"
    with pytest.raises(MeldError, match="not found"):
        read_meld_csv(raw / "nope.csv")
