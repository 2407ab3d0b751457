"""Wire a Node to its sources for the three ways of running it: live, record, replay."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

from robot_emotion.clock import VirtualClock, WallClock
from robot_emotion.config import Config
from robot_emotion.errors import DeviceLost, Failure, UsageError, say
from robot_emotion.node.core import Node
from robot_emotion.bus.publish import check_endpoint
from robot_emotion.sources.camera import CameraSource
from robot_emotion.sources.microphone import MicrophoneSource, SourceError
from robot_emotion.sources.replay import ReplaySource, open_recording
from robot_emotion.sources.session import SessionWriter


class JsonlSink:
    """Writes every published body as one JSON line (``--out``); flushed per line."""

    def __init__(self, path: str | Path):
        self.name = str(path)
        self.check_path(path)
        try:  # "-": stdout, closed by nobody (the readable lines are then not printed)
            self.f = sys.stdout if str(path) == "-" else open(path, "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--out {path}: cannot write it ({e.strerror or e})") from None
        self._lock = threading.Lock()

    @staticmethod
    def check_path(path: str | Path) -> None:
        """--out must name a file in an existing folder (or be -): refused before any model loads (exit 2)."""
        if str(path) == "-":
            return
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"--out {path} is a folder; give the path of a file for the JSON lines")
        if not p.parent.is_dir():
            raise UsageError(f"--out {path}: folder {p.parent} does not exist")

    def __call__(self, body: dict) -> None:
        with self._lock:
            self.f.write(json.dumps(body, separators=(",", ":")) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is sys.stdout:
            self.f.flush()
            return
        try:
            self.f.close()
        except OSError:  # the failure was already reported when a write failed
            pass


def _log(line: str) -> None:
    say(f"# {line}")


def build_perception(cfg: Config, has_video: bool, log=_log):
    """The perception stages (ASR, speakers, faces, emotion) configured in cfg, or None."""
    try:
        from robot_emotion.node.perception import Perception
    except ImportError:
        return None
    t0 = time.monotonic()
    perception = Perception.from_config(cfg, has_video=has_video, log=log)
    if perception is not None and log is not None:
        log(f"models loaded in {time.monotonic() - t0:.1f} s")
    return perception


def _ready(node: Node, load_s: float, devices: dict | None = None) -> None:
    """Models loaded, devices open: the node is perceiving from now on (session time t)."""
    models = {}
    if node.perception is not None:
        p = node.perception
        models = {
            "asr": p.asr is not None,
            "speakers": p.speakers is not None,
            "faces": p.faces is not None,
            "emotion": p.emotion is not None,
        }
    # unix_start: a capture time t happened at unix_start + t (replay: the recording's own
    # origin, null for a media file that has none); config_digest: which settings ran
    node.publisher.publish(
        {
            "topic": "ready",
            "t": node.clock.now(),
            "mode": node.mode,
            "devices": devices if devices is not None else {s.name: s.state for s in node.sources},
            "models": models,
            "load_s": round(load_s, 3),
            "unix_start": node.clock.unix_start or None,
            "config_digest": node.config_digest,
            "language": {"asr": node.cfg.asr.language, "text": "en"},
        }
    )
    _log(f"ready: {node.mode} session {node.session_id}")


class _Signals:
    """SIGINT/SIGTERM set an event instead of raising, so the session is finalised. An
    embedding program (api.py) passes its own event and sets it to stop the same way."""

    def __init__(self, event: threading.Event | None = None):
        self.event = event if event is not None else threading.Event()
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class ReplayProgress:
    """Where the replay reader is, over the recording's duration, on stderr: a tqdm bar where
    stderr is a terminal of its own (``--quiet``, or stdout redirected: the bar would cut
    through the printed messages), else one ``# replay: ...`` line every 10 s."""

    def __init__(self, duration: float, clock, quiet: bool, every_s: float = 10.0):
        import os
        import sys

        self.duration, self.clock, self.every_s = duration, clock, every_s
        self._next = time.monotonic() + every_s
        self.bar = None
        try:
            same = os.isatty(1) and os.path.samestat(os.fstat(1), os.fstat(2))
            tty = sys.stderr.isatty()
        except (OSError, ValueError):
            same, tty = False, False
        if tty and (quiet or not same):
            from tqdm import tqdm

            self.bar = tqdm(
                total=round(duration, 1),
                unit="s",
                desc="replay",
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]",
            )

    def update(self) -> None:
        t = min(self.clock.now(), self.duration)
        if self.bar is not None:
            self.bar.update(round(t, 1) - self.bar.n)
        elif time.monotonic() >= self._next:
            self._next += self.every_s
            _log(f"replay: {t:.1f} of {self.duration:.1f} s read ({100 * t / max(self.duration, 1e-9):.0f}%)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _drain_progress(n_queued: int) -> None:
    _log(f"finishing: {n_queued} queued item(s) left")


def replay(
    cfg: Config,
    source: str,
    speed: str | float = "max",
    sinks=(),
    resample: bool = False,
    perception="auto",
    progress=_drain_progress,
    stop_event: threading.Event | None = None,
    on_node=None,
    stall_s: float = 120.0,
    control: bool = False,
    show_progress: str | None = None,
) -> Node:
    """Replay a recording through the node; returns the stopped node (for its stats).
    ``stop_event`` set = SIGINT; ``on_node(node)`` is called once the node exists (api.py).
    ``control``: serve control.endpoint as live does (a controller's tests on recordings);
    ``show_progress`` ("quiet": no messages printed, or "printing"): the reader's position over
    the recording's duration on stderr (ReplayProgress)."""
    check_endpoint(cfg.publish)  # a bad, busy or unauthenticated endpoint fails before models load
    t_load = time.monotonic()
    rec = open_recording(source, resample=resample, bag=cfg.bag)
    server = _start_control(cfg) if control else None
    try:
        return _replay(
            cfg,
            rec,
            source,
            speed,
            sinks,
            perception,
            progress,
            stop_event,
            on_node,
            stall_s,
            server,
            t_load,
            show_progress,
        )
    finally:
        if server is not None:
            server.stop()


def _replay(
    cfg, rec, source, speed, sinks, perception, progress, stop_event, on_node, stall_s, server, t_load, show_progress
) -> Node:
    for note in rec.notes:  # a recorded video that will not be replayed, and why
        _log(note)
    clock = VirtualClock(rec.meta.get("unix_start", 0.0))
    has_video = rec.frames is not None and cfg.camera.enabled and cfg.faces.enabled
    if perception == "auto":
        perception = build_perception(cfg, has_video)
    node = Node(
        cfg, clock, mode="replay", session_id=cfg.node.session_id or rec.session_id, perception=perception, sinks=sinks
    )
    node.realtime = speed != "max"  # as fast as possible: faces and turns run side by side
    if server is not None:
        server.node = node
        node.control_server = server
    if on_node is not None:
        on_node(node)
    src = ReplaySource(
        rec,
        clock,
        node.audio_q,
        node.feed_frame if has_video else None,
        speed,
        cfg.microphone.block_ms,
        cfg.av.offset_ms / 1000.0,
    )
    with _Signals(stop_event) as interrupted:
        # ready before the reader moves the clock: replay's session time starts at 0
        node.start(
            [src],
            has_video=has_video,
            before_sources=lambda: _ready(node, time.monotonic() - t_load, {"replay": source}),
        )
        bar = ReplayProgress(rec.duration, clock, show_progress == "quiet") if show_progress else None
        while not (src.done.is_set() or interrupted.is_set() or node.errors):
            src.done.wait(0.1)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        if src.done.is_set() and not interrupted.is_set():
            node.finish_input()
        reason = "interrupted" if interrupted.is_set() else "error" if src.error else "end of input"
        node.stop(drain=not interrupted.is_set(), progress=progress, stall_s=stall_s, reason=reason)
    if src.error:
        node.errors.append(Failure(src.error))
    node.interrupted = interrupted.is_set()
    return node


class _AsLiveInput:
    """A recording fed to a live node as its devices would feed it: audio blocks into the bounded
    queue without waiting (a full queue counts an overflow), frames into the latest-frame slot."""

    def __init__(self, node: Node):
        self.node = node

    def put(self, block, stop) -> bool:  # ReplaySource's audio sink
        self.node.audio_q.put_nowait(block)
        return True

    def frame(self, frame) -> bool:  # ... and its frame sink
        self.node.slot.put(frame)
        return True


def paced_live(cfg: Config, source, sinks=(), perception="auto", on_node=None, stall_s: float = 120.0) -> Node:
    """A recording at recorded pace through a node in LIVE mode: what a robot would see, load
    shedding included (node/load.py), with the same audio every time. For the bench and soak runs
    under contention (``robot-emotion bench --contention N``); ``replay`` never does this (a replay's
    events must not depend on the machine). ``source``: a path or a sources.replay.Recording.
    The session clock is the recording's capture time, so messages carry the recorded times."""
    t_load = time.monotonic()
    rec = open_recording(source, bag=cfg.bag) if isinstance(source, (str, Path)) else source
    clock = VirtualClock(rec.meta.get("unix_start", 0.0))
    has_video = rec.frames is not None and cfg.camera.enabled and cfg.faces.enabled
    if perception == "auto":
        perception = build_perception(cfg, has_video)
    node = Node(
        cfg, clock, mode="live", session_id=cfg.node.session_id or rec.session_id, perception=perception, sinks=sinks
    )
    if on_node is not None:
        on_node(node)
    feed = _AsLiveInput(node)
    src = ReplaySource(
        rec, clock, feed, feed.frame if has_video else None, 1.0, cfg.microphone.block_ms, cfg.av.offset_ms / 1000.0
    )
    node.start(
        [src], has_video=has_video, before_sources=lambda: _ready(node, time.monotonic() - t_load, {"paced": rec.name})
    )
    while not (src.done.is_set() or node.errors):
        src.done.wait(0.1)
    node.stop(drain=True, stall_s=stall_s, reason="end of input" if src.done.is_set() else "error")
    if src.error:
        node.errors.append(Failure(src.error))
    node.interrupted = False
    return node


class _MicrophoneWatch:
    """A microphone that stops delivering is reopened once a second; the node keeps running
    (and says so: ``device`` messages, session.json) until microphone.lost_grace_s has passed."""

    def __init__(self, mic, node, grace_s: float):
        self.mic, self.node, self.grace_s = mic, node, grace_s
        self.lost_at: float | None = None
        self._next_try = 0.0

    def check(self, t: float) -> bool:
        """False once the microphone has been gone longer than the grace period."""
        if self.lost_at is None:
            if self.mic.check_alive():
                return True
            self.lost_at, self._next_try = t, time.monotonic() + 1.0
            self.node.device_event("microphone", "lost", t)
        if time.monotonic() >= self._next_try:
            self._next_try = time.monotonic() + 1.0
            if self.mic.reopen():
                self.lost_at = None
                self.node.device_event("microphone", "restored", t)
                return True
        if t - self.lost_at > self.grace_s:
            self.node.errors.append(
                Failure(
                    f"device lost: microphone stopped delivering data (not back after {self.grace_s:g} s)", DeviceLost
                )
            )
            return False
        return True


def live(
    cfg: Config,
    record_to: str | Path | None = None,
    duration: float | None = None,
    sinks=(),
    provenance: dict | None = None,
    stop_event: threading.Event | None = None,
    on_node=None,
) -> Node:
    """Run on live devices until SIGINT/SIGTERM (or ``stop_event``), `duration` seconds, or a
    device is lost. ``on_node(node)`` is called once the node exists (api.py)."""
    check_endpoint(cfg.publish)  # a bad, busy or unauthenticated endpoint fails before models load
    t_load = time.monotonic()
    use_cam = cfg.camera.enabled
    # Models first: the session clock starts when the node can perceive (the `ready` message),
    # not during the 10-15 s of loading (a recording would start with that much dead air).
    control = _start_control(cfg)  # before models load: a busy endpoint fails at once
    try:
        perception = build_perception(cfg, use_cam and cfg.faces.enabled)
    except BaseException:
        if control is not None:
            control.stop()
        raise
    clock = WallClock()
    node_sinks = list(sinks)
    writer = None
    session_id = cfg.node.session_id or time.strftime("%Y%m%d-%H%M%S")
    if record_to is not None:
        devices = {"microphone": cfg.microphone.device or "default", "camera": cfg.camera.source if use_cam else None}
        cfg_dict = cfg.to_dict()
        writer = SessionWriter(
            record_to,
            session_id,
            clock.unix_start,
            cfg_dict,
            devices,
            fps=cfg.camera.fps,
            private=cfg.node.private_sessions,
        )
        writer._meta["provenance"] = provenance
        node_sinks.append(writer.write_event)
    node = Node(cfg, clock, mode="live", session_id=session_id, perception=perception, sinks=node_sinks)
    if writer is not None:
        node.recorders.append(writer)
    if control is not None:
        control.node = node
        node.control_server = control  # its state shows in status; its death ends the run
    if on_node is not None:
        on_node(node)
    sources = []
    if cfg.microphone.enabled:
        sources.append(MicrophoneSource(cfg.microphone, clock, node.audio_q, writer))
    if use_cam:
        sources.append(
            CameraSource(cfg.camera, clock, node.slot, cfg.av.offset_ms / 1000.0, writer, on_state=node.device_event)
        )
    if not sources:
        if control is not None:  # (its thread would hold the endpoint in an embedding program)
            control.stop()
        if writer is not None:
            writer.close()
        raise SourceError("no source enabled: enable the microphone and/or the camera")
    mic = next((s for s in sources if s.name == "microphone"), None)
    mic_watch = _MicrophoneWatch(mic, node, cfg.microphone.lost_grace_s) if mic is not None else None
    try:
        with _Signals(stop_event) as interrupted:
            try:
                node.start(sources, has_video=use_cam and cfg.faces.enabled)
            except BaseException:  # a device that does not open: no stage thread outlives it
                node.stop(drain=False, reason="error")
                raise
            _ready(node, time.monotonic() - t_load)
            t_end = None if duration is None else clock.now() + duration
            reason = "stopped"
            while not interrupted.is_set() and not node.errors:
                if t_end is not None and clock.now() >= t_end:
                    reason = "duration"
                    break
                if mic_watch is not None and not mic_watch.check(clock.now()):
                    break
                if control is not None and control.state == "failed":
                    node.errors.append(Failure(control.died or f"control socket {control.endpoint} stopped"))
                    break
                interrupted.wait(0.1)
            node.stop(drain=True, progress=_drain_progress, reason="interrupted" if interrupted.is_set() else reason)
            node.interrupted = interrupted.is_set()
    finally:
        if control is not None:
            control.stop()
        if writer is not None:
            writer.close()
    return node


def _start_control(cfg: Config):
    """The controllers' socket (bus/control.py); requests before the node is ready are refused."""
    if not cfg.control.enabled:
        return None
    from robot_emotion.bus.control import ControlServer

    def handle(req):
        node = getattr(server, "node", None)
        if node is None:
            raise ValueError("the node is still loading its models")
        return node.on_control(req)

    server = ControlServer(cfg.control.endpoint, handle, publish_endpoint=cfg.publish.endpoint)
    server.start()
    return server


__all__ = ["replay", "live", "JsonlSink"]
