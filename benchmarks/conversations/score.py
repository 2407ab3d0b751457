#!/usr/bin/env python3
"""Standard scoring of the node on conversations: DER and JER (pyannote.metrics), WER (jiwer).

    score.py DIR [--ami] [--split dev|test] [--only a,b] [--limit N] [--json OUT]
                 [--set section.key=value ...] [--launch launch/replay.toml] [--speed max|F]
                 [--events-dir EDIR] [--save-events EDIR]

DIR is a corpus folder (``DIR/{dev,test}/NAME.wav|flac + NAME.json``, as
benchmarks/conversations/make_corpus.py writes), or a flat folder of truth files next to
their audio (``/work/shared/conversations/ami``: ``NAME.flac + NAME.json``; ``--ami``, or
found by itself when the folder holds .flac files), or the old set of
benchmarks/conversations/make_conversations.py (``NAME.wav + NAME.json + index.json``).

Each recording is replayed in this process through ``robot_emotion.node.runner.replay``
(``--speed max``: virtual clock) with a sink that collects every published body; the
stateless model weights (ASR, emotion) are loaded once and shared, perception and its
per-session state are built anew for each recording. ``--events-dir`` scores saved
``NAME.jsonl`` files (``robot-emotion replay NAME.wav --out NAME.jsonl``) instead of running
the node; ``--save-events`` writes the collected bodies that way.

The truth (``NAME.json``)::

    {"name", "duration", "speakers": [...],
     "segments": [[spk, start, end], ...],      # reference speech per speaker, overlaps allowed
     "turns": [{"spk", "start", "end", "text", "overlap"?, "backchannel"?}],
     "words": [[spk, start, end, word], ...]?,  # when present: the reference text
     "nonspeech": [{"start", "end", "kind"?}] or [[start, end, ...]],
     "negative": bool, "split"?, "condition"?}

(AMI names the file ``item``; the old set's turns have ``speaker`` and ``pauses`` and no
``segments``: its segments are the turns minus their pauses.)

The hypothesis: the final ``utterance`` of every utterance id (``final: true``, or no
``final`` key: the old schema; the last one per id wins; an id never published final is left
out and counted as ``unconfirmed``), less non-speech detections (speaker null and empty text,
or ``speech: false``). An utterance's speech is its ``spans`` when that field holds
[start, end] spans, else [start, end]; its label is its ``speaker``. A null speaker gets a
label of its own per utterance: a one-utterance cluster, never merged with another utterance
(as any cluster, the optimal mapping may still give it a speaker that no other id took;
``null_speaker_s`` says how much speech was published without a speaker).

What is scored, per file and pooled over each split / condition and over everything:

* ``DER``: pyannote.metrics ``DiarizationErrorRate(collar=0.0, skip_overlap=False)``, uem
  [0, duration]: (missed + false alarm + confusion) / reference speech, overlapped speech
  scored, optimal one-to-one speaker mapping; ``DER.25``: the same with a 0.25 s collar each
  side of every reference boundary (pyannote's ``collar=0.5``, the md-eval convention of
  published AMI / DIHARD figures); ``miss``, ``fa``, ``conf``: the no-collar components as a
  share of reference speech; ``JER``: ``JaccardErrorRate(collar=0.0, skip_overlap=False)``.
  Pooled = pyannote's accumulated ``abs(metric)`` (components summed over files); ``mean``
  rows: the plain mean over files (files without reference speech left out);
* ``WER``: jiwer on Whisper's English text normaliser (``EnglishTextNormalizer``) applied to
  both sides: the reference ``words`` (else the turn texts) in time order vs the utterance
  texts in time order. Pooled = sum(errors) / sum(reference words) over
  ``jiwer.process_words`` counts. Turns with text null (old set: no transcript) are left out
  with the utterances lying mostly on them;
* ``spk``: true speakers (those with reference speech) / distinct speaker ids found;
  ``spk=`` and ``spk±1``: files where they are equal / within one;
* ``u/t``: speech utterances per true turn (back-channel turns count);
* ``txt@ns``: utterances with text whose span lies more than half inside ``nonspeech``
  stretches (their texts are printed under the table); ``neg w``: words transcribed
  (after normalisation) on ``negative`` files;
* latency: median / p95 of ``latency_ms.total`` of the final utterances (``utt ms``) and of
  the first ``emotion`` of each utterance id (``emo ms``). At ``--speed max`` the reader runs
  ahead of the stages, so these include the wait behind earlier utterances; ``--speed 1``
  replays at recorded pace and gives the live figures. Under the table: final-utterance and
  first-emotion latency by how the turn closed (a pause, a new voice after a short pause, a
  voice change inside a segment), from the ``speech.end`` bodies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import robot_emotion  # noqa: F401  (first: it sizes the thread pools before numpy loads, as the node does)
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.conversations.replay import (  # noqa: F401 (re-exported for callers)
    AUDIO_EXTS,
    SPLITS,
    _events_path,
    items,
    load_config,
    replay_bodies,
    shared_models,
)

from benchmarks.conversations.table import CLOSES, format_table

REPO = Path(__file__).resolve().parents[2]
COLLAR_S = 0.5  # pyannote's collar: the total width, 0.25 s each side of a boundary


# ----------------------------------------------------------------------------- the truth
def _span(item) -> tuple[float, float, str | None]:
    """A nonspeech item: {"start", "end", "kind"?} or [start, end, kind?]."""
    if isinstance(item, dict):
        return float(item["start"]), float(item["end"]), item.get("kind")
    return float(item[0]), float(item[1]), (item[2] if len(item) > 2 else None)


def _minus(start: float, end: float, holes) -> list[tuple[float, float]]:
    """[start, end] less the holes (pauses)."""
    out, pos = [], start
    for a, b in sorted((max(start, float(a)), min(end, float(b))) for a, b in holes):
        if b <= a:
            continue
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if end > pos:
        out.append((pos, end))
    return out


def load_truth(path: str | Path | dict, name: str | None = None) -> dict:
    """A truth file (or dict) in the shared format, whatever its origin (new corpus, AMI,
    the old set of benchmarks/conversations/make_conversations.py)."""
    raw = json.loads(Path(path).read_text()) if not isinstance(path, dict) else path
    stem = Path(path).stem if not isinstance(path, dict) else None
    turns = []
    for t in raw.get("turns", []):
        spk = t.get("spk", t.get("speaker"))
        turns.append({**t, "spk": spk, "start": float(t["start"]), "end": float(t["end"])})
    turns.sort(key=lambda t: (t["start"], t["end"]))
    if "segments" in raw:
        segments = [(str(s), float(a), float(b)) for s, a, b in raw["segments"]]
    else:  # old set: a turn's span less the pauses inside it
        segments = [(str(t["spk"]), a, b) for t in turns for a, b in _minus(t["start"], t["end"], t.get("pauses", []))]
    for t in turns:  # AMI marks no overlaps: another voice still sounds 50 ms into the turn
        if "overlap" not in t:
            t["overlap"] = any(s != t["spk"] and a <= t["start"] + 0.05 < b for s, a, b in segments)
    words = raw.get("words")
    if words is not None:
        words = sorted(([str(w[0]), float(w[1]), float(w[2]), str(w[3])] for w in words), key=lambda w: (w[1], w[2]))
    speakers = raw.get("speakers") or sorted({s for s, _, _ in segments})
    return {
        "name": name or raw.get("name") or raw.get("item") or stem,
        "duration": float(raw["duration"]),
        "speakers": list(speakers),  # a dict (old set) gives its keys
        "segments": segments,
        "turns": turns,
        "words": words,
        "nonspeech": [dict(zip(("start", "end", "kind"), _span(n))) for n in raw.get("nonspeech", [])],
        "negative": bool(raw.get("negative", False)),
        "split": raw.get("split"),
        "condition": raw.get("condition"),
    }


def reference_text(truth: dict) -> str:
    if truth.get("words") is not None:
        return " ".join(w[3] for w in truth["words"])
    return " ".join(t["text"] for t in truth["turns"] if t.get("text") is not None)


# ------------------------------------------------------------------------ the hypothesis
def final_utterances(bodies: list[dict], unconfirmed: list | None = None) -> list[dict]:
    """The final version of every utterance id, in time order (start, then end). Ids never
    published final (a stream cut short) are left out; their last bodies go to
    ``unconfirmed`` when a list is given."""
    last: dict[str, dict] = {}
    final: dict[str, dict] = {}
    for b in bodies:
        if b.get("topic") != "utterance":
            continue
        uid = str(b.get("utterance_id"))
        last[uid] = b
        if b.get("final", True):
            final[uid] = b
    if unconfirmed is not None:
        unconfirmed.extend(b for uid, b in last.items() if uid not in final)
    return sorted(final.values(), key=lambda u: (float(u["start"]), float(u["end"])))


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


def _is_span(x) -> bool:
    return (
        isinstance(x, (list, tuple))
        and len(x) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
    )


def speech_spans(u: dict) -> list[tuple[float, float]]:
    """An utterance's voiced spans: its ``spans`` (the turn's speech, pauses left out) when
    the node published them, else [start, end] (older events)."""
    spans = u.get("spans")
    if isinstance(spans, list) and spans and all(_is_span(s) for s in spans):
        return [(float(a), float(b)) for a, b in spans if b > a]
    return [(float(u["start"]), float(u["end"]))]


def hyp_label(u: dict) -> str:
    spk = u.get("speaker")
    return str(spk) if spk is not None else f"<none:{u.get('utterance_id')}>"


# ------------------------------------------------------------------- pyannote annotations
def annotation(spans, uri: str = "file"):
    """pyannote Annotation from (label, start, end); one label's overlapping or touching
    spans are merged first (pyannote would count a label twice where its spans overlap)."""
    from pyannote.core import Annotation, Segment, Timeline

    by: dict[str, list] = {}
    for label, a, b in spans:
        if b > a:
            by.setdefault(str(label), []).append(Segment(float(a), float(b)))
    ann = Annotation(uri=uri)
    for label in sorted(by):
        for k, seg in enumerate(Timeline(by[label]).support()):
            ann[seg, f"{label}#{k}"] = label
    return ann


def reference_annotation(truth: dict):
    return annotation(truth["segments"], truth["name"])


def hypothesis_annotation(hyps: list[dict], uri: str = "file"):
    return annotation([(hyp_label(u), a, b) for u in hyps for a, b in speech_spans(u)], uri)


def uem(duration: float):
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(0.0, float(duration))])


def metrics():
    """Fresh pyannote metric objects: name -> metric."""
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    return {
        "der": DiarizationErrorRate(collar=0.0, skip_overlap=False),
        "der_collar": DiarizationErrorRate(collar=COLLAR_S, skip_overlap=False),
        "jer": JaccardErrorRate(collar=0.0, skip_overlap=False),
        "jer_collar": JaccardErrorRate(collar=COLLAR_S, skip_overlap=False),
    }


def diarization(reference, hypothesis, duration: float) -> dict:
    """One file: every metric's components (pyannote's names), its value, and the mapping."""
    out = {}
    for key, m in metrics().items():
        comp = m(reference, hypothesis, uem=uem(duration), detailed=True)
        out[key] = {k: float(v) for k, v in comp.items()}
    m = metrics()["der"]
    mapping = m.optimal_mapping(reference, hypothesis, uem=uem(duration))  # hyp -> ref
    out["mapping"] = {str(r): str(h) for h, r in mapping.items()}
    return out


def pooled(key: str, components: list[dict]) -> float | None:
    """pyannote's accumulated ``abs(metric)``: the metric of the components summed over files."""
    m = metrics()[key]
    if not components:
        return None
    total = {k: sum(c[k] for c in components) for k in m.components_}
    if key.startswith("der") and total["total"] == 0:
        return None
    if key.startswith("jer") and total["speaker count"] == 0:
        return None
    return float(m.compute_metric(total))


# ----------------------------------------------------------------------------------- WER
@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str | None) -> str:
    """Whisper's English text normaliser (lower case, no punctuation, spellings and numbers
    standardised, hesitations such as uh / um / hmm / mm-hmm removed), whitespace collapsed."""
    return " ".join(_normalizer()(text or "").split())


def word_errors(ref: str, hyp: str) -> dict:
    """jiwer counts on the normalised texts."""
    import jiwer

    r, h = normalize(ref), normalize(hyp)
    if not r:
        n = len(h.split())
        return {
            "substitutions": 0,
            "deletions": 0,
            "insertions": n,
            "hits": 0,
            "errors": n,
            "ref_words": 0,
            "hyp_words": n,
            "ref": r,
            "hyp": h,
        }
    o = jiwer.process_words(r, h)
    errors = o.substitutions + o.deletions + o.insertions
    return {
        "substitutions": o.substitutions,
        "deletions": o.deletions,
        "insertions": o.insertions,
        "hits": o.hits,
        "errors": errors,
        "ref_words": o.substitutions + o.deletions + o.hits,
        "hyp_words": len(h.split()),
        "ref": r,
        "hyp": h,
    }


# ------------------------------------------------------------------------ other measures
def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def best_turn(u: dict, turns: list[dict]) -> int | None:
    """Index of the true turn an utterance overlaps most (None if it overlaps none)."""
    ov = [_overlap(u["start"], u["end"], t["start"], t["end"]) for t in turns]
    return int(np.argmax(ov)) if ov and max(ov) > 0 else None


def overlap_flags(turns: list[dict], hyps: list[dict], hit_s: float = 0.25) -> dict:
    """The ``overlap`` flag against the truth's turns that start over another voice (not
    backchannels: too short to be a turn of their own): a flagged utterance starting within
    ``hit_s`` of such a turn's start finds it (as the change model's cuts are scored)."""
    starts = [t["start"] for t in turns if t.get("overlap") and not t.get("backchannel")]
    flagged = [u["start"] for u in hyps if u.get("overlap")]
    near = lambda t, ts: any(abs(t - x) <= hit_s for x in ts)  # noqa: E731
    return {
        "overlap_turns": len(starts),
        "overlap_found": sum(near(t, flagged) for t in starts),
        "overlap_flagged": len(flagged),
        "overlap_right": sum(near(t, starts) for t in flagged),
    }


def text_on_nonspeech(nonspeech: list[dict], hyps: list[dict]) -> list[dict]:
    """Utterances with text whose span lies more than half inside non-speech stretches."""
    out = []
    for u in hyps:
        if not (u.get("text") or "").strip():
            continue
        dur = u["end"] - u["start"]
        inside = sum(_overlap(u["start"], u["end"], ns["start"], ns["end"]) for ns in nonspeech)
        if dur > 0 and inside > 0.5 * dur:
            out.append(u)
    return out


def _lat(body: dict) -> float | None:
    v = (body.get("latency_ms") or {}).get("total")
    return float(v) if v is not None else None


def closed_by(u: dict, bodies: list[dict], turn_gap_s: float) -> str:
    """How a final utterance's turn closed, from the segments around it: ``inside`` (a voice
    change inside a segment that went on), ``voice`` (a new voice after a pause shorter than the
    turn gap, heard by a probe), else ``pause`` (the turn gap, or the end of the input).
    Reads the utterance's segment ids (``segments``)."""
    segs = {str(b["utterance_id"]): b for b in bodies if b.get("topic") == "speech.end"}
    ids = [str(s) for s in (u.get("segments") or [])]
    last = segs.get(str(ids[-1])) if ids else None
    if last is not None and last["end"] > u["end"] + 0.05:
        return "inside"
    nxt = min((b["start"] for b in segs.values() if b["start"] >= u["end"] - 0.01), default=None)
    return "voice" if nxt is not None and nxt - u["end"] < turn_gap_s else "pause"


# --------------------------------------------------------------------------------- score
def score(truth: dict, bodies: list[dict], turn_gap_s: float = 0.5) -> dict:
    """Every figure of one file; components and counts are kept so that sets can be pooled."""
    truth = load_truth(truth)  # idempotent: a raw truth dict is accepted too
    unconfirmed: list = []
    finals = final_utterances(bodies, unconfirmed)
    ns_dets = [u for u in finals if is_nonspeech(u)]
    hyps = [dict(u, start=float(u["start"]), end=float(u["end"])) for u in finals if not is_nonspeech(u)]
    turns = truth["turns"]
    ref_ann = reference_annotation(truth)
    hyp_ann = hypothesis_annotation(hyps, truth["name"])
    d = diarization(ref_ann, hyp_ann, truth["duration"])
    speech_s = d["der"]["total"]

    # WER: turns without a transcript are left out, with the utterances lying mostly on them
    if truth.get("words") is None and any(t.get("text") is None for t in turns):
        owner = [best_turn(u, turns) for u in hyps]
        wer_hyps = [u for u, k in zip(hyps, owner) if k is None or turns[k].get("text") is not None]
    else:
        wer_hyps = hyps
    w = word_errors(reference_text(truth), " ".join(u.get("text") or "" for u in wer_hyps))

    true_spk = len({s for s, _, _ in truth["segments"]})
    found_spk = len({u["speaker"] for u in hyps if u.get("speaker") is not None})
    on_ns = text_on_nonspeech(truth["nonspeech"], hyps)
    emos, full = first_emotions(bodies), first_emotions(bodies, early=False)
    closes = {str(u["utterance_id"]): closed_by(u, bodies, turn_gap_s) for u in hyps}

    def rate(key):
        if key.startswith("der"):
            return d[key]["diarization error rate"] if d[key]["total"] > 0 else None
        return d[key]["jaccard error rate"] if d[key]["speaker count"] > 0 else None

    return {
        "name": truth["name"],
        "split": truth.get("split"),
        "condition": truth.get("condition"),
        "negative": truth["negative"],
        "duration": truth["duration"],
        "turns": len(turns),
        "utterances": len(hyps),
        "utts_per_turn": len(hyps) / len(turns) if turns else None,
        "true_speakers": true_spk,
        "speaker_ids": found_spk,
        "speakers_equal": found_spk == true_spk,
        "speakers_within_one": abs(found_spk - true_spk) <= 1,
        "nonspeech_detections": len(ns_dets),
        "unconfirmed": len(unconfirmed),
        "forced": sum(1 for u in hyps if u.get("forced")),
        **overlap_flags(turns, hyps),
        "der": rate("der"),
        "der_collar": rate("der_collar"),
        "jer": rate("jer"),
        "jer_collar": rate("jer_collar"),
        "speech_s": speech_s,
        # speech published with speaker null (a label of its own per utterance)
        "null_speaker_s": sum(b - a for u in hyps if u.get("speaker") is None for a, b in speech_spans(u)),
        "miss": d["der"]["missed detection"] / speech_s if speech_s else None,
        "false_alarm": d["der"]["false alarm"] / speech_s if speech_s else None,
        "confusion": d["der"]["confusion"] / speech_s if speech_s else None,
        "miss_s": d["der"]["missed detection"],
        "fa_s": d["der"]["false alarm"],
        "conf_s": d["der"]["confusion"],
        "components": {k: d[k] for k in ("der", "der_collar", "jer", "jer_collar")},
        "mapping": d["mapping"],
        "wer": w["errors"] / w["ref_words"] if w["ref_words"] else None,
        "word_errors": w["errors"],
        "ref_words": w["ref_words"],
        "hyp_words": w["hyp_words"],
        "wer_counts": {k: w[k] for k in ("substitutions", "deletions", "insertions", "hits")},
        "negative_words": w["hyp_words"] if truth["negative"] else None,
        "negative_text": [u.get("text") for u in wer_hyps if (u.get("text") or "").strip()]
        if truth["negative"]
        else None,
        "ref_normalised": w["ref"],
        "hyp_normalised": w["hyp"],
        "text_on_nonspeech": [{"start": u["start"], "end": u["end"], "text": u.get("text")} for u in on_ns],
        "utt_latency_ms": [x for x in (_lat(u) for u in finals) if x is not None],
        "emo_latency_ms": [x for x in (_lat(e) for e in emos.values()) if x is not None],
        "utt_latency_by_close": {
            k: [x for u in hyps if closes[str(u["utterance_id"])] == k and (x := _lat(u)) is not None] for k in CLOSES
        },
        "emo_latency_by_close": {
            k: [x for i, c in closes.items() if c == k and i in emos and (x := _lat(emos[i])) is not None]
            for k in CLOSES
        },
        "emo_full_latency_ms": [x for i in closes if i in full and (x := _lat(full[i])) is not None],
        "hypothesis": [
            {k: u.get(k) for k in ("utterance_id", "start", "end", "speaker", "text", "forced", "overlap", "segments")}
            for u in finals
        ],
    }


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def total_row(rows: list[dict], name: str = "TOTAL") -> dict:
    """Pooled figures over files (the standard way), plus per-file means of the rates."""
    s = lambda k: sum(r[k] for r in rows)  # noqa: E731
    comps = {k: [r["components"][k] for r in rows] for k in ("der", "der_collar", "jer", "jer_collar")}
    speech = s("speech_s")
    neg = [r for r in rows if r["negative"]]
    return {
        "name": name,
        "files": len(rows),
        "negative": bool(neg),
        "duration": s("duration"),
        "turns": s("turns"),
        "utterances": s("utterances"),
        "utts_per_turn": s("utterances") / s("turns") if s("turns") else None,
        "true_speakers": s("true_speakers"),
        "speaker_ids": s("speaker_ids"),
        "speakers_equal": sum(r["speakers_equal"] for r in rows),
        "speakers_within_one": sum(r["speakers_within_one"] for r in rows),
        "nonspeech_detections": s("nonspeech_detections"),
        "unconfirmed": s("unconfirmed"),
        "forced": s("forced"),
        **{k: s(k) for k in ("overlap_turns", "overlap_found", "overlap_flagged", "overlap_right")},
        **{k: pooled(k, comps[k]) for k in comps},
        "speech_s": speech,
        "null_speaker_s": s("null_speaker_s"),
        "miss_s": s("miss_s"),
        "fa_s": s("fa_s"),
        "conf_s": s("conf_s"),
        "miss": s("miss_s") / speech if speech else None,
        "false_alarm": s("fa_s") / speech if speech else None,
        "confusion": s("conf_s") / speech if speech else None,
        "wer": s("word_errors") / s("ref_words") if s("ref_words") else None,
        "word_errors": s("word_errors"),
        "ref_words": s("ref_words"),
        "hyp_words": s("hyp_words"),
        "negative_words": sum(r["negative_words"] for r in neg) if neg else None,
        "mean": {
            k: _mean(r[k] for r in rows)
            for k in (
                "der",
                "der_collar",
                "jer",
                "jer_collar",
                "miss",
                "false_alarm",
                "confusion",
                "wer",
                "utts_per_turn",
            )
        },
        "text_on_nonspeech": [dict(t, name=r["name"]) for r in rows for t in r["text_on_nonspeech"]],
        "utt_latency_ms": [x for r in rows for x in r["utt_latency_ms"]],
        "emo_latency_ms": [x for r in rows for x in r["emo_latency_ms"]],
        "utt_latency_by_close": {k: [x for r in rows for x in r["utt_latency_by_close"][k]] for k in CLOSES},
        "emo_latency_by_close": {k: [x for r in rows for x in r["emo_latency_by_close"][k]] for k in CLOSES},
        "emo_full_latency_ms": [x for r in rows for x in r["emo_full_latency_ms"]],
    }


def group_totals(rows: list[dict]) -> dict[str, dict]:
    """Pooled rows: each split/condition, each split (when it has several conditions), then
    everything (key ``all``)."""
    out: dict[str, dict] = {}
    splits = sorted(
        {r["split"] for r in rows if r["split"]}, key=lambda x: (SPLITS.index(x) if x in SPLITS else len(SPLITS), x)
    )
    conditions = list(dict.fromkeys(r["condition"] for r in rows if r["condition"]))
    for sp in splits or [None]:
        in_split = [r for r in rows if sp is None or r["split"] == sp]
        conds = [c for c in conditions if any(r["condition"] == c for r in in_split)]
        for c in conds:
            key = "/".join(x for x in (sp, c) if x)
            out[key] = total_row([r for r in in_split if r["condition"] == c], key)
        if sp is not None and len(splits) > 1 and (len(conds) != 1 or any(r["condition"] is None for r in in_split)):
            out[sp] = total_row(in_split, sp)
    out["all"] = total_row(rows, "TOTAL")
    return out


def run(
    folder,
    sets=(),
    only=None,
    events_dir=None,
    save_events=None,
    launch=None,
    log=sys.stderr,
    speed: str | float = "max",
    split: str | None = None,
    limit: int | None = None,
    ami: bool | None = None,
) -> tuple[list[dict], dict[str, dict]]:
    """Score every file: (per-file rows, pooled groups; ``groups["all"]`` is the total)."""
    todo = items(folder, split, only, limit, ami)
    if not todo:
        raise FileNotFoundError(f"nothing to score in {folder}")
    rows = []
    ctx = contextlib.nullcontext() if events_dir else shared_models()
    cfg = None if events_dir else load_config(sets, launch or REPO / "launch" / "replay.toml")
    turn_gap_s = cfg.vad.turn_gap_ms / 1000.0 if cfg is not None else 0.5
    with ctx:
        for audio, truth in todo:
            t0 = time.perf_counter()
            sub = audio.parent.name if audio.parent.resolve() != Path(folder).resolve() else ""
            if events_dir:
                path = _events_path(Path(events_dir), audio, sub)
                bodies = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                bodies = replay_bodies(cfg, audio, speed)
                if save_events:
                    out = Path(save_events) / sub
                    out.mkdir(parents=True, exist_ok=True)
                    (out / f"{audio.stem}.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bodies))
            rows.append(score(truth, bodies, turn_gap_s))
            if log:
                print(f"  {truth['name']}: {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    return rows, group_totals(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="corpus folder (dev/, test/), or a flat folder of NAME.json + audio")
    p.add_argument(
        "--ami", action="store_true", help="a flat folder of truth jsons with .flac audio (found by itself too)"
    )
    p.add_argument("--split", choices=SPLITS, help="score only this split")
    p.add_argument("--only", default="", help="comma-separated file names")
    p.add_argument("--limit", type=int, help="only the first N files of each split (quick runs)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--json", help="write every figure (rows, group totals) to this file")
    p.add_argument("--launch", default=str(REPO / "launch" / "replay.toml"))
    p.add_argument(
        "--speed",
        default="max",
        help="replay pace: max (virtual clock, default) or a factor (1 = recorded "
        "pace, the one that gives meaningful latencies)",
    )
    p.add_argument("--events-dir", help="score NAME.jsonl files found here instead of replaying")
    p.add_argument("--save-events", help="write the published bodies as EDIR/NAME.jsonl")
    a = p.parse_args(argv)
    try:
        rows, groups = run(
            a.dir,
            a.sets,
            [s for s in a.only.split(",") if s] or None,
            a.events_dir,
            a.save_events,
            a.launch,
            speed=a.speed if a.speed == "max" else float(a.speed),
            split=a.split,
            limit=a.limit,
            ami=True if a.ami else None,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"score: error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, groups))
    if a.json:
        Path(a.json).write_text(
            json.dumps({"settings": a.sets, "dir": str(a.dir), "rows": rows, "groups": groups}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
