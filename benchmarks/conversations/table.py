"""The table `benchmarks/conversations/score.py` prints: one row per file, pooled and mean rows
per split and condition, and the notes under it (text on non-speech, latencies by how a turn
closed, overlap flags)."""

from __future__ import annotations

import numpy as np

CLOSES = ("pause", "voice", "inside")  # how a turn closed: a pause, another voice, inside a segment


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _ms(xs) -> str:
    if not xs:
        return "-"
    return f"{np.median(xs):.0f}/{np.percentile(xs, 95):.0f}"


COLUMNS = [
    "file",
    "dur s",
    "spk",
    "spk=",
    "spk±1",
    "turns",
    "utts",
    "u/t",
    "DER%",
    "DER.25%",
    "miss%",
    "fa%",
    "conf%",
    "JER%",
    "WER%",
    "ref w",
    "txt@ns",
    "neg w",
    "utt ms",
    "emo ms",
]


def row_cells(r: dict, mean: bool = False) -> list[str]:
    total = "files" in r
    if mean:
        m = r["mean"]
        return [
            f"mean {r['name']}" if r["name"] != "TOTAL" else "mean",
            "",
            "",
            "",
            "",
            "",
            "",
            "" if m["utts_per_turn"] is None else f"{m['utts_per_turn']:.2f}",
            _pct(m["der"]),
            _pct(m["der_collar"]),
            _pct(m["miss"]),
            _pct(m["false_alarm"]),
            _pct(m["confusion"]),
            _pct(m["jer"]),
            _pct(m["wer"]),
            "",
            "",
            "",
            "",
            "",
        ]
    if total:
        eq, w1 = f"{r['speakers_equal']}/{r['files']}", f"{r['speakers_within_one']}/{r['files']}"
    else:
        eq, w1 = ("y" if r["speakers_equal"] else "n"), ("y" if r["speakers_within_one"] else "n")
    return [
        r["name"],
        f"{r['duration']:.1f}",
        f"{r['true_speakers']}/{r['speaker_ids']}",
        eq,
        w1,
        str(r["turns"]),
        str(r["utterances"]),
        "-" if r["utts_per_turn"] is None else f"{r['utts_per_turn']:.2f}",
        _pct(r["der"]),
        _pct(r["der_collar"]),
        _pct(r["miss"]),
        _pct(r["false_alarm"]),
        _pct(r["confusion"]),
        _pct(r["jer"]),
        _pct(r["wer"]),
        str(r["ref_words"]),
        str(len(r["text_on_nonspeech"])),
        "-" if r["negative_words"] is None else str(r["negative_words"]),
        _ms(r["utt_latency_ms"]),
        _ms(r["emo_latency_ms"]),
    ]


def format_table(rows: list[dict], groups: dict[str, dict]) -> str:
    """The per-file rows, then two rows (pooled, per-file mean) for each group of
    ``score.group_totals``, and the notes under them."""
    body = [row_cells(r) for r in rows]
    foot = []
    for g in groups.values():
        foot += [row_cells(g), row_cells(g, mean=True)]
    cells = [COLUMNS] + body + foot
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]

    def fmt(c):
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths))).rstrip()

    rule = "-" * len(fmt(COLUMNS))
    lines = [fmt(COLUMNS), rule] + [fmt(c) for c in body] + [rule] + [fmt(c) for c in foot]
    lines += [
        "",
        "spk: true/found; spk= / spk±1: files with as many ids as speakers / within one; "
        "DER.25: 0.25 s collar (pyannote collar=0.5); miss/fa/conf: no-collar DER parts; "
        "TOTAL rows pooled (pyannote abs(metric), WER = errors/ref words), mean rows: per-file mean",
    ]
    notes = [
        f"  {r['name']} {t['start']:.2f}-{t['end']:.2f}: {t['text']!r}" for r in rows for t in r["text_on_nonspeech"]
    ]
    if notes:
        lines += ["", "text on non-speech:"] + notes
    neg = [f"  {r['name']}: {' | '.join(r['negative_text']) or '(nothing)'}" for r in rows if r["negative"]]
    if neg:
        lines += ["", "text on negative files:"] + neg
    total = groups.get("all")
    if total:
        by = total["utt_latency_by_close"]
        lines += [
            "",
            "final utterance latency ms (median/p95) by how the turn closed: "
            + ", ".join(f"{k} n={len(by[k])} {_ms(by[k])}" for k in CLOSES),
        ]
        by = total["emo_latency_by_close"]
        after_pause = by["pause"] + by["voice"]
        every = after_pause + by["inside"]
        lines += [
            "first emotion latency ms (median/p95) of final turns: all "
            f"n={len(every)} {_ms(every)}; after a pause (pause, voice) "
            f"n={len(after_pause)} {_ms(after_pause)}, inside n={len(by['inside'])} {_ms(by['inside'])}; "
            f"first on the whole transcript (not early) n={len(total['emo_full_latency_ms'])} "
            f"{_ms(total['emo_full_latency_ms'])}"
        ]
        lines += [
            f"overlap flags: {g['name']}: found {g['overlap_found']}/{g['overlap_turns']} turns that start over "
            f"another voice, {g['overlap_right']}/{g['overlap_flagged']} flags right (0.25 s)"
            for g in groups.values()
        ]
        if total["unconfirmed"]:
            lines += [f"utterance ids never published final (left out): {total['unconfirmed']}"]
    return "\n".join(lines)
