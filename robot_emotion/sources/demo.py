"""Generate a recorded demo session: a two-speaker dialogue with two talking faces.

    python -m robot_emotion.sources.demo OUT_DIR [--seed N] [--no-video] [--turns N]

The folder follows the project's recorded-session format (session.json, audio.wav, video.mp4,
video_times.csv, events.jsonl) plus truth.json, the ground truth the tests score against:
who speaks when (start/end where speech really is, silence trimmed), the emotion of each line,
and which face (left/right, box in pixels) belongs to each speaker.

Voices are espeak-ng; faces are the real photo skimage.data.astronaut(), once as is (left,
speaker A) and once mirrored and colour-shifted (right, speaker B). The speaker's mouth opens
with the amplitude envelope of their own speech; the listener's mouth stays closed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SR = 16000
UNIX_START = 1767225600.0  # 2026-01-01 00:00 UTC: fixed so generated sessions are reproducible
LEAD_S, TRAIL_S = 0.8, 1.0
NOISE_DBFS = -60.0

# (speaker, text, emotion). No commas or full stops: espeak would insert long pauses that a
# VAD could split into two utterances, and each turn must be ONE phrase.
DIALOGUE = [
    ("A", "Guess what I finally got the job at the robotics lab", "joy"),
    ("B", "No way that is amazing news", "surprise"),
    ("A", "I start next month and I cannot stop smiling", "joy"),
    ("B", "I wish I could say the same about my week", "sadness"),
    ("A", "Oh no what happened to you", "surprise"),
    ("B", "They cancelled my project without even asking me", "anger"),
    ("A", "That is so unfair they cannot just do that", "anger"),
    ("B", "I really miss working with my old team", "sadness"),
    ("A", "Come and celebrate with me tonight", "joy"),
    ("B", "Okay that actually sounds really nice", "joy"),
]
# Varied gaps, several under 300 ms: speaker-change detection must not rely on long pauses.
GAPS_S = [0.8, 0.25, 1.2, 0.2, 0.6, 0.15, 1.0, 0.28, 0.7]
VOICES = {
    "A": {"voice": "en-us", "pitch": 35, "speed": 165},  # male, low
    "B": {"voice": "en-gb-x-rp+f3", "pitch": 70, "speed": 170},
}  # female, high
# (not "en-gb+f3": this espeak-ng resolves that name without applying the f3 variant)
FACES = {"A": "left", "B": "right"}

# Face geometry in skimage.data.astronaut() (512x512 RGB), found by inspecting the image.
HEAD_CROP = (5, 215, 130, 330)  # rows y0:y1, cols x0:x1: hair, face and chin
HEAD_OVAL = ((95, 105), (92, 103))  # centre, half-axes of the head mask (crop coords)
FACE_BOX = (177, 55, 275, 175)  # x0, y0, x1, y1: brows to chin, cheek to cheek
MOUTH = (224, 145, 40)  # centre x, centre y, width
CHIN_Y = 165
HEAD_SCALE = 1.25  # face box ~122x150 px in the frame
BACKGROUND = (205, 210, 200)
SWAY_PX = 4  # slow sideways sway so trackers see motion


# ----------------------------------------------------------------------------------- audio
def synthesize(text: str, voice: dict, workdir: Path) -> np.ndarray:
    """espeak-ng -> 16 kHz float mono, trimmed to where speech actually is."""
    wav = workdir / "phrase.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice["voice"], "-s", str(voice["speed"]), "-p", str(voice["pitch"]), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    x, sr = sf.read(wav, dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        g = np.gcd(SR, sr)
        x = resample_poly(x, SR // g, sr // g)
    x = trim_silence(x)
    # Same loudness for both voices (-20 dBFS RMS) so neither is favoured by energy.
    x *= 0.1 / max(np.sqrt(np.mean(x**2)), 1e-9)
    return np.clip(x, -0.95, 0.95)


def trim_silence(x: np.ndarray, hop: int = 80, rel_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing 5 ms frames quieter than rel_db under the loudest frame."""
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (rel_db / 20))
    return x[loud[0] * hop : (loud[-1] + 1) * hop]


def build_audio(lines, gaps, seed: int):
    """Lay the phrases on one timeline; return mix (int16), per-speaker tracks, turns."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [synthesize(text, VOICES[spk], Path(tmp)) for spk, text, _ in lines]
    starts, pos = [], int(LEAD_S * SR)
    for i, clip in enumerate(clips):
        starts.append(pos)
        pos += len(clip) + (int(round(gaps[i] * SR)) if i < len(gaps) else 0)
    total = starts[-1] + len(clips[-1]) + int(TRAIL_S * SR)
    tracks = {spk: np.zeros(total) for spk in VOICES}
    turns = []
    for (spk, text, emotion), clip, s in zip(lines, clips, starts):
        tracks[spk][s : s + len(clip)] += clip
        turns.append(
            {
                "speaker": spk,
                "text": text,
                "start": round(s / SR, 4),
                "end": round((s + len(clip)) / SR, 4),
                "emotion": emotion,
                "face": FACES[spk],
            }
        )
    # A -60 dBFS noise floor: realistic, never digital silence (VADs behave differently on 0s).
    mix = sum(tracks.values()) + rng.normal(0, 10 ** (NOISE_DBFS / 20), total)
    pcm = np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)
    return pcm, tracks, turns


def mouth_openness(track: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """Per-frame 0..1 opening from the RMS envelope of one speaker's own speech."""
    win = int(SR / fps)
    csum = np.concatenate([[0.0], np.cumsum(track**2)])
    centres = (np.arange(n_frames) * SR / fps).astype(int)
    lo = np.clip(centres - win, 0, len(track))
    hi = np.clip(centres + win, 0, len(track))
    # clamp: cumsum differences over silence can round to tiny negatives (sqrt -> NaN)
    rms = np.sqrt(np.maximum(csum[hi] - csum[lo], 0.0) / np.maximum(hi - lo, 1))
    voiced = rms[rms > 1e-4]
    ref = np.percentile(voiced, 90) if voiced.size else 1.0
    return np.clip((rms / ref - 0.1) / 0.9, 0.0, 1.0)


# ----------------------------------------------------------------------------------- faces
class Head:
    """One scaled head image with its alpha mask and known face/mouth geometry."""

    def __init__(self, mirrored: bool, tint: tuple[float, float, float]):
        import cv2
        from skimage.data import astronaut

        y0, y1, x0, x1 = HEAD_CROP
        img = astronaut()[y0:y1, x0:x1].astype(np.float32)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.ellipse(mask, HEAD_OVAL[0], HEAD_OVAL[1], 0, 0, 360, 255, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 4).astype(np.float32) / 255
        size = (round((x1 - x0) * HEAD_SCALE), round((y1 - y0) * HEAD_SCALE))
        self.img = cv2.resize(img * np.float32(tint), size, interpolation=cv2.INTER_AREA)
        self.alpha = cv2.resize(mask, size)[..., None]
        self.w, self.h = size

        def to_head(x, y):  # astronaut coords -> this head's pixel coords
            hx, hy = (x - x0) * HEAD_SCALE, (y - y0) * HEAD_SCALE
            return (self.w - 1 - hx if mirrored else hx), hy

        fx0, fy0 = to_head(FACE_BOX[0], FACE_BOX[1])
        fx1, fy1 = to_head(FACE_BOX[2], FACE_BOX[3])
        self.face_box = (min(fx0, fx1), fy0, max(fx0, fx1), fy1)
        self.mouth = (*to_head(MOUTH[0], MOUTH[1]), MOUTH[2] * HEAD_SCALE)
        self.chin_y = to_head(0, CHIN_Y)[1]
        if mirrored:
            self.img, self.alpha = self.img[:, ::-1].copy(), self.alpha[:, ::-1].copy()
        self.img = np.clip(self.img, 0, 255)

    def render(self, opening: float) -> np.ndarray:
        """The head with the mouth open by `opening` (0..1): jaw pulled down + dark cavity."""
        import cv2

        if opening < 0.05:
            return self.img
        mx, my, mw = self.mouth
        drop = opening * 0.32 * mw  # full opening: a third of the mouth width
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        # Everything between the mouth line and the chin moves down by `drop`, fading out
        # quickly past the mouth corners (no tear across the cheeks) and below the chin,
        # so it reads as a jaw opening, not a cut.
        wx = np.exp(-(((xs - mx) / (0.5 * mw)) ** 4))
        wy = np.clip((self.chin_y + 30 - ys) / 30, 0, 1) * (ys >= my)
        src_y = (ys - drop * wx * wy).astype(np.float32)  # remap misreads float64 maps
        out = cv2.remap(self.img, xs, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cavity = (int(mx), int(my + drop / 2))
        cv2.ellipse(out, cavity, (int(0.46 * mw), max(1, int(drop / 2))), 0, 0, 360, (70, 25, 30), -1, cv2.LINE_AA)
        return out


def head_origin(side: str, t: float, seed: int, width: int, height: int, head: Head):
    """Top-left corner of a head at time t: its half of the frame plus a slow sway."""
    cx = width * (0.25 if side == "left" else 0.75)
    phase = seed + (0.0 if side == "left" else 2.1)
    x = cx - head.w / 2 + SWAY_PX * np.sin(2 * np.pi * t / 6.0 + phase)
    y = (height - head.h) / 2 + 0.5 * SWAY_PX * np.sin(2 * np.pi * t / 4.3 + phase)
    return int(round(x)), int(round(y))


def paste(frame: np.ndarray, img: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend img at (x, y), clipped to the frame."""
    h, w = img.shape[:2]
    fx0, fy0 = max(x, 0), max(y, 0)
    fx1, fy1 = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sub = (slice(fy0 - y, fy1 - y), slice(fx0 - x, fx1 - x))
    region = frame[fy0:fy1, fx0:fx1]
    a = alpha[sub]
    region[:] = region * (1 - a) + img[sub] * a


def make_heads() -> dict[str, Head]:
    # The right face is mirrored and colour-shifted (cooler, darker) to read as a second person.
    return {"left": Head(False, (1.0, 1.0, 1.0)), "right": Head(True, (0.82, 0.9, 1.08))}


def write_video(
    folder: Path, openness: dict, n_frames: int, fps: int, seed: int, width: int, height: int, heads: dict
) -> None:
    import av

    container = av.open(
        str(folder / "video.mp4"), "w", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    )
    stream = container.add_stream("libx264", rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "23", "g": str(fps)}  # keyframe each second
    bg = np.empty((height, width, 3), np.float32)
    bg[:] = BACKGROUND
    with open(folder / "video_times.csv", "w") as times:
        times.write("frame,t\n")
        for i in range(n_frames):
            t = i / fps
            frame = bg.copy()
            for spk, side in FACES.items():
                head = heads[side]
                x, y = head_origin(side, t, seed, width, height, head)
                paste(frame, head.render(openness[spk][i]), head.alpha, x, y)
            vf = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
            times.write(f"{i},{t:.6f}\n")
        for packet in stream.encode():
            container.mux(packet)
    container.close()


def frame_box(box, origin) -> list[int]:
    return [
        int(round(box[0] + origin[0])),
        int(round(box[1] + origin[1])),
        int(round(box[2] + origin[0])),
        int(round(box[3] + origin[1])),
    ]


# --------------------------------------------------------------------------------- session
def dialogue_lines(turns) -> list:
    """turns: None (the whole dialogue), an int N (first N lines, cycling), or explicit
    (speaker, text, emotion) tuples."""
    if turns is None:
        return list(DIALOGUE)
    if isinstance(turns, int):
        return [DIALOGUE[i % len(DIALOGUE)] for i in range(turns)]
    return [tuple(t) for t in turns]


def make_session(out_dir, turns=None, seed=0, fps=15, with_video=True, width=640, height=360, gap_ms=None) -> dict:
    """Write the session folder and return the truth dict (also saved as truth.json)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lines = dialogue_lines(turns)
    if not lines:
        raise ValueError("a session needs at least one turn")
    n_gaps = len(lines) - 1
    gaps = [gap_ms / 1000.0] * n_gaps if gap_ms is not None else [GAPS_S[i % len(GAPS_S)] for i in range(n_gaps)]
    pcm, tracks, truth_turns = build_audio(lines, gaps, seed)
    duration = len(pcm) / SR
    sf.write(folder / "audio.wav", pcm, SR, subtype="PCM_16")

    n_frames = int(np.ceil(duration * fps)) if with_video else 0
    heads = make_heads()
    for turn in truth_turns:  # boxes at the turn's start, in frame pixels
        head = heads[turn["face"]]
        origin = head_origin(turn["face"], turn["start"], seed, width, height, head)
        mx, my, mw = head.mouth
        turn["face_box"] = frame_box(head.face_box, origin)
        turn["mouth_box"] = frame_box((mx - mw / 2, my - mw / 3, mx + mw / 2, my + mw / 2), origin)
    for stale in ("video.mp4", "video_times.csv"):  # idempotent, also across --no-video
        (folder / stale).unlink(missing_ok=True)
    if with_video:
        openness = {spk: mouth_openness(tr, n_frames, fps) for spk, tr in tracks.items()}
        write_video(folder, openness, n_frames, fps, seed, width, height, heads)

    truth = {
        "turns": truth_turns,
        "faces": dict(FACES),
        "voices": VOICES,
        "gaps": [round(g, 4) for g in gaps],
        "fps": fps if with_video else None,
        "frame_size": [width, height] if with_video else None,
    }
    meta = {
        "format": "robot_emotion.session",
        "version": 1,
        "session_id": f"demo-{seed}",
        "unix_start": UNIX_START,
        "sample_rate": SR,
        "duration": duration,
        "devices": {
            "microphone": "espeak-ng (generated)",
            "camera": "generated (skimage astronaut)" if with_video else None,
        },
        "config": None,
        "complete": True,
        "frames": n_frames,
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    (folder / "events.jsonl").write_text("")
    (folder / "session.json").write_text(json.dumps(meta, indent=1))  # last: marks it done
    return truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--turns", type=int, default=None)
    p.add_argument("--no-video", action="store_true")
    a = p.parse_args(argv)
    truth = make_session(a.out_dir, turns=a.turns, seed=a.seed, with_video=not a.no_video)
    last = truth["turns"][-1]
    print(f"wrote {a.out_dir}: {len(truth['turns'])} turns, speech ends at {last['end']:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
