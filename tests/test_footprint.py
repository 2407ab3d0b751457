"""footprint.bound_primitive_caches: oneDNN's primitive cache stays small, so a node that sees
a new input length every turn stays flat (README "Running for days")."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

# One process per case: oneDNN reads its cache capacity once, at its first primitive.
# An LSTM like the speaker encoder's on 120 lengths, as many turns would give it; anonymous
# RSS after malloc_trim before and after (the first 10 lengths are warm-up).
GROWTH = r"""
import ctypes, json, sys
from robot_emotion.footprint import bound_primitive_caches
bound_primitive_caches()
import torch

def anon():
    ctypes.CDLL(None).malloc_trim(0)
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("RssAnon"))

torch.set_num_threads(1)
lstm = torch.nn.LSTM(40, 256, 3, batch_first=True).eval()
with torch.inference_mode():
    for n in range(20, 30):
        lstm(torch.randn(1, n, 40))
    before = anon()
    for n in range(30, 150):
        lstm(torch.randn(1, n, 40))
    print(json.dumps({"growth_mb": anon() - before, "mkldnn": torch.backends.mkldnn.is_available()}))
"""


def _growth(capacity: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
    out = subprocess.run([sys.executable, "-c", GROWTH], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon and malloc_trim are Linux/glibc")
def test_new_input_lengths_do_not_grow_memory():
    bounded = _growth(None)            # the node's default, set in-process
    if not bounded["mkldnn"]:
        pytest.skip("this torch has no oneDNN: nothing to bound")
    unbounded = _growth("1024")        # oneDNN's own default, which the user may still choose
    assert unbounded["growth_mb"] > 5.0, unbounded      # the leak this guards against is real here
    assert bounded["growth_mb"] < 1.5, bounded
