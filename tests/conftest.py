"""Shared test fixtures: real generated speech, sessions, loopback endpoints, PulseAudio."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MELD_CLIP = SHARED / "fixtures" / "meld_train_dia1_utt0.mp4"
FACE_CLIP = SHARED / "fixtures" / "single_face.mp4"


def shared_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent (tests that use ../shared skip without it)")
    return path


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port *below* the kernel's ephemeral range. A SUB that connects before the
    node binds retries every 100 ms from ephemeral source ports; if the target port is itself
    ephemeral, one retry can land on it and TCP self-connects, holding the port so the node's
    bind fails ("Address already in use" -- seen once in CI). Ports outside the range cannot."""
    import random

    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def load_tool(path: str):
    """A script of the repository (``tools/make_mini_meld``, ``examples/controller``) as a module."""
    name = Path(path).name
    spec = importlib.util.spec_from_file_location(name, REPO / f"{path}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def run_cli(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot_emotion", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def demo_tool():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from robot_emotion.sources import demo

    return demo


@pytest.fixture(scope="session")
def dialogue_session(demo_tool, tmp_path_factory):
    """The default demo dialogue (10 turns, two voices, some gaps < 300 ms), with video."""
    out = tmp_path_factory.mktemp("demo")
    truth = demo_tool.make_session(out, seed=0)
    return out, truth


@pytest.fixture(scope="session")
def short_session(demo_tool, tmp_path_factory):
    """A 4-turn audio+video session, short enough to replay at recorded pace."""
    out = tmp_path_factory.mktemp("short")
    truth = demo_tool.make_session(out, turns=4, seed=1)
    return out, truth


@pytest.fixture()
def pulse():
    """A real PulseAudio server with a null sink whose monitor is the default microphone.

    Audio played into the sink with paplay reaches the node through PortAudio/ALSA exactly
    as a USB microphone's would. Skips where PulseAudio is not installed.
    """
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("pulseaudio is not installed (scripts/setup.sh installs it)")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # one server per pytest-xdist worker: its tests play into (and kill) their own
        runtime = Path(f"/tmp/robot-emotion-pulse-{os.getuid()}-{worker}")
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["PULSE_RUNTIME_PATH"] = str(runtime)  # (servers and clients alike, subprocesses too)
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        subprocess.run(
            ["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-native-protocol-unix"], capture_output=True
        )
        for _ in range(50):
            if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
    mods = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True).stdout
    if "robot_test" not in mods:
        subprocess.run(
            ["pactl", "load-module", "module-null-sink", "sink_name=robot_test"], capture_output=True, check=True
        )
    subprocess.run(["pactl", "set-default-sink", "robot_test"], check=True)
    subprocess.run(["pactl", "set-default-source", "robot_test.monitor"], check=True)
    yield "robot_test"


def espeak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160) -> np.ndarray:
    """Real synthetic speech as 16 kHz mono int16."""
    import tempfile
    from robot_emotion.media import read_audio_file

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        return read_audio_file(wav, resample=True)


# ---- tiers: `make check` runs -m "not slow" (under 3 minutes on 2 cores), `make test` all ----
SLOW_LIST = Path(__file__).with_name("slow.txt")  # measured: tools/slow_tests.py


def pytest_collection_modifyitems(config, items):
    slow = (
        {ln.strip() for ln in SLOW_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
        if SLOW_LIST.is_file()
        else set()
    )
    for item in items:
        if item.nodeid in slow or item.nodeid.split("::")[0] in slow:  # a test, or a whole module
            item.add_marker(pytest.mark.slow)


# ---- helpers the test modules share (import them from conftest) ----------------------
NO_PERCEPTION = [
    "asr.enabled=false",
    "speakers.enabled=false",
    "faces.enabled=false",
    "emotion.enabled=false",
    'publish.endpoint="tcp://127.0.0.1:*"',
]


def spine_cfg(*extra):
    """The spine alone (VAD, publisher): no model loads."""
    from robot_emotion.config import load

    return load(None, overrides=NO_PERCEPTION + list(extra))[0]


def collect(cfg, source, speed="max", perception="auto"):
    """Replay a source in-process; every published body, in publish order, and the node."""
    from robot_emotion.node.runner import replay

    out = []
    node = replay(cfg, str(source), speed=speed, sinks=[out.append], perception=perception)
    assert not node.errors, node.errors
    return out, node


def by_topic(events, topic):
    from robot_emotion.bus import messages

    return sorted((messages.reproducible(e) for e in events if e["topic"] == topic), key=lambda e: e["seq"])


def play(wav, sink):
    """Play a wav into a PulseAudio sink (the `pulse` fixture's): what a microphone hears."""
    return subprocess.Popen(["paplay", "--device", sink, str(wav)])


def wait_audio(out, seconds=1.5, timeout=90):
    """Until the recorder has written `seconds` of audio (models load first on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (
        (out / "audio.wav").is_file() and (out / "audio.wav").stat().st_size > 2 * 16000 * seconds
    ):
        time.sleep(0.2)


def absent_camera_index() -> str:
    """A camera index with no device behind it: calibrate then runs without a camera."""
    return next(str(i) for i in range(9, -1, -1) if not Path(f"/dev/video{i}").exists())


def clap_video(path, flash_s: float, seconds: float = 4.0, fps: int = 25) -> Path:
    """A still grey scene in which a bright square appears at flash_s (the clap, as seen)."""
    import av
    from fractions import Fraction

    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((120, 160, 3), 70, np.uint8)
            if i >= round(flash_s * fps):
                img[30:90, 40:120] = 230
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for pkt in st.encode(vf):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return path
