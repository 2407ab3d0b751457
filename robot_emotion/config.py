"""Frozen dataclass configuration loaded from TOML.

Resolution order (later wins): built-in defaults -> calibration file -> launch profile
-> repeated ``--set section.key=value`` overrides. A launch profile may name its
calibration file with a top-level ``calibration = "path"`` key (relative to itself).
Unknown keys, wrong types and out-of-range values raise ConfigError naming the key.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from robot_emotion.errors import UsageError


class ConfigError(UsageError, ValueError):
    """A configuration problem; the message is one line naming the key."""


@dataclass(frozen=True)
class CameraConfig:
    enabled: bool = True
    source: str = "0"          # device index, file path or URL (OpenCV)
    width: int = 640
    height: int = 480
    fps: float = 15.0


@dataclass(frozen=True)
class MicrophoneConfig:
    enabled: bool = True
    device: str = ""           # sounddevice name or index; "" = system default
    gain_db: float = 0.0
    block_ms: int = 30
    queue_blocks: int = 200    # ~6 s of audio before overflows are counted


@dataclass(frozen=True)
class AVConfig:
    # Positive = the video lags the audio by this much; subtracted from frame times.
    offset_ms: float = 0.0


@dataclass(frozen=True)
class VADConfig:
    backend: str = "silero"     # silero | webrtcvad (README "VAD": chosen by measurement)
    aggressiveness: int = 2     # webrtcvad mode 0..3
    frame_ms: int = 10          # 10 | 20 | 30 (silero always uses 32 ms)
    padding_ms: int = 300       # onset ring: pre-roll that confirms speech has started
    onset_ratio: float = 0.6    # fraction of voiced frames in the onset ring that starts speech
    hangover_ms: int = 100      # end ring: this much near-silence ends a segment (README "VAD")
    offset_ratio: float = 0.85  # fraction of unvoiced frames in the end ring that ends speech
    energy_margin_db: float = 12.0  # webrtcvad frames must also be this far above the noise floor
    min_utterance_ms: int = 250
    max_utterance_s: float = 15.0   # a segment, and a turn, is cut at this length
    turn_gap_ms: int = 500          # a pause this long closes the speaker's turn (README: trade-off)


@dataclass(frozen=True)
class FacesConfig:
    enabled: bool = True
    rate_hz: float = 5.0
    min_face_px: int = 40
    max_face_px: int = 2000


@dataclass(frozen=True)
class ASRConfig:
    enabled: bool = True
    backend: str = "faster-whisper"  # faster-whisper | pocketsphinx | transformers | none
    model: str = ""                  # path; "" = the embedded default for the backend
    partial_after_s: float = 6.0
    beam_size: int = 5               # faster-whisper beam; 1 is ~10% faster, slightly less accurate
    prompt_turns: int = 2            # past turns' text given to Whisper as its prompt (0 = none)
    no_speech_prob: float = 0.3      # text is dropped when Whisper's no-speech probability is above
    min_logprob: float = -1.0        # this AND the mean token log-probability is below this
    window: str = "short"            # short: encode the turn's own length (+3 s); full: 30 s windows


@dataclass(frozen=True)
class SpeakersConfig:
    enabled: bool = True
    change_threshold: float = 0.55   # cosine between two pieces of a segment under which they are two voices
    cluster_threshold: float = 0.75  # cosine to a speaker's centroid at or above which a voice is that speaker
    min_turn_s: float = 0.8          # never split off a piece shorter than this
    probe_s: float = 0.6             # after this much of a new segment, check whether the voice changed


@dataclass(frozen=True)
class EmotionConfig:
    enabled: bool = True
    model: str = ""                  # checkpoint path; "" = the embedded default
    history_turns: int = 8


@dataclass(frozen=True)
class PublishConfig:
    endpoint: str = "tcp://127.0.0.1:5556"
    sndhwm: int = 100
    status_hz: float = 1.0
    face_topic: bool = True


@dataclass(frozen=True)
class NodeConfig:
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    session_id: str = ""             # "" = generated
    history_max_turns: int = 200


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    av: AVConfig = field(default_factory=AVConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# (section, key) -> predicate, message. Checked after every merge.
_RANGES: dict[tuple[str, str], tuple[typing.Callable, str]] = {
    ("node", "device"): (lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                         "must be auto, cpu, cuda or cuda:N"),
    ("camera", "width"): (lambda v: 16 <= v <= 8192, "must be 16..8192"),
    ("camera", "height"): (lambda v: 16 <= v <= 8192, "must be 16..8192"),
    ("camera", "fps"): (lambda v: 0 < v <= 240, "must be in (0, 240]"),
    ("microphone", "gain_db"): (lambda v: -40 <= v <= 40, "must be -40..40 dB"),
    ("microphone", "block_ms"): (lambda v: v in (10, 20, 30), "must be 10, 20 or 30"),
    ("microphone", "queue_blocks"): (lambda v: v >= 1, "must be >= 1"),
    ("av", "offset_ms"): (lambda v: -2000 <= v <= 2000, "must be -2000..2000 ms"),
    ("vad", "backend"): (lambda v: v in ("webrtcvad", "silero"), "must be webrtcvad or silero"),
    ("vad", "aggressiveness"): (lambda v: 0 <= v <= 3, "must be 0..3"),
    ("vad", "frame_ms"): (lambda v: v in (10, 20, 30), "must be 10, 20 or 30"),
    ("vad", "padding_ms"): (lambda v: 30 <= v <= 2000, "must be 30..2000"),
    ("vad", "hangover_ms"): (lambda v: 20 <= v <= 3000, "must be 20..3000"),
    ("vad", "energy_margin_db"): (lambda v: 0 <= v <= 60, "must be 0..60 dB"),
    ("vad", "onset_ratio"): (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("vad", "offset_ratio"): (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("vad", "min_utterance_ms"): (lambda v: 0 <= v <= 10000, "must be 0..10000"),
    ("vad", "max_utterance_s"): (lambda v: 1 <= v <= 120, "must be 1..120"),
    ("vad", "turn_gap_ms"): (lambda v: 100 <= v <= 5000, "must be 100..5000"),
    ("faces", "rate_hz"): (lambda v: 0 < v <= 60, "must be in (0, 60]"),
    ("faces", "min_face_px"): (lambda v: 8 <= v <= 2000, "must be 8..2000"),
    ("asr", "backend"): (lambda v: v in ("faster-whisper", "pocketsphinx", "transformers", "none"),
                         "must be faster-whisper, pocketsphinx, transformers or none"),
    ("speakers", "min_turn_s"): (lambda v: 0.2 <= v <= 10, "must be 0.2..10 s"),
    ("speakers", "change_threshold"): (lambda v: -1 <= v <= 1, "must be a cosine in -1..1"),
    ("speakers", "cluster_threshold"): (lambda v: -1 <= v <= 1, "must be a cosine in -1..1"),
    ("speakers", "probe_s"): (lambda v: 0.3 <= v <= 10, "must be 0.3..10 s"),
    ("asr", "prompt_turns"): (lambda v: 0 <= v <= 16, "must be 0..16"),
    ("asr", "window"): (lambda v: v in ("short", "full"), "must be short or full"),
    ("asr", "no_speech_prob"): (lambda v: 0 <= v <= 1, "must be 0..1"),
    ("asr", "min_logprob"): (lambda v: -20 <= v <= 0, "must be -20..0"),
    ("asr", "beam_size"): (lambda v: 1 <= v <= 10, "must be 1..10"),
    ("asr", "partial_after_s"): (lambda v: 1 <= v <= 60, "must be 1..60 s"),
    ("publish", "sndhwm"): (lambda v: 1 <= v <= 100000, "must be 1..100000"),
    ("publish", "status_hz"): (lambda v: 0 < v <= 100, "must be in (0, 100]"),
    ("emotion", "history_turns"): (lambda v: 0 <= v <= 64, "must be 0..64"),
}


def _coerce(key: str, value, typ):
    """Check a TOML value against a dataclass field type (ints widen to floats)."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, typ)):
        raise ConfigError(f"config key '{key}' must be {typ.__name__}, got {value!r}")
    if typ is str and not isinstance(value, str):
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
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
            check = _RANGES.get((section, key))
            if check and not check[0](updates[key]):
                raise ConfigError(f"{origin}: config key '{section}.{key}' {check[1]}, got {value!r}")
        sections[section] = dataclasses.replace(current, **updates)
    return dataclasses.replace(cfg, **sections)


def _parse_value(text: str):
    """Parse the right-hand side of --set as a TOML value, else as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> dict:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set '{item}' must look like section.key=value")
    dotted, value = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    return {section: {key: _parse_value(value.strip())}}


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"malformed TOML in {path}: {e}") from None


def load(launch: str | Path | None = None, calibration: str | Path | None = None,
         overrides: list[str] = ()) -> tuple[Config, dict]:
    """Resolve a Config. Returns (config, provenance) where provenance lists the files used."""
    cfg = Config()
    launch_data = read_toml(launch) if launch else {}
    cal_path = calibration
    if cal_path is None and "calibration" in launch_data:
        cal_path = Path(launch).parent / launch_data["calibration"]
    launch_data = {k: v for k, v in launch_data.items() if k != "calibration"}
    if cal_path:
        cfg = merge(cfg, read_toml(cal_path), origin=str(cal_path))
    cfg = merge(cfg, launch_data, origin=str(launch))
    for item in overrides:
        cfg = merge(cfg, parse_override(item), origin="--set")
    provenance = {"launch": str(launch) if launch else None,
                  "calibration": str(cal_path) if cal_path else None,
                  "overrides": list(overrides)}
    return cfg, provenance


def from_dict(data: dict) -> Config:
    """Rebuild a Config from Config.to_dict() output (e.g. a recorded session.json)."""
    return merge(Config(), data, origin="session.json")
