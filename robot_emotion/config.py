"""Frozen dataclass configuration loaded from TOML.

Resolution order (later wins): built-in defaults -> calibration file -> launch profile
-> repeated ``--set section.key=value`` overrides. A launch profile may name its
calibration file with a top-level ``calibration = "path"`` key (relative to itself).
Unknown keys, wrong types and out-of-range values raise ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from robot_emotion.errors import InputError, UsageError, read_bounded

MAX_TOML_BYTES = 1024 * 1024  # launch profiles and calibrations are a few KiB
SESSION_ID = r"[\w.:-]{0,64}"  # node.session_id, and a recorded session.json's


class ConfigError(UsageError, ValueError):
    """A configuration problem; the message is one line naming the key."""


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = True
    source: str = "0"  # device index, file path or URL (OpenCV)
    width: int = 640
    height: int = 480
    fps: float = 15.0
    retry_max_s: float = 5.0  # a lost camera is retried with backoff up to this interval


@dataclass(frozen=True)
class MicrophoneConfig:
    enabled: bool = True
    device: str = ""  # sounddevice name or index; "" = system default
    gain_db: float = 0.0
    block_ms: int = 30
    queue_blocks: int = 200  # ~6 s of audio before overflows are counted
    lost_grace_s: float = 10.0  # a lost microphone is retried this long, then the node exits 3


@dataclass(frozen=True)
class AVConfig:
    # Positive = the video lags the audio by this much; subtracted from frame times.
    offset_ms: float = 0.0


@dataclass(frozen=True)
class VADConfig:
    backend: str = "silero"  # silero | webrtcvad (README "VAD": chosen by measurement)
    aggressiveness: int = 2  # webrtcvad mode 0..3
    frame_ms: int = 10  # 10 | 20 | 30 (silero always uses 32 ms)
    padding_ms: int = 300  # onset ring: pre-roll that confirms speech has started
    onset_ratio: float = 0.6  # fraction of voiced frames in the onset ring that starts speech
    hangover_ms: int = 100  # end ring: this much near-silence ends a segment (README "VAD")
    offset_ratio: float = 0.85  # fraction of unvoiced frames in the end ring that ends speech
    energy_margin_db: float = 12.0  # webrtcvad frames must also be this far above the noise floor
    min_utterance_ms: int = 250
    max_utterance_s: float = 15.0  # a segment, and a turn, is cut at this length
    turn_gap_ms: int = 500  # a pause this long closes the speaker's turn (README: trade-off)


@dataclass(frozen=True)
class FacesConfig:
    enabled: bool = True
    rate_hz: float = 5.0
    min_face_px: int = 40
    max_face_px: int = 2000
    detect_hz: float = (
        1.0  # whole-frame face search this often; between, known faces are followed (0 = search every frame)
    )


@dataclass(frozen=True)
class ASRConfig:
    enabled: bool = True
    backend: str = "faster-whisper"  # faster-whisper | pocketsphinx | transformers | none
    model: str = ""  # path; "" = the embedded default for the backend
    partial_after_s: float = 6.0
    beam_size: int = 5  # faster-whisper beam; 1 is ~10% faster, slightly less accurate
    prompt_turns: int = 2  # past turns' text given to Whisper as its prompt (0 = none)
    no_speech_prob: float = 0.3  # text is dropped when Whisper's no-speech probability is above
    min_logprob: float = -1.0  # this AND the mean token log-probability is below this
    window: str = "short"  # short: encode the turn's own length (+3 s); full: 30 s windows
    incremental_s: float = 1.0  # decode the open turn every this much speech (0 = only at its end)
    language: str = "en"  # what people speak (ISO 639-1); not "en" needs a multilingual asr.model


@dataclass(frozen=True)
class SpeakersConfig:
    enabled: bool = True
    decisions: str = ""  # same-voice / voice-changed models (json); "" = the shipped ones, fit on dev voices
    min_turn_s: float = 0.8  # never split off a piece shorter than this
    probe_s: float = 0.25  # after this much of a new segment, check whether the voice changed
    live_change_s: float = 1.0  # check the segment being spoken for a voice change this often (0 = at its end)


@dataclass(frozen=True)
class PeopleConfig:
    enabled: bool = False  # opt-in: match voices against stored people (README "People")
    store: str = ""  # SQLite file (0600); "" = $XDG_DATA_HOME/robot-emotion/people.db
    remember: bool = False  # a voice that matches nobody is stored as an anonymous person
    remember_after_s: float = 20.0  # ... once this much of its speech is heard
    match: str = ""  # match model (json); "" = the shipped one, fit on dev voices


@dataclass(frozen=True)
class EmotionConfig:
    enabled: bool = True
    model: str = ""  # checkpoint path; "" = the embedded default
    history_turns: int = 8
    text_int8: bool = True  # int8 text model on CPU (README Benchmark: same dev wF1, faster)
    early: bool = True  # at a pause, an estimate from the words decoded so far first (README)


@dataclass(frozen=True)
class PublishConfig:
    endpoint: str = "tcp://127.0.0.1:5556"
    sndhwm: int = 100
    status_hz: float = 1.0
    face_topic: bool = True
    # Beyond loopback the endpoint needs CURVE keys (robot-emotion keys DIR) or allow_insecure.
    server_secret_key: str = ""  # the node's key pair file (server.key_secret)
    authorized_keys: str = ""  # folder of the client public keys (*.key) admitted
    allow_insecure: bool = False  # publish on a non-loopback address without keys (warns)


@dataclass(frozen=True)
class NodeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    session_id: str = ""  # "" = generated
    history_max_turns: int = 200
    private_sessions: bool = True  # recorded sessions 0700 / files 0600 (people's audio and video)
    lag_budget_ms: float = 1000.0  # live: work waiting longer sheds optional work (node/load.py); 0 = never


@dataclass(frozen=True)
class ControlConfig:
    enabled: bool = True  # live only: controllers tell the node what the robot does
    endpoint: str = "tcp://127.0.0.1:5557"  # ZeroMQ REP socket (robot.speaking, mute, unmute, reset)
    robot_voice: str = "drop"  # the robot's own speech: "drop" or "mark" (speaker "robot")
    barge_in_db: float = 8.0  # a person talking over the robot: this much louder


@dataclass(frozen=True)
class BagConfig:
    audio_topic: str = ""  # rosbag2 replay: the audio topic ("" = the bag's only one)
    image_topic: str = ""  # ... the camera topic ("" = the only one, "none" = audio only)
    audio_rate: int = 16000  # AudioData without AudioInfo: PCM S16LE at this rate
    audio_channels: int = 1
    storage: str = "mcap"  # replay --bag OUT: mcap | sqlite3


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    av: AVConfig = field(default_factory=AVConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    people: PeopleConfig = field(default_factory=PeopleConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    bag: BagConfig = field(default_factory=BagConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- Validation: every field has a rule (checked at each merge, naming the key); groups of
# fields that must agree are checked once the whole config is resolved (_CONSISTENT).


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
_PATH = _ONE_LINE  # "" = the embedded default; a given path must exist (_check_paths, at load)

_RULES: dict[str, dict[str, _Rule]] = {
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
_CONSISTENT: list[tuple[str, typing.Callable, typing.Callable]] = [
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


def check_consistent(cfg: Config, origin: str = "") -> Config:
    """Refuse (ConfigError naming the key) a resolved config whose fields disagree."""
    for key, ok, why in _CONSISTENT:
        if not ok(cfg):
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            where = f"{origin}: " if origin else ""
            raise ConfigError(f"{where}config key '{key}' ({value!r}) {why(cfg)}")
    return cfg


def _check_paths(cfg: Config) -> None:
    """Files the config names must exist where that is known at load (exit 3, input)."""
    wanted = [
        ("emotion.model", cfg.emotion.model, cfg.emotion.enabled, "checkpoint not found"),
        ("asr.model", cfg.asr.model, cfg.asr.enabled and cfg.asr.backend != "none", "ASR model not found"),
        ("people.match", cfg.people.match, cfg.people.enabled, "people match model not found"),
    ]
    # not camera.source: a camera may be plugged in later (the node retries it)
    for key, path, used, what in wanted:
        if used and path and not Path(path).exists():
            raise InputError(f"config key '{key}': {what}: {path}")


def shown(value, limit: int = 60) -> str:
    """repr(value), cut: an error line quotes what it refuses, not a megabyte of it."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _coerce(key: str, value, typ):
    """Check a TOML value against a dataclass field type (ints widen to floats)."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false, got {shown(value)}")
    if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, typ)):
        raise ConfigError(f"config key '{key}' must be {typ.__name__}, got {shown(value)}")
    if typ is float and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    if typ is str and not isinstance(value, str):
        raise ConfigError(f"config key '{key}' must be a string, got {shown(value)}")
    return value


def merge(cfg: Config, data: dict, origin: str = "config") -> Config:
    """Return cfg with the values of a nested dict applied; refuse unknown keys."""
    sections = {}
    hints = typing.get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise ConfigError(f"{origin}: unknown config section '{section}'")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: config section '{section}' must be a table")
        current = getattr(cfg, section)
        field_types = typing.get_type_hints(type(current))
        updates = {}
        for key, value in values.items():
            if key not in field_types:
                raise ConfigError(f"{origin}: unknown config key '{section}.{key}'")
            updates[key] = _coerce(f"{section}.{key}", value, field_types[key])
            rule = _RULES.get(section, {}).get(key)
            if rule and not rule.ok(updates[key]):
                raise ConfigError(f"{origin}: config key '{section}.{key}' {rule.text}, got {shown(value)}")
        sections[section] = dataclasses.replace(current, **updates)
    return dataclasses.replace(cfg, **sections)


def _parse_value(text: str):
    """Parse the right-hand side of --set as a TOML value, else as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:  # tomllib recurses per nested array
        raise ConfigError(f"--set value {shown(text)} is nested too deeply") from None
    except ValueError as e:  # an integer beyond Python's 4300-digit limit
        raise ConfigError(f"--set value {shown(text)}: {str(e).split(';')[0]}") from None


def parse_override(item: str) -> dict:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set '{item}' must look like section.key=value")
    dotted, value = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    return {section: {key: _parse_value(value.strip())}}


def add_set_option(parser, help: str = "override one config value (repeatable; default: none)") -> None:
    """The ``--set SECTION.KEY=VALUE`` option every command shares (into ``args.overrides``, for load)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help=help)


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = read_bounded(path, MAX_TOML_BYTES).decode("utf-8")
    except OSError as e:  # /proc/self/mem, a file we may not read
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"malformed TOML in {path}: not UTF-8 text") from None
    except ValueError as e:  # bigger than any config
        raise ConfigError(f"config file {path} is {e}: not a launch profile or calibration") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"malformed TOML in {path}: {e}") from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError(f"malformed TOML in {path}: nested too deeply") from None
    except ValueError as e:  # an integer beyond Python's 4300-digit limit
        raise ConfigError(f"malformed TOML in {path}: {str(e).split(';')[0]}") from None


def load(
    launch: str | Path | None = None, calibration: str | Path | None = None, overrides: list[str] = ()
) -> tuple[Config, dict]:
    """Resolve a Config. Returns (config, provenance) where provenance lists the files used."""
    cfg = Config()
    launch_data = read_toml(launch) if launch else {}
    cal_path = calibration
    if cal_path is None and "calibration" in launch_data:
        if not isinstance(launch_data["calibration"], str) or not launch_data["calibration"]:
            raise ConfigError(
                f"{launch}: 'calibration' must be the path of a calibration TOML, got {launch_data['calibration']!r}"
            )
        cal_path = Path(launch).parent / launch_data["calibration"]
    launch_data = {k: v for k, v in launch_data.items() if k != "calibration"}
    if cal_path:
        cfg = merge(cfg, read_toml(cal_path), origin=str(cal_path))
    cfg = merge(cfg, launch_data, origin=str(launch))
    for item in overrides:
        cfg = merge(cfg, parse_override(item), origin="--set")
    check_consistent(cfg)
    _check_paths(cfg)
    provenance = {
        "launch": str(launch) if launch else None,
        "calibration": str(cal_path) if cal_path else None,
        "overrides": list(overrides),
    }
    return cfg, provenance


def from_dict(data: dict) -> Config:
    """Rebuild a Config from Config.to_dict() output (e.g. a recorded session.json)."""
    return check_consistent(merge(Config(), data, origin="session.json"), origin="session.json")
