#!/usr/bin/env python3
"""Build the speaker-disjoint conversation corpus (dev / test) from the real voices in ../shared.

    python benchmarks/conversations/make_corpus.py OUT_DIR [--small] [--split dev|test]

Writes ``OUT_DIR/{dev,test}/NAME.wav`` (16 kHz mono int16), ``NAME.json`` (the truth, in the AMI
excerpts' format) and ``OUT_DIR/index.json``. Deterministic: a fixed seed, one generator per
conversation; whisper's backchannel cuts are cached in ``OUT_DIR/cache``. See README.md.

Layout: 2-4 speakers take turns of 1-3 clips (inner pauses 0.2-0.7 s); floor-transfer offsets
and overlaps are drawn from measured conversation statistics; other speakers drop short
backchannels inside a turn; some conversations get a loud noise burst or a tones stretch.
Conditions, one per conversation and balanced per split: clean, telephone, reverb, noisy.

Modules: voices.py (the voices, their trimmed clips and backchannels), conditions.py (the
acoustics and the mix), this file (the layout, the truth, the corpus and the command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.conversations.conditions import (
    CONDITIONS,
    placed_speech,
    condition_params,
    render,
    rirs,
    segments,
    to_pcm,
)
from benchmarks.conversations.voices import SHARED, SR, Library

SEED = 20250
SPLITS = ("dev", "test")

# Full corpus: 80 conversations per split, 20 per condition; per condition 8 with 2 speakers,
# 7 with 3, 5 with 4; 10 without non-speech, 5 with a burst, 5 with tones.
N_PER_CONDITION = 20
SPEAKER_MIX = (2,) * 8 + (3,) * 7 + (4,) * 5
NONSPEECH_MIX = (None,) * 10 + ("burst",) * 5 + ("tones",) * 5
TARGET_S = (18.0, 27.0)  # drawn length of the talk (the wav adds the lead-in and the tail)
# --small: one conversation per condition (dev gets clean + telephone, test reverb + noisy)
SMALL = {"dev": [("clean", 3, "burst"), ("telephone", 2, None)], "test": [("reverb", 2, "tones"), ("noisy", 3, None)]}
SMALL_TARGET_S = (6.0, 8.0)

# ---- turn-taking statistics (README: Heldner & Edlund 2010; Stivers et al. 2009; Levinson &
# Torreira 2015). Floor-transfer offset = next speaker's start - previous speaker's end.
P_OVERLAP = 0.27  # share of speaker changes that overlap
GAP_MEDIAN_S, GAP_SIGMA, GAP_MAX_S = 0.20, 0.8, 1.5  # lognormal gaps, mode ~0.1-0.2 s
OVERLAP_MEDIAN_S, OVERLAP_SIGMA, OVERLAP_RANGE_S = 0.25, 0.6, (0.05, 1.0)
PAUSE_MEDIAN_S, PAUSE_SIGMA, PAUSE_RANGE_S = 0.40, 0.35, (0.2, 0.7)  # inside a turn
CLIPS_PER_TURN, CLIPS_P = (1, 2, 3), (0.5, 0.35, 0.15)
MAX_TURN_S = 8.0  # stop adding clips to a turn past this
P_BACKCHANNEL = 0.25  # per turn of >= 1.5 s, by another speaker, inside it
GAIN_DB_RANGE = (-10.0, 0.0)  # per speaker: voices differ in level by up to 10 dB
BURST_S, BURST_DB = (0.5, 2.0), (0.0, 6.0)  # noise burst length, level re speech
TONES_S, TONES_DB = (1.0, 3.0), (-3.0, 3.0)


def _lognormal(rng, median, sigma, lo, hi) -> float:
    while True:  # truncated by redrawing, so there is no pile-up at the limits
        x = float(median * np.exp(sigma * rng.standard_normal()))
        if lo <= x <= hi:
            return x


def draw_offset(rng) -> float:
    """One floor-transfer offset (s): negative = overlap (down to -1 s), else a gap (<= 1.5 s)."""
    if rng.random() < P_OVERLAP:
        return -_lognormal(rng, OVERLAP_MEDIAN_S, OVERLAP_SIGMA, *OVERLAP_RANGE_S)
    return _lognormal(rng, GAP_MEDIAN_S, GAP_SIGMA, 0.0, GAP_MAX_S)


def draw_pause(rng) -> float:
    """A pause between two clips of the same speaker's turn (s)."""
    return _lognormal(rng, PAUSE_MEDIAN_S, PAUSE_SIGMA, *PAUSE_RANGE_S)


# --------------------------------------------------------------------------------- layout
def _pick_clips(rng, lib, vid, used: dict) -> list:
    clips = lib.clips(vid)
    n = int(rng.choice(CLIPS_PER_TURN, p=CLIPS_P))
    if clips[0].emotion is not None:  # RAVDESS: one emotion per turn
        emo = sorted({c.emotion for c in clips})[int(rng.integers(0, 7))]
        clips = [c for c in clips if c.emotion == emo]
    order = sorted(range(len(clips)), key=lambda i: (used.get(clips[i], 0), rng.random()))
    out, total = [], 0.0
    for i in order:  # nobody reads the same sentence twice in one turn (RAVDESS has two)
        if len(out) == n or (out and total + clips[i].dur > MAX_TURN_S):
            break
        if any(c.text == clips[i].text for c in out):
            continue
        out.append(clips[i])
        total += clips[i].dur
    for c in out:
        used[c] = used.get(c, 0) + 1
    return out


def layout(
    lib: Library, rng, voices: list, target_s: float, nonspeech: str | None, p_backchannel: float = P_BACKCHANNEL
) -> dict:
    """Place the turns, backchannels and the non-speech event of one conversation (no audio)."""
    lead = rng.uniform(0.3, 1.0)
    usage = {v: 0 for v in voices}
    last_end = {v: -1e9 for v in voices}  # each speaker's latest speech end
    turns, used, ns = [], {}, []
    ns_after = None if nonspeech is None else int(rng.integers(1, 6))  # after that many turns
    while True:
        main = [t for t in turns if not t["backchannel"]]
        prev = main[-1] if main else None
        cand = [v for v in voices if prev is None or v != prev["spk"]]
        cand = [v for v in cand if not usage[v]] or cand  # everyone speaks early on
        w = np.array([1.0 / (1 + usage[v]) ** 2 for v in cand])
        spk = cand[int(rng.choice(len(cand), p=w / w.sum()))]
        clips = _pick_clips(rng, lib, spk, used)
        pauses = [draw_pause(rng) for _ in clips[1:]]
        if prev is None:
            start, offset = lead, None
        elif ns and ns[-1]["after_turn"] == len(main) - 1:
            start, offset = ns[-1]["end"] + rng.uniform(0.2, 0.6), None  # talk resumes after it
        else:
            offset = draw_offset(rng)
            busy = max([t["end"] for t in turns if t is not prev] + [-1e9])
            start = max(
                prev["end"] + offset,
                prev["start"] + 0.5,  # never swallow the previous turn
                last_end[spk] + 0.2,  # nobody overlaps themselves
                busy + 0.05,
            )  # at most two voices at once
        # place the clips so that speech (not the margins) follows the drawn times
        placed, t = [], start
        for i, c in enumerate(clips):
            at = t - c.voiced[0][0]
            placed.append((c, at))
            t = at + c.voiced[-1][1] + (pauses[i] if i < len(pauses) else 0.0)
        turn = {
            "spk": spk,
            "start": start,
            "end": placed_speech(placed[-1])[-1][1],
            "clips": placed,
            "backchannel": False,
            "offset": offset,
        }
        turns.append(turn)
        usage[spk] += 1
        last_end[spk] = turn["end"]
        _maybe_backchannel(lib, rng, turn, prev, voices, last_end, turns, p_backchannel)
        n_main = len([t for t in turns if not t["backchannel"]])
        done = turn["end"] >= lead + target_s and min(usage.values()) > 0
        if nonspeech and not ns and (n_main == ns_after or done):
            ns.append(_nonspeech(lib, rng, nonspeech, max(t["end"] for t in turns), n_main - 1))
        if done:
            break
    end = max([t["end"] for t in turns] + [e["end"] for e in ns])
    return {
        "turns": sorted(turns, key=lambda t: t["start"]),
        "nonspeech": ns,
        "duration": round(end + rng.uniform(0.5, 1.5), 3),
    }


def _maybe_backchannel(lib, rng, turn, prev, voices, last_end, turns, p):
    """Another speaker's short backchannel inside this turn (overlapping it, not ending it),
    preferably at a pause between its clips, where listeners tend to put them."""
    if turn["end"] - turn["start"] < 1.5 or rng.random() >= p:
        return
    cand = [v for v in voices if v != turn["spk"] and lib.backchannels(v)]
    if not cand:
        return
    who = cand[int(rng.integers(0, len(cand)))]
    bcs = lib.backchannels(who)
    bc = bcs[int(rng.integers(0, len(bcs)))]
    d = bc.voiced[0][1] - bc.voiced[0][0]
    if len(turn["clips"]) > 1:
        k = int(rng.integers(0, len(turn["clips"]) - 1))
        s = placed_speech(turn["clips"][k])[-1][1] + rng.uniform(-0.25, 0.1)
    else:
        s = rng.uniform(turn["start"] + 0.3, turn["end"] - 0.2 - d)
    lo = max(turn["start"] + 0.3, last_end[who] + 0.3, (prev["end"] + 0.1) if prev else 0.0)
    s = max(s, lo)
    if s + d > turn["end"] - 0.2:
        return
    turns.append(
        {
            "spk": who,
            "start": s,
            "end": s + d,
            "clips": [(bc, s - bc.voiced[0][0])],
            "backchannel": True,
            "offset": None,
        }
    )
    last_end[who] = s + d


def _nonspeech(lib, rng, kind, after_s, after_turn) -> dict:
    if kind == "burst":
        files = sorted((lib.shared / "speech" / "noise").glob("*.wav"))
        dur, level = rng.uniform(*BURST_S), rng.uniform(*BURST_DB)
    else:  # wsj0mix: synthetic harmonic tone complexes, not speech (benchmarks/conversations/make_conversations.py)
        files = sorted((lib.shared / "speech" / "wsj0mix").glob("*.wav"))
        dur, level = rng.uniform(*TONES_S), rng.uniform(*TONES_DB)
    f = files[int(rng.integers(0, len(files)))]
    n_src = sf.info(str(f)).frames / SR
    start = after_s + rng.uniform(0.2, 0.6)
    return {
        "start": start,
        "end": start + dur,
        "kind": kind,
        "file": str(f.relative_to(lib.shared)),
        "offset": rng.uniform(0, max(0.0, n_src - dur)),
        "level_db": level,
        "after_turn": after_turn,
    }


# ---------------------------------------------------------------------------------- truth
def _r(x: float) -> float:
    return round(float(x), 3)


def truth(conv: dict, lib: Library) -> dict:
    turns = conv["turns"]
    out_turns = []
    for t in turns:
        others = [u for u in turns if u["spk"] != t["spk"]]
        emos = {c.emotion for c, _ in t["clips"]}
        out_turns.append(
            {
                "spk": t["spk"],
                "start": _r(t["start"]),
                "end": _r(t["end"]),
                "text": " ".join(c.text for c, _ in t["clips"]),
                "overlap": any(u["start"] < t["start"] < u["end"] for u in others),
                "backchannel": t["backchannel"],
                "emotion": emos.pop() if len(emos) == 1 else None,
            }
        )
    words = [
        [t["spk"], _r(at + a), _r(at + b), w] for t in turns for c, at in t["clips"] for a, b, w in (c.words or ())
    ]
    complete = all(c.words for t in turns for c, _ in t["clips"])
    voices = sorted(conv["gain_db"])
    d = {
        "name": conv["name"],
        "split": conv["split"],
        "condition": conv["condition"],
        "duration": conv["duration"],
        "sample_rate": SR,
        "speakers": voices,
        "voices": {v: {"source": lib.voices[v].source, "sex": lib.voices[v].sex} for v in voices},
        "segments": [[s, _r(a), _r(b)] for s, a, b in segments(conv)],
        "turns": out_turns,
        # null unless every turn's word times are known (AMI words): a scorer then takes the
        # turn texts as the reference (an empty list would read as "no words were said")
        "words": sorted(words, key=lambda w: (w[1], w[0])) if complete else None,
        "full_text": " ".join(t["text"] for t in out_turns),
        "nonspeech": [
            {
                "start": _r(e["start"]),
                "end": _r(e["end"]),
                "kind": e["kind"],
                "file": e["file"],
                "level_db": _r(e["level_db"]),
            }
            for e in conv["nonspeech"]
        ],
        "gain_db": {v: _r(g) for v, g in sorted(conv["gain_db"].items())},
    }
    p = conv["params"]
    if conv["condition"] == "noisy":
        d.update(snr_db=_r(p["snr_db"]), noise_file=p["noise_file"])
    if conv["condition"] == "reverb":
        d.update(
            rt60=_r(conv["rt60"]),
            rt60_target=_r(p["rt60_target"]),
            room=p["room"],
            mic=p["mic"],
            positions=p["positions"],
        )
    d["source_clips"] = [
        {
            "spk": t["spk"],
            "file": c.file,
            "span": [_r(c.span[0]), _r(c.span[1])],
            "at": _r(at),
            "backchannel": c.backchannel,
        }
        for t in turns
        for c, at in t["clips"]
    ]
    d["negative"] = False
    return d


# ---------------------------------------------------------------------------------- corpus
def plans(split: str, small: bool) -> list[tuple]:
    """(condition, n_speakers, nonspeech) per conversation of a split, balanced and shuffled."""
    if small:
        return SMALL[split]
    rng = np.random.default_rng([SEED, SPLITS.index(split), 7])
    out = [
        (c, SPEAKER_MIX[i], NONSPEECH_MIX[(i * 7) % len(NONSPEECH_MIX)])
        for c in CONDITIONS
        for i in range(N_PER_CONDITION)
    ]
    return [out[i] for i in rng.permutation(len(out))]


def conversations(lib: Library, split: str, small: bool = False):
    """Lay out a split's conversations in order (voices are shared out by use so far)."""
    use = {v: 0 for v in lib.split_voices(split)}
    for k, (cond, n_spk, ns) in enumerate(plans(split, small)):
        yield make_conversation(lib, split, k, cond, n_spk, ns, small, use)


def make_conversation(lib, split, k, cond, n_spk, ns, small, voice_use: dict) -> dict:
    seed = [SEED, SPLITS.index(split), k, int(small)]
    rng = np.random.default_rng(seed)
    pool = lib.split_voices(split)
    # least-used voices first (random tie-break): every voice gets about the same share
    voices = sorted(sorted(pool, key=lambda v: (voice_use[v], rng.random()))[:n_spk])
    for v in voices:
        voice_use[v] += 1
    assert set(voices) <= set(pool) and not any(lib.voices[v].split != split for v in voices), (
        "a conversation uses only its split's voices"
    )
    target = rng.uniform(*(SMALL_TARGET_S if small else TARGET_S))
    conv = layout(lib, rng, voices, target, ns, p_backchannel=0.7 if small else P_BACKCHANNEL)
    conv.update(
        name=f"{split}_{k:03d}_{cond}",
        split=split,
        condition=cond,
        seed=int(np.random.SeedSequence(seed).generate_state(1)[0]),
        gain_db={v: rng.uniform(*GAIN_DB_RANGE) for v in voices},
        params=condition_params(lib, rng, cond, voices),
    )
    if cond == "reverb":
        conv["_rirs"], conv["rt60"] = rirs(conv["params"])
    return conv


def change_offsets(truth_d: dict) -> list[float]:
    """Floor-transfer offsets of a truth file: consecutive main (non-backchannel) turns, except
    across a non-speech event (talk resumes after it, not in answer to the other voice)."""
    main = [t for t in truth_d["turns"] if not t["backchannel"]]
    out = []
    for a, b in zip(main, main[1:]):
        if not any(a["end"] <= e["start"] < b["start"] for e in truth_d["nonspeech"]):
            out.append(b["start"] - a["end"])
    return out


def build(
    out_dir,
    small: bool = False,
    splits=SPLITS,
    shared: Path = SHARED,
    cache_dir=None,
    log=print,
    keep: list | None = None,
) -> dict:
    """Write the corpus and return its index; ``keep`` collects the laid-out conversations
    (for checks against a dry render)."""
    out = Path(out_dir)
    lib = Library(shared, cache_dir=Path(cache_dir) if cache_dir else out / "cache")
    dev, test = set(lib.split_voices("dev")), set(lib.split_voices("test"))
    assert not dev & test, "dev and test voices overlap"
    index = {
        "generator": "benchmarks/conversations/make_corpus.py",
        "seed": SEED,
        "small": small,
        "sample_rate": SR,
        "splits": {},
    }
    offsets, n_bc = [], 0
    for split in splits:
        (out / split).mkdir(parents=True, exist_ok=True)
        items = []
        for conv in conversations(lib, split, small):
            if keep is not None:
                keep.append(conv)
            cond = conv["condition"]
            t = truth(conv, lib)
            assert set(t["speakers"]) <= (dev if split == "dev" else test)
            sf.write(str(out / split / f"{t['name']}.wav"), to_pcm(render(conv, lib)), SR, subtype="PCM_16")
            (out / split / f"{t['name']}.json").write_text(json.dumps(t, indent=1) + "\n")
            offs = change_offsets(t)
            offsets += offs
            bcs = sum(u["backchannel"] for u in t["turns"])
            n_bc += bcs
            items.append(
                {
                    "name": t["name"],
                    "condition": cond,
                    "speakers": len(t["speakers"]),
                    "voices": t["speakers"],
                    "duration": t["duration"],
                    "turns": len(t["turns"]),
                    "backchannels": bcs,
                    "nonspeech": [e["kind"] for e in t["nonspeech"]],
                }
            )
            log(
                f"{t['name']:24s} {t['duration']:5.1f} s  {len(t['speakers'])} spk  "
                f"{len(t['turns']):2d} turns  {'/'.join(t['speakers'])}"
            )
        used = sorted({v for i in items for v in i["voices"]})
        index["splits"][split] = {
            "voices": used,
            "voice_pool": lib.split_voices(split),
            "conversations": items,
            "minutes": round(sum(i["duration"] for i in items) / 60, 2),
            "conditions": {c: sum(i["condition"] == c for i in items) for c in CONDITIONS},
            "speaker_counts": {str(n): sum(i["speakers"] == n for i in items) for n in (2, 3, 4)},
        }
    all_used = [set(s["voices"]) for s in index["splits"].values()]
    assert len(all_used) < 2 or not all_used[0] & all_used[1], "split voices overlap"
    offs = np.array(offsets)
    index["totals"] = {
        "conversations": sum(len(s["conversations"]) for s in index["splits"].values()),
        "minutes": round(sum(s["minutes"] for s in index["splits"].values()), 2),
        "speaker_changes": len(offs),
        "overlap_share": round(float(np.mean(offs < 0)), 3) if len(offs) else None,
        "median_offset_s": round(float(np.median(offs)), 3) if len(offs) else None,
        "median_gap_s": round(float(np.median(offs[offs >= 0])), 3) if (offs >= 0).any() else None,
        "backchannels": n_bc,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--small", action="store_true", help="a handful of short conversations (tests)")
    p.add_argument("--split", choices=SPLITS, help="build only this split")
    p.add_argument("--shared", default=str(SHARED), help="the shared/ folder (default: %(default)s)")
    p.add_argument("--cache", default=None, help="whisper cache folder (default: OUT_DIR/cache)")
    a = p.parse_args(argv)
    t0 = time.time()
    try:
        index = build(
            a.out_dir,
            a.small,
            (a.split,) if a.split else SPLITS,
            Path(a.shared),
            a.cache,
            log=lambda s: print(s, file=sys.stderr),
        )
    except (OSError, ValueError) as e:
        print(f"make_corpus: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**index["totals"], "build_s": round(time.time() - t0, 1)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
