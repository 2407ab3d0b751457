"""robot-emotion: run | replay | record | monitor | keys | bench | evaluate | train | plot | export.

This module only parses arguments and maps failures to exit codes (robot_emotion/errors.py):
every failure the user can cause ends with ONE line on stderr and exit 2 (usage/config),
3 (input media/device) or 4 (runtime); the commands themselves live in commands.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from robot_emotion.config import add_set_option
from robot_emotion.errors import EXIT_INTERRUPTED, RobotEmotionError, say
from robot_emotion.paths import launch_path as _launch


def _add_config_args(
    p: argparse.ArgumentParser,
    default_launch: str | None,
    endpoint_default: str = "the launch profile's publish.endpoint",
) -> None:
    p.add_argument("--launch", default=default_launch, help="launch profile TOML (launch/*.toml)")
    p.add_argument(
        "--calibration", default=None, help="per-robot calibration TOML (default: the one the launch profile names)"
    )
    add_set_option(p)
    p.add_argument(
        "--model",
        default=None,
        help="emotion model checkpoint (sets emotion.model; default: the launch profile's, else the shipped one)",
    )
    p.add_argument(
        "--endpoint", default=None, help=f"ZeroMQ PUB endpoint (sets publish.endpoint; default: {endpoint_default})"
    )


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every option's default, unless it is required or its help already says it."""

    def _get_help_string(self, action):
        if action.required or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub-)parser shows defaults in --help (sub-parsers are made with the parser's class)."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="robot-emotion", description=__doc__.splitlines()[0])
    from robot_emotion import __version__

    ap.add_argument("--version", action="version", version=f"robot-emotion {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="live camera + microphone of the launch profile (exit 3 if one is missing)")
    _add_config_args(p, _launch("robot.toml"))
    p.add_argument(
        "--demo", action="store_true", help="if the profile's devices are missing, replay the demo session instead"
    )
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--out", default=None, help="also write published messages as JSON lines ('-': stdout)")
    p.add_argument("--quiet", action="store_true", help="do not print the published messages")

    p = sub.add_parser("record", help="run on live devices and record a session folder")
    p.add_argument("folder", help="session folder to write")
    _add_config_args(p, _launch("robot.toml"))
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="do not print the published messages")

    p = sub.add_parser("replay", help="replay a session folder, a video file or an audio file")
    p.add_argument("source", nargs="?", help="session folder | rosbag2 folder | mp4/mkv/mov/avi | wav/flac")
    p.add_argument("--demo", action="store_true", help="replay the generated demo session")
    _add_config_args(p, _launch("replay.toml"))
    p.add_argument("--speed", default="max", help="'max' (virtual clock) or a factor, 1 = recorded pace")
    p.add_argument("--out", default=None, help="write every published message as one JSON line ('-': stdout)")
    p.add_argument("--resample", action="store_true", help="accept audio files that are not 16 kHz mono")
    p.add_argument("--quiet", action="store_true", help="do not print the published messages")
    p.add_argument(
        "--control",
        action="store_true",
        help="serve control.endpoint as a live node does (robot.speaking, mute, reset, ping)",
    )
    p.add_argument(
        "--bag",
        default=None,
        metavar="OUT",
        help="also write the messages as ROS4HRI-shaped ROS 2 messages into a new rosbag2 folder "
        "(bag.storage: mcap or sqlite3)",
    )
    p.add_argument(
        "--audio-topic",
        default=None,
        help="rosbag2 source: its audio topic (sets bag.audio_topic; default: the bag's only one)",
    )
    p.add_argument(
        "--image-topic",
        default=None,
        help="rosbag2 source: its camera topic (sets bag.image_topic; 'none': audio only; default: the bag's only one)",
    )

    p = sub.add_parser("monitor", help="print the live message stream of a running node")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="the node's ZeroMQ PUB endpoint")
    p.add_argument("--topics", default="", help="comma-separated topic prefixes (default: all)")
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0 = forever)")
    p.add_argument("--timeout", type=float, default=0, help="exit after S seconds of silence (0 = never)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of readable lines")
    p.add_argument("--server-key", default=None, help="CURVE: the node's public key file (server.key)")
    p.add_argument("--client-key", default=None, help="CURVE: this client's key pair file (NAME.key_secret)")

    p = sub.add_parser("keys", help="create CURVE keys to publish beyond loopback (prints the config lines)")
    p.add_argument("folder", help="key folder (created; existing keys are never overwritten)")
    p.add_argument("--client", default="client", help="name of the client key pair to add (default: client)")

    p = sub.add_parser("bench", help="benchmark table: real-time factor, latency, RSS")
    p.add_argument("--source", default=None, help="recording to replay (default: the demo session)")
    p.add_argument("--repeats", type=int, default=3, help="replays at --speed max per configuration (RTF median)")
    p.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated subset of: spine, perception, full (default: all three)",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="every figure as JSON, on stdout (the table then goes to stderr) or to FILE",
    )
    p.add_argument(
        "--contention",
        type=int,
        default=0,
        metavar="N",
        help="run with N other processes each keeping a core busy (the robot's other software)",
    )
    p.add_argument(
        "--hog-mb",
        type=int,
        default=0,
        metavar="MB",
        help="with --contention: also a process streaming through an array of MB (memory bandwidth)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="also run the recording through a live node at recorded pace, as a robot hears it "
        "(a replay decodes a segment in place; live decodes beside it); on with --contention "
        "(default: off)",
    )
    _add_config_args(p, _launch("replay.toml"), endpoint_default="a free loopback port per configuration")

    p = sub.add_parser(
        "evaluate",
        help="evaluate an emotion model on a MELD-format CSV, on MELD.Raw, "
        "or the voice branch on labelled speech clips",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meld-csv", help="text-only evaluation of a MELD-format CSV")
    src.add_argument("--meld", help="extracted MELD.Raw folder: multimodal evaluation + report")
    src.add_argument(
        "--speech",
        help="voice-emotion evaluation: a folder of RAVDESS-named clips or a "
        "CSV of path,label[,speaker] (--out: confusion and reliability PNGs)",
    )
    p.add_argument(
        "--voice-model", default=None, help="with --speech: a voice-emotion model (default: the shipped one)"
    )
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="with --meld")
    p.add_argument("--out", default=None, help="with --meld or --speech: report folder (md, json, png)")
    p.add_argument("--cache", default=None, help="with --meld: feature cache (default: the model's)")
    p.add_argument("--workers", type=int, default=1, help="with --meld: extraction processes")
    p.add_argument("--text-source", default=None, choices=("gold", "asr"), help="with --meld")
    p.add_argument("--model", default=None, help="emotion model checkpoint (default: the shipped one)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="the tables as JSON, on stdout (the readable tables then go to stderr) or to FILE",
    )
    p.add_argument("--limit", type=int, default=0, help="only the first N rows (0 = all)")

    p = sub.add_parser("plot", help="draw a session's timeline (speakers, emotions, faces, latency) as a PNG")
    p.add_argument("source", help="session folder or events file (replay --out events.jsonl; '-': stdin)")
    p.add_argument("--out", default="timeline.png", help="PNG to write ('-': stdout; default: timeline.png)")

    p = sub.add_parser("export", help="a session's final turns as SRT/VTT subtitles, RTTM or CSV")
    p.add_argument("source", help="session folder or events file (replay --out events.jsonl; '-': stdin)")
    p.add_argument("--format", required=True, choices=("srt", "vtt", "rttm", "csv"), help="output format")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")

    p = sub.add_parser("devices", help="list microphones and cameras; mark the configured ones")
    _add_config_args(p, _launch("robot.toml"))
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = sub.add_parser("calibrate", help="measure noise, speech and the AV offset; write a calibration TOML")
    _add_config_args(p, _launch("robot.toml"))
    p.add_argument("--seconds-quiet", type=float, default=10.0, help="quiet phase: noise floor (s)")
    p.add_argument("--seconds-speech", type=float, default=20.0, help="speech phase: speech level (s)")
    p.add_argument("--seconds-clap", type=float, default=5.0, help="clap phase: audio-video offset (s)")
    p.add_argument("--only", choices=("levels", "offset"), default=None, help="run only these phases")
    p.add_argument("--out", default="calibration.toml", help="calibration TOML to write")
    p.add_argument("--report", default=None, help="also write the measurements as JSON")
    p.add_argument("--yes", action="store_true", help="no prompts: phases start at once, the file is written")

    p = sub.add_parser("people", help="the opt-in people store: list | enroll NAME --from FILE | rename | forget")
    from robot_emotion.cli.people import add_people_args

    add_people_args(p, _launch("robot.toml"))

    p = sub.add_parser("train", help="retrain the fusion model on MELD.Raw (torchrun-aware)")
    from robot_emotion.train.fit import add_train_args

    add_train_args(p)
    return ap


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _quiet_libraries() -> None:
    """Third-party deprecation notes are not the user's business: torch.jit.load's
    FutureWarning (silero VAD) printed two lines on every run."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"silero_vad(\.|$)")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
    _quiet_libraries()
    if threading.current_thread() is threading.main_thread():
        # SIGTERM as SIGINT: while models load it unwinds (outputs closed, exit 130), not kill (143);
        # once the node runs, runner._Signals turns both into a clean stop.
        signal.signal(signal.SIGTERM, _interrupt)
    args = build_parser().parse_args(argv)
    from robot_emotion.cli import commands

    try:
        return getattr(commands, "cmd_" + args.cmd)(args)
    except RobotEmotionError as e:
        return _fail(str(e), e.code)
    except FileNotFoundError as e:
        return _fail(str(e), 3)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _fail(msg: str, code: int) -> int:
    say(f"robot-emotion: error: {msg.splitlines()[0] if msg else 'failed'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
