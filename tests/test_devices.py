"""`robot-emotion devices` on the PulseAudio virtual microphone and a file-backed camera."""

import json

from conftest import REPO, run_cli
from conftest import absent_camera_index, clap_video

LAUNCH = REPO / "launch" / "robot.toml"


def devices(*sets, env=None):
    args = sum([["--set", s] for s in sets], [])
    res = run_cli("devices", "--json", "--launch", LAUNCH, *args, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    text = run_cli("devices", "--launch", LAUNCH, *args, timeout=60, env=env)
    assert text.returncode == 0, text.stderr
    return json.loads(res.stdout), text.stdout


def marked(listing: str, section: str) -> list[str]:
    """The '*' lines of one section of the text listing."""
    block = listing.split(section, 1)[1].split("\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        if line.strip().startswith("*"):
            lines.append(line)
    return lines


def test_lists_the_virtual_microphone_and_marks_the_configured_one(pulse, tmp_path):
    video = clap_video(tmp_path / "cam.mp4", flash_s=1.0, seconds=1.0)
    s, text = devices(f'camera.source="{video}"', 'camera.enabled=true')
    mics = s["microphone"]["devices"]
    assert s["microphone"]["error"] is None and s["microphone"]["device"] == ""
    assert {"pulse", "default"} <= {d["name"] for d in mics}  # PulseAudio, through ALSA
    assert all(d["input_channels"] > 0 and d["default_samplerate"] > 0 for d in mics)
    # "" = the system default input: exactly that device is marked
    (configured,) = [d for d in mics if d["configured"]]
    assert configured["name"] == "default"
    assert s["pulseaudio"]["default"] == f"{pulse}.monitor" and f"{pulse}.monitor" in s["pulseaudio"]["sources"]
    (line,) = marked(text, "microphones")
    assert " default " in line
    assert f"*  {pulse}.monitor" in text
    # the configured camera file: opened, its resolution and rate read, marked
    (cam,) = [d for d in s["camera"]["devices"] if d["configured"]]
    assert (cam["source"], cam["kind"], cam["width"], cam["height"], cam["fps"]) == (str(video), "file", 160, 120, 25)
    assert s["camera"]["error"] is None
    assert any(str(video) in x and "160x120" in x for x in marked(text, "cameras"))

    # naming a device moves the mark; a name that matches nothing is said, not raised
    s, text = devices('microphone.device="pulse"', f'camera.source="{absent_camera_index()}"')
    assert [d["name"] for d in s["microphone"]["devices"] if d["configured"]] == ["pulse"]
    assert s["camera"]["error"] and "does not open" in s["camera"]["error"]
    assert marked(text, "cameras") == [] and "does not open" in text
    s, text = devices('microphone.device="no such microphone"')
    assert not any(d["configured"] for d in s["microphone"]["devices"])
    assert "no such microphone" in s["microphone"]["error"] and "! microphone.device" in text


def test_no_sound_server_is_reported_not_raised(pulse):
    """PortAudio's ALSA devices here all lead to PulseAudio: with its server unreachable the
    microphone list is empty, and the command says so and exits 0."""
    env = {"PULSE_SERVER": "unix:/nonexistent/pulse/native"}
    s, text = devices(env=env)
    assert s["pulseaudio"] is None  # pactl cannot reach a server either
    if s["microphone"]["devices"]:  # a machine with a real sound card
        assert any(d["configured"] for d in s["microphone"]["devices"]) or s["microphone"]["error"]
    else:
        assert "no input device" in s["microphone"]["error"] and "! no input device" in text
    assert "Traceback" not in text
