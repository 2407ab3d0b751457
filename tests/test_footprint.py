"""footprint.bound_primitive_caches: oneDNN's primitive caches stay bounded, so a node that sees
a new input length every turn stops growing (README "Running for days"): torch's at 128 (room
for the face nets' shapes), CTranslate2's at 8 (its encoder's primitives are large)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

# One process per case: each oneDNN copy reads its cache capacity once, at its first primitive.
# An LSTM like the speaker encoder's on 300 new lengths, as many turns would give it; anonymous
# RSS after malloc_trim after the first 150 (the cache is full by then: 3 layers a length) and
# after the last 150.
TORCH_GROWTH = r"""
import ctypes, json, sys
from robot_emotion.node.footprint import bound_primitive_caches
bound_primitive_caches()
import torch

def anon():
    ctypes.CDLL(None).malloc_trim(0)
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("RssAnon"))

torch.set_num_threads(1)
lstm = torch.nn.LSTM(40, 256, 3, batch_first=True).eval()
with torch.inference_mode():
    for n in range(20, 170):
        lstm(torch.randn(1, n, 40))
    before = anon()
    for n in range(170, 320):
        lstm(torch.randn(1, n, 40))
    print(json.dumps({"growth_mb": anon() - before, "mkldnn": torch.backends.mkldnn.is_available()}))
"""

# The recogniser as the node sets it up (warm-up inside bound_primitive_caches), then its
# encoder on 60 new lengths of 0.3-8 s.
CT2_GROWTH = r"""
import ctypes, json
import numpy as np
from robot_emotion.node.footprint import bound_primitive_caches
from robot_emotion.audio.asr import FasterWhisperASR

def anon():
    ctypes.CDLL(None).malloc_trim(0)
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("RssAnon"))

asr = FasterWhisperASR(cpu_threads=1)
bound_primitive_caches(asr.warm_up)
m, rng = asr.model, np.random.default_rng(0)
def encode(seconds):
    feats = m.feature_extractor(rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.01)
    m.encode(feats[:, :feats.shape[1] - feats.shape[1] % 2])
for s in (0.5, 0.6, 0.7, 0.8):
    encode(s)
before = anon()
for s in rng.uniform(0.3, 8.0, 60):
    encode(s)
print(json.dumps({"growth_mb": anon() - before}))
"""


def _growth(script: str, capacity: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon and malloc_trim are Linux/glibc")


@linux_only
def test_new_input_lengths_stop_growing_torch_memory():
    bounded = _growth(TORCH_GROWTH, None)  # the node's default, set in-process
    if not bounded["mkldnn"]:
        pytest.skip("this torch has no oneDNN: nothing to bound")
    unbounded = _growth(TORCH_GROWTH, "1024")  # oneDNN's own default, which the user may still choose
    assert unbounded["growth_mb"] > 5.0, unbounded  # the growth this guards against is real here
    assert bounded["growth_mb"] < 1.5, bounded


@linux_only
def test_new_turn_lengths_do_not_grow_the_recogniser():
    from robot_emotion.audio.asr import default_whisper_path

    if not os.path.isfile(os.path.join(default_whisper_path(), "model.bin")):
        pytest.skip(f"no faster-whisper model at {default_whisper_path()} (run scripts/setup.sh)")
    bounded = _growth(CT2_GROWTH, None)
    unbounded = _growth(CT2_GROWTH, "1024")
    # measured: 1024 +60-95 MB; the node's caps about a tenth of it (allocator noise)
    assert unbounded["growth_mb"] > 30.0, unbounded
    assert bounded["growth_mb"] < unbounded["growth_mb"] / 3, (bounded, unbounded)
