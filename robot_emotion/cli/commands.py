"""The CLI's sub-commands (argument parsing lives in cli.py)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from robot_emotion.errors import CommandError, as_exception, printable
from robot_emotion.cli.monitor import format_event
from robot_emotion.paths import check_output_folder, demo_session_path


def load_config(args):
    """The config from --launch / --calibration / --set (+ --model / --endpoint shortcuts)."""
    from robot_emotion import config as C

    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.append(f'emotion.model="{args.model}"')
    if getattr(args, "endpoint", None):
        overrides.append(f'publish.endpoint="{args.endpoint}"')
    return C.load(args.launch, args.calibration, overrides)


class _Printer:
    name = "stdout"

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, body: dict) -> None:
        if not self.quiet:
            line = format_event(body)
            if line:
                print(printable(line), flush=True)  # ids and text from a recording, escaped


def _sinks(args):
    from robot_emotion.node.runner import JsonlSink

    # --out -: the JSON lines own stdout, so the readable lines are not printed there too
    quiet = getattr(args, "quiet", False) or getattr(args, "out", None) == "-"
    sinks, closers = [_Printer(quiet)], []
    if getattr(args, "out", None):
        sink = JsonlSink(args.out)
        sinks.append(sink)
        closers.append(sink.close)
    return sinks, closers


def _report(node, wall: float, duration: float | None = None) -> None:
    rtf = f", real-time factor {wall / duration:.3f}" if duration else ""
    corrupt = sum(getattr(s, "corrupt_frames", 0) for s in node.sources)
    bad = f", {corrupt} corrupt video frame(s) skipped" if corrupt else ""
    print(
        f"# {node.utterances} utterances, {node.publisher.sent} messages published in {wall:.1f} s{rtf}{bad}",
        file=sys.stderr,
    )


def _finish(node) -> int:
    if node.errors:  # the first failure ends the run; its type gives the exit code
        raise as_exception(node.errors[0])
    if getattr(node, "interrupted", False):
        return 130
    # a failed output (--out, the session recording) was reported once when it failed
    return 4 if node.output_failures() else 0


def cmd_replay(args) -> int:
    from robot_emotion.node.runner import replay

    # (`run --demo` comes here with run's arguments, which have no bag options)
    for key, value in (
        ("audio_topic", getattr(args, "audio_topic", None)),
        ("image_topic", getattr(args, "image_topic", None)),
    ):
        if value is not None:
            args.overrides.append(f"bag.{key}={json.dumps(value)}")
    cfg, _ = load_config(args)  # usage errors first: they are the cheapest to report
    speed = args.speed if args.speed == "max" else _speed(args.speed)
    _check_out(args)
    source = args.source
    if args.demo or source is None:
        source = demo_session_path()
        if not (Path(source) / "session.json").is_file():
            raise CommandError(f"demo session not found at {source}: run scripts/setup.sh (or make demo)", 3)
    if getattr(args, "control", False) and cfg.control.enabled:
        from robot_emotion.bus.control import check_endpoint

        check_endpoint(cfg.control.endpoint, cfg.publish.endpoint)
    sinks, closers = _sinks(args)
    if getattr(args, "bag", None):  # (after --out's checks; the bag folder is created now)
        from robot_emotion.bus.ros_out import BagSink

        bag = BagSink(args.bag, cfg.bag.storage)
        sinks.append(bag)
        closers.append(bag.close)
    quiet = args.quiet or args.out == "-"
    t0 = time.monotonic()
    try:
        node = replay(
            cfg,
            str(source),
            speed=speed,
            sinks=sinks,
            resample=args.resample,
            control=getattr(args, "control", False) and cfg.control.enabled,
            show_progress="quiet" if quiet else "printing",
        )
    finally:
        for c in closers:
            c()
    _report(node, time.monotonic() - t0)
    return _finish(node)


def _speed(text: str) -> float:
    from robot_emotion.sources.replay import check_speed  # NaN, inf and <= 0 are refused

    return check_speed(text)


def _check_out(args) -> None:
    if getattr(args, "out", None):
        from robot_emotion.node.runner import JsonlSink

        JsonlSink.check_path(args.out)


def _check_duration(args) -> None:
    d = getattr(args, "duration", None)
    if d is not None and not (math.isfinite(d) and d > 0):
        raise CommandError(f"--duration must be a positive number of seconds, got {d}", 2)


def cmd_run(args) -> int:
    """Live on the launch profile's devices. A missing device is an error (exit 3), never a
    silent switch to made-up input; ``--demo`` replays the demo session in that case."""
    from robot_emotion.node.runner import live

    cfg, prov = load_config(args)
    _check_duration(args)
    _check_out(args)
    if cfg.control.enabled:
        from robot_emotion.bus.control import check_endpoint

        check_endpoint(cfg.control.endpoint, cfg.publish.endpoint)
    from robot_emotion.cli.devices import present

    mic, cam = present(cfg)
    missing = [
        name
        for name, wanted, there in (("microphone", cfg.microphone.enabled, mic), ("camera", cfg.camera.enabled, cam))
        if wanted and not there
    ]
    if missing and args.demo:
        print(f"# no {' and no '.join(missing)} found: replaying the demo session (--demo)", file=sys.stderr)
        args.source, args.speed, args.resample = None, "max", False
        args.launch = str(Path(__file__).resolve().parents[2] / "launch" / "replay.toml")
        return cmd_replay(args)
    if missing:
        where = (
            (cfg.microphone.device or "the default input")
            if missing[0] == "microphone"
            else f"camera.source={cfg.camera.source!r}"
        )
        raise CommandError(
            f"no {missing[0]} found ({where}) for launch profile {args.launch}: "
            "`robot-emotion devices` lists what is present; --demo replays the demo instead",
            3,
        )
    sinks, closers = _sinks(args)
    t0 = time.monotonic()
    try:
        node = live(cfg, duration=args.duration, sinks=sinks, provenance=prov)
    finally:
        for c in closers:
            c()
    _report(node, time.monotonic() - t0)
    return _finish(node)


def cmd_record(args) -> int:
    from robot_emotion.node.runner import live

    cfg, prov = load_config(args)
    _check_duration(args)
    out = Path(args.folder)
    check_output_folder(out)  # a file, below a file, read-only: before any model loads
    if out.exists() and any(out.iterdir()):
        raise CommandError(f"refusing to overwrite non-empty folder {out}", 2)
    sinks, _ = _sinks(args)
    node = live(cfg, record_to=out, duration=args.duration, sinks=sinks, provenance=prov)
    print(f"# session written to {out}", file=sys.stderr)
    return _finish(node)


def cmd_monitor(args) -> int:
    from robot_emotion.cli.monitor import run_monitor

    return run_monitor(args)


def cmd_keys(args) -> int:
    from robot_emotion.cli.keys import run_keys

    return run_keys(args)


def _json_on_stdout(run, args) -> int:
    """``--json`` alone (or ``--json -``): the JSON is the only thing on stdout, the readable
    tables go to stderr (paths.write_output writes the JSON to the real stdout)."""
    if getattr(args, "json", None) != "-":
        return run(args)
    import contextlib

    from robot_emotion import paths

    paths.MACHINE_STDOUT = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return run(args)
    finally:
        paths.MACHINE_STDOUT = None


def cmd_bench(args) -> int:
    from robot_emotion.cli.bench import run_bench

    return _json_on_stdout(run_bench, args)


def cmd_evaluate(args) -> int:
    from robot_emotion.cli.evaluate import run_evaluate

    return _json_on_stdout(run_evaluate, args)


def cmd_train(args) -> int:
    from robot_emotion.train.fit import train_main

    return train_main(args)


def cmd_plot(args) -> int:
    from robot_emotion.cli.timeline_plot import run_plot

    return run_plot(args)


def cmd_export(args) -> int:
    from robot_emotion.cli.export import run_export

    return run_export(args)


def cmd_devices(args) -> int:
    from robot_emotion.cli.devices import run_devices

    cfg, _ = load_config(args)
    return run_devices(cfg, args.json)


def cmd_calibrate(args) -> int:
    from robot_emotion.cli.calibrate import run_calibrate

    cfg, provenance = load_config(args)
    return run_calibrate(cfg, provenance, args)


def cmd_people(args) -> int:
    from robot_emotion.cli.people import run_people

    cfg, _ = load_config(args)
    return run_people(args, cfg)
