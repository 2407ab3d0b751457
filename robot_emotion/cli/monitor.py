"""robot-emotion monitor: a running node's messages, one readable line (or JSON object) each.

Lines come in the order received, which is the publish order. A message that is not
well-formed -- for the Subscriber (client.parse_message) or, in the readable mode, with a field
of the wrong type -- is skipped and counted; the count is printed at exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time

from robot_emotion.errors import EXIT_INTERRUPTED, UsageError, printable


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
                return (
                    f"[{body['end']:7.2f}s] utterance{mark}    {uid}  not speech ({body['end'] - body['start']:.2f}s)"
                )
            who = body.get("speaker") or "?"
            face = body.get("face_track")
            text = body.get("text")
            what = repr(text) if text is not None else f"{body['end'] - body['start']:.2f}s"
            return (
                f"[{body['end']:7.2f}s] utterance{mark}    {uid}  speaker={who} "
                f"face={face if face is not None else '-'}  {what}"
            )
        if not body.get("label"):
            return f"[{body['end']:7.2f}s] emotion{mark}      {uid}  no estimate"
        mods = "+".join(m for m, on in body["modalities"].items() if on)
        lat = body.get("latency_ms", {})
        lat_s = f"  {lat['total']:.0f} ms" if lat.get("total") is not None else ""
        if lat.get("processing") is not None:  # --speed max: the node's time, the queue's apart
            lat_s = f"  {lat['processing']:.0f} ms (+{lat.get('backlog', 0):.0f} ms backlog)"
        return (
            f"[{body['end']:7.2f}s] emotion{mark}      {uid}  {body['label']:<8} "
            f"p={body['probs'][body['label']]:.2f} ({mods}){lat_s}"
        )
    if topic == "utterance.partial":
        return f"[{body['end']:7.2f}s] partial       {uid}  {body.get('text')!r}"
    return None


def _value(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (int, str)):
        return str(v)
    return json.dumps(v, separators=(",", ":"))


def _pairs(d: dict) -> str:
    """'a=1 b=running' for a flat mapping; nested values as compact JSON, never a repr."""
    return " ".join(f"{k}={_value(v)}" for k, v in d.items()) or "-"


def _stage(name: str, s) -> str:
    if isinstance(s, dict) and "median_ms" in s:
        return f"{name}={s['median_ms']:.0f}/{s.get('p95_ms', 0):.0f}ms"
    return f"{name}={_value(s)}"


def format_status(body: dict) -> str:
    parts = [f"[status] up {body['uptime']:.0f}s"]
    if "t" in body:
        parts.append(f"t={body['t']:.2f}s")
    if "utterances" in body:
        parts.append(f"utterances={body['utterances']}")
    parts.append(f"| queues {_pairs(body['queues'])}")
    parts.append(f"| dropped {_pairs(body['dropped'])}")
    parts.append(f"| sources {_pairs(body['sources'])}")
    if body["stages"]:
        parts.append("| median/p95 " + " ".join(_stage(k, v) for k, v in body["stages"].items()))
    for key in ("outputs", "skipped"):
        if body.get(key):
            parts.append(f"| {key} {_pairs(body[key])}")
    return " ".join(parts)


def format_face(body: dict) -> str:
    tracks = []
    for tr in body["tracks"]:
        expr = tr.get("expression")
        top = f" {max(expr, key=expr.get)}" if isinstance(expr, dict) and expr else ""
        tracks.append(f"#{tr['id']}{' speaking' if tr.get('speaking') else ''}{top}")
    return f"[{body['t']:7.2f}s] face          {len(tracks)} track(s)" + (": " + ", ".join(tracks) if tracks else "")


ENVELOPE = ("v", "topic", "seq", "session", "stamp")


def format_message(body: dict) -> str:
    """A readable line for every topic, including ones this version does not know."""
    line = format_event(body)
    if line is not None:
        return line
    if body["topic"] == "status":
        return format_status(body)
    if body["topic"] == "face":
        return format_face(body)
    return f"[{body['topic']}] " + _pairs({k: v for k, v in body.items() if k not in ENVELOPE})


def check_args(args) -> None:
    """--count, --timeout and --endpoint are checked before any socket (UsageError, exit 2)."""
    import math
    import re

    if args.count < 0:
        raise UsageError(f"--count must be 0 (forever) or a positive number of messages, got {args.count}")
    if not (math.isfinite(args.timeout) and args.timeout >= 0):
        raise UsageError(f"--timeout must be 0 (never) or a positive number of seconds, got {args.timeout}")
    ok = re.fullmatch(r"tcp://(\[[0-9a-fA-F:.%\w]+\]|[\w.-]+):(\d{1,5})|(ipc|inproc)://\S+", args.endpoint)
    if not ok or (ok.group(2) and not 0 < int(ok.group(2)) <= 65535):
        raise UsageError(
            f"--endpoint {printable(args.endpoint)!r} must be tcp://HOST:PORT (port 1..65535), "
            "ipc://PATH or inproc://NAME"
        )


def run_monitor(args) -> int:
    from robot_emotion.bus.client import Subscriber

    check_args(args)
    topics = [t for t in args.topics.split(",") if t] or [""]
    n, unprintable, last = 0, 0, time.monotonic()
    with Subscriber(args.endpoint, topics, server_key=args.server_key, client_key=args.client_key, watch=True) as sub:
        print(f"# listening on {args.endpoint} for {topics}", file=sys.stderr)
        code = 0
        try:
            while not (args.count and n >= args.count):
                body = sub.recv(timeout_ms=200)
                if body is None:
                    if n == 0 and sub.connection()["handshake"] in ("refused", "failed"):
                        break  # the keys will not change: say so now
                    if args.timeout and time.monotonic() - last > args.timeout:
                        break
                    continue
                last = time.monotonic()
                if args.json:
                    line = json.dumps(body, separators=(",", ":"))
                else:
                    try:
                        line = format_message(body)
                    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                        unprintable += 1  # a field of the wrong type: skipped and counted
                        continue
                print(printable(line), flush=True)  # names and text come from the network
                n += 1
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except BrokenPipeError:  # `monitor | head`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        malformed = sub.malformed + unprintable
        print(f"# {n} message(s), {malformed} malformed skipped, {sub.gaps} missed (sequence gaps)", file=sys.stderr)
        if sub.last_malformed:
            print(f"# last malformed: {printable(sub.last_malformed)}", file=sys.stderr)
        state = sub.connection()
    if n == 0 and code == 0:
        _no_messages(args, state)
    return code


def _no_messages(args, state: dict) -> None:
    """Nothing received: a refused handshake or a silent endpoint is an error, never '0 messages, ok'."""
    from robot_emotion.errors import InputError, RobotEmotionError

    keys = bool(args.server_key or args.client_key)
    if state["handshake"] == "refused":
        raise InputError(
            f"the node at {args.endpoint} refused the handshake: its authorized_keys "
            f"folder does not hold this client's public key ({args.client_key})"
        )
    if state["handshake"] == "failed":
        why = (
            "--server-key is not the node's public key, or the node does not use CURVE"
            if keys
            else "the node uses CURVE keys: pass --server-key and --client-key"
        )
        raise InputError(f"the CURVE handshake with {args.endpoint} failed: {why}")
    if not state["connected"]:
        raise RobotEmotionError(f"nothing answered at {args.endpoint} (is the node running there?)")
