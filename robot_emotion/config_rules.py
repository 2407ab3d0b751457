"""The rules every configuration field must keep, and what groups of fields must agree.

config.py checks each value against its rule at every merge (``RULES``: a range, a choice
set or a pattern per ``section.key``; a test keeps one rule per field) and, once the whole
config is resolved, the fields that must agree (``check_consistent``) and the files it
names (``check_paths``). Every refusal is one line naming the key.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from robot_emotion.errors import ConfigError, InputError

SESSION_ID = r"[\w.:-]{0,64}"  # node.session_id, and a recorded session.json's


# ---- Validation: every field has a rule (checked at each merge, naming the key); groups of
# fields that must agree are checked once the whole config is resolved (CONSISTENT).


class _Rule(typing.NamedTuple):
    ok: typing.Callable[[typing.Any], bool]
    text: str  # completes "config key 'section.key' ..."


def _between(lo, hi, unit: str = "", lo_open: bool = False) -> _Rule:
    """lo..hi inclusive, or (lo, hi] with lo_open. NaN fails every comparison."""
    if lo_open:
        return _Rule(lambda v: lo < v <= hi, f"must be in ({lo}, {hi}]{unit}")
    return _Rule(lambda v: lo <= v <= hi, f"must be {lo}..{hi}{unit}")


def _one_of(*choices) -> _Rule:
    return _Rule(lambda v: v in choices, f"must be {', '.join(map(str, choices[:-1]))} or {choices[-1]}")


def _matches(pattern: str, text: str) -> _Rule:
    return _Rule(lambda v: re.fullmatch(pattern, v) is not None, text)


_FLAG = _Rule(lambda v: True, "must be true or false")  # the type check is the whole rule
_ONE_LINE = _Rule(lambda v: "\n" not in v and "\0" not in v, "must be one line of text")
_PATH = _ONE_LINE  # "" = the embedded default; a given path must exist (check_paths, at load)

RULES: dict[str, dict[str, _Rule]] = {
    "node": {
        "device": _matches(r"auto|cpu|cuda(:\d+)?", "must be auto, cpu, cuda or cuda:N"),
        "session_id": _matches(SESSION_ID, "must be at most 64 letters, digits, '.', ':', '_' or '-'"),
        "history_max_turns": _between(1, 100000),
        "private_sessions": _FLAG,
        "lag_budget_ms": _between(0, 60000, " ms"),
    },
    "camera": {
        "enabled": _FLAG,
        "source": _matches(r"\S.*", "must be a device index, a file path or a URL"),
        "width": _between(16, 8192, " px"),
        "height": _between(16, 8192, " px"),
        "fps": _between(0, 240, " fps", lo_open=True),
        "retry_max_s": _between(0.1, 600, " s"),
    },
    "microphone": {
        "enabled": _FLAG,
        "device": _ONE_LINE,
        "gain_db": _between(-40, 40, " dB"),
        "block_ms": _one_of(10, 20, 30),
        "queue_blocks": _between(1, 100000),
        "lost_grace_s": _between(0, 3600, " s"),
    },
    "av": {"offset_ms": _between(-2000, 2000, " ms")},
    "vad": {
        "backend": _one_of("silero", "webrtcvad"),
        "threshold": _between(0, 1, lo_open=True),
        "aggressiveness": _between(0, 3),
        "frame_ms": _one_of(10, 20, 30),
        "padding_ms": _between(30, 2000, " ms"),
        "onset_ratio": _between(0, 1, lo_open=True),
        "hangover_ms": _between(20, 3000, " ms"),
        "offset_ratio": _between(0, 1, lo_open=True),
        "energy_margin_db": _between(0, 60, " dB"),
        "min_utterance_ms": _between(0, 10000, " ms"),
        "max_utterance_s": _between(1, 120, " s"),
        "turn_gap_ms": _between(100, 5000, " ms"),
    },
    "faces": {
        "enabled": _FLAG,
        "rate_hz": _between(0, 60, " Hz", lo_open=True),
        # MTCNN's smallest window is 12 px; a smaller limit would silently mean 12
        "min_face_px": _between(12, 2000, " px"),
        "max_face_px": _between(12, 10000, " px"),
        "detect_hz": _between(0, 60, " Hz"),
    },
    "asr": {
        "enabled": _FLAG,
        "backend": _one_of("faster-whisper", "pocketsphinx", "transformers", "none"),
        "model": _PATH,
        "partial_after_s": _between(1, 60, " s"),
        "beam_size": _between(1, 10),
        "prompt_turns": _between(0, 16),
        "incremental_s": _between(0, 30, " s"),
        "no_speech_prob": _between(0, 1),
        "min_logprob": _between(-20, 0),
        "window": _one_of("short", "full"),
        "language": _matches(r"[a-z]{2,3}", "must be a language code such as en, de, fr"),
    },
    "speakers": {
        "enabled": _FLAG,
        "decisions": _PATH,
        "split": _one_of("learned", "viterbi", "both"),
        "change_model": _PATH,
        "overlap_model": _PATH,
        "min_turn_s": _between(0.2, 10, " s"),
        "probe_s": _between(0.2, 10, " s"),
        "live_change_s": _between(0, 30, " s"),
    },
    "people": {
        "enabled": _FLAG,
        "store": _ONE_LINE,
        "remember": _FLAG,
        "remember_after_s": _between(2, 3600, " s"),
        "match": _PATH,
    },
    "emotion": {"enabled": _FLAG, "model": _PATH, "history_turns": _between(0, 64), "text_int8": _FLAG, "early": _FLAG},
    "bag": {
        "audio_topic": _ONE_LINE,
        "image_topic": _ONE_LINE,
        "audio_rate": _between(8000, 192000, " Hz"),
        "audio_channels": _between(1, 32),
        "storage": _one_of("mcap", "sqlite3"),
    },
    "control": {
        "enabled": _FLAG,
        "robot_voice": _one_of("drop", "mark"),
        "endpoint": _matches(r"(tcp|ipc|inproc)://\S+", "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5557"),
        "barge_in_db": _between(0, 40, " dB"),
    },
    "publish": {
        "endpoint": _matches(
            r"(tcp|ipc|inproc|pgm|epgm|ws|wss)://\S+", "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5556"
        ),
        "sndhwm": _between(1, 100000),
        "status_hz": _between(0, 100, " Hz", lo_open=True),
        "face_topic": _FLAG,
        "server_secret_key": _PATH,
        "authorized_keys": _PATH,
        "allow_insecure": _FLAG,
    },
}

# key, condition on the resolved Config, why it fails (what the user would otherwise get).
CONSISTENT: list[tuple[str, typing.Callable, typing.Callable]] = [
    (
        "vad.min_utterance_ms",
        lambda c: c.vad.min_utterance_ms < c.vad.max_utterance_s * 1000,
        lambda c: f"must be below vad.max_utterance_s ({c.vad.max_utterance_s} s): every utterance would be dropped",
    ),
    (
        "faces.min_face_px",
        lambda c: c.faces.min_face_px < c.faces.max_face_px,
        lambda c: f"must be below faces.max_face_px ({c.faces.max_face_px})",
    ),
    (
        "faces.min_face_px",
        lambda c: c.faces.min_face_px <= min(c.camera.width, c.camera.height),
        lambda c: f"must fit in the camera frame ({c.camera.width}x{c.camera.height})",
    ),
    (
        "node.history_max_turns",
        lambda c: c.node.history_max_turns >= max(c.emotion.history_turns, c.asr.prompt_turns),
        lambda c: (
            f"must keep at least emotion.history_turns ({c.emotion.history_turns}) "
            f"and asr.prompt_turns ({c.asr.prompt_turns}) turns"
        ),
    ),
    (
        "speakers.probe_s",
        lambda c: c.speakers.probe_s < c.vad.max_utterance_s,
        lambda c: f"must be below vad.max_utterance_s ({c.vad.max_utterance_s} s): the probe would never run",
    ),
    (
        "people.enabled",
        lambda c: not c.people.enabled or c.speakers.enabled,
        lambda c: "needs speakers.enabled: people are matched by the speaker tracker's voices",
    ),
    # The embedded recogniser (Whisper tiny.en) and pocketsphinx en-us hear English only; a
    # multilingual faster-whisper or transformers asr.model is checked when it loads (asr.py).
    (
        "asr.language",
        lambda c: (
            c.asr.language == "en"
            or not c.asr.enabled
            or c.asr.backend == "none"
            or (c.asr.backend != "pocketsphinx" and bool(c.asr.model))
        ),
        lambda c: (
            "needs a multilingual recogniser: the embedded Whisper tiny.en (and pocketsphinx en-us) "
            "is English-only; set asr.model to a multilingual Whisper model folder (faster-whisper "
            "CTranslate2, e.g. Systran/faster-whisper-small); text emotion stays English"
        ),
    ),
    (
        "publish.authorized_keys",
        lambda c: bool(c.publish.authorized_keys) == bool(c.publish.server_secret_key),
        lambda c: "and publish.server_secret_key go together (create both with: robot-emotion keys DIR)",
    ),
]


def check_consistent(cfg, origin: str = ""):
    """Refuse (ConfigError naming the key) a resolved config.Config whose fields disagree;
    return it unchanged otherwise."""
    for key, ok, why in CONSISTENT:
        if not ok(cfg):
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            where = f"{origin}: " if origin else ""
            raise ConfigError(f"{where}config key '{key}' ({value!r}) {why(cfg)}")
    return cfg


def check_paths(cfg) -> None:
    """Files the config names must exist where that is known at load (exit 3, input)."""
    wanted = [
        ("emotion.model", cfg.emotion.model, cfg.emotion.enabled, "checkpoint not found"),
        ("asr.model", cfg.asr.model, cfg.asr.enabled and cfg.asr.backend != "none", "ASR model not found"),
        ("people.match", cfg.people.match, cfg.people.enabled, "people match model not found"),
        (
            "speakers.change_model",
            cfg.speakers.change_model,
            cfg.speakers.split != "viterbi",
            "speaker change model not found",
        ),
        (
            "speakers.overlap_model",
            cfg.speakers.overlap_model,
            cfg.speakers.split != "viterbi" and cfg.speakers.overlap_model != "off",
            "overlap model not found",
        ),
    ]
    # not camera.source: a camera may be plugged in later (the node retries it)
    for key, path, used, what in wanted:
        if used and path and not Path(path).exists():
            raise InputError(f"config key '{key}': {what}: {path}")


def shown(value, limit: int = 60) -> str:
    """repr(value), cut: an error line quotes what it refuses, not a megabyte of it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
