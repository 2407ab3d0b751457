"""Who may talk to the PUB socket: endpoint policy, the inbound size bound, CURVE keys.

The only frames a PUB socket receives are subscriptions, and ZeroMQ keeps each one in a trie
that costs ~50 bytes of memory per byte of subscription and is never given back: one 20 MB
frame from any local process grew the node by 2.3 GB. ``MAX_INBOUND_BYTES`` (ZMQ_MAXMSGSIZE)
drops the connection of a peer that sends a bigger frame before it is read. Topics are at
most 17 bytes; the CURVE handshake needs ~300 bytes per command, hence 1 KiB.

Policy: a loopback endpoint (127.0.0.0/8, ::1, ``localhost``, ``lo``), ``ipc://`` and
``inproc://`` may be bound without keys. Any other address (``*``, ``0.0.0.0``, a LAN address,
an interface) needs CURVE keys -- the server's secret key and a folder of authorised client
public keys, enforced by a ZAP authenticator -- unless ``publish.allow_insecure = true``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from robot_emotion.errors import InputError, UsageError

MAX_INBOUND_BYTES = 1024
TRANSPORTS = ("tcp", "ipc", "inproc")
LOOPBACK_NAMES = ("localhost", "lo", "lo0")  # "lo"/"lo0": the loopback interface
AUTHORIZED_FOLDER = "authorized_clients"


@dataclass(frozen=True)
class Endpoint:
    url: str
    transport: str
    host: str | None  # tcp only
    loopback: bool  # reachable only from this machine
    ipv6: bool


def parse_endpoint(url: str) -> Endpoint:
    """Validate a bind endpoint (UsageError naming what is wrong)."""
    transport, sep, rest = url.partition("://")
    if not sep or transport not in TRANSPORTS:
        raise UsageError(f"publish.endpoint {url!r} must be tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    if not rest:
        raise UsageError(f"publish.endpoint {url!r} has no address")
    if transport != "tcp":
        return Endpoint(url, transport, None, True, False)
    host, sep, port = rest.rpartition(":")
    if not sep or not host or ";" in host:
        raise UsageError(f"publish.endpoint {url!r} must be tcp://HOST:PORT")
    if port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
        raise UsageError(f"publish.endpoint {url!r}: port must be 0..65535 or *")
    ipv6 = host.startswith("[")
    if ipv6 and not host.endswith("]"):
        raise UsageError(f"publish.endpoint {url!r}: unbalanced [ ] around the IPv6 address")
    try:
        loopback = is_loopback_host(host)
    except ValueError:
        raise UsageError(
            f"publish.endpoint {url!r}: {host!r} is neither an address, an interface nor a known host name"
        ) from None
    return Endpoint(url, transport, host, loopback, ipv6)


def is_loopback_host(host: str) -> bool:
    """True only if binding `host` cannot accept connections from another machine
    (ValueError: a name that is neither an interface nor resolvable)."""
    if host == "*":
        return False
    name = host[1:-1] if host.startswith("[") else host
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        addr = None
    if addr is not None:
        mapped = getattr(addr, "ipv4_mapped", None)
        return addr.is_loopback or bool(mapped and mapped.is_loopback)
    if name in LOOPBACK_NAMES:
        return True
    if name in {n for _, n in socket.if_nameindex()}:
        return False  # a real network interface
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        raise ValueError(f"unknown host {name!r}") from None
    return bool(infos) and all(is_loopback_host(i[4][0]) for i in infos)


def check_ipc_free(endpoint: str, what: str = "publish.endpoint") -> None:
    """ZeroMQ binds an ipc:// path by unlinking whatever is there: a second node would quietly
    take a live node's path (its subscribers lost). A socket file that accepts a connection is in
    use (UsageError); a stale one, left by a killed node, is taken over as before."""
    import stat

    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://") :]
    try:
        if path.startswith("@") or not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # abstract (the kernel refuses a second bind) or not a socket yet
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return  # refused: nobody listens there any more
    finally:
        probe.close()
    raise UsageError(f"{what} {endpoint} is in use by a running socket (another node?): stop it or choose another path")


def same_endpoint(a: str, b: str) -> bool:
    """Would binding both conflict? (the same ipc path, or one tcp port on a shared address)"""
    ta, _, ra = a.partition("://")
    tb, _, rb = b.partition("://")
    if ta != tb:
        return False
    if ta != "tcp":
        return os.path.abspath(ra) == os.path.abspath(rb) if ta == "ipc" else ra == rb
    (ha, _, pa), (hb, _, pb) = ra.rpartition(":"), rb.rpartition(":")
    if pa != pb or pa in ("*", "0"):
        return False
    wild = ("*", "0.0.0.0", "[::]")
    norm = {"localhost": "127.0.0.1", "[::1]": "::1"}
    return norm.get(ha, ha) == norm.get(hb, hb) or ha in wild or hb in wild


def bound_is_loopback(last_endpoint: str) -> bool:
    """Check what ZeroMQ actually bound (LAST_ENDPOINT, e.g. tcp://0.0.0.0:5556)."""
    transport, _, rest = last_endpoint.partition("://")
    if transport != "tcp":
        return transport in TRANSPORTS
    return is_loopback_host(rest.rpartition(":")[0])


# ---- keys --------------------------------------------------------------------------------
def _valid_key(key: bytes | None) -> bool:
    from zmq.utils import z85

    if key is None or len(key) != 40:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def load_key_file(path: str | os.PathLike, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) from a zmq certificate file; InputError if unreadable or invalid."""
    import zmq.auth

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"key file not found: {path}")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read key file {path}: {e}") from None
    if not _valid_key(public) or (secret and not _valid_key(secret_key)):
        what = "secret key (.key_secret)" if secret else "public key"
        raise InputError(f"{path} holds no valid CURVE {what}")
    return public, secret_key


def load_public_key(spec: str | bytes | os.PathLike) -> bytes:
    """A 40-character Z85 key as given, or the public key in a certificate file."""
    text = spec.decode() if isinstance(spec, bytes) else str(spec)
    if not Path(text).expanduser().is_file() and _valid_key(text.encode()):
        return text.encode()
    return load_key_file(text, secret=False)[0]


def authorized_client_keys(folder: str | os.PathLike) -> list[bytes]:
    """The public keys (*.key) in the authorised folder; InputError if there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"authorised client key folder not found: {folder}")
    keys = [load_key_file(p, secret=False)[0] for p in sorted(folder.glob("*.key"))]
    if not keys:
        raise InputError(f"no client public keys (*.key) in {folder}: nobody could subscribe")
    return keys


def check_key_modes(secret_key: str | os.PathLike, authorized: str | os.PathLike) -> None:
    """Refuse (InputError, with the chmod that fixes it) a secret key other users may read --
    they could impersonate the node -- and an authorised folder others may write to -- they
    could admit themselves. As ssh does for its keys."""
    import stat

    key, folder = Path(secret_key).expanduser(), Path(authorized).expanduser()
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        raise InputError(
            f"publish.server_secret_key {key} is readable by others (mode {mode:04o}): run chmod 600 {key}"
        )
    for path in (folder, *folder.glob("*.key")):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o022:
            raise InputError(
                f"publish.authorized_keys: {path} is writable by others (mode {mode:04o}): run chmod go-w {path}"
            )


@dataclass(frozen=True)
class ServerSecurity:
    """What the Publisher applies to its socket; built by `server_security` (checks everything)."""

    endpoint: Endpoint
    public_key: bytes | None = None
    secret_key: bytes | None = None
    authorized: str | None = None  # folder of client public keys
    insecure: bool = False  # non-loopback, no keys, allowed by the config

    @property
    def curve(self) -> bool:
        return self.secret_key is not None


def server_security(
    endpoint: str, server_secret_key: str = "", authorized_keys: str = "", allow_insecure: bool = False
) -> ServerSecurity:
    ep = parse_endpoint(endpoint)
    if bool(server_secret_key) != bool(authorized_keys):
        raise UsageError(
            "publish.server_secret_key and publish.authorized_keys go together "
            "(create both with: robot-emotion keys DIR)"
        )
    if server_secret_key:
        if ep.transport == "inproc":
            raise UsageError("CURVE keys need a tcp:// or ipc:// publish.endpoint, not inproc://")
        try:
            public, secret = load_key_file(server_secret_key, secret=True)
        except InputError as e:
            raise InputError(f"publish.server_secret_key: {e}") from None
        try:
            authorized_client_keys(authorized_keys)
        except InputError as e:
            raise InputError(f"publish.authorized_keys: {e}") from None
        check_key_modes(server_secret_key, authorized_keys)
        return ServerSecurity(ep, public, secret, str(Path(authorized_keys).expanduser()))
    if not ep.loopback and not allow_insecure:
        raise UsageError(
            f"refusing to publish on {endpoint} without authentication: it is reachable from "
            "other machines; set publish.server_secret_key and publish.authorized_keys "
            "(robot-emotion keys DIR), bind 127.0.0.1, or set publish.allow_insecure = true"
        )
    return ServerSecurity(ep, insecure=not ep.loopback)


def insecure_warning(bound: str) -> str:
    return (
        f"robot-emotion: warning: publishing WITHOUT authentication on {bound} "
        "(publish.allow_insecure = true): any host that reaches this port can subscribe"
    )


def server_context(zmq, endpoint: str, given=None):
    """(context, own) for a node's server socket. A context of its own, terminated when the
    socket closes, frees the port by the time the server's stop() returns; closing a socket on a
    shared context releases it later, in ZeroMQ's I/O thread, and a node restarted at once could
    not bind. inproc:// must share the process context (or ``given``) to be reachable."""
    own = given is None and not endpoint.startswith("inproc://")
    return (zmq.Context() if own else given or zmq.Context.instance()), own


def configure_server_socket(sock, sec: ServerSecurity) -> None:
    """Options to set before bind: inbound size bound, IPv6, CURVE server keys."""
    import zmq

    sock.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_BYTES)
    if sec.endpoint.ipv6:
        sock.setsockopt(zmq.IPV6, 1)
    if sec.curve:
        sock.curve_secretkey = sec.secret_key
        sock.curve_publickey = sec.public_key
        sock.curve_server = True


def start_authenticator(ctx, sec: ServerSecurity):
    """A ZAP handler on `ctx` that admits only the authorised client keys (None without CURVE)."""
    if not sec.curve:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=sec.authorized)
    return auth


def configure_client_socket(sock, server_key, client_key) -> None:
    """CURVE on a SUB socket: the server's public key + this client's .key_secret file."""
    if server_key is None and client_key is None:
        return
    if server_key is None or client_key is None:
        raise UsageError("CURVE needs both the server public key and the client key pair (.key_secret)")
    public, secret = load_key_file(client_key, secret=True)
    sock.curve_serverkey = load_public_key(server_key)
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def create_keys(folder: str | os.PathLike, client: str = "client") -> dict[str, Path]:
    """Server pair (kept if present) + one client pair, its public key in the authorised folder."""
    import shutil

    import zmq.auth

    folder = Path(folder).expanduser()
    if not client or "/" in client or client.startswith(".") or client == "server":
        raise UsageError(f"client name {client!r} must be a plain file name other than 'server'")
    if (folder / f"{client}.key").exists() or (folder / f"{client}.key_secret").exists():
        raise UsageError(f"{folder / client}.key already exists: refusing to overwrite keys")
    authorized = folder / AUTHORIZED_FOLDER
    old_umask = os.umask(0o077)  # secret key files readable by their owner only
    try:
        authorized.mkdir(parents=True, exist_ok=True)
        if not (folder / "server.key_secret").exists():
            zmq.auth.create_certificates(folder, "server")
        client_public, _ = zmq.auth.create_certificates(folder, client)
        shutil.copy(client_public, authorized / f"{client}.key")
    except OSError as e:
        raise InputError(f"cannot write keys to {folder}: {e}") from None
    finally:
        os.umask(old_umask)
    return {
        "server_public": folder / "server.key",
        "server_secret": folder / "server.key_secret",
        "client_secret": folder / f"{client}.key_secret",
        "authorized": authorized,
    }
