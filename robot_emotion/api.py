"""Embedding API: run the node inside another program (README "Embedding the node").

    from robot_emotion import EmotionNode
    with EmotionNode.replay("session/", speed="max") as node:     # or EmotionNode.live(...)
        for msg in node.messages():          # every published body (a dict), in publish order
            if msg["topic"] == "emotion" and msg["final"]:
                print(msg["speaker"], msg["label"])
    # leaving the block stops the node the way SIGINT does and waits for its threads

The node runs runner.replay()/live() in a background thread, exactly as the CLI does (the
ZeroMQ publisher included); a sink on the publisher thread copies each body into a queue the
program reads with ``messages()``/``get()``. That queue is unbounded so the publisher never
waits for the program and nothing is dropped: a program that reads slowly only lets messages
pile up, counted in ``status()["api"]`` (``pending`` now, ``peak_pending`` the most so far). Once
``max_pending`` messages are waiting (default 20000, about an hour of every topic), the node
is stopped as on SIGINT and the program gets a RobotEmotionError after the messages queued so
far: memory stays bounded, and no message is silently lost. ``topics`` keeps only the topics
the program wants (ZeroMQ-style prefixes).

Failures are robot_emotion.errors exceptions, raised in the program's thread: a bad config at
once (UsageError / ConfigError, InputError for a missing model), a failure while starting
(missing recording, busy endpoint, broken checkpoint) from ``replay()``/``live()`` while they
wait for the node's ``ready``, and a failure while running from ``messages()``/``get()`` after
the messages published before it, or from ``stop()`` / the end of the ``with`` block.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

from robot_emotion.errors import RobotEmotionError, UsageError, as_exception

_END = object()
DEFAULT_MAX_PENDING = 20_000  # ~an hour of face (5 Hz) + status (1 Hz) bodies, ~80 MB


def resolve_config(
    config=None,
    overrides: Sequence[str] | Mapping[str, object] = (),
    calibration=None,
    default_launch: str | None = None,
):
    """A Config from a launch profile path (None: ``default_launch``), a Config object, plus
    overrides: ``["asr.enabled=false"]`` as with ``--set``, or ``{"asr.enabled": False}``."""
    from robot_emotion import config as C

    if isinstance(overrides, Mapping):
        overrides = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    elif isinstance(overrides, str):
        raise UsageError("overrides must be a list of 'section.key=value' strings or a dict, not one string")
    overrides = list(overrides)
    if isinstance(config, C.Config):
        if calibration is not None:
            raise UsageError("calibration= goes with a launch profile path; a Config is already resolved")
        cfg = config
        for item in overrides:
            cfg = C.merge(cfg, C.parse_override(item), origin="overrides")
        C.check_consistent(cfg)
        C.check_paths(cfg)  # the same checks as load(): a missing model is InputError now
        return cfg
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise UsageError(f"config must be a launch profile path, a Config or None, got {type(config).__name__}")
    return C.load(config if config is not None else default_launch, calibration, overrides)[0]


class EmotionNode:
    """A running node; create it with ``EmotionNode.replay(...)`` or ``EmotionNode.live(...)``."""

    def __init__(
        self,
        mode: str,
        cfg,
        run: Callable,
        *,
        topics: Sequence[str] | None = None,
        max_pending: int | None = DEFAULT_MAX_PENDING,
        wait_ready: bool = True,
    ):
        if max_pending is not None and max_pending < 1:
            raise UsageError(f"max_pending must be a positive number of messages or None, got {max_pending}")
        if isinstance(topics, str):
            topics = [topics]
        self.mode, self.config = mode, cfg
        self.topics = None if topics is None else tuple(topics)
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop_event = threading.Event()  # the event SIGINT sets in the CLI
        self._ready = threading.Event()  # set at the `ready` message, or when the run ends
        self._ready_seen = False
        self._node = None
        self._failure: RobotEmotionError | None = None
        self._failure_reported = False
        self._end_seen = False
        self.delivered = 0  # messages the program has taken
        self.queued = 0  # messages put in the queue (by the publisher thread)
        self.peak_pending = 0
        self._thread = threading.Thread(target=self._run, args=(run,), name=f"robot-emotion-{mode}", daemon=True)
        self._thread.start()
        if wait_ready:
            self.wait_ready()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def replay(
        cls,
        source,
        config=None,
        *,
        overrides=(),
        calibration=None,
        speed="max",
        resample: bool = False,
        sinks=(),
        topics=None,
        max_pending=DEFAULT_MAX_PENDING,
        wait_ready: bool = True,
    ) -> EmotionNode:
        """Replay a session folder, a video or an audio file (``robot-emotion replay``).
        config: a launch profile path (default launch/replay.toml), a Config, or None."""
        from robot_emotion.paths import launch_path
        from robot_emotion.sources.replay import check_speed

        cfg = resolve_config(config, overrides, calibration, launch_path("replay.toml"))
        speed = check_speed(speed)

        def run(runner, deliver, stop_event, on_node):
            return runner.replay(
                cfg,
                str(source),
                speed=speed,
                sinks=[deliver, *sinks],
                resample=resample,
                progress=None,
                stop_event=stop_event,
                on_node=on_node,
            )

        return cls("replay", cfg, run, topics=topics, max_pending=max_pending, wait_ready=wait_ready)

    @classmethod
    def live(
        cls,
        config=None,
        *,
        overrides=(),
        calibration=None,
        record_to=None,
        duration=None,
        sinks=(),
        topics=None,
        max_pending=DEFAULT_MAX_PENDING,
        wait_ready: bool = True,
    ) -> EmotionNode:
        """Perceive the microphone and camera of the config (``robot-emotion run``, or ``record``
        with ``record_to``) until ``stop()``, ``duration`` seconds, or a lost device.
        config: a launch profile path (default launch/robot.toml), a Config, or None."""
        from robot_emotion.paths import launch_path

        cfg = resolve_config(config, overrides, calibration, launch_path("robot.toml"))
        if duration is not None and not (isinstance(duration, (int, float)) and 0 < duration < float("inf")):
            raise UsageError(f"duration must be a positive number of seconds, got {duration!r}")

        def run(runner, deliver, stop_event, on_node):
            return runner.live(
                cfg,
                record_to=record_to,
                duration=duration,
                sinks=[deliver, *sinks],
                stop_event=stop_event,
                on_node=on_node,
            )

        return cls("live", cfg, run, topics=topics, max_pending=max_pending, wait_ready=wait_ready)

    # ---- the background thread ----------------------------------------------------------
    def _run(self, run: Callable) -> None:
        try:
            from robot_emotion.node import runner

            node = run(runner, self._deliver, self._stop_event, self._attach)
            self._node = node
            if node.errors and self._failure is None:
                self._failure = as_exception(node.errors[0])  # as the CLI: commands._finish
        except RobotEmotionError as e:
            self._failure = e
        except Exception as e:  # a bug, not a user error: still one exception in the program
            self._failure = RobotEmotionError(f"{type(e).__name__}: {e}")
            self._failure.__cause__ = e
        finally:
            self._queue.put(_END)
            self._ready.set()

    def _attach(self, node) -> None:
        self._node = node

    def _deliver(self, body: dict) -> None:
        """Publisher thread: never blocks (the queue is unbounded)."""
        if self.topics is None or any(body["topic"].startswith(t) for t in self.topics):
            self._queue.put(body)
            self.queued += 1
            pending = self.queued - self.delivered
            self.peak_pending = max(self.peak_pending, pending)
            if self.max_pending is not None and pending >= self.max_pending and self._failure is None:
                self._failure = RobotEmotionError(
                    f"the program fell {pending} messages behind (max_pending={self.max_pending}): "
                    "the node was stopped; every message published before that was kept"
                )
                self._stop_event.set()
        if body["topic"] == "ready":
            self._ready_seen = True
            self._ready.set()

    # ---- the program's side -------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> bool:
        """Until the models are loaded and the node perceives (its ``ready`` message); raises
        what made it fail to start. False if ``timeout`` passed first."""
        if not self._ready.wait(timeout):
            return False
        if not self._ready_seen:  # the run ended before it was ready: say why
            self._thread.join()
            self._report_failure()
        return True

    def messages(self, timeout: float | None = None) -> Iterator[dict]:
        """The published bodies in publish order. The iteration ends when the node has stopped
        and every message was taken (then a failure is raised, if the run failed), or when
        ``timeout`` seconds pass without a message (the node may still run: see ``running``)."""
        while True:
            msg = self.get(timeout)
            if msg is None:
                return
            yield msg

    def get(self, timeout: float | None = None) -> dict | None:
        """The next message, or None after ``timeout`` seconds or at the end (see messages())."""
        if self._end_seen:
            self._report_failure(again=True)
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._end_seen = True
            self._report_failure(again=True)
            return None
        self.delivered += 1
        return item

    def stop(self, timeout: float | None = None) -> None:
        """Stop as SIGINT stops the CLI (replay: the item in hand is finished, the rest skipped;
        live: what was heard is finished) and wait for every thread of the node. Messages
        published until then stay readable. Raises a failure of the run not yet raised."""
        self._stop_event.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RobotEmotionError(f"the node did not stop within {timeout} s")
        self._report_failure()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the run ends by itself (a replay's end, live ``duration``); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def control(self, cmd: str, **fields) -> dict:
        """A control request applied in-process (robot.speaking, mute, unmute, reset, ping;
        README "ZeroMQ API"), the same as client.Controller over the control socket."""
        node = self._node
        if node is None or not self._ready.is_set():
            raise RobotEmotionError("the node is still loading its models")
        try:
            return node.on_control({"cmd": cmd, **fields})
        except ValueError as e:
            raise UsageError(str(e)) from None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def interrupted(self) -> bool:
        """Stopped by stop() (or max_pending) rather than by its end."""
        return bool(getattr(self._node, "interrupted", False))

    @property
    def errors(self) -> list[str]:
        """The run's failures, one line each (empty while all is well)."""
        lines = list(getattr(self._node, "errors", []))
        if self._failure is not None and str(self._failure) not in lines:
            lines.append(str(self._failure))
        return lines

    @property
    def node(self):
        """The node.core.Node (None while the models load)."""
        return self._node

    def status(self) -> dict:
        """The node's ``status`` body (README "ZeroMQ API") + ``api``: this queue's figures."""
        api = {
            "state": "running" if self.running else "stopped",
            "delivered": self.delivered,
            "pending": self.queued - self.delivered,
            "peak_pending": self.peak_pending,
        }
        node = self._node
        if node is None:
            return {"api": {**api, "state": "loading" if self.running else "stopped"}}
        return {**node.status(), "api": api}

    def _report_failure(self, again: bool = False) -> None:
        """Raise the run's failure: messages() at every end, stop()/with only once."""
        if self._failure is not None and (again or not self._failure_reported):
            self._failure_reported = True
            raise self._failure

    def __enter__(self) -> EmotionNode:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop_event.set()
        self._thread.join()
        if exc_type is None:
            self._report_failure()


__all__ = ["EmotionNode", "resolve_config"]
