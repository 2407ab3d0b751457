"""Measure the speaker encoder (robot_emotion/audio/voice_encoder.py) on real voices.

Voices (a "group" holds known-different people; cross pairs are only taken within a group):
  librispeech  ../shared/speech/librispeech: spk1, spk2, 6 read sentences each (16 kHz).
  pyannote     optional, --pyannote-wheel: the 30 s two-speaker telephone call that ships in
               the pyannote-audio wheel (pyannote/audio/sample/sample.wav + .rttm; fetch it with
               `pip download --no-deps pyannote-audio==4.0.7`). Turns from the RTTM, minus the
               overlapped parts.
  wsj0mix      ../shared/speech/wsj0mix: A and B of four mixtures. NOT SPEECH: these files
               are steady synthetic harmonic tones changing every ~1 s (look at a spectrogram),
               so they are reported apart and left out of every threshold.

Pairs ("same" = one voice, "cross" = two voices of one group):
  whole   sentence vs sentence / turn vs turn (wsj0mix: first vs second half of a file);
          whole>1.5: only those of at least 1.5 s; centroid: each of those against the mean
          of its voice's others (same) and the mean of the other voice (cross), as a clusterer
  N s     non-overlapping N-second pieces cut from every sentence / turn / file. Pieces under
          1.6 s are embedded over their real frames only (embed's default) and zero-padded to
          1.6 s (resemblyzer's way, "pad").
  conversation: sliding(1.6 s, hop 0.2 s) over the whole pyannote call; windows at least 90 %
          inside one speaker's clean turn; pairs of windows that do not overlap and are at
          most one window apart (what a change detector compares).
Threshold: the midpoint of the gap when same and cross separate, else the equal-error point.
Cost: ms of ONE CPU thread per second of speech, for embed() and sliding().

    python benchmarks/speaker_embedding/measure_voice_encoder.py [--speech DIR] [--pyannote-wheel WHL] [--no-pitch]
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.voice_encoder import VoiceEncoder

REPO = Path(__file__).resolve().parents[2]
Voice = tuple[str, str]  # (group, speaker)


def read(src) -> np.ndarray:
    x, sr = sf.read(src, dtype="float32")
    assert sr == SAMPLE_RATE and x.ndim == 1, src
    return x


def load_shared(speech: Path) -> dict[Voice, list[np.ndarray]]:
    voices: dict[Voice, list[np.ndarray]] = {}
    for f in sorted(speech.glob("librispeech/spk*_snt*.wav")):
        voices.setdefault(("librispeech", f.stem.split("_")[0]), []).append(read(f))
    for f in sorted(speech.glob("wsj0mix/mix*_spk*.wav")):
        mix, spk = f.stem.split("_")
        voices[("wsj0mix/" + mix, spk[-1])] = [read(f)]
    if not voices:
        raise SystemExit(f"no speech files under {speech}")
    return voices


def load_pyannote(wheel: Path):
    """-> (voices from the clean parts of each turn, the whole call, [(start, end, speaker)])."""
    with zipfile.ZipFile(wheel) as z:
        x = read(io.BytesIO(z.read("pyannote/audio/sample/sample.wav")))
        rttm = z.read("pyannote/audio/sample/sample.rttm").decode().split("\n")
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in (l.split() for l in rttm) if f]
    voices: dict[Voice, list[np.ndarray]] = {}
    for a, b, spk in clean_parts(turns):
        if b - a >= 0.4:
            voices.setdefault(("pyannote", spk), []).append(x[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)])
    return voices, x, turns


def clean_parts(turns):
    """Each turn minus the stretches where another speaker talks too."""
    out = []
    for a, b, spk in turns:
        parts = [(a, b)]
        for c, d, other in turns:
            if other != spk:
                parts = [p for s, e in parts for p in ((s, min(e, c)), (max(s, d), e)) if p[1] > p[0]]
        out += [(s, e, spk) for s, e in parts]
    return out


def pairs(emb: dict[Voice, list[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Cosines of same-voice pairs (two different pieces) and cross pairs (same group)."""
    same, cross = [], []
    for es in emb.values():
        same += [float(a @ b) for a, b in itertools.combinations(es, 2)]
    for v, w in itertools.combinations(sorted(emb), 2):
        if v[0] == w[0]:
            cross += [float(a @ b) for a in emb[v] for b in emb[w]]
    return same, cross


def centroid_pairs(emb: dict[Voice, list[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Each piece against its own voice's centroid (leave-one-out) and the other voices'."""
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    same, cross = [], []
    for v, es in emb.items():
        for i, e in enumerate(es):
            if len(es) > 1:
                same.append(float(e @ unit(np.mean(es[:i] + es[i + 1 :], axis=0))))
            cross += [float(e @ unit(np.mean(emb[w], axis=0))) for w in emb if w != v and w[0] == v[0]]
    return same, cross


def threshold(same: list[float], cross: list[float]) -> tuple[float, float]:
    """(suggested threshold, error rate at it): gap midpoint if separable, else equal-error."""
    s, c = np.asarray(same), np.asarray(cross)
    if s.min() > c.max():
        return (s.min() + c.max()) / 2, 0.0
    grid = np.linspace(0, 1, 1001)
    miss = np.array([(s < t).mean() for t in grid])
    false = np.array([(c >= t).mean() for t in grid])
    i = int(np.argmin(np.abs(miss - false)))
    return float(grid[i]), float((miss[i] + false[i]) / 2)


def row(name: str, same: list[float], cross: list[float]) -> str:
    if not same or not cross:
        return f"{name:<30} (too few pieces)"
    mmm = lambda v: f"{min(v):.2f} {np.median(v):.2f} {max(v):.2f}"  # noqa: E731
    thr, err = threshold(same, cross)
    return (
        f"{name:<30} {len(same):>4} {len(cross):>4}   {mmm(same)}   {mmm(cross)}"
        f"   {min(same) - max(cross):+.2f}   {thr:.2f} {100 * err:5.1f}%"
    )


def pieces(x: np.ndarray, window_s: float) -> list[np.ndarray]:
    n = int(round(window_s * SAMPLE_RATE))
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def similarity_table(enc: VoiceEncoder, voices: dict[Voice, list[np.ndarray]]) -> None:
    sets = {
        "librispeech": ("librispeech",),
        "pyannote call": ("pyannote",),
        "REAL (both above)": ("librispeech", "pyannote"),
        "wsj0mix (NOT speech)": ("wsj0mix",),
    }
    print("cosine                          pairs        same voice        cross voice      gap    thr   err")
    print("                              same cross   min  med  max     min  med  max")

    def report(tag, emb, how=pairs):
        for name, groups in sets.items():
            sub = {v: e for v, e in emb.items() if v[0].split("/")[0] in groups}
            if sub:
                print(row(f"{tag:<9} {name}", *how(sub)))

    # wsj0mix has one file per voice: its "same" pairs are the two halves of the file.
    whole = {
        v: [h for x in xs for h in (np.array_split(x, 2) if v[0].startswith("wsj") else [x])]
        for v, xs in voices.items()
    }
    report("whole", {v: [enc.embed(x) for x in xs] for v, xs in whole.items()})
    long = {v: [enc.embed(x) for x in xs if len(x) >= 1.5 * SAMPLE_RATE] for v, xs in whole.items()}
    report("whole>1.5", long)
    report("centroid", long, centroid_pairs)
    for win in (1.6, 1.0, 0.8, 0.5):
        for pad in (False, True) if win < 1.6 else (False,):
            report(
                f"{win:.1f} s{' pad' if pad else ''}",
                {v: [enc.embed(p, pad_short=pad) for x in xs for p in pieces(x, win)] for v, xs in voices.items()},
            )


def conversation_row(enc: VoiceEncoder, x: np.ndarray, turns, window_s=1.6, hop_s=0.2) -> None:
    centres, emb = enc.sliding(x, window_s, hop_s)
    clean = clean_parts(turns)
    label = []
    for c in centres:
        a, b = c - window_s / 2, c + window_s / 2
        cover = {spk: sum(max(0.0, min(b, e) - max(a, s)) for s, e, sp in clean if sp == spk) for _, _, spk in turns}
        best = max(cover, key=cover.get)
        label.append(best if cover[best] >= 0.9 * window_s else None)
    same, cross = [], []
    for i, j in itertools.combinations(range(len(centres)), 2):
        # not overlapping, at most one window apart: what a change detector compares
        if label[i] and label[j] and window_s <= centres[j] - centres[i] <= 2 * window_s:
            (same if label[i] == label[j] else cross).append(float(emb[i] @ emb[j]))
    print(row(f"nearby {window_s} s windows, call", same, cross))


def median_f0(x: np.ndarray) -> float:
    import librosa  # dev dependency; only the pitch column needs it

    f0, voiced, _ = librosa.pyin(x, fmin=50, fmax=500, sr=SAMPLE_RATE, frame_length=1024)
    return float(np.nanmedian(f0[voiced])) if voiced.any() else float("nan")


def pitch_table(enc: VoiceEncoder, voices, with_pitch: bool) -> None:
    print("\nmedian f0 (pyin) per voice" if with_pitch else "")
    if with_pitch:
        for v, xs in voices.items():
            print(f"  {v[0] + ' ' + v[1]:<22} {np.median([median_f0(x) for x in xs]):5.0f} Hz")
    ids = sorted(v for v in voices if v[0].startswith("wsj"))
    emb = {v: enc.embed(voices[v][0]) for v in ids}
    print("wsj0mix: cosine between whole files (all A files look alike, as do the B files)")
    print("         " + " ".join(f"{v[0][-4:] + v[1]:>6}" for v in ids))
    for v in ids:
        print(f"  {v[0][-4:] + v[1]:<6} " + " ".join(f"{emb[v] @ emb[w]:6.2f}" for w in ids))


def cost_table(enc: VoiceEncoder, audio: list[np.ndarray]) -> None:
    total_s = sum(len(x) for x in audio) / SAMPLE_RATE
    runs = [("embed()", lambda x: enc.embed(x))]
    for win, hop in ((1.6, 0.4), (1.6, 0.2), (1.6, 0.1), (1.0, 0.2)):
        runs.append((f"sliding({win}, hop {hop})", lambda x, w=win, h=hop: enc.sliding(x, w, h)))
    print(f"\nCPU cost on ONE thread over {len(audio)} utterances, {total_s:.1f} s of speech (best of 3)")
    for name, fn in runs:
        fn(audio[0])
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for x in audio:
                fn(x)
            best = min(best, time.perf_counter() - t)
        print(f"  {name:<24} {1000 * best / total_s:6.1f} ms per s of speech")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    ap.add_argument("--pyannote-wheel", type=Path, help="pyannote_audio-*.whl (only its sample call is read)")
    ap.add_argument("--no-pitch", action="store_true", help="skip the f0 table (needs librosa)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the cost figures are per CPU thread
    enc = VoiceEncoder()
    voices = load_shared(args.speech)
    call = None
    if args.pyannote_wheel:
        extra, x, turns = load_pyannote(args.pyannote_wheel)
        voices.update(extra)
        call = (x, turns)
    similarity_table(enc, voices)
    if call:
        conversation_row(enc, *call)
    pitch_table(enc, voices, not args.no_pitch)
    cost_table(enc, [x for v, xs in voices.items() if not v[0].startswith("wsj") for x in xs])


if __name__ == "__main__":
    main()
