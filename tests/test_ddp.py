"""`torchrun --nproc_per_node 2 -m robot_emotion train ...` on CPU: gloo DDP completes and rank 0
writes a checkpoint. Features are pre-seeded into the cache (class-dependent random vectors) so
the test measures the distributed training path, not the encoders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO, load_tool

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _meld(root: Path, n_train=24, n_dev=8):
    import csv
    from robot_emotion import EMOTIONS
    from robot_emotion.data.meld import COLUMNS, SPLITS

    for split, n in (("train", n_train), ("dev", n_dev)):
        csv_name, dir_name = SPLITS[split]
        (root / dir_name).mkdir(parents=True)
        with open(root / csv_name, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\r\n")
            w.writerow(COLUMNS)
            for i in range(n):
                w.writerow(
                    [
                        i + 1,
                        f"line {i}",
                        "Ross",
                        EMOTIONS[i % 4],
                        "neutral",
                        i // 4,
                        i % 4,
                        1,
                        1,
                        "00:00:01,000",
                        "00:00:02,000",
                    ]
                )
                (root / dir_name / f"dia{i // 4}_utt{i % 4}.mp4").write_bytes(b"\x00" * 16)


def test_two_process_gloo_training(tmp_path):
    from robot_emotion.data.meld import open_meld
    from robot_emotion.node.emotion import AUDIO_ENCODER, FACE_ENCODER
    from robot_emotion.train.extract import ExtractSpec, cache_identity, cache_key, save_features, split_dir

    tool = load_tool("tools/make_mini_meld")
    text_dir = tool.write_probe_text_model(tmp_path / "text")
    meld = tmp_path / "meld"
    _meld(meld)
    spec = ExtractSpec(str(text_dir.resolve()), "gold", "cpu")
    ident = cache_identity(spec)
    cache = tmp_path / "cache" / cache_key(ident)
    rng = np.random.default_rng(0)
    for split in open_meld(meld, ("train", "dev")).values():
        split_dir(cache, split).mkdir(parents=True)
        for c in split.clips:
            arr = {}
            for m, d, T in (("text", 384, 6), ("audio", 384, 10), ("face", 128, 5)):
                seq = rng.normal(0, 1, (T, d)) + 0.5 * c.label
                arr[f"{m}_seq"], arr[f"{m}_pooled"] = seq.astype(np.float16), seq.mean(0).astype(np.float16)
            save_features(split_dir(cache, split) / f"{c.name}.npz", arr, {"face_found": True, "label": c.label})
    enc = {"text": {"id": "text_emotion@probe-0", "version": "1"}, "audio": AUDIO_ENCODER, "face": FACE_ENCODER}
    (cache / "manifest.json").write_text(
        json.dumps({"identity": ident, "encoders": enc, "text_model_dir": str(text_dir.resolve())})
    )
    ckpt = tmp_path / "ddp.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "robot_emotion",
        "train",
        "--meld",
        str(meld),
        "--cache",
        str(tmp_path / "cache"),
        "--text-model",
        str(text_dir),
        "--family",
        "early",
        "--epochs",
        "2",
        "--optimizer",
        "adamw",
        "--device",
        "cpu",
        "--out",
        str(ckpt),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=REPO, env=env)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-3000:])
    import torch

    ck = torch.load(ckpt, weights_only=True)
    assert ck["training"]["world_size"] == 2 and ck["family"] == "early"
    assert ck["encoders"]["text"]["id"] == "text_emotion@probe-0"
