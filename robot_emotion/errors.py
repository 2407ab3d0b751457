"""The one error contract of the CLI (and of the library's user-facing failures).

Every failure a user can cause ends with ONE line on stderr, ``robot-emotion: error: ...``,
and the exit code of its class:
  2 = usage / config error, 3 = input (media, files, devices, weights), 4 = runtime failure,
  130 = interrupted (SIGINT / SIGTERM; the session is finalised first).
Modules raise a subclass of ``RobotEmotionError``; ``cli.main`` maps it to its code. This
module imports only the standard library, so any module can use it without an import circle.
"""
from __future__ import annotations

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


class InputError(RobotEmotionError):
    """Missing or unreadable input: media, files, devices, model weights (exit 3)."""
    code = EXIT_INPUT


_stderr_lock = threading.Lock()


def say(line: str) -> None:
    """Write one whole line to stderr. Threads print (progress, a failed output); ``print``
    writes the text and its newline separately, so two threads could splice their lines."""
    with _stderr_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


# The name the commands have always used: any code, runtime by default.
CommandError = RobotEmotionError
