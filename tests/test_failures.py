"""node.errors holds typed failures: the class, not the wording, decides the exit code."""

import json
import pickle

from robot_emotion.errors import (
    EXIT_INPUT,
    EXIT_RUNTIME,
    DeviceLost,
    Failure,
    InputError,
    RobotEmotionError,
    as_exception,
)


def test_a_failure_reads_as_its_message():
    f = Failure("faces: RuntimeError: boom")
    assert f == "faces: RuntimeError: boom" and "boom" in f and f.startswith("faces")
    assert json.dumps({"error": f}) == '{"error": "faces: RuntimeError: boom"}'
    assert f.code == EXIT_RUNTIME
    back = pickle.loads(pickle.dumps(f))  # the bench's child process sends it back
    assert back == f and back.error is RobotEmotionError


def test_the_type_decides_the_exit_code_not_the_text():
    lost = as_exception(Failure("device lost: microphone stopped delivering data", DeviceLost))
    assert isinstance(lost, DeviceLost) and isinstance(lost, InputError) and lost.code == EXIT_INPUT
    assert str(lost) == "device lost: microphone stopped delivering data"
    # the same words without the type are a runtime failure, and plain text too
    assert type(as_exception(Failure("device lost: x"))) is RobotEmotionError
    plain = as_exception("control socket tcp://127.0.0.1:5 stopped")
    assert type(plain) is RobotEmotionError and plain.code == EXIT_RUNTIME
