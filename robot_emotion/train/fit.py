"""`robot-emotion train --meld DIR`: extract -> unimodal heads -> fusion model -> node checkpoint.

Recipe (Xie et al. 2021): the encoders are the node's (fine-tuned MiniLM text branch, FER2013
CNN penultimate features, Whisper tiny.en encoder states; features taken before their last FC
layer). Stage 1 trains one unimodal head per modality on those features (the Table 1 audio / face /
text rows; stored in the checkpoint's extra_state as `unimodal.<m>.*`). Stage 2 trains the fusion
family on the same features. Optimiser: the paper's SGD (lr 1e-3, momentum 0.9, cross-entropy)
by default; `--optimizer adamw --class-weights` for AdamW with inverse-sqrt-frequency class weights.
Early stopping on dev weighted F1 (patience), fixed seeds, device auto|cpu|cuda.

Under torchrun (WORLD_SIZE > 1): extraction is sharded by rank into the shared cache, then DDP
(gloo on CPU, nccl on CUDA); every rank sees the same shuffled order and takes its slice; every
rank evaluates dev identically, so they stop together; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from robot_emotion import EMOTIONS
from robot_emotion.config import add_set_option
from robot_emotion.threads import offline_threads, set_torch_threads

UNIMODAL_FAMILY = "early"
FAMILIES = ("crossmodal-embracenet", "early", "late", "unified")  # models.FAMILIES, without torch


def seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(y: np.ndarray, n: int = len(EMOTIONS)) -> list[float]:
    counts = np.bincount(y, minlength=n).astype(float)
    w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    return (w / (w[counts > 0].mean() if (counts > 0).any() else 1.0)).tolist()


def infer_dims(feats, fallback: dict | None = None) -> dict[str, int]:
    dims = {}
    for m in ("text", "audio", "face"):
        for u in feats:
            f = getattr(u, m)
            if f is not None and f.seq is not None:
                dims[m] = int(f.seq.shape[1])
                break
    return dims or dict(fallback or {})


def selection_score(h: dict) -> float:
    """What early stopping maximises for one epoch: dev weighted F1 (-train loss without a dev set)."""
    return h["dev_weighted_f1"] if h.get("dev_weighted_f1") is not None else -h["train_loss"]


def chosen_epoch(history: list[dict]) -> int | None:
    """The epoch whose weights fit_model keeps: the first one with the best selection_score."""
    if not history:
        return None
    return history[int(np.argmax([selection_score(h) for h in history]))]["epoch"]


def predict(model, feats, dims, device, batch_size=64, available=None):
    """-> (probs (N, C), embeddings (N, E), has_estimate (N,)); available: optional (3,) bool mask."""
    import torch
    from robot_emotion.features.utterance import to_fusion_input

    model.eval()
    P, E, H = [], [], []
    with torch.no_grad():
        for i in range(0, len(feats), batch_size):
            x = to_fusion_input(feats[i : i + batch_size], dims, device)
            if available is not None:
                x = x.with_available(x.available & torch.as_tensor(available, device=x.available.device))
            out = model(x)
            P.append(out.probs.float().cpu().numpy())
            E.append(out.embedding.float().cpu().numpy())
            H.append(out.has_estimate.cpu().numpy())
    if not P:
        return np.zeros((0, len(EMOTIONS))), np.zeros((0, 1)), np.zeros(0, bool)
    return np.concatenate(P), np.concatenate(E), np.concatenate(H)


def fit_model(
    model, train, y, dev, ydev, dims, *, epochs, optimizer, lr, batch_size, patience, device, seed, dist, log, name
):
    """Train with early stopping on dev weighted F1; returns (best model, history list)."""
    import torch
    from robot_emotion.features.utterance import to_fusion_input
    from robot_emotion.train.metrics import classification_report

    model.to(device)
    net = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(
            model, device_ids=[dist.local_rank] if device.startswith("cuda") else None, find_unused_parameters=True
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (
        torch.optim.SGD(params, lr=lr, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    )
    yt = torch.as_tensor(y)
    # -inf: without a dev set the score is -train loss, which may well be below -1
    best, best_f1, bad, history = copy.deepcopy(model.state_dict()), float("-inf"), 0, []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(train), generator=g).tolist()
        per_rank = -(-len(order) // dist.world)
        order = (order * 2)[: per_rank * dist.world][dist.rank :: dist.world]  # equal steps per rank
        model.train()
        losses = []
        for i in range(0, len(order), batch_size):
            b = order[i : i + batch_size]
            x = to_fusion_input([train[j] for j in b], dims, device)
            out = net(x)
            loss = model.loss(out, yt[b].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        probs, _, _ = predict(model, dev, dims, device)
        rep = classification_report(ydev, probs.argmax(1)) if len(ydev) else None
        dev_loss = float(-np.log(np.clip(probs[np.arange(len(ydev)), ydev], 1e-8, 1)).mean()) if len(ydev) else None
        h = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else None,
            "dev_loss": dev_loss,
            "dev_accuracy": rep and rep["accuracy"],
            "dev_weighted_f1": rep and rep["weighted_f1"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(h)
        f1 = selection_score(h)
        if dist.main:
            log(
                f"# {name} epoch {epoch + 1}/{epochs}: train loss {h['train_loss']:.4f}, dev wF1 "
                f"{100 * (h['dev_weighted_f1'] or 0):.1f}, acc {100 * (h['dev_accuracy'] or 0):.1f} "
                f"({h['seconds']:.1f} s)"
            )
        if f1 > best_f1:
            best_f1, bad, best = f1, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best)
    model.eval()
    return model, history


def train_main(args) -> int:
    from robot_emotion.errors import CommandError
    from robot_emotion.data.meld import MeldError, open_meld
    from robot_emotion.node.emotion import ASSETS
    from robot_emotion.models import build_model, save_checkpoint
    from robot_emotion.train import distributed
    from robot_emotion.train.extract import ExtractSpec, extract, load_split, read_manifest
    from robot_emotion.train.metrics import classification_report

    dist = distributed.init(args.device)
    log = print if dist.main else (lambda *a, **k: None)
    try:
        try:
            splits = open_meld(args.meld, ("train", "dev"))
        except MeldError as e:
            raise CommandError(str(e), 3) from None
        for s in splits.values():
            log(s.summary())
        text_dir = args.text_model or str(ASSETS)
        spec = ExtractSpec(str(Path(text_dir).resolve()), args.text_source, dist.device, tuple(args.overrides))
        set_torch_threads(offline_threads(dist.world))  # the cores shared among the ranks
        try:
            stats = extract(
                splits,
                spec,
                args.cache,
                workers=args.workers,
                limit=args.limit,
                rank=dist.rank,
                world=dist.world,
                progress=dist.main and not args.quiet,
                log=log if dist.world == 1 else print,
            )
        except FileNotFoundError as e:
            raise CommandError(str(e), 3) from None
        dist.barrier()
        if args.extract_only:
            return 0
        cache = Path(stats["cache"])
        manifest = read_manifest(cache)
        bars = dist.main and not args.quiet
        tr, ytr, mtr, _ = load_split(cache, splits["train"], progress=bars)
        dv, ydv, mdv, _ = load_split(cache, splits["dev"], progress=bars)
        if len(tr) == 0:
            raise CommandError("no training clips with features (all skipped or undecodable)", 4)
        dims = infer_dims(tr + dv)
        for nm, mm in (("train", mtr), ("dev", mdv)):
            found = sum(bool(m.get("face_found")) for m in mm)
            log(
                f"# {nm}: {len(mm)} clips with features; speaker's face found in {found}/{len(mm)}"
                f" ({100 * found / max(1, len(mm)):.0f} %)"
            )
        seed_all(args.seed)
        cw = class_weights(ytr) if args.class_weights else None
        lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "sgd" else 3e-4)
        common = dict(
            epochs=args.epochs,
            optimizer=args.optimizer,
            lr=lr,
            batch_size=args.batch_size,
            patience=args.patience,
            device=dist.device,
            seed=args.seed,
            dist=dist,
            log=log,
        )
        extra, uni_meta, uni_metrics = {}, {}, {}
        for m, d in dims.items():  # stage 1: unimodal heads
            seed_all(args.seed)
            hp = {"class_weights": cw}
            um, hist = fit_model(
                build_model(UNIMODAL_FAMILY, {m: d}, len(EMOTIONS), **hp),
                tr,
                ytr,
                dv,
                ydv,
                {m: d},
                name=f"unimodal {m}",
                **common,
            )
            extra.update({f"unimodal.{m}.{k}": v for k, v in um.state_dict().items()})
            uni_meta[m] = {"family": UNIMODAL_FAMILY, "dims": {m: d}, "hparams": um.hparams, "history": hist}
            if len(ydv):
                p, _, _ = predict(um, dv, {m: d}, dist.device)
                uni_metrics[m] = _summary(classification_report(ydv, p.argmax(1)))
        seed_all(args.seed)  # stage 2: the fusion model
        hparams = {"class_weights": cw}
        model, history = fit_model(
            build_model(args.family, dims, len(EMOTIONS), **hparams), tr, ytr, dv, ydv, dims, name=args.family, **common
        )
        metrics = {"dev_unimodal": uni_metrics}
        if len(ydv):
            p, _, _ = predict(model, dv, dims, dist.device)
            metrics["dev"] = _summary(classification_report(ydv, p.argmax(1)))
        if dist.main:
            out = Path(args.out)
            encoders = {m: manifest["encoders"][m] for m in dims}
            text_dir = os.path.relpath(manifest["text_model_dir"], out.resolve().parent)
            training = {
                "data": f"MELD train ({len(tr)} clips), early stopping on MELD dev ({len(dv)} clips)",
                "meld": str(Path(args.meld).resolve()),
                "text_model_dir": text_dir,
                "text_source": args.text_source,
                "cache": str(cache.resolve()),
                "extract_overrides": list(args.overrides),
                "optimizer": args.optimizer,
                "lr": lr,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "patience": args.patience,
                "seed": args.seed,
                "class_weights": cw,
                "world_size": dist.world,
                "device": dist.device,
                "face_found": {
                    "train": [sum(bool(m.get("face_found")) for m in mtr), len(mtr)],
                    "dev": [sum(bool(m.get("face_found")) for m in mdv), len(mdv)],
                },
                "history": history,
                "unimodal": uni_meta,
                "recipe": "unimodal heads on frozen node encoders, then fusion (Xie et al. 2021)",
            }
            save_checkpoint(
                out,
                model.cpu(),
                family=args.family,
                dims=dims,
                hparams=hparams,
                encoders=encoders,
                training=training,
                metrics=metrics,
                extra_state=extra,
            )
            log(
                f"# wrote {out}: {args.family}, dims {dims}, dev wF1 "
                f"{100 * metrics.get('dev', {}).get('weighted_f1', 0):.1f}"
            )
        dist.barrier()
        return 0
    finally:
        dist.close()


def _summary(rep: dict) -> dict:
    return {k: rep[k] for k in ("n", "accuracy", "balanced_accuracy", "weighted_f1", "macro_f1")}


def add_train_args(p) -> None:
    p.add_argument("--meld", required=True, help="extracted MELD.Raw folder (CSVs + clip folders)")
    p.add_argument(
        "--family", default="crossmodal-embracenet", choices=FAMILIES, help="fusion family to train"
    )  # kept in sync with models.FAMILIES (tests)
    p.add_argument("--out", default="meld_model.pt", help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=30, help="most epochs to train")
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=("sgd", "adamw"),
        help="sgd = the paper's recipe (lr 1e-3); adamw (lr 3e-4)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument("--class-weights", action="store_true", help="inverse-sqrt-frequency class weights")
    p.add_argument("--batch-size", type=int, default=32, help="utterances per batch")
    p.add_argument("--patience", type=int, default=5, help="early stopping on dev weighted F1")
    p.add_argument("--seed", type=int, default=13, help="random seed (initialisation, shuffling)")
    p.add_argument("--workers", type=int, default=1, help="feature extraction processes")
    p.add_argument(
        "--cache", default=str(Path.home() / ".cache" / "robot-emotion" / "meld-features"), help="feature cache folder"
    )
    p.add_argument(
        "--text-source",
        default="gold",
        choices=("gold", "asr"),
        help="text of each clip: MELD's transcript (gold) or the node's ASR",
    )
    p.add_argument("--text-model", default=None, help="text emotion model dir (default: the shipped one)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--limit", type=int, default=None, help="extract at most N new clips (then stop)")
    p.add_argument("--extract-only", action="store_true", help="extract features, do not train")
    add_set_option(p, help="config override for the featurizers (e.g. faces.rate_hz=5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


if __name__ == "__main__":  # python -m robot_emotion.train.fit ... (torchrun -m works too)
    import argparse

    ap = argparse.ArgumentParser(prog="robot-emotion train")
    add_train_args(ap)
    sys.exit(train_main(ap.parse_args()))
