"""Where torchaudio replaces DSP, and where it does not (pyproject.toml says which and why)."""

import numpy as np
import pytest

from robot_emotion.train import augment

torch = pytest.importorskip("torch")
F = pytest.importorskip("torchaudio.functional")


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_reverberation_equals_scipys_fft_convolution(dtype, tolerance):
    """train/augment.reverberate uses torchaudio's fftconvolve (float64): what scipy's gave,
    within 1e-12, or 1e-6 for float32 input (scipy's own FFT of it is float32)."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(16000 * 2) * 0.1).astype(dtype)
    rir = augment.synthetic_rir(0.6, rng, 1.5)
    want = fftconvolve(x, rir)[: x.size]
    want *= augment.rms(x) / augment.rms(want)
    got = augment.reverberate(x, rir)
    assert got.dtype == np.float64 and got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


def test_the_speaker_encoders_filterbank_is_torchaudios_in_float64():
    """voice_encoder.mel_filterbank stays hand-written (its docstring says why); it is the
    slaney filterbank torchaudio builds in float64, bit for bit."""
    from robot_emotion.audio.voice_encoder import N_FFT, N_MELS, mel_filterbank

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ta = F.melscale_fbanks(N_FFT // 2 + 1, 0.0, 8000.0, N_MELS, 16000, norm="slaney", mel_scale="slaney")
    finally:
        torch.set_default_dtype(before)
    assert np.array_equal(mel_filterbank(), ta.T.numpy().astype(np.float32))
