#!/usr/bin/env python3
"""Build a conversation test set from real speech, with the truth to score the node against.

    make_conversations.py OUT_DIR [--only name,...] [--small]

Writes, for every conversation NAME, ``NAME.wav`` (16 kHz mono int16) and ``NAME.json``
(the truth), plus ``index.json``. Everything is deterministic (fixed seeds, fixed gaps).

Sources (all under ../shared unless noted):

* ``speech/librispeech``: two real readers, ``spk1`` (female, median f0 ~200 Hz) and ``spk2``
  (male, ~135 Hz), six sentences each. The sentences are Harvard sentences (IEEE 1969 lists);
  the truth uses their published wording (``TEXTS``), not ``transcripts.csv``, which is wrong
  in places: "drop the tue" (two), "one wore" (war), "tear thin sheep from the other pat" (tear
  a thin sheet from the yellow pad), and its spk2_snt5 line is the text of spk2_snt6 (canned
  pears); spk2_snt5 says "jump the fence and hurry up the bank". Whisper tiny.en on the clean
  clips agrees with TEXTS word for word on 10 of 12 and is close on the other two.
* ``fixtures/meld_train_dia1_utt0.mp4``: a real MELD clip (Joey, male, ~150 Hz, TV audio
  with its own background), decoded with PyAV like the node does; text from MELD.
* ``speech/noise``: five noise clips, used as a noise floor at a given SNR, as loud
  noise-only stretches between turns and as loud bursts right after a turn (a stand-in for
  applause or a door slam).
* ``speech/wsj0mix``: NOT speech. These files are synthetic harmonic tone complexes (flat
  harmonics that step in pitch every ~1 s, 2-3 dB dynamic range); one is used as a
  non-speech stretch ("tones") that a VAD may take for voice.
* ``fixtures/single_face.mp4``: its audio track holds no speech (room tone, peak -40 dBFS);
  used as a quiet non-speech lead-in.
* espeak-ng (at most two conversations): dialogues whose turns contain commas, where espeak
  pauses ~150-250 ms inside the turn.

Truth (``NAME.json``)::

    {"name", "duration", "sample_rate", "speakers": {id: {source, sex, f0_hz}},
     "turns": [{"speaker", "start", "end", "text" (str or null),
                "pauses": [[start, end], ...],        # silences >= 150 ms inside the turn
                "parts": [{"source", "start", "end", "text"}]}],
     "nonspeech": [{"start", "end", "kind"}],       # noise / burst / tones / room_tone
     "floor": {"clip", "snr_db"} or {"gauss_dbfs"}, "notes"}

A turn is one speaker's speech until another speaker or a non-speech stretch comes;
its span includes the pauses inside it. Times are seconds from the start of the wav.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SPEECH = SHARED / "speech"
MELD_CLIP = SHARED / "fixtures" / "meld_train_dia1_utt0.mp4"
FACE_CLIP = SHARED / "fixtures" / "single_face.mp4"
MELD_TEXT = "But then who? The waitress I went out with last month?"  # MELD train dia1_utt0

# The Harvard sentences the LibriSpeech clips read (see the module docstring); one copy, the corpus's.
sys.path.insert(0, str(REPO))
from benchmarks.conversations.voices import LIBRI_TEXT as TEXTS  # noqa: E402

SPEECH_DBFS = -24.0  # active-speech RMS of every voice
GAUSS_FLOOR_DBFS = -60.0  # a realistic floor where no noise clip is mixed (never digital 0)
FADE_S = 0.005
PAUSE_MIN_S = 0.15  # silences at least this long inside a clip are listed as pauses

SPEAKERS = {
    "spk1": {"source": "LibriSpeech spk1 (speech/librispeech)", "sex": "F", "f0_hz": 200},
    "spk2": {"source": "LibriSpeech spk2 (speech/librispeech)", "sex": "M", "f0_hz": 135},
    "joey": {"source": "MELD train dia1_utt0 (Joey)", "sex": "M", "f0_hz": 150},
    "esp_a": {"source": "espeak-ng en-us -p 35 -s 165", "sex": "M", "f0_hz": None},
    "esp_b": {"source": "espeak-ng en-gb-x-rp+f3 -p 70 -s 170", "sex": "F", "f0_hz": None},
    "esp_c": {"source": "espeak-ng en-gb-x-rp -p 60 -s 150", "sex": "M", "f0_hz": None},
}
ESPEAK = {"esp_a": ("en-us", 35, 165), "esp_b": ("en-gb-x-rp+f3", 70, 170), "esp_c": ("en-gb-x-rp", 60, 150)}


# ----------------------------------------------------------------------------- the recipe
# A conversation is a list of steps:
#   ("turn", speaker, [part, ...], [pause_ms between parts])   one speaker's turn
#   ("gap", ms)                                                 silence (+ floor)
#   ("noise", clip, seconds, level_db_re_speech, kind)          a non-speech stretch
# A part is "L1:3" (LibriSpeech spk1 sentence 3), "L2:5", "J" (the MELD clip) or an
# espeak text (for esp_* speakers). Noise clips: n1 stationary broadband, n2 impulsive
# knocks/claps, n3 stationary with a tonal tail, n4 machinery with harmonics, n5 busy
# broadband (crowd-like); "tones" = wsj0mix/mix0_spkA (synthetic harmonics); "room" =
# the audio of single_face.mp4.


def T(spk, parts, pauses=()):
    return ("turn", spk, list(parts), list(pauses))


def G(ms):
    return ("gap", ms)


def N(clip, seconds, level_db, kind="noise"):
    return ("noise", clip, seconds, level_db, kind)


@dataclass
class Spec:
    name: str
    steps: list
    floor: tuple | None = None  # (clip, snr_db) or None for a -60 dBFS gaussian floor
    notes: str = ""
    lead_s: float = 0.8
    trail_s: float = 1.2
    seed: int = 0
    tags: list = field(default_factory=list)


CONVERSATIONS = [
    Spec(
        "c01_alternating_clean",
        [
            T("spk1", ["L1:1"]),
            G(600),
            T("spk2", ["L2:1"]),
            G(150),
            T("spk1", ["L1:2"]),
            G(900),
            T("spk2", ["L2:2"]),
            G(80),
            T("spk1", ["L1:3"]),
            G(400),
            T("spk2", ["L2:3"]),
            G(180),
            T("spk1", ["L1:4"]),
            G(700),
            T("spk2", ["L2:4"]),
            G(120),
            T("spk1", ["L1:5"]),
            G(300),
            T("spk2", ["L2:5"]),
        ],
        floor=None,
        seed=1,
        tags=["f-m", "gaps"],
        notes="two real voices (F/M) alternating one sentence a turn, gaps 80-900 ms (4 under 200 ms), quiet floor",
    ),
    Spec(
        "c02_quick_exchange_20db",
        [
            T("spk2", ["L2:2"]),
            G(50),
            T("spk1", ["L1:3"]),
            G(120),
            T("spk2", ["L2:4"]),
            G(180),
            T("spk1", ["L1:1"]),
            G(70),
            T("spk2", ["L2:5"]),
            G(150),
            T("spk1", ["L1:5"]),
            G(100),
            T("spk2", ["L2:1"]),
            G(60),
            T("spk1", ["L1:2"]),
            G(200),
            T("spk2", ["L2:3"]),
            G(90),
            T("spk1", ["L1:4"]),
        ],
        floor=("n3", 20),
        seed=2,
        tags=["f-m", "short-gaps", "snr20"],
        notes="rapid exchange: every gap 50-200 ms, stationary noise at 20 dB SNR",
    ),
    Spec(
        "c03_pauses_in_turns_20db",
        [
            T("spk1", ["L1:1", "L1:2"], [300]),
            G(400),
            T("spk2", ["L2:1", "L2:2"], [250]),
            G(150),
            T("spk1", ["L1:3", "L1:4"], [450]),
            G(700),
            T("spk2", ["L2:3", "L2:4"], [350]),
            G(100),
            T("spk1", ["L1:5"]),
            G(250),
            T("spk2", ["L2:5", "L2:1"], [200]),
        ],
        floor=("n5", 20),
        seed=3,
        tags=["f-m", "pauses", "snr20"],
        notes="each turn two sentences of one speaker joined by 200-450 ms of silence; "
        "gaps between speakers 100-700 ms (shorter than some pauses); crowd-like "
        "noise at 20 dB SNR",
    ),
    Spec(
        "c04_noise_10db",
        [
            T("spk2", ["L2:3"]),
            G(300),
            T("spk1", ["L1:4", "L1:6"], [350]),
            G(120),
            T("spk2", ["L2:1", "L2:6"], [300]),
            G(500),
            T("spk1", ["L1:2"]),
            G(180),
            T("spk2", ["L2:5"]),
            G(800),
            T("spk1", ["L1:1", "L1:5"], [250]),
            G(90),
            T("spk2", ["L2:2", "L2:4"], [400]),
        ],
        floor=("n1", 10),
        seed=4,
        tags=["f-m", "pauses", "snr10"],
        notes="broadband noise at 10 dB SNR, single and two-sentence turns, gaps 90-800 ms",
    ),
    Spec(
        "c05_noise_stretches",
        [
            T("spk1", ["L1:2"]),
            G(200),
            T("spk2", ["L2:4"]),
            G(300),
            N("n4", 2.0, 0.0),
            G(300),
            T("spk1", ["L1:5", "L1:1"], [300]),
            G(150),
            T("spk2", ["L2:3"]),
            G(250),
            N("n1", 3.0, 3.0),
            G(250),
            T("spk2", ["L2:1"]),
            G(400),
            T("spk1", ["L1:3"]),
            G(200),
            N("tones", 1.5, 0.0, "tones"),
            G(300),
            T("spk2", ["L2:5", "L2:2"], [300]),
            G(120),
            T("spk1", ["L1:4"]),
        ],
        floor=("n3", 20),
        seed=5,
        tags=["f-m", "noise-only", "snr20"],
        notes="loud noise-only stretches between turns: 2 s machinery (0 dB re speech), 3 s "
        "broadband (+3 dB, the same speaker talks before and after it), 1.5 s synthetic "
        "harmonic tones (wsj0mix, not speech); no text may come out of them",
    ),
    Spec(
        "c06_bursts_after_speech",
        [
            T("spk2", ["L2:1"]),
            G(120),
            N("n2", 2.0, 6.0, "burst"),
            G(400),
            T("spk1", ["L1:1"]),
            G(300),
            T("spk2", ["L2:2", "L2:3"], [300]),
            G(100),
            N("n5", 2.5, 6.0, "burst"),
            G(500),
            T("spk1", ["L1:2"]),
            G(150),
            N("n2", 1.5, 6.0, "burst"),
            G(300),
            T("spk2", ["L2:4"]),
            G(200),
            T("spk1", ["L1:3", "L1:5"], [350]),
            G(150),
            T("spk2", ["L2:5"]),
        ],
        floor=None,
        seed=6,
        tags=["f-m", "bursts"],
        notes="a loud noise burst (+6 dB re speech: knocks/claps, crowd) 100-150 ms after a "
        "turn ends, a stand-in for applause; quiet floor",
    ),
    Spec(
        "c07_single_speaker_f",
        [N("room", 2.4, None, "room_tone"), T("spk1", ["L1:1", "L1:2", "L1:3", "L1:4", "L1:5"], [250, 400, 300, 500])],
        floor=("n3", 20),
        seed=7,
        lead_s=0.0,
        tags=["single"],
        notes="one voice, five sentences with 250-500 ms pauses: no turn change at all; "
        "starts with the room tone of single_face.mp4 (no speech in it)",
    ),
    Spec(
        "c08_single_speaker_m_10db",
        [
            T("spk2", ["L2:1", "L2:2", "L2:3"], [300, 450]),
            G(400),
            N("n4", 2.0, 0.0),
            G(400),
            T("spk2", ["L2:4", "L2:5"], [350]),
        ],
        floor=("n5", 10),
        seed=8,
        tags=["single", "snr10", "noise-only"],
        notes="one male voice at 10 dB SNR (crowd-like), pauses 300-450 ms, a 2 s machinery "
        "noise stretch between his two halves: no speaker change at all",
    ),
    Spec(
        "c09_male_male",
        [
            T("joey", ["J"]),
            G(300),
            T("spk2", ["L2:1", "L2:2"], [300]),
            G(150),
            T("joey", ["J"]),
            G(500),
            T("spk2", ["L2:3"]),
            G(120),
            T("joey", ["J"]),
            G(700),
            T("spk2", ["L2:4", "L2:5"], [400]),
        ],
        floor=("n1", 20),
        seed=9,
        tags=["m-m"],
        notes="male-male: LibriSpeech spk2 (~135 Hz) and Joey from MELD (~150 Hz, TV audio, "
        "the same clip three times; it starts mid-word), 20 dB broadband noise",
    ),
    Spec(
        "c10_three_speakers",
        [
            T("spk1", ["L1:1"]),
            G(300),
            T("spk2", ["L2:1"]),
            G(150),
            T("joey", ["J"]),
            G(600),
            T("spk1", ["L1:2", "L1:3"], [300]),
            G(90),
            T("spk2", ["L2:2"]),
            G(400),
            T("joey", ["J"]),
            G(200),
            T("spk1", ["L1:4"]),
            G(800),
            T("spk2", ["L2:3", "L2:4"], [250]),
            G(120),
            T("spk1", ["L1:5"]),
        ],
        floor=("n3", 20),
        seed=10,
        tags=["three", "pauses"],
        notes="three real speakers (spk1 F, spk2 M, Joey M), gaps 90-800 ms",
    ),
    Spec(
        "c11_espeak_commas",
        [
            T("esp_a", ["Well, I went to the market this morning, and guess what, they had fresh strawberries."]),
            G(150),
            T("esp_b", ["Really, that is great, did you buy some for me?"]),
            G(400),
            T("esp_a", ["Of course, I bought two boxes, one for you and one for me."]),
            G(80),
            T("esp_b", ["You are the best, honestly, thank you so much."]),
            G(700),
            T("esp_a", ["No problem, but I have to say, the prices were terrible."]),
            G(180),
            T("esp_b", ["Yes, everything is expensive now, even bread."]),
        ],
        floor=("n5", 20),
        seed=11,
        tags=["espeak", "commas", "f-m"],
        notes="espeak-ng, male vs female; commas give ~150-250 ms pauses inside turns",
    ),
    Spec(
        "c12_espeak_male_male",
        [
            T("esp_a", ["So, about the robot, I think it needs a new battery."]),
            G(200),
            T("esp_c", ["Maybe, but the old one worked fine yesterday, right?"]),
            G(120),
            T("esp_a", ["It did, until the update, then it started shutting down."]),
            G(600),
            T("esp_c", ["Okay, then let us order one today, before the demo."]),
            G(90),
            T("esp_a", ["Good idea, I will write to the lab, and ask them."]),
        ],
        floor=("n1", 20),
        seed=12,
        tags=["espeak", "commas", "m-m"],
        notes="espeak-ng, two male voices (en-us -p 35 vs en-gb-x-rp -p 60), commas",
    ),
]

# Short ones for the test suite (a few seconds of speech each, three voices in total).
SMALL = [
    Spec(
        "t1_pair_pause",
        [
            T("spk1", ["L1:1", "L1:3"], [300]),
            G(150),
            T("spk2", ["L2:1"]),
            G(600),
            T("spk1", ["L1:2"]),
            G(100),
            T("spk2", ["L2:4", "L2:2"], [250]),
        ],
        floor=("n3", 20),
        seed=21,
        lead_s=0.5,
        trail_s=1.0,
        tags=["f-m", "pauses"],
        notes="small: F/M pair, pauses in turns, short gaps",
    ),
    Spec(
        "t2_noise_stretch",
        [
            T("spk2", ["L2:3"]),
            G(200),
            N("n1", 2.0, 3.0),
            G(200),
            T("spk1", ["L1:4"]),
            G(120),
            N("n2", 1.5, 6.0, "burst"),
            G(300),
            T("spk2", ["L2:5"]),
        ],
        floor=None,
        seed=22,
        lead_s=0.5,
        trail_s=1.0,
        tags=["noise-only", "bursts"],
        notes="small: a loud noise stretch and a burst between turns",
    ),
    Spec(
        "t3_single",
        [T("spk1", ["L1:5", "L1:4", "L1:1"], [300, 450])],
        floor=("n5", 20),
        seed=23,
        lead_s=0.5,
        trail_s=1.0,
        tags=["single"],
        notes="small: one speaker, pauses, no turn change",
    ),
]


# ------------------------------------------------------------------------------- sources
def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        from math import gcd
        from scipy.signal import resample_poly

        g = gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g)
    return x


def frame_rms(x: np.ndarray, hop: int = 160) -> np.ndarray:
    n = len(x) // hop
    return np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-20)


def trim(x: np.ndarray, rel_db: float = -35.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing 10 ms frames quieter than rel_db under the loud (p95) frames."""
    r = frame_rms(x)
    loud = np.flatnonzero(r > np.percentile(r, 95) * 10 ** (rel_db / 20))
    m = int(margin_s * SR)
    return x[max(0, loud[0] * 160 - m) : min(len(x), (loud[-1] + 1) * 160 + m)]


def active_rms(x: np.ndarray, rel_db: float = -30.0) -> float:
    r = frame_rms(x)
    return float(np.sqrt(np.mean(r[r > np.percentile(r, 95) * 10 ** (rel_db / 20)] ** 2)))


def inner_pauses(x: np.ndarray, rel_db: float = -30.0, min_s: float = PAUSE_MIN_S) -> list:
    """Silences of at least min_s inside a (trimmed) clip, as (start_s, end_s)."""
    r = frame_rms(x)
    quiet = r < np.percentile(r, 95) * 10 ** (rel_db / 20)
    out, i = [], 0
    while i < len(quiet):
        if quiet[i]:
            j = i
            while j < len(quiet) and quiet[j]:
                j += 1
            if i > 0 and j < len(quiet) and (j - i) * 0.01 >= min_s:
                out.append((i * 0.01, j * 0.01))
            i = j
        else:
            i += 1
    return out


def fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SR), len(x) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


class Sources:
    """Loads (and caches) every clip a recipe names, speech levelled to SPEECH_DBFS."""

    def __init__(self, shared: Path = SHARED):
        self.shared = shared
        self._cache: dict = {}
        self._tmp = None

    def speech(self, speaker: str, part: str) -> tuple[np.ndarray, str | None, str]:
        """(levelled float clip, text or None, source description)."""
        key = (speaker, part)
        if key not in self._cache:
            self._cache[key] = self._load_speech(speaker, part)
        return self._cache[key]

    def _load_speech(self, speaker, part):
        if part.startswith(("L1:", "L2:")):
            fname = f"spk{part[1]}_snt{part.split(':')[1]}.wav"
            x = trim(_read(self.shared / "speech" / "librispeech" / fname))
            text, src = TEXTS[fname], f"librispeech/{fname}"
        elif part == "J":
            from robot_emotion.media import decode_audio

            x = decode_audio(self.shared / "fixtures" / MELD_CLIP.name).astype(np.float64) / 32768
            # TV audio: the background never drops 35 dB, speech starts ~0.25 s in
            x, text, src = trim(x, rel_db=-20.0), MELD_TEXT, "fixtures/" + MELD_CLIP.name
        else:
            x, text, src = self._espeak(speaker, part), part, "espeak-ng"
        x = fade(x) * (10 ** (SPEECH_DBFS / 20) / active_rms(x))
        return x, text, src

    def _espeak(self, speaker, text):
        voice, pitch, speed = ESPEAK[speaker]
        if shutil.which("espeak-ng") is None:
            raise RuntimeError("espeak-ng is not installed (scripts/setup.sh installs it)")
        with tempfile.TemporaryDirectory() as d:
            wav = Path(d) / "s.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
                check=True,
                capture_output=True,
            )
            return trim(_read(wav), rel_db=-40.0)

    def noise(self, clip: str) -> np.ndarray:
        if clip not in self._cache:
            if clip == "tones":
                x = _read(self.shared / "speech" / "wsj0mix" / "mix0_spkA.wav")
            elif clip == "room":
                from robot_emotion.media import decode_audio

                x = decode_audio(self.shared / "fixtures" / FACE_CLIP.name).astype(np.float64) / 32768
            else:
                x = _read(self.shared / "speech" / "noise" / f"noise{clip[1:]}.wav")
            self._cache[clip] = x
        return self._cache[clip]


def noise_piece(src: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of a clip from a random offset, looped if the clip is shorter."""
    reps = int(np.ceil((n + len(src)) / len(src)))
    long = np.tile(src, reps)
    off = int(rng.integers(0, len(src)))
    return long[off : off + n]


# ------------------------------------------------------------------------------- building
def build(spec: Spec, src: Sources) -> tuple[np.ndarray, dict]:
    """Render one recipe: (int16 audio, truth dict)."""
    rng = np.random.default_rng(1000 + spec.seed)
    speech_level = 10 ** (SPEECH_DBFS / 20)
    pieces, turns, nonspeech = [], [], []
    pos = int(spec.lead_s * SR)
    for step in spec.steps:
        kind = step[0]
        if kind == "gap":
            pos += int(round(step[1] / 1000 * SR))
        elif kind == "noise":
            _, clip, seconds, level_db, nkind = step
            raw = src.noise(clip)
            n = min(int(seconds * SR), len(raw)) if clip == "room" else int(seconds * SR)
            x = noise_piece(raw, n, rng) if clip != "room" else raw[:n]
            if level_db is not None:  # RMS relative to the speech level; None = as recorded
                x = x * (speech_level * 10 ** (level_db / 20) / max(np.sqrt(np.mean(x**2)), 1e-9))
            pieces.append((pos, fade(x)))
            nonspeech.append(
                {
                    "start": round(pos / SR, 3),
                    "end": round((pos + n) / SR, 3),
                    "kind": nkind,
                    "clip": clip,
                    "level_db": level_db,
                }
            )
            pos += n
        elif kind == "turn":
            _, spk, parts, pauses = step
            t0, texts, pause_list, part_info = pos, [], [], []
            for i, part in enumerate(parts):
                x, text, where = src.speech(spk, part)
                pieces.append((pos, x))
                pause_list += [(pos / SR + a, pos / SR + b) for a, b in inner_pauses(x)]
                part_info.append(
                    {"source": where, "start": round(pos / SR, 3), "end": round((pos + len(x)) / SR, 3), "text": text}
                )
                texts.append(text)
                pos += len(x)
                if i < len(parts) - 1:
                    p = int(round(pauses[i] / 1000 * SR))
                    pause_list.append((pos / SR, (pos + p) / SR))
                    pos += p
            if turns and turns[-1]["speaker"] == spk and not _noise_between(turns[-1], nonspeech):
                raise ValueError(f"{spec.name}: two consecutive turns of {spk} (join them)")
            turns.append(
                {
                    "speaker": spk,
                    "start": round(t0 / SR, 3),
                    "end": round(pos / SR, 3),
                    "text": None if any(t is None for t in texts) else " ".join(texts),
                    "pauses": [[round(a, 3), round(b, 3)] for a, b in sorted(pause_list)],
                    "parts": part_info,
                }
            )
        else:
            raise ValueError(f"unknown step {step!r}")
    total = pos + int(spec.trail_s * SR)
    mix = np.zeros(total)
    for at, x in pieces:
        mix[at : at + len(x)] += x
    if spec.floor is None:
        mix += rng.normal(0.0, 10 ** (GAUSS_FLOOR_DBFS / 20), total)
        floor = {"gauss_dbfs": GAUSS_FLOOR_DBFS}
    else:
        clip, snr = spec.floor
        x = noise_piece(src.noise(clip), total, rng)
        mix += x * (speech_level * 10 ** (-snr / 20) / max(np.sqrt(np.mean(x**2)), 1e-9))
        mix += rng.normal(0.0, 10 ** (GAUSS_FLOOR_DBFS / 20), total)
        floor = {"clip": clip, "snr_db": snr}
    clipped = float(np.mean(np.abs(mix) > 0.99))
    pcm = np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)
    speakers = sorted({t["speaker"] for t in turns})
    truth = {
        "name": spec.name,
        "duration": round(total / SR, 3),
        "sample_rate": SR,
        "speakers": {s: SPEAKERS[s] for s in speakers},
        "turns": turns,
        "nonspeech": nonspeech,
        "floor": floor,
        "speech_dbfs": SPEECH_DBFS,
        "clipped_fraction": clipped,
        "tags": list(spec.tags),
        "notes": spec.notes,
        "seed": spec.seed,
    }
    return pcm, truth


def _noise_between(turn: dict, nonspeech: list) -> bool:
    return any(ns["start"] >= turn["end"] for ns in nonspeech)


def write(out_dir, specs=None, only=None, shared: Path = SHARED) -> dict:
    """Write the wavs, truth files and index.json; returns the index."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = CONVERSATIONS if specs is None else specs
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"unknown conversation(s): {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in only]
    src = Sources(shared)
    index = {"generator": "benchmarks/conversations/make_conversations.py", "sample_rate": SR, "conversations": []}
    for spec in specs:
        pcm, truth = build(spec, src)
        sf.write(out / f"{spec.name}.wav", pcm, SR, subtype="PCM_16")
        (out / f"{spec.name}.json").write_text(json.dumps(truth, indent=1))
        index["conversations"].append(
            {
                "name": spec.name,
                "audio": f"{spec.name}.wav",
                "truth": f"{spec.name}.json",
                "duration": truth["duration"],
                "turns": len(truth["turns"]),
                "speakers": list(truth["speakers"]),
                "nonspeech": len(truth["nonspeech"]),
                "tags": truth["tags"],
                "notes": spec.notes,
            }
        )
    index["total_s"] = round(sum(c["duration"] for c in index["conversations"]), 2)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--only", default="", help="comma-separated conversation names")
    p.add_argument("--small", action="store_true", help="the short test-suite set instead")
    p.add_argument("--shared", default=str(SHARED), help="the shared/ folder (default: %(default)s)")
    a = p.parse_args(argv)
    try:
        index = write(
            a.out_dir, SMALL if a.small else CONVERSATIONS, [s for s in a.only.split(",") if s] or None, Path(a.shared)
        )
    except (ValueError, RuntimeError, OSError) as e:
        print(f"make_conversations: error: {e}", file=sys.stderr)
        return 2
    for c in index["conversations"]:
        print(
            f"{c['name']:28s} {c['duration']:6.1f} s  {c['turns']:2d} turns  {'/'.join(c['speakers'])}", file=sys.stderr
        )
    print(
        f"wrote {len(index['conversations'])} conversations, {index['total_s']:.1f} s to {a.out_dir}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
