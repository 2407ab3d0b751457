#!/usr/bin/env python3
"""Fit vad.threshold (the silero probability at which a frame is speech) on the conversation
corpus's DEVELOPMENT recordings and the real AMI excerpts, and report it on the TEST recordings.

    python benchmarks/vad/fit.py CORPUS [--ami ../shared/conversations/ami] [--json out.json]

CORPUS is what ``benchmarks/conversations/make_corpus.py`` writes (dev/ and test/, voices
disjoint). Silero runs once over every recording (its probabilities do not depend on the
threshold); then, for each threshold of a grid, the node's own segmenter (audio/vad.py, every
other vad.* key at its default) cuts the recording, and pyannote.metrics' detection error rate
(missed speech + false alarm, over the reference speech, no collar) scores the segments it keeps
against the reference speaker time. The threshold with the lowest error pooled over the dev
recordings and AMI is the fit; the test split is scored at every threshold and only reported.
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

SR = 16000
GRID = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())


def segments(audio: np.ndarray, probs: np.ndarray, threshold: float) -> list[tuple[float, float]]:
    """(start, end) of the segments the node's segmenter keeps at this threshold."""
    from benchmarks.voice_decisions.fit import vad_segments
    from robot_emotion.audio.vad import StoredFrames
    from robot_emotion.config import VADConfig

    n = probs.size * 512  # (the stored frames cover this much)
    return vad_segments(audio[:n], VADConfig(threshold=threshold), StoredFrames(probs, threshold))


def recordings(corpus: Path, ami: Path | None, limit: int | None) -> list[tuple[str, str, Path]]:
    """(part, condition or None, truth json) of every recording: dev, test, ami."""
    out = []
    for split in ("dev", "test"):
        for js in sorted((corpus / split).glob("*.json"))[:limit]:
            out.append((split, json.loads(js.read_text()).get("condition", "?"), js))
    if ami is not None and ami.is_dir():
        out += [("ami", None, js) for js in sorted(ami.glob("*.json"))[:limit]]
    return out


def read(js: Path) -> np.ndarray:
    wav = next((p for p in (js.with_suffix(".wav"), js.with_suffix(".flac")) if p.is_file()), None)
    if wav is None:
        raise SystemExit(f"fit: no audio beside {js}")
    audio, sr = sf.read(wav, dtype="int16")
    if sr != SR or audio.ndim != 1:
        raise SystemExit(f"fit: {wav}: {sr} Hz, {audio.ndim} channels; expected {SR} Hz mono")
    return audio


def main(argv=None) -> int:
    from pyannote.core import Annotation, Segment

    from robot_emotion.audio.vad import SileroFrames
    from pyannote.metrics.detection import DetectionErrorRate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--ami", type=Path, default=REPO.parent / "shared" / "conversations" / "ami")
    ap.add_argument("--limit", type=int, default=None, help="recordings per part (quick runs)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    if not (args.corpus / "dev").is_dir() or not (args.corpus / "test").is_dir():
        print(
            f"fit: error: no dev/ and test/ in {args.corpus} (benchmarks/conversations/make_corpus.py)", file=sys.stderr
        )
        return 2
    recs = recordings(args.corpus, args.ami, args.limit)

    def groups_of(part: str, cond: str | None) -> list[str]:
        return [part] + ([f"{part}/{cond}"] if cond else [])

    metrics = {
        (part, g, th): DetectionErrorRate() for part, cond, _ in recs for g in groups_of(part, cond) for th in GRID
    }
    for k, (part, cond, js) in enumerate(recs):
        truth = json.loads(js.read_text())
        ref = Annotation()
        for _, s, e in truth["segments"]:
            ref[Segment(s, e)] = "speech"
        audio = read(js)
        probs = SileroFrames.probabilities(audio)
        uem = Segment(0, probs.size * 512 / SR)
        for th in GRID:
            hyp = Annotation()
            for s, e in segments(audio, probs, th):
                hyp[Segment(s, e)] = "speech"
            for g in groups_of(part, cond):
                metrics[(part, g, th)](ref, hyp, uem=uem)
        print(f"  {k + 1}/{len(recs)} {js.stem}", file=sys.stderr)

    def figures(part: str, group: str, th: float) -> dict:
        m = metrics[(part, group, th)]
        total = m.accumulated_["total"]
        return {
            "der": round(abs(m), 4),
            "miss": round(m.accumulated_["miss"] / total, 4) if total else 0.0,
            "false_alarm": round(m.accumulated_["false alarm"] / total, 4) if total else 0.0,
        }

    def pooled(parts: tuple, th: float) -> float:
        num = sum(
            metrics[(p, p, th)].accumulated_[c] for p in parts for c in ("miss", "false alarm") if (p, p, th) in metrics
        )
        den = sum(metrics[(p, p, th)].accumulated_["total"] for p in parts if (p, p, th) in metrics)
        return num / den if den else float("inf")

    fit_parts = ("dev", "ami")
    best = min(GRID, key=lambda th: (round(pooled(fit_parts, th), 6), abs(th - 0.5)))
    groups = sorted({(p, g) for p, g, _ in metrics})
    table = {f"{g}@{th}": figures(p, g, th) for p, g in groups for th in GRID}
    print(f"{'threshold':>9} " + " ".join(f"{g:>16}" for _, g in groups) + f" {'dev+ami':>8}")
    for th in GRID:
        row = " ".join(f"{100 * table[f'{g}@{th}']['der']:16.1f}" for _, g in groups)
        print(f"{th:9.2f} {row} {100 * pooled(fit_parts, th):8.1f}" + ("  <- fit" if th == best else ""))
    print("detection error rate % (missed + false-alarm speech over reference speech, no collar, pyannote.metrics)")
    print(f"fit on dev + AMI: vad.threshold = {best}")
    if args.json:
        args.json.write_text(
            json.dumps({"fit_on": list(fit_parts), "threshold": best, "grid": GRID, "figures": table}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
