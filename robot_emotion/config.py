"""Frozen dataclass configuration loaded from TOML.

Resolution order (later wins): built-in defaults -> calibration file -> launch profile
-> repeated ``--set section.key=value`` overrides. A launch profile may name its
calibration file with a top-level ``calibration = "path"`` key (relative to itself).
Unknown keys, wrong types and out-of-range values raise ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from robot_emotion.config_rules import (  # noqa: F401 (re-exported: callers import them from here)
    RULES,
    SESSION_ID,
    check_consistent,
    check_paths,
    shown,
)
from robot_emotion.errors import ConfigError, read_bounded

MAX_TOML_BYTES = 1024 * 1024  # launch profiles and calibrations are a few KiB


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
    threshold: float = 0.15  # silero: a frame is speech at this probability (fit on dev: benchmarks/vad)
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
    split: str = "both"  # inside a segment: "learned" change model, "viterbi" (GE2E windows against the
    # known voices), or "both" (viterbi where the model finds no change; chosen on dev)
    change_model: str = ""  # the learned split's checkpoint (.pt); "" = the shipped one, fit on dev voices
    overlap_model: str = ""  # flags a piece that starts over another voice (.pt); "" = shipped, "off" = none
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
            rule = RULES.get(section, {}).get(key)
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
    check_paths(cfg)
    provenance = {
        "launch": str(launch) if launch else None,
        "calibration": str(cal_path) if cal_path else None,
        "overrides": list(overrides),
    }
    return cfg, provenance


def from_dict(data: dict) -> Config:
    """Rebuild a Config from Config.to_dict() output (e.g. a recorded session.json)."""
    return check_consistent(merge(Config(), data, origin="session.json"), origin="session.json")
