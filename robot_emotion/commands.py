"""The CLI's sub-commands (argument parsing lives in cli.py)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from robot_emotion.errors import CommandError
from robot_emotion.paths import demo_session_path


def load_config(args):
    """The config from --launch / --calibration / --set (+ --model / --endpoint shortcuts)."""
    from robot_emotion import config as C
    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.append(f'emotion.model="{args.model}"')
    if getattr(args, "endpoint", None):
        overrides.append(f'publish.endpoint="{args.endpoint}"')
    return C.load(args.launch, args.calibration, overrides)


def format_event(body: dict) -> str | None:
    """One human line for the events a controller cares about (face/status are too chatty)."""
    topic = body["topic"]
    uid = body.get("utterance_id")
    if topic == "speech.start":
        return f"[{body['start']:7.2f}s] speech.start  {uid}"
    if topic == "speech.end":
        extra = " (dropped: too short)" if body.get("dropped") else " (forced cut)" if body.get("forced") else ""
        return f"[{body['end']:7.2f}s] speech.end    {uid}  {body['start']:.2f}-{body['end']:.2f}s{extra}"
    if topic in ("utterance", "emotion"):
        # provisional results (turn still open) are marked '~'; the final one has no mark
        mark = "~" if body.get("final") is False else " "
        if topic == "utterance":
            if body.get("speech") is False:
                return f"[{body['end']:7.2f}s] utterance{mark}    {uid}  not speech ({body['end'] - body['start']:.2f}s)"
            who = body.get("speaker") or "?"
            face = body.get("face_track")
            text = body.get("text")
            what = repr(text) if text is not None else f"{body['end'] - body['start']:.2f}s"
            return (f"[{body['end']:7.2f}s] utterance{mark}    {uid}  speaker={who} "
                    f"face={face if face is not None else '-'}  {what}")
        if not body.get("label"):
            return f"[{body['end']:7.2f}s] emotion{mark}      {uid}  no estimate"
        mods = "+".join(m for m, on in body["modalities"].items() if on)
        lat = body.get("latency_ms", {}).get("total")
        lat_s = f"  {lat:.0f} ms" if lat is not None else ""
        return (f"[{body['end']:7.2f}s] emotion{mark}      {uid}  {body['label']:<8} "
                f"p={body['probs'][body['label']]:.2f} ({mods}){lat_s}")
    if topic == "utterance.partial":
        return f"[{body['end']:7.2f}s] partial       {uid}  {body.get('text')!r}"
    return None


class _Printer:
    name = "stdout"

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, body: dict) -> None:
        if not self.quiet:
            line = format_event(body)
            if line:
                print(line, flush=True)


def _sinks(args):
    from robot_emotion.runner import JsonlSink
    sinks, closers = [_Printer(getattr(args, "quiet", False))], []
    if getattr(args, "out", None):
        sink = JsonlSink(args.out)
        sinks.append(sink)
        closers.append(sink.close)
    return sinks, closers


def _report(node, wall: float, duration: float | None = None) -> None:
    rtf = f", real-time factor {wall / duration:.3f}" if duration else ""
    print(f"# {node.utterances} utterances, {node.publisher.sent} messages published "
          f"in {wall:.1f} s{rtf}", file=sys.stderr)


def _finish(node) -> int:
    if node.errors:
        raise CommandError(node.errors[0], 4 if not node.errors[0].startswith("device lost") else 3)
    if getattr(node, "interrupted", False):
        return 130
    # a failed output (--out, the session recording) was reported once when it failed
    return 4 if node.output_failures() else 0


def cmd_replay(args) -> int:
    from robot_emotion.runner import replay
    cfg, _ = load_config(args)  # usage errors first: they are the cheapest to report
    speed = args.speed if args.speed == "max" else _speed(args.speed)
    source = args.source
    if args.demo or source is None:
        source = demo_session_path()
        if not (Path(source) / "session.json").is_file():
            raise CommandError(f"demo session not found at {source}: run scripts/setup.sh (or make demo)", 3)
    sinks, closers = _sinks(args)
    t0 = time.monotonic()
    try:
        node = replay(cfg, str(source), speed=speed, sinks=sinks, resample=args.resample)
    finally:
        for c in closers:
            c()
    _report(node, time.monotonic() - t0)
    return _finish(node)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise CommandError(f"--speed must be 'max' or a positive number, got {text!r}", 2)
    return value


def devices_present(cfg) -> tuple[bool, bool]:
    """(microphone, camera) actually available on this machine."""
    mic = cam = False
    try:
        import sounddevice as sd
        mic = any(d["max_input_channels"] > 0 for d in sd.query_devices())
    except Exception:
        mic = False
    if cfg.camera.enabled:
        import cv2
        src = cfg.camera.source
        if not src.isdigit() or Path(f"/dev/video{src}").exists():
            cap = cv2.VideoCapture(int(src) if src.isdigit() else src)
            cam = cap.isOpened()
            cap.release()
    return mic, cam


def cmd_run(args) -> int:
    from robot_emotion.runner import live
    cfg, prov = load_config(args)
    mic, cam = devices_present(cfg)
    if not mic and not (cam and not cfg.microphone.enabled):
        print("# no microphone found: replaying the demo session instead", file=sys.stderr)
        args.source, args.demo, args.speed, args.resample = None, True, "max", False
        args.launch = str(Path(__file__).resolve().parent.parent / "launch" / "replay.toml")
        return cmd_replay(args)
    import dataclasses
    if not cam and cfg.camera.enabled:
        print("# no camera found: running audio-only", file=sys.stderr)
        cfg = dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, enabled=False))
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
    from robot_emotion.runner import live
    cfg, prov = load_config(args)
    out = Path(args.folder)
    if out.exists() and any(out.iterdir()):
        raise CommandError(f"refusing to overwrite non-empty folder {out}", 2)
    sinks, _ = _sinks(args)
    node = live(cfg, record_to=out, duration=args.duration, sinks=sinks, provenance=prov)
    print(f"# session written to {out}", file=sys.stderr)
    return _finish(node)


def cmd_monitor(args) -> int:
    from robot_emotion.client import Subscriber
    topics = [t for t in args.topics.split(",") if t] or [""]
    n, last = 0, time.monotonic()
    with Subscriber(args.endpoint, topics) as sub:
        print(f"# listening on {args.endpoint} for {topics}", file=sys.stderr)
        while True:
            body = sub.recv(timeout_ms=200)
            if body is None:
                if args.timeout and time.monotonic() - last > args.timeout:
                    break
                continue
            last = time.monotonic()
            line = format_event(body)
            if line is None and body["topic"] == "status":
                line = (f"[status] up {body['uptime']:.0f}s queues={body['queues']} "
                        f"dropped={body['dropped']} sources={body['sources']}")
            elif line is None and body["topic"] == "face":
                line = f"[{body['t']:7.2f}s] face          {len(body['tracks'])} track(s)"
            print(line, flush=True)
            n += 1
            if args.count and n >= args.count:
                break
        if sub.gaps:
            print(f"# {sub.gaps} message(s) missed (sequence gaps)", file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from robot_emotion.bench import run_bench
    return run_bench(args)


def cmd_evaluate(args) -> int:
    from robot_emotion.evaluate import run_evaluate
    return run_evaluate(args)


def cmd_train(args) -> int:
    from robot_emotion.train.fit import train_main
    return train_main(args)


def cmd_plot(args) -> int:
    from robot_emotion.timeline_plot import run_plot
    return run_plot(args)


def cmd_export(args) -> int:
    from robot_emotion.export import run_export
    return run_export(args)
