"""The one error contract of the CLI (and of the library's user-facing failures).

Every failure a user can cause ends with ONE line on stderr, ``robot-emotion: error: ...``,
and the exit code of its class:
  2 = usage / config error, 3 = input (media, files, devices, weights), 4 = runtime failure,
  130 = interrupted (SIGINT / SIGTERM; the session is finalised first).
Modules raise a subclass of ``RobotEmotionError``; ``cli.main`` maps it to its code. A failure
while the node runs (a stage thread crashed, a device lost) cannot be raised in the thread that
meets it: the node records it in ``node.errors`` as a ``Failure`` (its message and its class),
and the CLI and the API raise ``as_exception(node.errors[0])``, so the class, never the wording,
decides the exit code. This module imports only the standard library, so any module can use it
without an import circle.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 2, 3, 4, 130


class RobotEmotionError(Exception):
    """A failure with a one-line message and an exit code (default: runtime, 4)."""

    code = EXIT_RUNTIME

    def __init__(self, msg: str = "", code: int | None = None):
        super().__init__(msg)
        if code is not None:
            self.code = code


class UsageError(RobotEmotionError):
    """Bad arguments or configuration (exit 2)."""

    code = EXIT_USAGE


class ConfigError(UsageError, ValueError):
    """A configuration problem; the message is one line naming the key."""


class InputError(RobotEmotionError):
    """Missing or unreadable input: media, files, devices, model weights (exit 3)."""

    code = EXIT_INPUT


class DeviceLost(InputError):
    """A device that stopped delivering and did not come back within its grace period, e.g.
    ``device lost: microphone ...`` (exit 3, as any missing input)."""


class Failure(str):
    """One failure a running node records in ``node.errors``: its one-line message, and the
    error class that decides how it ends the run (``failure.error``; ``failure.code``).

    A ``str`` on purpose: status, session.end, the bench's JSON, logs and tests read the list as
    text; only the CLI (``commands._finish``) and the API (``api.EmotionNode``) ask its type,
    through ``as_exception``. A stage that crashes or stalls is a runtime failure (4); a lost
    device is ``DeviceLost`` (3)."""

    error: type[RobotEmotionError]

    def __new__(cls, message: str, error: type[RobotEmotionError] = RobotEmotionError) -> Failure:
        self = super().__new__(cls, message)
        self.error = error
        return self

    @property
    def code(self) -> int:
        return self.error.code

    def __repr__(self) -> str:
        return f"{self.error.__name__}({str(self)!r})"


def as_exception(failure: str) -> RobotEmotionError:
    """An entry of ``node.errors`` as the exception that reports it: a ``Failure`` as its own
    class, plain text as a runtime failure (4)."""
    return failure.error(str(failure)) if isinstance(failure, Failure) else RobotEmotionError(str(failure))


_stderr_lock = threading.Lock()
# C0/C1 controls (newline, ESC of ANSI sequences, ...) and bidi overrides: text from files and
# the network must not forge lines (a fake "# ready") or drive the terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """text with control characters written as escapes (\\x1b, \\n): safe for a terminal."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


class _StderrHandler(logging.Handler):
    """The package logger's handler: one whole line on the CURRENT sys.stderr (pytest and
    embedding programs swap it), under the lock quiet_stderr holds. ``print`` writes the text
    and its newline separately, so two threads could splice their lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with _stderr_lock:
                sys.stderr.write(printable(self.format(record)) + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


# Diagnostics go through logging ("robot_emotion" and its children): the CLI's lines are its
# records at INFO (progress, "# ..."), WARNING and ERROR. An embedding program silences or
# redirects them with the standard API, e.g. logging.getLogger("robot_emotion").setLevel("ERROR"),
# or replaces LOG.handlers with its own; the CLI's one-line error contract is unchanged.
LOG = logging.getLogger("robot_emotion")
if not any(isinstance(h, _StderrHandler) for h in LOG.handlers):
    LOG.addHandler(_StderrHandler())
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the root logger's handlers would print every line twice


def say(line: str, logger: str | None = None) -> None:
    """Log one line (its level read from its prefix: ``robot-emotion: error:`` / ``warning:``)."""
    level = (
        logging.ERROR
        if line.startswith("robot-emotion: error")
        else logging.WARNING
        if line.startswith("robot-emotion: warning")
        else logging.INFO
    )
    (logging.getLogger(logger) if logger else LOG).log(level, "%s", line)


class quiet_stderr:
    """Send file descriptor 2 to /dev/null for a moment: PortAudio and ALSA print 5-6 lines
    of C noise per failed open of a lost microphone (53 lines buried the one that mattered).
    Holds say()'s lock, so our own lines wait instead of being lost."""

    def __enter__(self):
        import os

        _stderr_lock.acquire()
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except BaseException:
            _stderr_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        import os

        try:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        finally:
            _stderr_lock.release()


# ---- bounded parsing of untrusted text: depth, digits and size have limits ----------------
MAX_DIGITS = 100  # an integer longer than this is no count, time or id of ours


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number with {len(text.lstrip('-'))} digits (more than {MAX_DIGITS})")
    return int(text)


def loads_json(text: str | bytes):
    """json.loads that refuses, with a ValueError of one line, what would otherwise raise
    RecursionError (deep nesting) or run long (an integer of thousands of digits)."""
    try:
        return json.loads(text, parse_int=_int)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_bounded(path, limit: int) -> bytes:
    """At most ``limit`` bytes of a file (OSError as raised; ValueError when it is bigger):
    a config or session file is small, and /dev/zero or a huge file must not fill memory."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KiB")
    return data


# The name the commands have always used: any code, runtime by default.
CommandError = RobotEmotionError
