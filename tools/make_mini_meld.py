#!/usr/bin/env python3
"""Generate a mini-MELD in MELD.Raw's exact layout and CSV format, quirks included.

    make_mini_meld.py OUT_DIR [--train 24] [--dev 12] [--test 12] [--seed 0] [--no-fixture]

OUT_DIR/{train,dev,test}_sent_emo.csv (columns Sr No.,Utterance,Speaker,Emotion,Sentiment,
Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime; UTF-8, CRLF) and
train_splits/, dev_splits_complete/, output_repeated_splits_test/ with dia{D}_utt{U}.mp4 clips:
H.264 320x240 video of two talking faces (make_demo_session's heads, scaled; the speaker's mouth
follows their speech, the listener's stays closed) + 6-channel AAC 48 kHz audio (espeak-ng), as
MELD.Raw ships them. Content depends on the emotion (words, pitch, speed, loudness), so a model
can learn something from each modality.

Quirks, as in the real release: a cp1252-mojibake row ("Â’"), H:MM:SS,mmm and 2-digit-millisecond
times, an overlapping utterance, an Utterance_ID gap, the corrupt train dia125_utt3 (garbage
bytes), the missing dev dia110_utt7, clips without a CSV row (dev dia49_utt4, test dia108_utt2),
a final_videos_test*.mp4 file. With ../shared/fixtures/meld_train_dia1_utt0.mp4 present, that
real clip is copied in at run time as train dia1_utt0 (never committed).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
FIXTURE = REPO.parent / "shared" / "fixtures" / "meld_train_dia1_utt0.mp4"
SHARED_TRAIN_CSV = REPO.parent / "shared" / "meld" / "train_sent_emo.csv"
SENTIMENT = {
    "neutral": "neutral",
    "joy": "positive",
    "surprise": "positive",
    "sadness": "negative",
    "anger": "negative",
    "fear": "negative",
    "disgust": "negative",
}
# emotion -> (phrases, espeak pitch, speed, gain)
CONTENT = {
    "neutral": (["the meeting is at three", "I put the keys on the table", "we take the bus today"], 45, 160, 0.8),
    "joy": (["this is wonderful I love it", "yes we did it great job", "I am so happy for you"], 85, 190, 1.0),
    "sadness": (["I miss her so much", "nothing ever works out for me", "I feel so alone"], 20, 115, 0.5),
    "anger": (["stop it right now", "I hate this stupid thing", "get out of my apartment"], 55, 210, 1.6),
    "surprise": (["what no way really", "oh my god you are here", "wait are you serious"], 95, 175, 1.2),
    "fear": (["please help me I am scared", "something is in the dark", "do not leave me here"], 70, 140, 0.7),
    "disgust": (["ugh that is so gross", "eww what is that smell", "that is nasty get it away"], 30, 150, 0.9),
}
SPEAKERS = ["Ross", "Rachel", "Monica", "Chandler", "Joey", "Phoebe"]
VOICE = {
    "Ross": "en-us",
    "Chandler": "en-us",
    "Joey": "en-us",
    "Rachel": "en-gb-x-rp+f3",
    "Monica": "en-gb-x-rp+f3",
    "Phoebe": "en-gb-x-rp+f3",
}
W, H, FPS = 320, 240, 10
HEAD_S = 0.62


def _demo():
    from robot_emotion.sources import demo

    return demo


def _scale_heads(demo) -> dict:
    import cv2

    heads = demo.make_heads()
    for h in heads.values():
        w, hh = int(round(h.w * HEAD_S)), int(round(h.h * HEAD_S))
        h.img = cv2.resize(h.img, (w, hh), interpolation=cv2.INTER_AREA)
        h.alpha = cv2.resize(h.alpha, (w, hh))[..., None]
        h.w, h.h = w, hh
        h.face_box = tuple(v * HEAD_S for v in h.face_box)
        h.mouth = tuple(v * HEAD_S for v in h.mouth)
        h.chin_y *= HEAD_S
    return heads


def write_clip(path: Path, speech: np.ndarray, side: str, demo, heads, seed: int) -> float:
    """speech: 16 kHz float mono. Writes H.264 + 6-channel AAC 48 kHz; returns the duration."""
    import av
    from scipy.signal import resample_poly

    lead, tail = 0.25, 0.3
    sr = demo.SR
    x = np.concatenate([np.zeros(int(lead * sr)), speech, np.zeros(int(tail * sr))])
    x = x + np.random.default_rng(seed).normal(0, 1e-3, x.size)
    dur = x.size / sr
    n = int(np.ceil(dur * FPS))
    track = np.zeros_like(x)
    track[int(lead * sr) : int(lead * sr) + speech.size] = speech
    opening = demo.mouth_openness(track, n, FPS)
    x48 = np.clip(resample_poly(x, 3, 1), -1, 1).astype(np.float32)
    bg = np.empty((H, W, 3), np.float32)
    bg[:] = demo.BACKGROUND
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=Fraction(FPS))
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "23"}
        aus = c.add_stream("aac", rate=48000, layout="5.1")
        for i in range(n):
            frame = bg.copy()
            for s in ("left", "right"):
                head = heads[s]
                x0, y0 = demo.head_origin(s, i / FPS, seed, W, H, head)
                demo.paste(frame, head.render(opening[i] if s == side else 0.0), head.alpha, x0, y0)
            vf = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        multi = np.repeat(x48[None, :], 6, axis=0)
        multi[3] *= 0.1  # LFE
        step = 1024
        for k in range(0, x48.size, step):
            chunk = np.ascontiguousarray(multi[:, k : k + step])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="5.1")
            af.sample_rate, af.pts = 48000, k
            for p in aus.encode(af):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)
    return dur


def fmt_time(t: float, style: str) -> str:
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    si, ms = int(s), int(round((s - int(s)) * 1000)) % 1000
    if style == "short_h":  # H:MM:SS,mmm (~24 % of MELD's times)
        return f"{int(h)}:{int(m):02d}:{si:02d},{ms:03d}"
    if style == "two_digit":  # 2-digit milliseconds
        return f"{int(h):02d}:{int(m):02d}:{si:02d},{ms // 10:02d}"
    return f"{int(h):02d}:{int(m):02d}:{si:02d},{ms:03d}"


def plan_split(split: str, n: int, rng) -> list[dict]:
    """Dialogues of 4 turns; dialogue ids chosen to carry MELD's named quirks."""
    emos = list(CONTENT)
    special = {"train": [125], "dev": [110], "test": []}[split]
    ids = [d for d in range(0, 200) if d not in (1, 49, 66, 108, 110, 125)]
    dias = special + ids
    rows, di = [], 0
    while len(rows) < n:
        d = dias[di]
        di += 1
        k = min(4, n - len(rows))
        spk = rng.choice(SPEAKERS, 2, replace=False)
        utt_ids = list(range(k))
        if split == "train" and d == 125:
            utt_ids = [0, 1, 2, 3]  # utt3 will be the corrupt clip
        elif split == "dev" and d == 110:
            utt_ids = [0, 1, 2, 7][:k]  # Utterance_ID gap; utt7's clip is missing
        elif di == 3:
            utt_ids = [0, 1, 3, 4][:k]  # an ordinary Utterance_ID gap
        for j, u in enumerate(utt_ids):
            # class balance with a MELD-like neutral/joy lean
            emo = emos[(len(rows) + int(rng.integers(0, 2))) % len(emos)] if rng.random() < 0.8 else "neutral"
            rows.append(
                {
                    "dia": d,
                    "utt": u,
                    "speaker": str(spk[j % 2]),
                    "side": "left" if j % 2 == 0 else "right",
                    "emotion": emo,
                }
            )
    return rows[:n]


def make_split(out: Path, split: str, n: int, seed: int, demo, heads, with_fixture: bool) -> list[dict]:
    from robot_emotion.data.meld import COLUMNS, SPLITS

    csv_name, dir_name = SPLITS[split]
    clip_dir = out / dir_name
    clip_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = plan_split(split, n, rng)
    t = 600.0 + 37.0 * seed
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(plan):
            phrases, pitch, speed, gain = CONTENT[p["emotion"]]
            text = phrases[int(rng.integers(len(phrases)))]
            voice = {"voice": VOICE[p["speaker"]], "pitch": pitch + int(rng.integers(-5, 6)), "speed": speed}
            speech = demo.synthesize(text, voice, Path(tmp)) * gain
            name = f"dia{p['dia']}_utt{p['utt']}.mp4"
            missing = split == "dev" and p["dia"] == 110 and p["utt"] == 7
            corrupt = split == "train" and p["dia"] == 125 and p["utt"] == 3
            if corrupt:
                (clip_dir / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(2048))
                dur = 2.0
            elif not missing:
                dur = write_clip(clip_dir / name, np.clip(speech, -0.95, 0.95), p["side"], demo, heads, seed * 1000 + i)
            else:
                dur = speech.size / demo.SR + 0.55
            if i == 1:
                words = text.split()  # a cp1252-mojibake apostrophe, as in old MELD CSVs
                text = words[0] + "Â’s " + " ".join(words[1:])
            start = t - (0.4 if i == 5 else 0.0)  # row 5 overlaps the previous utterance
            end = start + dur
            style = "short_h" if i % 4 == 1 else "two_digit" if i == 2 else "long"
            rows.append(
                {
                    "Sr No.": str(len(rows) + 1),
                    "Utterance": text,
                    "Speaker": p["speaker"],
                    "Emotion": p["emotion"],
                    "Sentiment": SENTIMENT[p["emotion"]],
                    "Dialogue_ID": str(p["dia"]),
                    "Utterance_ID": str(p["utt"]),
                    "Season": "1",
                    "Episode": str(1 + seed),
                    "StartTime": fmt_time(start, style),
                    "EndTime": fmt_time(end, "long"),
                }
            )
            t = end + 0.5
        if split == "train" and with_fixture and FIXTURE.is_file():
            shutil.copyfile(FIXTURE, clip_dir / "dia1_utt0.mp4")
            text, speaker = _fixture_row()
            rows.append(
                {
                    "Sr No.": str(len(rows) + 1),
                    "Utterance": text,
                    "Speaker": speaker,
                    "Emotion": "surprise",
                    "Sentiment": "positive",
                    "Dialogue_ID": "1",
                    "Utterance_ID": "0",
                    "Season": "8",
                    "Episode": "21",
                    "StartTime": "0:00:16,880",
                    "EndTime": "0:00:20,590",
                }
            )
        # clips without a CSV row, and a non-utterance file, as in MELD.Raw
        some = next(clip_dir.glob("dia*_utt*.mp4"))
        extra = {"dev": ["dia49_utt4.mp4"], "test": ["dia108_utt2.mp4", "final_videos_testdia0_utt0.mp4"]}
        for e in extra.get(split, []):
            shutil.copyfile(some, clip_dir / e)
    with open(out / csv_name, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    return rows


def _fixture_row() -> tuple[str, str]:
    """The fixture clip's real CSV text, read at run time from ../shared when present."""
    if SHARED_TRAIN_CSV.is_file():
        with open(SHARED_TRAIN_CSV, encoding="utf-8-sig", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["Dialogue_ID"] == "1" and r["Utterance_ID"] == "0":
                    return r["Utterance"], r["Speaker"]
    return "oh my god", "Joey"


def write_probe_text_model(out_dir, seed: int = 0) -> Path:
    """A text emotion model with the embedded MiniLM and an untrained (seeded) head, in the
    robot_emotion/assets format: lets the chain run where the shipped text branch is absent."""
    import json

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO))
    from robot_emotion import EMOTIONS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file(
        {"head.weight": torch.randn(len(EMOTIONS), 384, generator=g) * 0.05, "head.bias": torch.zeros(len(EMOTIONS))},
        str(out / "text_emotion.safetensors"),
    )
    (out / "text_emotion.json").write_text(
        json.dumps(
            {
                "kind": "text_emotion",
                "id": f"text_emotion@probe-{seed}",
                "encoder": {"id": "all-MiniLM-L6-v2", "version": "1"},
                "labels": list(EMOTIONS),
                "context_turns": 2,
                "max_tokens": 128,
                "pooling": "current",
            },
            indent=1,
        )
    )
    return out


def make_mini_meld(
    out_dir, train: int = 24, dev: int = 12, test: int = 12, seed: int = 0, with_fixture: bool = True
) -> dict:
    sys.path.insert(0, str(REPO))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = _demo()
    heads = _scale_heads(demo)
    counts = {}
    for k, (split, n) in enumerate((("train", train), ("dev", dev), ("test", test))):
        if n > 0:
            counts[split] = len(make_split(out, split, n, seed + k, demo, heads, with_fixture))
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--dev", type=int, default=12)
    ap.add_argument("--test", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fixture", action="store_true")
    a = ap.parse_args(argv)
    counts = make_mini_meld(a.out_dir, a.train, a.dev, a.test, a.seed, not a.no_fixture)
    print(f"wrote mini-MELD to {a.out_dir}: {counts} CSV rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
