#!/usr/bin/env python3
"""Score the node's turns, speakers, words and non-speech text on a conversation set.

    score_conversations.py DIR [--set section.key=value ...] [--json out.json] [--only a,b]
                           [--launch launch/replay.toml] [--events-dir EDIR] [--save-events EDIR]

DIR is what ``tools/make_conversations.py`` writes (NAME.wav + NAME.json truth + index.json).
Each conversation is replayed in this process through ``robot_emotion.runner.replay`` at
``--speed max`` (virtual clock; see latency below), with a sink that
collects every published body. Perception (and its per-session speaker, turn and face state)
is built anew for every conversation; only the stateless model weights (ASR, emotion) are
loaded once and shared. ``--events-dir`` scores existing ``NAME.jsonl`` files
(``robot-emotion replay NAME.wav --out NAME.jsonl``) instead of running the node;
``--save-events`` keeps the collected bodies that way.

What is scored (per conversation, and a total row):

* only the FINAL version of every ``utterance`` (``final: true``; a body with no ``final``
  key is the old schema, where every message is final; the last one per id wins);
* a final utterance whose speaker is null and text null/empty (or ``speech: false``) is a
  non-speech detection: counted apart ("ns det"), left out of everything else;
* ``turns``, ``utts``, ``u/t``: true turns, speech utterances, utterances per true turn;
* ``spk``: true speakers / distinct speaker ids found;
* ``DER``: frame-level (10 ms) diarization error = (missed speech + false alarm + speaker
  confusion) / true speech time, no collar, with the optimal one-to-one mapping of true
  speakers to speaker ids (scipy linear_sum_assignment). True speech is the span of each
  turn, pauses inside the turn included (an utterance is a turn); a speech utterance with
  speaker null counts as speech with a wrong speaker. ``conf`` is the confusion part alone;
* ``WER``: all reference turn texts in time order vs all utterance texts in time order
  (Whisper-style normalisation, ``robot_emotion.audio.asr.normalize_text``). Turns with text
  null (no transcript) are skipped with the utterances that lie mostly on them.
  ``WER/t``: per turn, each utterance's text given to the true turn it overlaps most;
* ``txt@ns``: utterances with text whose span lies more than half inside a non-speech stretch
  (noise, burst, tones); their texts are printed under the table;
* ``cuts``: wrong cuts: a boundary between two consecutive utterances (the middle of the gap
  between them) that falls inside a true turn more than 0.5 s from any real speaker change;
  in a single-speaker recording every boundary counts;
* latency: median / p95 of ``latency_ms.total`` of the final utterances, and of the first
  ``emotion`` message for each utterance id. At ``--speed max`` the reader runs ahead of
  the stages, so these include the wait behind earlier utterances (they grow along a
  conversation); ``--speed 1`` replays at recorded pace and gives the live figures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import robot_emotion  # noqa: F401  (first: it sizes the thread pools before numpy loads, as the node does)
import numpy as np

REPO = Path(__file__).resolve().parent.parent
FRAME_S = 0.01
CUT_TOLERANCE_S = 0.5


# ------------------------------------------------------------------------ the hypothesis
def final_utterances(bodies: list[dict]) -> list[dict]:
    """The final version of every utterance id, in time order (start, then end)."""
    last: dict[str, dict] = {}
    final: dict[str, dict] = {}
    order: list[str] = []
    for b in bodies:
        if b.get("topic") != "utterance":
            continue
        uid = str(b.get("utterance_id"))
        if uid not in last:
            order.append(uid)
        last[uid] = b
        if b.get("final", True):
            final[uid] = b
    out = []
    for uid in order:
        b = final.get(uid)
        if b is None:  # never confirmed (stream cut short): keep the last provisional one
            b = dict(last[uid], _unconfirmed=True)
        out.append(b)
    return sorted(out, key=lambda u: (float(u["start"]), float(u["end"])))


def is_nonspeech(u: dict) -> bool:
    if u.get("speech") is False:
        return True
    return u.get("speaker") is None and not (u.get("text") or "").strip()


def first_emotions(bodies: list[dict], early: bool = True) -> dict[str, dict]:
    """The first `emotion` published for each utterance id; ``early=False``: the first one
    on the turn's whole transcript (an early estimate is scored on the words decoded so far)."""
    out: dict[str, dict] = {}
    for b in bodies:
        if b.get("topic") == "emotion" and (early or not b.get("early")):
            out.setdefault(str(b.get("utterance_id")), b)
    return out


# ------------------------------------------------------------------------------- metrics
def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def diarization_error(turns: list[dict], hyps: list[dict], duration: float,
                      frame: float = FRAME_S) -> dict:
    """Frame-level DER (no collar) with the optimal one-to-one speaker mapping.

    turns: [{speaker, start, end}], hyps: [{speaker (str or None), start, end}]. A hyp with
    speaker None is speech no true speaker can map to.
    """
    from scipy.optimize import linear_sum_assignment
    end = max([duration] + [t["end"] for t in turns] + [h["end"] for h in hyps])
    n = int(np.ceil(end / frame)) + 1

    def span(t0, t1):
        return slice(int(round(t0 / frame)), int(round(t1 / frame)))

    ref_ids = sorted({t["speaker"] for t in turns})
    hyp_ids = sorted({h["speaker"] for h in hyps if h.get("speaker") is not None})
    ref = np.zeros((len(ref_ids), n), bool)
    for t in turns:
        ref[ref_ids.index(t["speaker"]), span(t["start"], t["end"])] = True
    hyp = np.zeros((len(hyp_ids) + 1, n), bool)      # last row: speech with no speaker
    for h in hyps:
        row = hyp_ids.index(h["speaker"]) if h.get("speaker") is not None else len(hyp_ids)
        hyp[row, span(h["start"], h["end"])] = True
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    mapping: dict[str, str] = {}
    correct = np.zeros(n, int)
    if ref_ids and hyp_ids:
        overlap = ref.astype(int) @ hyp[:-1].T.astype(int)
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols):
            if overlap[r, c] > 0:
                mapping[ref_ids[r]] = hyp_ids[c]
                correct += ref[r] & hyp[c]
    total = int(n_ref.sum())
    miss = int(np.maximum(n_ref - n_hyp, 0).sum())
    fa = int(np.maximum(n_hyp - n_ref, 0).sum())
    conf = int((np.minimum(n_ref, n_hyp) - correct).sum())
    return {"der": (miss + fa + conf) / total if total else 0.0,
            "miss_s": miss * frame, "fa_s": fa * frame, "conf_s": conf * frame,
            "speech_s": total * frame, "confusion": conf / total if total else 0.0,
            "mapping": mapping}


def _normalize(text: str | None) -> list[str]:
    from robot_emotion.audio.asr import normalize_text
    return normalize_text(text or "")


def best_turn(u: dict, turns: list[dict]) -> int | None:
    """Index of the true turn an utterance overlaps most (None if it overlaps none)."""
    ov = [_overlap(u["start"], u["end"], t["start"], t["end"]) for t in turns]
    return int(np.argmax(ov)) if ov and max(ov) > 0 else None


def word_errors(turns: list[dict], hyps: list[dict]) -> dict:
    """Whole-conversation and per-turn word errors (counts, so totals can be pooled)."""
    from robot_emotion.audio.asr import edit_distance
    owner = [best_turn(u, turns) for u in hyps]
    keep = [u for u, k in zip(hyps, owner) if k is None or turns[k].get("text") is not None]
    ref_w = [w for t in turns if t.get("text") is not None for w in _normalize(t["text"])]
    hyp_w = [w for u in keep for w in _normalize(u.get("text"))]
    per_err = per_ref = 0
    for k, t in enumerate(turns):
        if t.get("text") is None:
            continue
        r = _normalize(t["text"])
        h = [w for u, o in zip(hyps, owner) if o == k for w in _normalize(u.get("text"))]
        per_err += edit_distance(r, h)
        per_ref += len(r)
    return {"errors": edit_distance(ref_w, hyp_w), "ref_words": len(ref_w),
            "turn_errors": per_err, "turn_ref_words": per_ref,
            "hyp": " ".join(hyp_w)}


def text_on_nonspeech(nonspeech: list[dict], hyps: list[dict]) -> list[dict]:
    out = []
    for u in hyps:
        if not (u.get("text") or "").strip():
            continue
        dur = u["end"] - u["start"]
        inside = sum(_overlap(u["start"], u["end"], ns["start"], ns["end"]) for ns in nonspeech)
        if dur > 0 and inside > 0.5 * dur:
            out.append(u)
    return out


def wrong_cuts(turns: list[dict], hyps: list[dict], tol: float = CUT_TOLERANCE_S) -> list[float]:
    """Boundaries between consecutive utterances inside a true turn, far from speaker changes."""
    single = len({t["speaker"] for t in turns}) <= 1
    changes = [(a["end"], b["start"]) for a, b in zip(turns, turns[1:])
               if a["speaker"] != b["speaker"]]
    out = []
    for a, b in zip(hyps, hyps[1:]):
        cut = (a["end"] + b["start"]) / 2.0
        if single:
            out.append(cut)
            continue
        if not any(t["start"] < cut < t["end"] for t in turns):
            continue
        dist = min((max(c0 - cut, cut - c1, 0.0) for c0, c1 in changes), default=np.inf)
        if dist > tol:
            out.append(cut)
    return out


CLOSES = ("pause", "voice", "inside")


def _lat(body: dict) -> float | None:
    v = (body.get("latency_ms") or {}).get("total")
    return float(v) if v is not None else None


def closed_by(u: dict, bodies: list[dict], turn_gap_s: float) -> str:
    """How a final utterance's turn closed, from the segments around it: ``inside`` (a voice
    change inside a segment that went on), ``voice`` (a new voice after a pause shorter than the
    turn gap, heard by a probe), else ``pause`` (the turn gap, or the end of the input)."""
    segs = {b["utterance_id"]: b for b in bodies if b.get("topic") == "speech.end"}
    last = segs.get(str((u.get("segments") or [None])[-1]))
    if last is not None and last["end"] > u["end"] + 0.05:
        return "inside"
    nxt = min((b["start"] for b in segs.values() if b["start"] >= u["end"] - 0.01), default=None)
    return "voice" if nxt is not None and nxt - u["end"] < turn_gap_s else "pause"


def score(truth: dict, bodies: list[dict], turn_gap_s: float = 0.5) -> dict:
    """Every metric of one conversation (counts are kept so that totals can be pooled)."""
    finals = final_utterances(bodies)
    ns_dets = [u for u in finals if is_nonspeech(u)]
    hyps = [dict(u, start=float(u["start"]), end=float(u["end"])) for u in finals
            if not is_nonspeech(u)]
    turns = truth["turns"]
    d = diarization_error(turns, hyps, truth["duration"])
    w = word_errors(turns, hyps)
    on_ns = text_on_nonspeech(truth.get("nonspeech", []), hyps)
    cuts = wrong_cuts(turns, hyps)
    emos, full = first_emotions(bodies), first_emotions(bodies, early=False)
    closes = {str(u["utterance_id"]): closed_by(u, bodies, turn_gap_s) for u in hyps}
    return {
        "name": truth["name"], "duration": truth["duration"],
        "turns": len(turns), "utterances": len(hyps),
        "utts_per_turn": len(hyps) / len(turns) if turns else 0.0,
        "true_speakers": len({t["speaker"] for t in turns}),
        "speaker_ids": len({u["speaker"] for u in hyps if u.get("speaker") is not None}),
        "nonspeech_detections": len(ns_dets),
        "unconfirmed": sum(1 for u in finals if u.get("_unconfirmed")),
        "forced": sum(1 for u in hyps if u.get("forced")),
        **{k: d[k] for k in ("der", "confusion", "miss_s", "fa_s", "conf_s", "speech_s")},
        "mapping": d["mapping"],
        "wer": w["errors"] / w["ref_words"] if w["ref_words"] else None,
        "turn_wer": w["turn_errors"] / w["turn_ref_words"] if w["turn_ref_words"] else None,
        "word_errors": w["errors"], "ref_words": w["ref_words"],
        "turn_word_errors": w["turn_errors"], "turn_ref_words": w["turn_ref_words"],
        "text_on_nonspeech": [{"start": u["start"], "end": u["end"], "text": u.get("text")}
                              for u in on_ns],
        "wrong_cuts": [round(c, 2) for c in cuts],
        "utt_latency_ms": [x for x in (_lat(u) for u in finals) if x is not None],
        "emo_latency_ms": [x for x in (_lat(e) for e in emos.values()) if x is not None],
        "utt_latency_by_close": {k: [x for u in hyps if closes[str(u["utterance_id"])] == k
                                     and (x := _lat(u)) is not None] for k in CLOSES},
        # the first emotion of each final turn, by how the turn closed, and on its whole transcript
        "emo_latency_by_close": {k: [x for i, c in closes.items() if c == k and i in emos
                                     and (x := _lat(emos[i])) is not None] for k in CLOSES},
        "emo_full_latency_ms": [x for i in closes if i in full and (x := _lat(full[i])) is not None],
        "hypothesis": [{k: u.get(k) for k in ("utterance_id", "start", "end", "speaker", "text",
                                              "forced")} for u in finals],
    }


def total_row(rows: list[dict]) -> dict:
    s = lambda k: sum(r[k] for r in rows)  # noqa: E731
    speech = s("speech_s")
    return {"name": "TOTAL", "duration": s("duration"), "turns": s("turns"),
            "utterances": s("utterances"),
            "utts_per_turn": s("utterances") / s("turns") if s("turns") else 0.0,
            "true_speakers": s("true_speakers"), "speaker_ids": s("speaker_ids"),
            "nonspeech_detections": s("nonspeech_detections"),
            "unconfirmed": s("unconfirmed"), "forced": s("forced"),
            "der": (s("miss_s") + s("fa_s") + s("conf_s")) / speech if speech else 0.0,
            "confusion": s("conf_s") / speech if speech else 0.0,
            "miss_s": s("miss_s"), "fa_s": s("fa_s"), "conf_s": s("conf_s"), "speech_s": speech,
            "wer": s("word_errors") / s("ref_words") if s("ref_words") else None,
            "turn_wer": s("turn_word_errors") / s("turn_ref_words") if s("turn_ref_words") else None,
            "word_errors": s("word_errors"), "ref_words": s("ref_words"),
            "turn_word_errors": s("turn_word_errors"), "turn_ref_words": s("turn_ref_words"),
            "text_on_nonspeech": [t for r in rows for t in r["text_on_nonspeech"]],
            "wrong_cuts": [c for r in rows for c in r["wrong_cuts"]],
            "utt_latency_ms": [x for r in rows for x in r["utt_latency_ms"]],
            "emo_latency_ms": [x for r in rows for x in r["emo_latency_ms"]],
            "utt_latency_by_close": {k: [x for r in rows for x in r["utt_latency_by_close"][k]] for k in CLOSES},
            "emo_latency_by_close": {k: [x for r in rows for x in r["emo_latency_by_close"][k]] for k in CLOSES},
            "emo_full_latency_ms": [x for r in rows for x in r["emo_full_latency_ms"]]}


# --------------------------------------------------------------------------------- table
def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _ms(xs) -> str:
    if not xs:
        return "-"
    return f"{np.median(xs):.0f}/{np.percentile(xs, 95):.0f}"


COLUMNS = ["conversation", "dur s", "turns", "utts", "u/t", "spk", "DER%", "conf%", "WER%",
           "WER/t%", "ns det", "txt@ns", "cuts", "utt ms", "emo ms"]


def row_cells(r: dict) -> list[str]:
    return [r["name"], f"{r['duration']:.1f}", str(r["turns"]), str(r["utterances"]),
            f"{r['utts_per_turn']:.2f}", f"{r['true_speakers']}/{r['speaker_ids']}",
            _pct(r["der"]), _pct(r["confusion"]), _pct(r["wer"]), _pct(r["turn_wer"]),
            str(r["nonspeech_detections"]), str(len(r["text_on_nonspeech"])),
            str(len(r["wrong_cuts"])), _ms(r["utt_latency_ms"]), _ms(r["emo_latency_ms"])]


def format_table(rows: list[dict], total: dict | None = None) -> str:
    cells = [COLUMNS] + [row_cells(r) for r in rows] + ([row_cells(total)] if total else [])
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    fmt = lambda c: "  ".join(x.ljust(w) if i == 0 else x.rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(c, widths)))
    lines = [fmt(cells[0]), "-" * len(fmt(cells[0]))] + [fmt(c) for c in cells[1:len(rows) + 1]]
    if total:
        lines += ["-" * len(lines[0]), fmt(cells[-1])]
    notes = []
    for r in rows:
        for t in r["text_on_nonspeech"]:
            notes.append(f"  {r['name']} {t['start']:.2f}-{t['end']:.2f}: {t['text']!r}")
    if notes:
        lines += ["", "text on non-speech:"] + notes
    if total and "utt_latency_by_close" in total:
        by = total["utt_latency_by_close"]
        lines += ["", "final utterance latency ms (median/p95) by how the turn closed: " + ", ".join(
            f"{k} n={len(by[k])} {_ms(by[k])}" for k in CLOSES)]
    if total and "emo_latency_by_close" in total:
        by = total["emo_latency_by_close"]
        after_pause = by["pause"] + by["voice"]
        every = after_pause + by["inside"]
        lines += ["first emotion latency ms (median/p95) of final turns: all "
                  f"n={len(every)} {_ms(every)}; after a pause (pause, voice) "
                  f"n={len(after_pause)} {_ms(after_pause)}, inside n={len(by['inside'])} {_ms(by['inside'])}; "
                  f"first on the whole transcript (not early) n={len(total['emo_full_latency_ms'])} "
                  f"{_ms(total['emo_full_latency_ms'])}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- running
@contextlib.contextmanager
def shared_models():
    """Load the stateless, heavy models (ASR, emotion scorer) once for every replay.

    Perception itself, which holds per-session state (speaker clusters, open turns, face
    tracks), is still built for each conversation by runner.replay.
    """
    import robot_emotion.audio.asr as asr_mod
    cache: dict = {}
    orig_make_asr = asr_mod.make_asr

    def make_asr(cfg, device="auto", **kw):
        key = ("asr", repr(cfg), device, repr(sorted(kw.items())))
        if key not in cache:
            cache[key] = orig_make_asr(cfg, device=device, **kw)
        return cache[key]

    asr_mod.make_asr = make_asr
    emo_cls = orig_from = None
    try:
        from robot_emotion.emotion import EmotionScorer as emo_cls
        orig_from = emo_cls.__dict__.get("from_config")

        def from_config(cls, cfg, device="cpu", asr=None):
            key = ("emotion", repr(cfg), device, id(asr))
            if key not in cache:
                cache[key] = orig_from.__func__(cls, cfg, device=device, asr=asr)
            return cache[key]

        if isinstance(orig_from, classmethod):
            emo_cls.from_config = classmethod(from_config)
    except ImportError:
        pass
    try:
        yield cache
    finally:
        asr_mod.make_asr = orig_make_asr
        if emo_cls is not None and isinstance(orig_from, classmethod):
            emo_cls.from_config = orig_from


def load_config(sets=(), launch: str | Path = REPO / "launch" / "replay.toml"):
    from robot_emotion import config
    cfg, _ = config.load(str(launch), overrides=[*sets, 'publish.endpoint="tcp://127.0.0.1:*"'])
    return cfg


def replay_bodies(cfg, wav: str | Path, speed: str | float = "max") -> list[dict]:
    """Replay one wav through the node; every published body, in order."""
    from robot_emotion import runner
    bodies: list[dict] = []
    node = runner.replay(cfg, str(wav), speed=speed, sinks=[bodies.append])
    if node.errors:
        raise RuntimeError(f"{Path(wav).name}: node errors: {'; '.join(node.errors)}")
    return bodies


def conversations(folder: Path, only=None) -> list[tuple[Path, dict]]:
    folder = Path(folder)
    index = folder / "index.json"
    if index.is_file():
        names = [c["name"] for c in json.loads(index.read_text())["conversations"]]
    else:
        names = sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.wav").is_file())
    if only:
        missing = set(only) - set(names)
        if missing:
            raise FileNotFoundError(f"not in {folder}: {', '.join(sorted(missing))}")
        names = [n for n in names if n in only]
    return [(folder / f"{n}.wav", json.loads((folder / f"{n}.json").read_text())) for n in names]


def run(folder, sets=(), only=None, events_dir=None, save_events=None, launch=None,
        log=sys.stderr, speed: str | float = "max") -> tuple[list[dict], dict]:
    items = conversations(folder, only)
    rows = []
    ctx = contextlib.nullcontext() if events_dir else shared_models()
    cfg = None if events_dir else load_config(sets, launch or REPO / "launch" / "replay.toml")
    turn_gap_s = cfg.vad.turn_gap_ms / 1000.0 if cfg is not None else 0.5
    with ctx:
        for wav, truth in items:
            t0 = time.perf_counter()
            if events_dir:
                path = Path(events_dir) / f"{wav.stem}.jsonl"
                bodies = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                bodies = replay_bodies(cfg, wav, speed)
                if save_events:
                    Path(save_events).mkdir(parents=True, exist_ok=True)
                    (Path(save_events) / f"{wav.stem}.jsonl").write_text(
                        "".join(json.dumps(b) + "\n" for b in bodies))
            rows.append(score(truth, bodies, turn_gap_s))
            if log:
                print(f"  {wav.stem}: {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return rows, total_row(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--json", help="write rows + total (with hypotheses) to this file")
    p.add_argument("--only", default="", help="comma-separated conversation names")
    p.add_argument("--launch", default=str(REPO / "launch" / "replay.toml"))
    p.add_argument("--speed", default="max",
                   help="replay pace: max (virtual clock, default) or a factor (1 = recorded "
                        "pace, the one that gives meaningful latencies)")
    p.add_argument("--events-dir", help="score NAME.jsonl files found here instead of replaying")
    p.add_argument("--save-events", help="write the published bodies as EDIR/NAME.jsonl")
    a = p.parse_args(argv)
    try:
        rows, total = run(a.dir, a.sets, [s for s in a.only.split(",") if s] or None,
                          a.events_dir, a.save_events, a.launch,
                          speed=a.speed if a.speed == "max" else float(a.speed))
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"score_conversations: error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, total))
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": a.sets, "rows": rows, "total": total},
                                           indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
