"""Config loading: launch profiles, calibration, --set overrides, one-line refusals."""

import pytest

from conftest import REPO, run_cli
from robot_emotion import config as C


def test_launch_profiles_load_with_calibration():
    for name in ("robot", "replay", "audio_only"):
        cfg, prov = C.load(REPO / "launch" / f"{name}.toml")
        assert prov["calibration"].endswith("default.toml")
        assert cfg.vad.frame_ms in (10, 20, 30)
    cfg, _ = C.load(REPO / "launch" / "audio_only.toml")
    assert cfg.camera.enabled is False and cfg.faces.enabled is False


def test_overrides_win_and_are_typed():
    cfg, _ = C.load(
        REPO / "launch" / "robot.toml",
        overrides=["vad.aggressiveness=3", "av.offset_ms=40", 'camera.source="/dev/video2"'],
    )
    assert cfg.vad.aggressiveness == 3 and cfg.av.offset_ms == 40.0 and cfg.camera.source == "/dev/video2"
    # a bare word is taken as a string
    cfg, _ = C.load(None, overrides=["vad.backend=silero"])
    assert cfg.vad.backend == "silero"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("vad.nonsense=1", "unknown config key 'vad.nonsense'"),
        ("nosection.key=1", "unknown config section 'nosection'"),
        ("vad.aggressiveness=7", "'vad.aggressiveness' must be 0..3"),
        ("vad.threshold=0", "'vad.threshold' must be in (0, 1]"),
        ("vad.aggressiveness=\"high\"", "'vad.aggressiveness' must be int"),
        ("camera.enabled=3", "'camera.enabled' must be true or false"),
        ("novalue", "must look like section.key=value"),
    ],
)
def test_bad_overrides_are_refused(override, fragment):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, overrides=[override])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_malformed_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad\naggressiveness = 2\n")
    with pytest.raises(C.ConfigError, match="malformed TOML"):
        C.load(bad)


def test_roundtrip_through_dict():
    cfg, _ = C.load(REPO / "launch" / "robot.toml", overrides=["vad.max_utterance_s=9"])
    assert C.from_dict(cfg.to_dict()) == cfg


def test_cli_refuses_bad_config_with_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    r = run_cli("replay", "--demo", "--launch", bad)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "malformed TOML" in r.stderr
    r = run_cli("replay", "--demo", "--set", "vad.speed=2")
    assert r.returncode == 2 and "unknown config key 'vad.speed'" in r.stderr


def test_device_is_validated():
    cfg, _ = C.load(None, overrides=['node.device="cuda:1"'])
    assert cfg.node.device == "cuda:1"
    with pytest.raises(C.ConfigError, match="node.device"):
        C.load(None, overrides=['node.device="tpu"'])
