"""robot-emotion people list | enroll NAME --from RECORDING | rename ID NAME | forget ID | forget --all.

The store is the config's ``people.store`` (or ``--store``). Enrolment takes the voice of a
wav/flac file, a video's audio track or a recorded session folder the way the node hears a
speaker (people/voice.py); only the 256 numbers of that voice are kept, never the audio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from robot_emotion.config import add_set_option
from robot_emotion.errors import UsageError, printable


def add_people_args(p: argparse.ArgumentParser, launch: str | None) -> None:
    p.add_argument(
        "--store",
        default=None,
        help="people store (default: the config's people.store, else $XDG_DATA_HOME/robot-emotion/people.db)",
    )
    p.add_argument("--launch", default=launch, help="launch profile TOML (for people.store)")
    p.add_argument("--calibration", default=None, help="per-robot calibration TOML")
    add_set_option(p)
    verbs = p.add_subparsers(dest="verb", required=True, help="what to do with the store")
    v = verbs.add_parser("list", help="the stored people: id, name, voices, seconds of speech")
    v.add_argument("--json", action="store_true", help="one JSON array on stdout")
    v = verbs.add_parser("enroll", help="store a person's voice from a recording")
    v.add_argument("name", help="the person's name (a person of that name gets this voice too)")
    v.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="RECORDING",
        help="wav/flac file, video file or recorded session folder",
    )
    v.add_argument(
        "--speaker",
        default=None,
        help="the voice to take when the recording has several "
        "(S0, S1, ... as replay names them; default: who speaks most)",
    )
    v.add_argument("--new", action="store_true", help="a new person even if one has this name")
    v = verbs.add_parser("rename", help="give a person a (new) name")
    v.add_argument("id", help="person id (P3)")
    v.add_argument("name", help="new name")
    v = verbs.add_parser("forget", help="delete a person, or everyone, from the store for good")
    g = v.add_mutually_exclusive_group(required=True)
    g.add_argument("id", nargs="?", help="person id (P3)")
    g.add_argument("--all", action="store_true", help="every person")


def _name(text: str) -> str:
    text = text.strip()
    if not text or len(text) > 200 or any(ord(c) < 32 for c in text):
        raise UsageError("a name must be 1-200 printable characters")
    return text


def run_people(args, cfg) -> int:
    from robot_emotion.people.store import PeopleStore, store_path

    path = store_path(args.store if args.store is not None else cfg.people.store)
    store = PeopleStore(path, create=args.verb == "enroll")
    try:
        return _VERBS[args.verb](args, store, cfg)
    finally:
        store.close()


def _list(args, store, cfg) -> int:
    people = store.list()
    if args.json:
        print(json.dumps([p.__dict__ for p in people]))
        return 0
    if not people:
        print(f"# no people in {store.path}", file=sys.stderr)
    for p in people:
        when = datetime.datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M")
        print(
            printable(
                f"{p.id}\t{p.name or '(anonymous)'}\t{p.source} {when}\t"
                f"{p.voices} voice(s), {p.seconds:.1f} s of speech"
            )
        )
    return 0


def _enroll(args, store, cfg) -> int:
    from robot_emotion.audio.speakers import SpeakerTracker
    from robot_emotion.people.store import Matcher
    from robot_emotion.people.voice import read_recording, voice_of

    name = _name(args.name)
    audio = read_recording(args.source)
    voice = voice_of(audio, SpeakerTracker(cfg.speakers), cfg.vad, args.speaker)
    same = [] if args.new else store.find(name)
    if len(same) > 1:
        raise UsageError(f"{len(same)} people are named {name!r} ({', '.join(same)}): pass --new, or rename one first")
    matcher = Matcher.load(cfg.people.match) if cfg.people.match else Matcher.load()
    ids, names, mat, _ = store.voices()
    i, p = matcher.identify(voice.embedding, voice.seconds, mat)
    if same:
        store.add_voice(same[0], voice.embedding, voice.seconds)
        pid, what = same[0], "added a voice to"
    else:
        pid, what = store.add(name, voice.embedding, voice.seconds), "enrolled"
    several = (
        f"; {len(voice.voices)} voices in the recording, took {voice.speaker} (--speaker to choose): {voice.voices}"
        if len(voice.voices) > 1
        else ""
    )
    print(printable(f"{what} {pid} {name}: {voice.seconds:.1f} s of speech from {args.source}{several}"))
    if i is not None and ids[i] != pid:
        print(
            printable(
                f"robot-emotion: warning: this voice also matches {ids[i]} "
                f"({names[i] or 'anonymous'}, p {p:.2f}): the same person twice?"
            ),
            file=sys.stderr,
        )
    return 0


def _rename(args, store, cfg) -> int:
    store.rename(args.id, _name(args.name))
    print(printable(f"{args.id} is now {args.name.strip()}"))
    return 0


def _forget(args, store, cfg) -> int:
    n = store.forget(None if args.all else args.id)
    print(f"forgot {n} {'person' if n == 1 else 'people'} ({store.path} rewritten)")
    return 0


_VERBS = {"list": _list, "enroll": _enroll, "rename": _rename, "forget": _forget}
