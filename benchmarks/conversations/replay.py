"""Replaying conversations through the node for the scorer (score.py): the heavy models
loaded once, a fresh node per file, and the list of files (corpus splits or a flat folder).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import robot_emotion  # noqa: F401  (first: it sizes the thread pools before numpy loads, as the node does)

REPO = Path(__file__).resolve().parents[2]
AUDIO_EXTS = (".wav", ".flac")
SPLITS = ("dev", "test")


@contextlib.contextmanager
def shared_models():
    """Load the stateless, heavy models (ASR, emotion scorer) once for every replay.

    Perception itself, which holds per-session state (speaker clusters, open turns, face
    tracks), is still built for each recording by runner.replay.
    """
    import robot_emotion.audio.asr as asr_mod

    cache: dict = {}
    orig_make_asr = asr_mod.make_asr

    def make_asr(cfg, device="auto", **kw):
        key = ("asr", repr(cfg), device, repr(sorted(kw.items())))
        if key not in cache:
            cache[key] = orig_make_asr(cfg, device=device, **kw)
        return cache[key]

    asr_mod.make_asr = make_asr
    emo_cls = orig_from = None
    try:
        from robot_emotion.node.emotion import EmotionScorer as emo_cls

        orig_from = emo_cls.__dict__.get("from_config")

        def from_config(cls, cfg, device="cpu", asr=None):
            key = ("emotion", repr(cfg), device, id(asr))
            if key not in cache:
                cache[key] = orig_from.__func__(cls, cfg, device=device, asr=asr)
            return cache[key]

        if isinstance(orig_from, classmethod):
            emo_cls.from_config = classmethod(from_config)
    except ImportError:
        pass
    try:
        yield cache
    finally:
        asr_mod.make_asr = orig_make_asr
        if emo_cls is not None and isinstance(orig_from, classmethod):
            emo_cls.from_config = orig_from


def load_config(sets=(), launch: str | Path = REPO / "launch" / "replay.toml"):
    from robot_emotion import config

    cfg, _ = config.load(str(launch), overrides=[*sets, 'publish.endpoint="tcp://127.0.0.1:*"'])
    return cfg


def replay_bodies(cfg, audio: str | Path, speed: str | float = "max") -> list[dict]:
    """Replay one recording (wav, or flac) through the node; every published body, in order."""
    from robot_emotion.node import runner
    from robot_emotion.media import AUDIO_EXTS as READABLE

    audio = Path(audio)
    bodies: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        src = audio
        if audio.suffix.lower() not in READABLE:  # the node reads wav/flac today
            import soundfile as sf

            x, sr = sf.read(str(audio), dtype="int16")
            src = Path(tmp) / f"{audio.stem}.wav"
            sf.write(str(src), x, sr, subtype="PCM_16")
        node = runner.replay(cfg, str(src), speed=speed, sinks=[bodies.append])
    if node.errors:
        raise RuntimeError(f"{audio.name}: node errors: {'; '.join(node.errors)}")
    return bodies


def _audio_for(truth_path: Path) -> Path | None:
    for ext in AUDIO_EXTS:
        p = truth_path.with_suffix(ext)
        if p.is_file():
            return p
    return None


def _names(folder: Path) -> list[str]:
    index = folder / "index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        items = data.get("conversations") or data.get("items") or data.get("files")
        if isinstance(items, list) and items:
            return [c["name"] if isinstance(c, dict) else str(c) for c in items]
    return sorted(p.stem for p in folder.glob("*.json") if p.name != "index.json" and _audio_for(p) is not None)


def items(
    folder, split: str | None = None, only=None, limit: int | None = None, ami: bool | None = None
) -> list[tuple[Path, dict]]:
    """(audio path, truth) of every file to score, dev before test.

    A folder with dev/ and/or test/ subfolders is a corpus (their items get that split unless
    their truth names one); else a flat folder. ``--limit`` takes the first N of each split."""
    folder = Path(folder)
    subs = [s for s in SPLITS if (folder / s).is_dir()]
    if ami or not subs:
        groups = [(None, folder)]
    else:
        groups = [(s, folder / s) for s in subs]
    out: list[tuple[Path, dict]] = []
    found = set()
    for sp, sub in groups:
        per_split: dict = {}
        for n in _names(sub):
            tp = sub / f"{n}.json"
            audio = _audio_for(tp)
            if audio is None:
                raise FileNotFoundError(f"no {n}.wav or {n}.flac in {sub}")
            from benchmarks.conversations.score import load_truth

            truth = load_truth(tp)
            truth["split"] = truth["split"] or sp
            found.add(truth["name"])
            if only and truth["name"] not in only:
                continue
            if split and truth["split"] not in (None, split):
                continue
            k = truth["split"]
            if limit is not None and per_split.get(k, 0) >= limit:
                continue
            per_split[k] = per_split.get(k, 0) + 1
            out.append((audio, truth))
    if only:
        missing = set(only) - found
        if missing:
            raise FileNotFoundError(f"not in {folder}: {', '.join(sorted(missing))}")
    return out


def _events_path(edir: Path, audio: Path, sub: str) -> Path:
    """EDIR/SPLIT/NAME.jsonl for a corpus' split folder (as --save-events writes it), else
    EDIR/NAME.jsonl."""
    if sub and (edir / sub / f"{audio.stem}.jsonl").is_file():
        return edir / sub / f"{audio.stem}.jsonl"
    return edir / f"{audio.stem}.jsonl"
