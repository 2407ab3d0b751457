"""The PUB socket is safe by default, on real loopback sockets and real node processes:
bounded subscriptions, loopback unless keys (or allow_insecure), CURVE that really keeps
strangers out, and an endpoint checked before any model loads."""

import contextlib
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import soundfile as sf
import zmq
import zmq.auth

from conftest import REPO, free_endpoint, run_cli
from robot_emotion.bus.client import Subscriber
from robot_emotion.config import load
from robot_emotion.errors import UsageError
from robot_emotion.bus.publish import Publisher
from robot_emotion.bus.security import MAX_INBOUND_BYTES, is_loopback_host, parse_endpoint
from conftest import NO_PERCEPTION

SPINE = NO_PERCEPTION[:-1] + ['vad.backend="webrtcvad"']  # no models: the node starts in ~1 s
STATUS = {"uptime": 0.0, "stages": {}, "queues": {}, "dropped": {}, "sources": {}}


def _sets(*items) -> list[str]:
    return sum([["--set", i] for i in items], [])


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory):
    """Quiet noise: the spine runs through it at recorded pace without an utterance."""
    path = tmp_path_factory.mktemp("wav") / "noise.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal(16000 * 30) * 30).astype(np.int16), 16000)
    return path


def _port(ep: str) -> int:
    return int(ep.rsplit(":", 1)[1])


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


@contextlib.contextmanager
def _zmtp_subscription(port: int, size: int):
    """Speak ZMTP 3.0 by hand (a SUB socket would keep the subscription in its own memory too),
    send one subscription frame of `size` bytes and stay connected (the subscription lives as
    long as the connection). Yields True if the peer cut us off mid-frame."""
    greeting = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" * 32
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
    frame = b"\x02" + struct.pack(">Q", size + 1) + b"\x01" + b"x" * size
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(greeting + bytes([0x04, len(ready)]) + ready)
        peer = b""  # read the peer's greeting and READY command
        while len(peer) < 66 or len(peer) < 66 + peer[65]:
            chunk = s.recv(4096)
            assert chunk, "the peer closed during the handshake"
            peer += chunk
        try:
            s.sendall(frame)  # far more than the socket buffers: only a reading peer takes it
            cut_off = False
        except (ConnectionResetError, BrokenPipeError):
            cut_off = True
        yield cut_off


def _first_status(ep: str, timeout_s: float = 30.0, **keys) -> dict | None:
    with Subscriber(ep, topics=["status"], **keys) as sub:
        return sub.recv(timeout_ms=int(timeout_s * 1000))


def test_a_20mb_subscription_frame_does_not_grow_the_node(noise_wav):
    ep = free_endpoint()
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "replay",
            str(noise_wav),
            "--speed",
            "1",
            "--endpoint",
            ep,
            "--quiet",
            *_sets(*SPINE, "publish.status_hz=10"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _first_status(ep) is not None, "the node never published"
        time.sleep(0.5)
        before = _rss_mb(node.pid)
        with _zmtp_subscription(_port(ep), 20_000_000) as cut_off:
            time.sleep(1.5)
            after = _rss_mb(node.pid)
            t0 = time.monotonic()
            still_publishing = _first_status(ep, timeout_s=3) is not None
            status_s = time.monotonic() - t0
    finally:
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=30)
    assert cut_off  # ZMQ_MAXMSGSIZE dropped the connection before reading it
    assert after - before < 50, (before, after)
    assert still_publishing and status_s < 2.0
    assert node.returncode == 130, err


def test_the_same_frame_grows_a_bare_pub_socket():
    """Control: the measurement sees the growth when nothing bounds the frame (2 MB here,
    ~200 MB of trie; the 20 MB frame costs gigabytes)."""
    code = (
        "import zmq,sys,time\ns=zmq.Context().socket(zmq.PUB)\n"
        "print(s.bind_to_random_port('tcp://127.0.0.1'),flush=True)\n"
        "while True: s.send(b'x'); time.sleep(0.05)"
    )
    pub = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(pub.stdout.readline())
        time.sleep(0.3)
        before = _rss_mb(pub.pid)
        with _zmtp_subscription(port, 2_000_000) as cut_off:
            time.sleep(1.5)
            grown = _rss_mb(pub.pid) - before
    finally:
        pub.kill()
        pub.wait()
    assert not cut_off and grown > 50, grown


@pytest.mark.parametrize("endpoint", ["tcp://*:{port}", "tcp://0.0.0.0:{port}", "tcp://eth0:{port}"])
def test_non_loopback_without_keys_is_refused_before_models_load(noise_wav, endpoint):
    ep = endpoint.format(port=_port(free_endpoint()))
    if "eth0" in ep and "eth0" not in {n for _, n in socket.if_nameindex()}:
        pytest.skip("no eth0 interface")
    t0 = time.monotonic()
    r = run_cli("replay", noise_wav, "--endpoint", ep)  # full perception: models would take 7-30 s
    elapsed = time.monotonic() - t0
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"robot-emotion: error: refusing to publish on {ep} without authentication")
    assert "loading" not in r.stderr and elapsed < 5


def test_busy_and_bad_endpoints_fail_in_one_line_before_models_load(noise_wav):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for ep, why in [
            (f"tcp://127.0.0.1:{port}", "Address already in use"),
            ("tcp://127.0.0.1:70000", "port must be 0..65535"),
            ("tcp://127.0.0.1", "must be tcp://HOST:PORT"),
            ("tcp://nosuch-interface:5556", "neither an address, an interface"),
        ]:
            t0 = time.monotonic()
            r = run_cli("replay", noise_wav, "--endpoint", ep)
            assert r.returncode == 2, (ep, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1 and why in r.stderr, r.stderr
            assert time.monotonic() - t0 < 5


def test_allow_insecure_binds_every_interface_and_warns_once(noise_wav, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(noise_wav, dtype="int16")[0][: 16000 * 3], 16000)
    ep = f"tcp://0.0.0.0:{_port(free_endpoint())}"
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "replay",
            str(short),
            "--speed",
            "1",
            "--endpoint",
            ep,
            *_sets(*SPINE, "publish.status_hz=10", "publish.allow_insecure=true"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    got = _first_status(f"tcp://127.0.0.1:{_port(ep)}")
    _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err
    assert got is not None  # it really bound and published
    warnings = [x for x in err.splitlines() if "warning" in x]
    assert warnings == [
        f"robot-emotion: warning: publishing WITHOUT authentication on {ep} "
        "(publish.allow_insecure = true): any host that reaches this port can subscribe"
    ]


def test_endpoint_policy_units():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("127.3.2.1") and is_loopback_host("[::1]")
    assert is_loopback_host("localhost") and is_loopback_host("lo")
    assert not any(is_loopback_host(h) for h in ("*", "0.0.0.0", "[::]", "192.168.1.10", "10.0.0.1"))
    assert parse_endpoint("ipc:///tmp/x.ipc").loopback and parse_endpoint("tcp://127.0.0.1:*").loopback
    with pytest.raises(UsageError):
        Publisher("tcp://*:5999", "s").start()  # a library Publisher is safe by default too


# ---- CURVE ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """`robot-emotion keys DIR` and the config lines it prints."""
    folder = tmp_path_factory.mktemp("keys") / "robot"
    r = run_cli("keys", folder)
    assert r.returncode == 0, r.stderr
    toml_lines = [x for x in r.stdout.splitlines() if not x.startswith("#")]
    return folder, tomllib.loads("\n".join(toml_lines))["publish"]


def test_keys_command_writes_private_secrets_and_never_overwrites(keys):
    folder, publish = keys
    assert publish["endpoint"] == "tcp://0.0.0.0:5556"
    assert publish["server_secret_key"] == str(folder.resolve() / "server.key_secret")
    for secret in ("server.key_secret", "client.key_secret"):
        assert stat.S_IMODE(os.stat(folder / secret).st_mode) == 0o600
    assert [p.name for p in (folder / "authorized_clients").iterdir()] == ["client.key"]
    again = run_cli("keys", folder)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    server_before = (folder / "server.key_secret").read_bytes()
    more = run_cli("keys", folder, "--client", "arm")
    assert more.returncode == 0, more.stderr
    assert sorted(p.name for p in (folder / "authorized_clients").iterdir()) == ["arm.key", "client.key"]
    assert (folder / "server.key_secret").read_bytes() == server_before  # the server pair is kept


def _curve_config(endpoint, publish):
    return load(
        None,
        overrides=[
            f'publish.endpoint="{endpoint}"',
            f'publish.server_secret_key="{publish["server_secret_key"]}"',
            f'publish.authorized_keys="{publish["authorized_keys"]}"',
        ],
    )[0].publish


def test_only_authorised_curve_clients_receive(keys, tmp_path):
    folder, publish = keys
    stranger_pub, stranger_secret = zmq.auth.create_certificates(tmp_path, "stranger")  # not authorised
    ep = free_endpoint()
    pub = Publisher(ep, "curve", status_hz=20, status_fn=lambda: dict(STATUS), options=_curve_config(ep, publish))
    pub.start()
    try:
        authorised = _first_status(
            ep, timeout_s=5, server_key=folder / "server.key", client_key=folder / "client.key_secret"
        )
        plain = _first_status(ep, timeout_s=1.5)
        stranger = _first_status(ep, timeout_s=1.5, server_key=folder / "server.key", client_key=stranger_secret)
    finally:
        pub.stop()
    assert authorised is not None and authorised["session"] == "curve"
    assert plain is None and stranger is None


def test_node_with_the_printed_config_publishes_beyond_loopback(keys, noise_wav, tmp_path):
    folder, publish = keys
    port = _port(free_endpoint())
    launch = tmp_path / "robot.toml"
    launch.write_text(
        f'[publish]\nendpoint = "tcp://0.0.0.0:{port}"\nserver_secret_key = "{publish["server_secret_key"]}"\n'
        f'authorized_keys = "{publish["authorized_keys"]}"\nstatus_hz = 10.0\n'
    )
    short = tmp_path / "short.wav"
    sf.write(short, sf.read(noise_wav, dtype="int16")[0][: 16000 * 3], 16000)
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robot_emotion",
            "replay",
            str(short),
            "--speed",
            "1",
            "--launch",
            str(launch),
            *_sets(*SPINE),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    got = _first_status(
        f"tcp://127.0.0.1:{port}", server_key=folder / "server.key", client_key=folder / "client.key_secret"
    )
    _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err
    assert got is not None and "warning" not in err


def test_key_config_errors_are_one_line(noise_wav, keys, tmp_path):
    folder, publish = keys
    half = run_cli("replay", noise_wav, *_sets(f'publish.server_secret_key="{publish["server_secret_key"]}"'))
    assert half.returncode == 2 and "go together" in half.stderr
    missing = run_cli(
        "replay",
        noise_wav,
        *_sets(
            f'publish.server_secret_key="{tmp_path}/none.key_secret"',
            f'publish.authorized_keys="{publish["authorized_keys"]}"',
        ),
    )
    assert missing.returncode == 3 and "key file not found" in missing.stderr
    empty = tmp_path / "nobody"
    empty.mkdir()
    nobody = run_cli(
        "replay",
        noise_wav,
        *_sets(f'publish.server_secret_key="{publish["server_secret_key"]}"', f'publish.authorized_keys="{empty}"'),
    )
    assert nobody.returncode == 3 and "no client public keys" in nobody.stderr
    for r in (half, missing, nobody):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_inbound_bound_leaves_room_for_the_curve_handshake():
    assert 300 < MAX_INBOUND_BYTES <= 4096
