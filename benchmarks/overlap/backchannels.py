#!/usr/bin/env python3
"""Could the shipped overlap model find backchannels? A measurement for issue 20 item 4.

    python benchmarks/overlap/backchannels.py CORPUS [--split dev|test] [--limit N]   # ~2 min per split

A backchannel ("mm-hm", "yeah") is a short word of a listener inside the other speaker's turn:
two voices at once, with no change of floor. The node publishes none yet. This replays the
corpus through the node's own VAD, runs the shipped overlap model (robot_emotion/audio/overlap.py)
over every segment of 1 s or more, and takes each run of frames at or above its threshold that
starts more than 0.5 s from the start of a turn of the truth that is not a backchannel (those are
floor changes: the ``overlap: true`` flags) as a backchannel candidate. It reports how many of the truth's backchannels inside such
segments a candidate overlaps (recall), and how many candidates overlap a backchannel
(precision). Nothing is fit here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.voice_decisions.fit import vad_segments  # noqa: E402
from robot_emotion.audio.speaker_change import frame_times  # noqa: E402
from robot_emotion.audio.speaker_identity import FRAME_S  # noqa: E402

SR = 16000
NEAR_CHANGE_S = 0.5


def runs(p: np.ndarray, threshold: float) -> list[tuple[float, float]]:
    """(start, end) s of each run of frames at or above the threshold."""
    above = np.flatnonzero(p >= threshold)
    if above.size == 0:
        return []
    t = frame_times(p.size)
    return [
        (float(t[r[0]] - FRAME_S / 2), float(t[r[-1]] + FRAME_S / 2))
        for r in np.split(above, np.flatnonzero(np.diff(above) > 1) + 1)
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--split", choices=("dev", "test"), default="dev")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    folder = args.corpus / args.split
    if not folder.is_dir():
        print(f"backchannels: error: no {args.split}/ in {args.corpus}", file=sys.stderr)
        return 2
    from robot_emotion.audio.overlap import load
    from robot_emotion.audio.speaker_identity import IdentityEncoder

    model, ident = load(), IdentityEncoder()
    found = total = right = candidates = 0
    for js in sorted(folder.glob("*.json"))[: args.limit]:
        truth = json.loads(js.read_text())
        audio, _ = sf.read(js.with_suffix(".wav"), dtype="float32")
        backs = [(t["start"], t["end"]) for t in truth["turns"] if t.get("backchannel")]
        floor = [t["start"] for t in truth["turns"] if not t.get("backchannel")]
        hit = [False] * len(backs)
        for a, b in vad_segments(audio):
            if b - a < 1.0:
                continue
            inside = [k for k, (s, e) in enumerate(backs) if s >= a and e <= b]
            total += len(inside)
            p = model.probabilities(ident.frames(audio[int(a * SR) : int(b * SR)]))
            for s, e in runs(p, model.threshold):
                s, e = s + a, e + a
                if any(abs(s - c) <= NEAR_CHANGE_S for c in floor):
                    continue  # an overlapped change of floor: the node's overlap flag
                candidates += 1
                over = [k for k in inside if min(e, backs[k][1]) > max(s, backs[k][0])]
                right += bool(over)
                for k in over:
                    hit[k] = True
        found += sum(hit)
    rec = found / total if total else 0.0
    prec = right / candidates if candidates else 0.0
    print(
        f"{args.split}: backchannels inside VAD segments {total}, found {found} (recall {rec:.2f}); "
        f"candidates {candidates}, on a backchannel {right} (precision {prec:.2f}); threshold {model.threshold}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
