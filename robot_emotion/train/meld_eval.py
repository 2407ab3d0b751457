"""`robot-emotion evaluate --meld DIR --split test|dev [--model CKPT] [--out REPORT_DIR] [--json FILE]`.

Features come from the same cache/extractor as training (extracted on demand with the
checkpoint's text model and settings). Rows: the stage-1 unimodal heads stored in the checkpoint
(audio, face, text), the fused model, and the fused model with each modality removed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def unimodal_heads(meta: dict, device: str) -> dict:
    """Rebuild the stage-1 unimodal heads a train checkpoint carries (none for other checkpoints)."""
    from robot_emotion.models import build_model

    heads = {}
    extra = meta.get("extra_state") or {}
    for m, info in (meta.get("training", {}).get("unimodal") or {}).items():
        prefix = f"unimodal.{m}."
        state = {k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}
        if not state:
            continue
        hp = dict(info["hparams"])
        model = build_model(info["family"], info["dims"], len(meta["labels"]), **hp)
        model.load_state_dict(state)
        heads[m] = (model.to(device).eval(), info["dims"])
    return heads


def run_meld_evaluate(args) -> int:
    from tqdm import tqdm

    from robot_emotion.errors import CommandError
    from robot_emotion.data.meld import MeldError, open_meld
    from robot_emotion.node.emotion import ASSETS, DEFAULT_CHECKPOINT
    from robot_emotion.models import MODALITIES, load_checkpoint
    from robot_emotion.models.checkpoint import CheckpointError, check_encoders
    from robot_emotion.train.extract import ExtractSpec, extract, load_split, read_manifest
    from robot_emotion.train.fit import predict
    from robot_emotion.train.metrics import classification_report, format_tables
    from robot_emotion.train.report import write_report

    path = Path(args.model) if args.model else DEFAULT_CHECKPOINT
    device = "cpu"
    try:
        model, meta = load_checkpoint(path, map_location=device)
    except CheckpointError as e:
        raise CommandError(str(e), 3) from None
    training = meta.get("training", {})
    try:
        split = open_meld(args.meld, (args.split,))[args.split]
    except MeldError as e:
        raise CommandError(str(e), 3) from None
    print(split.summary())
    text_dir = training.get("text_model_dir") or str(ASSETS)
    text_dir = text_dir if Path(text_dir).is_absolute() else str((path.parent / text_dir).resolve())
    text_source = args.text_source or training.get("text_source", "gold")
    spec = ExtractSpec(text_dir, text_source, "auto", tuple(training.get("extract_overrides") or ()))
    cache_root = args.cache or (
        str(Path(training["cache"]).parent)
        if training.get("cache")
        else str(Path.home() / ".cache" / "robot-emotion" / "meld-features")
    )
    try:
        stats = extract({args.split: split}, spec, cache_root, workers=args.workers)
    except FileNotFoundError as e:  # the checkpoint's text model is gone
        raise CommandError(str(e), 3) from None
    cache = Path(stats["cache"])
    try:
        check_encoders(meta["encoders"], read_manifest(cache)["encoders"], meta["dims"])
    except CheckpointError as e:
        raise CommandError(f"{path}: {e}", 3) from None
    feats, y, metas, names = load_split(cache, split, progress=True)
    data = f"{args.split} split of {short_path(split.csv)}"
    if len(y) == 0:
        raise CommandError(f"{data}: no clips with features to evaluate", 3)
    dims = dict(meta["dims"])
    rows, preds = {}, {}
    heads = unimodal_heads(meta, device)
    with tqdm(total=len(heads) + 1 + len(dims), unit="model", desc="evaluate", dynamic_ncols=True) as bar:
        for m, (head, hd) in heads.items():
            p, _, has = predict(head, feats, hd, device)
            rows[m] = classification_report(y, p.argmax(1))
            rows[m]["n_with_modality"] = int(has.sum())
            bar.update()
        probs, emb, has = predict(model, feats, dims, device)
        rows["multimodal"] = classification_report(y, probs.argmax(1))
        preds["multimodal"] = probs.argmax(1).tolist()
        bar.update()
        for m in dims:
            keep = np.array([mm != m for mm in MODALITIES])
            p, _, _ = predict(model, feats, dims, device, available=keep)
            rows[f"multimodal - {m}"] = classification_report(y, p.argmax(1))
            bar.update()
    found = sum(bool(mt.get("face_found")) for mt in metas)
    info = {
        "split": args.split,
        "data": data,
        "csv": str(Path(split.csv).resolve()),
        "model": f"{meta['family']}:{path.name}",
        "checkpoint": str(path),
        "n": int(len(y)),
        "skipped": len(split.skipped) + len(stats["failed"]),
        "skips": [list(s) for s in split.skipped] + [[k, f"undecodable: {v}"] for k, v in stats["failed"].items()],
        "face_found": found,
        "text_source": text_source,
        "dims": dims,
        "clips": names,
        "predictions": preds["multimodal"],
    }
    print(f"# {data}: {len(y)} clips, model {info['model']}; speaker's face found in {found}/{len(y)}")
    for name, r in rows.items():
        print(
            f"## {name}: acc {100 * r['accuracy']:.1f}, balanced acc {100 * r['balanced_accuracy']:.1f}, "
            f"weighted F1 {100 * r['weighted_f1']:.1f}"
        )
    print(format_tables(rows["multimodal"]))
    if args.out:
        files = write_report(
            args.out, {"rows": rows}, info, emb[has] if has.any() else emb, y[has] if has.any() else y, training
        )
        print(f"# report written to {args.out}: {', '.join(f.name for f in files.values())}", file=sys.stderr)
    if args.json:
        from robot_emotion.paths import write_output

        write_output(args.json, json.dumps({"meta": info, "rows": rows}, indent=1))
        if args.json != "-":
            print(f"# tables written to {args.json}", file=sys.stderr)
    return 0


def short_path(p, parts: int = 3) -> str:
    """The last `parts` components of a path: enough to tell datasets apart in a figure title."""
    p = Path(p).resolve()
    return str(Path(*p.parts[-parts:])) if len(p.parts) > parts else str(p)
