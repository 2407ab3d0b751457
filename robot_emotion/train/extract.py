"""Feature extraction for MELD clips with the node's own featurizers, cached and resumable.

Per clip (train/serve parity: the SAME objects the live node uses):
  decode (PyAV: audio 16 kHz mono, frames at the face rate) -> perception.Perception with a
  vision.faces.FacePipeline (MTCNN + tracker + FER2013 expression + mouth activity, audio energy
  pushed causally exactly as in the node) -> Perception.active_speaker picks the speaker's face
  track over the clip -> features.utterance.face_features; text = TextFeaturizer(history of the
  CSV dialogue, PAST turns only, (speaker, text)) with gold text or ASR (`text_source="asr"`;
  its context stays the gold past turns); audio = AudioFeaturizer (Whisper tiny.en encoder).

Cache: <cache>/<key>/<split>-<data>/dia{D}_utt{U}.npz (float16 features + JSON meta), written
atomically; <key> hashes the encoder ids/versions, the text model's weights, the face settings, the
text source and EXTRACT_VERSION, so a changed encoder never reuses stale features; <data> hashes the
split's files (resolved paths, sizes and mtimes of its CSV and clips, `dataset_identity`), so
another dataset with the same clip names never reuses this one's features. A clip that cannot
be decoded leaves <name>.err with the reason. An interrupted run resumes: files present are
skipped. Workers: N spawned processes, each with its own models (1 torch thread each).
Distributed: rank r of world w extracts clips[r::w] into the same cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

EXTRACT_VERSION = "1"
MODS = ("text", "audio", "face")


@dataclass(frozen=True)
class ExtractSpec:
    text_model_dir: str
    text_source: str = "gold"  # gold | asr
    device: str = "auto"
    overrides: tuple = ()  # config overrides (faces.rate_hz=..., asr.backend=...)

    def config(self):
        from robot_emotion.config import load

        cfg, _ = load(None, overrides=list(self.overrides))
        return cfg


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_identity(spec: ExtractSpec) -> dict:
    """Everything the cached features depend on (hashed into the cache folder name)."""
    from robot_emotion.node.emotion import AUDIO_ENCODER, FACE_ENCODER

    cfg = spec.config()
    d = Path(spec.text_model_dir)
    meta_f, w_f = d / "text_emotion.json", d / "text_emotion.safetensors"
    if not meta_f.is_file() or not w_f.is_file():
        raise FileNotFoundError(f"text emotion model not found in {d} (need {meta_f.name} and {w_f.name})")
    return {
        "extract_version": EXTRACT_VERSION,
        "text_source": spec.text_source,
        "text_model": {"meta": _file_hash(meta_f), "weights": _file_hash(w_f)},
        "audio": AUDIO_ENCODER if cfg.asr.enabled and cfg.asr.backend != "none" else None,
        "asr": {"backend": cfg.asr.backend, "model": cfg.asr.model},
        "face": FACE_ENCODER,
        "faces": asdict(cfg.faces),
    }


def cache_key(identity: dict) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def dataset_identity(split) -> dict:
    """What a split's features depend on besides the encoders: its CSV (every row is dialogue
    context) and its usable clips, by resolved path, size and mtime (stat only: no media is read)."""

    def stat(p: Path) -> list:
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]

    return {
        "split": split.name,
        "csv": [str(Path(split.csv).resolve()), *stat(Path(split.csv))],
        "clip_dir": str(Path(split.clip_dir).resolve()),
        "clips": [[c.name, *stat(c.path)] for c in split.clips],
    }


def split_dir(cache, split, identity: dict | None = None) -> Path:
    """<cache>/<split>-<hash of dataset_identity>: one folder per split of one dataset."""
    identity = identity or dataset_identity(split)
    return Path(cache) / f"{split.name}-{cache_key(identity)}"


# ------------------------------------------------------------------------------ the worker
class ClipFeaturizer:
    """Loads the node's models once; featurize(...) turns one clip into cached arrays."""

    def __init__(self, spec: ExtractSpec):
        from robot_emotion.audio.asr import make_asr
        from robot_emotion.compute import resolve_device
        from robot_emotion.node.emotion import configured_encoders
        from robot_emotion.features.text_emotion import TextEmotionModel
        from robot_emotion.features.utterance import AudioFeaturizer, TextFeaturizer
        from robot_emotion.vision.faces import FacePipeline

        self.spec, self.cfg = spec, spec.config()
        self.device = resolve_device(spec.device)
        self.text_model = TextEmotionModel.load(spec.text_model_dir, device=self.device)
        self.asr = (
            make_asr(self.cfg.asr, device=self.device)
            if self.cfg.asr.enabled and self.cfg.asr.backend != "none"
            else None
        )
        if spec.text_source == "asr" and self.asr is None:
            raise ValueError("--text-source asr needs an ASR backend (asr.enabled / asr.backend)")
        self.text = TextFeaturizer(self.text_model)
        self.audio = AudioFeaturizer(self.asr) if self.asr is not None else None
        self.faces = FacePipeline(self.cfg.faces, device=self.device)
        self.encoders = configured_encoders(self.text_model, self.asr)

    def featurize(self, path: str, speaker, text: str, history: list) -> dict:
        from robot_emotion.data.meld import decode_clip
        from robot_emotion.features.utterance import face_features
        from robot_emotion.node.perception import Perception
        from robot_emotion.sources.base import Frame

        t0 = time.perf_counter()
        audio, frames, dur = decode_clip(path, self.cfg.faces.rate_hz)
        self.faces.reset()  # every clip starts with a whole-frame search, as a live session does
        perc = Perception(self.cfg, faces=self.faces)
        perc.on_audio(0.0, audio)
        perc.close_audio()
        for i, (t, img) in enumerate(frames):  # (its default NodeLink: replay, nothing published)
            perc.process_frame(Frame(t, img, i))
        tracks = perc.face_data(0.0, dur)
        tid, conf = perc.active_speaker(0.0, dur, tracks) if tracks else (None, 0.0)
        face = face_features(tracks.get(tid)) if tid is not None else None
        a = audio.astype(np.float32) / 32768.0
        used_text, transcript = text, None
        if self.spec.text_source == "asr":
            transcript = self.asr.transcribe(a).text.strip()
            used_text = transcript
        tf = self.text(history, (speaker, used_text)) if used_text else None
        af = self.audio(a) if self.audio is not None else None
        out: dict = {}
        for m, f in (("text", tf), ("audio", af), ("face", face)):
            if f is None:
                continue
            if f.seq is not None:
                out[f"{m}_seq"] = np.asarray(f.seq, np.float16)
                out[f"{m}_pooled"] = np.asarray(f.pooled, np.float16)
            if f.probs is not None:
                out[f"{m}_probs"] = np.asarray(f.probs, np.float32)
        meta = {
            "duration": dur,
            "frames": len(frames),
            "tracks": len(tracks),
            "face_track": tid,
            "face_confidence": float(conf),
            "face_found": face is not None,
            "text": used_text,
            "transcript": transcript,
            "seconds": time.perf_counter() - t0,
        }
        return {"arrays": out, "meta": meta}


_WORKER: ClipFeaturizer | None = None


def _init_worker(spec: ExtractSpec, threads: int) -> None:
    global _WORKER
    from robot_emotion.threads import set_torch_threads

    set_torch_threads(max(1, threads))
    _WORKER = ClipFeaturizer(spec)


def _work(job: dict) -> dict:
    import torch
    from robot_emotion.media import MediaError

    try:
        with torch.no_grad():
            res = _WORKER.featurize(job["path"], job["speaker"], job["text"], job["history"])
    except (MediaError, ValueError, RuntimeError, OSError) as e:
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        Path(job["out"]).with_suffix(".err").write_text(msg + "\n")
        return {"name": job["name"], "error": msg, "encoders": _WORKER.encoders}
    save_features(job["out"], res["arrays"], {**res["meta"], "label": job["label"]})
    return {"name": job["name"], "meta": res["meta"], "encoders": _WORKER.encoders}


def save_features(path, arrays: dict, meta: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    os.replace(tmp, path)


def load_clip_features(path):
    """-> (UtteranceFeatures with float16 arrays, meta dict)."""
    from robot_emotion.features.utterance import ModalityFeatures, UtteranceFeatures

    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        u = UtteranceFeatures()
        for m in MODS:
            seq = z[f"{m}_seq"] if f"{m}_seq" in z else None
            pooled = z[f"{m}_pooled"] if f"{m}_pooled" in z else None
            probs = z[f"{m}_probs"] if f"{m}_probs" in z else None
            if seq is not None or probs is not None:
                setattr(u, m, ModalityFeatures(seq, pooled, probs))
    return u, meta


# ------------------------------------------------------------------------------ the driver
def _jobs(split, out_dir: Path, rank: int, world: int) -> list[dict]:
    jobs = []
    for clip in split.clips[rank::world]:
        jobs.append(
            {
                "name": clip.name,
                "path": str(clip.path),
                "speaker": clip.speaker,
                "text": clip.text,
                "history": split.history(clip),
                "label": clip.label,
                "out": str(out_dir / f"{clip.name}.npz"),
            }
        )
    return jobs


def extract(
    splits: dict,
    spec: ExtractSpec,
    cache_root,
    workers: int = 1,
    limit: int | None = None,
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    log=print,
) -> dict:
    """Extract (or resume) features of every usable clip of `splits` into the cache.

    Returns {"cache": dir, "processed": n, "cached": n, "failed": {name: reason},
             "face_found": n, "face_total": n, "seconds": s, "clips_per_s": x}."""
    from tqdm import tqdm

    identity = cache_identity(spec)
    cache = Path(cache_root) / cache_key(identity)
    todo, cached = [], 0
    for name, split in splits.items():
        source = dataset_identity(split)
        d = split_dir(cache, split, source)
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "source.json").is_file():  # which files these features came from (for people)
            tmp = d / f"source.json.tmp{os.getpid()}"
            tmp.write_text(
                json.dumps(
                    {k: v for k, v in source.items() if k != "clips"} | {"clips": len(source["clips"])}, indent=1
                )
            )
            os.replace(tmp, d / "source.json")
        for job in _jobs(split, d, rank, world):
            if Path(job["out"]).is_file() or Path(job["out"]).with_suffix(".err").is_file():
                cached += 1
            else:
                todo.append(job)
    if limit is not None:
        todo = todo[: max(0, limit)]
    stats = {
        "cache": str(cache),
        "processed": 0,
        "cached": cached,
        "failed": {},
        "face_found": 0,
        "face_total": 0,
        "seconds": 0.0,
        "clips_per_s": None,
        "rank": rank,
        "world": world,
    }
    manifest = cache / "manifest.json"
    if todo:
        log(f"# extracting {len(todo)} clip(s) with {workers} worker(s) into {cache} ({cached} already cached)")
        t0 = time.perf_counter()
        bar = tqdm(
            total=len(todo), unit="clip", desc="extract " + "+".join(splits), disable=not progress, dynamic_ncols=True
        )
        if workers <= 1:
            global _WORKER
            if _WORKER is None or _WORKER.spec != spec:
                _WORKER = ClipFeaturizer(spec)
            results = map(_work, todo)
            pool = None
        else:
            import multiprocessing as mp
            from robot_emotion.threads import offline_threads

            threads = offline_threads(workers)  # the cores shared among the workers
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(spec, threads))
            results = pool.imap_unordered(_work, todo)
        try:
            for r in results:
                if not manifest.is_file():
                    _write_manifest(manifest, identity, r["encoders"], spec)
                if "error" in r:
                    stats["failed"][r["name"]] = r["error"]
                else:
                    stats["processed"] += 1
                    stats["face_total"] += 1
                    stats["face_found"] += bool(r["meta"]["face_found"])
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        stats["seconds"] = time.perf_counter() - t0
        stats["clips_per_s"] = len(todo) / max(stats["seconds"], 1e-9)
        log(
            f"# extracted {stats['processed']} clip(s) in {stats['seconds']:.1f} s "
            f"({stats['clips_per_s']:.2f} clips/s); speaker's face found in {stats['face_found']}"
            f"/{stats['face_total']}; {len(stats['failed'])} undecodable"
        )
    for name, why in stats["failed"].items():
        log(f"#   skipped {name}: undecodable clip ({why})")
    return stats


def _write_manifest(path: Path, identity: dict, encoders: dict, spec: ExtractSpec) -> None:
    body = {
        "identity": identity,
        "encoders": encoders,
        "text_model_dir": str(Path(spec.text_model_dir).resolve()),
        "text_source": spec.text_source,
        "overrides": list(spec.overrides),
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=1))
    os.replace(tmp, path)


def read_manifest(cache: Path) -> dict:
    f = Path(cache) / "manifest.json"
    if not f.is_file():
        raise FileNotFoundError(f"feature cache {cache} has no manifest.json (run the extraction first)")
    return json.loads(f.read_text())


def load_split(cache: Path, split, progress: bool = False) -> tuple[list, np.ndarray, list[dict], list[str]]:
    """Cached features of a split's usable clips -> (features, labels, metas, names);
    clips without a feature file (undecodable) are left out and named in the log by extract()."""
    from tqdm import tqdm

    feats, labels, metas, names = [], [], [], []
    d = split_dir(cache, split)
    for clip in tqdm(
        split.clips, unit="clip", desc=f"load {split.name} features", disable=not progress, dynamic_ncols=True
    ):
        f = d / f"{clip.name}.npz"
        if not f.is_file():
            continue
        u, meta = load_clip_features(f)
        feats.append(u)
        labels.append(clip.label)
        metas.append(meta)
        names.append(clip.name)
    return feats, np.asarray(labels, np.int64), metas, names


def face_rate(metas: list[dict]) -> tuple[int, int]:
    return sum(bool(m.get("face_found")) for m in metas), len(metas)
