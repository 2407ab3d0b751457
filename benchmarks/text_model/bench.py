"""Latency and dev weighted F1 of the text emotion model: before (one MiniLM pass per member,
the input re-tokenised every time) vs the members in one batched forward, float and int8.

    HF_HUB_OFFLINE=1 python benchmarks/text_model/bench.py [--meld-csv ../shared/meld/dev_sent_emo.csv]
                                                      [--n 200] [--no-f1]

One utterance at a time (as the node scores a turn), on ONE torch thread (the node's setting),
the MELD dev utterances in order with their past turns (8, as the node passes; the model reads 2);
the variants run interleaved so that a busy machine slows them alike. The weighted F1 is on the
whole CSV (the shipped choice was made on dev; never run this on test to choose anything).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "meld" / "dev_sent_emo.csv"


def forward_before(model, item):
    """The text model as it ran before: string input re-tokenised (no cache), one pass per member."""
    import torch

    enc = model.encoder
    h, c = item
    with torch.no_grad():
        enc._ids_cache.clear()
        batch = enc.tokenize([enc.build_input(list(h)[-model.context_turns :], c)])
        mask = batch["attention_mask"]
        hidden = enc.bottom_states(batch, model.members[0].first)
        probs = 0.0
        for m in model.members:
            states = enc.run_layers(hidden, mask, 0, None, layers=m.layers)
            probs = probs + torch.softmax(m.head(enc.pool(states, mask, batch["current_mask"])), -1)
    return probs


def timed(fn, items, warmup: int = 5) -> list[float]:
    for it in items[:warmup]:
        fn(it)
    out = []
    for it in items:
        t0 = time.perf_counter()
        fn(it)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meld-csv", default=str(DEFAULT_CSV), help="MELD-format CSV (default: MELD dev)")
    ap.add_argument("--n", type=int, default=200, help="utterances timed (default: 200)")
    ap.add_argument("--no-f1", action="store_true", help="skip the weighted F1 over the whole CSV")
    args = ap.parse_args(argv)
    if not Path(args.meld_csv).is_file():
        print(f"bench_text_model: {args.meld_csv} not found", file=sys.stderr)
        return 3

    import torch

    from robot_emotion import EMOTIONS
    from robot_emotion.data.meld import read_meld_csv
    from robot_emotion.data.meld_text import with_past_context
    from robot_emotion.features.text_emotion import TextEmotionModel
    from robot_emotion.train.metrics import classification_report

    torch.set_num_threads(1)
    before = TextEmotionModel.load(None, device="cpu", stacked=False)
    models = {
        "stacked float": TextEmotionModel.load(None, device="cpu"),
        "stacked int8": TextEmotionModel.load(None, device="cpu", int8=True),
    }
    utts = read_meld_csv(args.meld_csv)
    items = [(h, (u.speaker, u.text)) for u, h in with_past_context(utts, max_turns=8)]
    timed_items = items[: args.n]

    # interleave the variants item by item, so load on the machine falls on all of them
    fns = {
        "before (per member)": lambda it: forward_before(before, it),
        **{k: (lambda it, m=m: m.forward([it])) for k, m in models.items()},
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for it in timed_items[:5]:
        for fn in fns.values():
            fn(it)
    for it in timed_items:
        for k, fn in fns.items():
            times[k] += timed(fn, [it], warmup=0)

    enc = models["stacked float"].encoder
    ctx = before.context_turns

    def tokenise_uncached(it):
        enc._ids_cache.clear()
        enc.tokenize([enc.build_input(list(it[0])[-ctx:], it[1])])

    tok = {
        "tokenise, no cache": timed(tokenise_uncached, timed_items),
        "tokenise, cached turns": timed(
            lambda it: enc.tokenize_ids([enc.build_ids(list(it[0])[-ctx:], it[1])]), timed_items
        ),
    }

    f1: dict[str, str] = {k: "" for k in times}
    if not args.no_f1:
        y = [u.emotion for u in utts]

        def scored(m, batch):
            probs = np.concatenate([m.predict_batch(items[i : i + batch])[0] for i in range(0, len(items), batch)])
            wf1 = classification_report(y, [EMOTIONS[j] for j in probs.argmax(1)], EMOTIONS)["weighted_f1"]
            return probs.argmax(1), f"{100 * wf1:.2f}"

        # float gives the same probabilities in any batch; int8 quantizes activations per call, so
        # it is scored one utterance at a time (the node) and in batches of 32 (`evaluate --meld-csv`)
        ref, f1["stacked float"] = scored(models["stacked float"], 32)
        f1["before (per member)"] = f1["stacked float"] + " (same probabilities)"
        for batch, what in ((1, "one at a time"), (32, "batches of 32")):
            pred, wf1 = scored(models["stacked int8"], batch)
            f1["stacked int8"] += (
                f"{'; ' if f1['stacked int8'] else ''}{wf1} {what} "
                f"(argmax = float on {100 * float((pred == ref).mean()):.1f}%)"
            )

    print(
        f"# text model, {len(timed_items)} utterances of {Path(args.meld_csv).name} one at a time, "
        f"1 torch thread; weighted F1 on all {len(items)}"
    )
    print("| variant | median ms | p95 ms | dev weighted F1 |")
    print("|---|---|---|---|")
    for k, v in {**times, **tok}.items():
        print(f"| {k} | {np.median(v):.2f} | {np.percentile(v, 95):.2f} | {f1.get(k, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
