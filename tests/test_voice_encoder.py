"""The pretrained speaker encoder (audio/voice_encoder.py): its input features against
resemblyzer's own code, and its embeddings on real voices (../shared/speech/librispeech)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED, shared_file
from robot_emotion.audio import voice_encoder as ve

LIBRI = SHARED / "speech" / "librispeech"


def speech(name: str) -> np.ndarray:
    x, sr = sf.read(shared_file(LIBRI / name), dtype="float32")
    assert sr == 16000
    return x


@pytest.fixture(scope="module")
def encoder() -> ve.VoiceEncoder:
    return ve.VoiceEncoder()


@pytest.fixture(scope="module")
def reference():
    """resemblyzer.audio's wav_to_mel_spectrogram and normalize_volume, resemblyzer's code.

    If its module does not import here (its top-level imports webrtcvad and
    scipy.ndimage.morphology serve only trim_long_silences, and the latter is gone in
    SciPy 2), the two functions' own source is taken from the installed file and run with
    its hparams and librosa.
    """
    pytest.importorskip("librosa", reason="librosa (dev extra) is the reference's dependency")
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None:
        pytest.skip("resemblyzer is not installed (scripts/setup.sh installs it)")
    try:
        with warnings.catch_warnings():  # its scipy.ndimage.morphology import is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            mod = importlib.import_module("resemblyzer.audio")
        return mod.wav_to_mel_spectrogram, mod.normalize_volume
    except ImportError:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        ns: dict = {}
        exec((pkg / "hparams.py").read_text(), ns)
        tree = ast.parse((pkg / "audio.py").read_text())
        keep = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef)
            and n.name in ("wav_to_mel_spectrogram", "normalize_volume")
            or isinstance(n, ast.Assign)
            and ast.unparse(n).startswith("int16_max")
        ]
        assert len(keep) == 3, "resemblyzer/audio.py changed"
        exec("import numpy as np\nimport librosa\n" + ast.unparse(ast.Module(keep, [])), ns)
        return ns["wav_to_mel_spectrogram"], ns["normalize_volume"]


@pytest.mark.parametrize(
    "name,gain",
    [
        ("spk1_snt1.wav", 1.0),  # -33 dBFS: scaled up
        ("spk2_snt1.wav", 1.0),  # -24 dBFS: left alone
        ("spk2_snt3.wav", 0.05),
    ],
)  # quiet: scaled up a lot
def test_features_match_resemblyzer(reference, name, gain):
    ref_mel, ref_norm = reference
    x = speech(name) * np.float32(gain)
    norm = ref_norm(x, -30, increase_only=True)
    np.testing.assert_allclose(ve.normalize_volume(x), norm, rtol=1e-5, atol=1e-7)
    want, got = ref_mel(norm), ve.mel(x)
    assert got.shape == want.shape == (1 + len(x) // 160, 40)
    assert np.abs(got - want).max() <= 1e-5 * want.max()


def test_filterbank_is_librosas():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(
        ve.mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), rtol=1e-5, atol=1e-8
    )


def test_embed_matches_resemblyzer_encoder(encoder, reference):
    """Same network, same weights, same partials: resemblyzer's embed_utterance."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder as Reference
    except ImportError as e:
        pytest.skip(f"resemblyzer's own encoder does not import here: {e}")
    ref = Reference("cpu", verbose=False)
    _, ref_norm = reference
    for x in (speech("spk1_snt2.wav"), speech("spk2_snt1.wav")[:20000]):  # 3.15 s; 1.25 s
        np.testing.assert_allclose(
            encoder.embed(x, pad_short=True), ref.embed_utterance(ref_norm(x, -30, increase_only=True)), atol=1e-5
        )


def test_same_speaker_close_other_speaker_far(encoder):
    emb = {s: [encoder.embed(speech(f"{s}_snt{i}.wav")) for i in range(1, 7)] for s in ("spk1", "spk2")}
    same = [float(a @ b) for e in emb.values() for a, b in itertools.combinations(e, 2)]
    cross = [float(a @ b) for a in emb["spk1"] for b in emb["spk2"]]
    # Measured: same 0.73-0.88 (median 0.85), cross 0.45-0.62 (median 0.52).
    assert min(same) > max(cross)
    assert np.median(same) > 0.8 and np.median(cross) < 0.6


def test_sliding_windows_follow_the_speaker(encoder):
    a, b = speech("spk1_snt1.wav"), speech("spk2_snt1.wav")
    centres, emb = encoder.sliding(np.concatenate([a, b]), window_s=1.6, hop_s=0.2)
    assert emb.shape == (len(centres), 256) and emb.dtype == np.float32
    assert np.all(np.diff(centres) > 0) and centres[0] == pytest.approx(0.795)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Other sentences of each speaker as references; windows wholly inside one sentence.
    ref = {
        s: np.mean([encoder.embed(speech(f"{s}_snt{i}.wav")) for i in range(2, 7)], axis=0) for s in ("spk1", "spk2")
    }
    t_change = len(a) / 16000
    inside_a, inside_b = centres <= t_change - 0.8, centres >= t_change + 0.8
    assert inside_a.sum() >= 3 and inside_b.sum() >= 1
    assert np.all(emb[inside_a] @ ref["spk1"] > emb[inside_a] @ ref["spk2"])
    assert np.all(emb[inside_b] @ ref["spk2"] > emb[inside_b] @ ref["spk1"])


def test_one_window_of_sliding_is_one_partial_of_embed(encoder):
    x = speech("spk1_snt3.wav")[:25600]  # exactly 1.6 s
    _, emb = encoder.sliding(x)
    np.testing.assert_allclose(emb[0], encoder.embed(x), atol=1e-5)


def test_short_quiet_and_bad_input(encoder):
    x = speech("spk1_snt4.wav")
    for piece in (x[:8000], x[:2000]):  # 0.5 s, 0.125 s
        for pad in (False, True):
            e = encoder.embed(piece, pad_short=pad)
            assert e.shape == (256,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.isfinite(encoder.embed(np.zeros(16000, np.float32))))
    centres, emb = encoder.sliding(x[:8000])  # shorter than a window: one window
    assert emb.shape == (1, 256)
    pcm = np.round(x * 32767).astype(np.int16)
    assert float(encoder.embed(pcm) @ encoder.embed(x)) > 0.9999
    with pytest.raises(ValueError):
        encoder.embed(np.zeros(0, np.float32))
    with pytest.raises(ValueError):
        encoder.embed(np.zeros((2, 16000), np.float32))


def test_missing_package_or_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # the import system's "not installed"
    with pytest.raises(ve.VoiceEncoderUnavailable, match="not installed.*pip install --no-deps resemblyzer"):
        ve.VoiceEncoder()
    # A package without its weights, then one with a truncated weights file.
    (tmp_path / "resemblyzer").mkdir()
    (tmp_path / "resemblyzer" / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "resemblyzer")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(ve.VoiceEncoderUnavailable, match="pretrained.pt not found"):
        ve.VoiceEncoder()
    (tmp_path / "resemblyzer" / "pretrained.pt").write_bytes(b"\x80\x02truncated")
    with pytest.raises(ve.VoiceEncoderUnavailable, match="cannot read speaker encoder weights"):
        ve.VoiceEncoder()
