"""robot_emotion.threads owns the thread-pool policy: its numbers, and the sites that use them."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from robot_emotion import threads


def test_the_policy_numbers():
    assert threads.DEFAULT_OMP_THREADS == 1 and threads.NODE_TORCH_THREADS == 1
    assert threads.FACES_TORCH_THREADS == 1 and threads.SCORER_MAX_TORCH_THREADS == 2
    cores = os.cpu_count() or 1
    assert threads.asr_cpu_threads() == min(4, cores) and threads.asr_cpu_threads(3) == 3
    assert threads.offline_threads() == cores and threads.offline_threads(cores * 2) == 1
    assert threads.offline_threads(0) == cores
    env = {"PATH": "/bin"}
    threads.set_pool_defaults(env)
    assert env["OMP_NUM_THREADS"] == "1"
    env = {"OMP_NUM_THREADS": "3"}
    threads.set_pool_defaults(env)
    assert env["OMP_NUM_THREADS"] == "3"  # the user's value wins
    load = threads.load_process_env({"OMP_NUM_THREADS": "8", "HOME": "/h"})
    assert load == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "HOME": "/h"}


def test_importing_the_package_sets_the_pool_default():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", "import os, robot_emotion; print(os.environ['OMP_NUM_THREADS'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == str(threads.DEFAULT_OMP_THREADS)


@pytest.fixture
def torch_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_the_node_and_the_scorer_use_the_policy(torch_restored):
    torch = torch_restored
    torch.set_num_threads(2)
    threads.cap_scorer_threads()
    assert torch.get_num_threads() == 2
    threads.use_node_threads()  # what the node's Perception.from_config calls
    assert torch.get_num_threads() == threads.NODE_TORCH_THREADS
    threads.cap_scorer_threads()  # the scorer, built after it, never raises it
    assert torch.get_num_threads() == threads.NODE_TORCH_THREADS
    with threads.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == threads.NODE_TORCH_THREADS


def test_building_the_node_stages_sets_the_policys_torch_threads(torch_restored, monkeypatch):
    """A real site: the node's perception, built from a config (speaker encoder only: no
    checkpoint, recogniser or faces needed), leaves torch at the policy's thread count, and
    follows the policy when it changes."""
    from robot_emotion import config as C
    from robot_emotion.node.runner import build_perception

    torch = torch_restored
    torch.set_num_threads(2)
    cfg = C.load(
        None,
        None,
        [
            "asr.enabled=false",
            "emotion.enabled=false",
            "faces.enabled=false",
            "speakers.enabled=true",
            "people.enabled=false",
        ],
    )[0]
    assert build_perception(cfg, has_video=False, log=None) is not None
    assert torch.get_num_threads() == threads.NODE_TORCH_THREADS == 1
    monkeypatch.setattr(threads, "NODE_TORCH_THREADS", 2)
    build_perception(cfg, has_video=False, log=None)
    assert torch.get_num_threads() == 2
