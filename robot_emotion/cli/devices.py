"""`robot-emotion devices`: the microphones and cameras this machine offers, configured ones marked.

Microphones come from PortAudio (sounddevice), exactly as the node opens them; the configured
`microphone.device` is resolved by sounddevice itself ("" = the system default input), so
the mark shows the device a `run` would use. Where PulseAudio runs, its sources are listed
too: PortAudio sees PulseAudio only as one ALSA device, and the source behind it is chosen
in PulseAudio (`pactl set-default-source`, or PULSE_SOURCE=name). Cameras are OpenCV indices
0..9 that open (on Linux only indices with a /dev/videoN are tried: opening absent ones is
slow and noisy) plus `camera.source` when it is a file or URL. A missing PortAudio library,
no sound server or no camera is reported, never raised.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

from robot_emotion.sources.microphone import device_arg

MAX_CAMERA_INDEX = 9


def list_microphones(spec: str) -> dict:
    """{"devices": [...], "configured": index|None, "error": str|None} for `microphone.device`."""
    out = {"devices": [], "configured": None, "error": None, "portaudio": None}
    try:
        import sounddevice as sd
    except OSError as e:  # libportaudio2 missing
        out["error"] = f"PortAudio unavailable: {e}"
        return out
    out["portaudio"] = sd.get_portaudio_version()[1].split(",")[0].replace("PortAudio ", "")
    apis = sd.query_hostapis()
    for d in sd.query_devices():
        if d["max_input_channels"] > 0:
            out["devices"].append(
                {
                    "index": d["index"],
                    "name": d["name"],
                    "host_api": apis[d["hostapi"]]["name"],
                    "input_channels": d["max_input_channels"],
                    "default_samplerate": d["default_samplerate"],
                }
            )
    if not out["devices"]:
        out["error"] = "no input device (no sound card, or no sound server running)"
        return out
    try:  # sounddevice's own matching: an index, or a unique substring of a name
        out["configured"] = sd.query_devices(device_arg(spec), "input")["index"]
    except Exception as e:  # ValueError: no / several matches; PortAudioError: no default
        out["error"] = f"microphone.device {spec or '(system default)'!r}: {str(e).splitlines()[0]}"
    return out


def pulse_sources() -> dict | None:
    """PulseAudio's sources and its default one, or None where no PulseAudio server answers."""
    if shutil.which("pactl") is None:
        return None
    try:
        info = subprocess.run(["pactl", "info"], capture_output=True, text=True, timeout=5)
        short = subprocess.run(["pactl", "list", "short", "sources"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if info.returncode != 0 or short.returncode != 0:
        return None
    default = next(
        (line.split(":", 1)[1].strip() for line in info.stdout.splitlines() if line.startswith("Default Source:")), None
    )
    names = [line.split("\t")[1] for line in short.stdout.splitlines() if line.count("\t") >= 1]
    return {"default": default, "sources": names}


def _probe_capture(cv2, src) -> dict | None:
    cap = cv2.VideoCapture(src)
    try:
        if not cap.isOpened():
            return None
        ok, frame = cap.read()
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if ok and frame is not None:
            h, w = frame.shape[:2]
        return {"width": w, "height": h, "fps": round(float(cap.get(cv2.CAP_PROP_FPS) or 0.0), 2), "reads": bool(ok)}
    finally:
        cap.release()


def present(cfg) -> tuple[bool, bool]:
    """(microphone, camera) of the config that really open here: `run` checks before models load."""
    mic = cam = False
    if cfg.microphone.enabled:
        try:
            import sounddevice as sd

            with sd.InputStream(samplerate=16000, channels=1, dtype="int16", device=device_arg(cfg.microphone.device)):
                mic = True
        except Exception:  # no PortAudio, no device, or a default that leads nowhere (no server)
            mic = False
    src = cfg.camera.source
    if cfg.camera.enabled and not (src.isdigit() and not os.path.exists(f"/dev/video{src}")):
        import cv2

        cam = _probe_capture(cv2, int(src) if src.isdigit() else src) is not None
    return mic, cam


def source_kind(source: str) -> str:
    return "index" if source.isdigit() else "url" if "://" in source else "file"


def list_cameras(source: str) -> dict:
    """{"devices": [...], "configured": entry|None, "error": str|None} for `camera.source`."""
    out = {"devices": [], "configured": None, "error": None}
    try:
        import cv2
    except ImportError as e:
        out["error"] = f"OpenCV unavailable: {e}"
        return out
    linux = sys.platform.startswith("linux")
    for i in range(MAX_CAMERA_INDEX + 1):
        if linux and not os.path.exists(f"/dev/video{i}"):
            continue
        probe = _probe_capture(cv2, i)
        if probe:
            out["devices"].append({"source": str(i), "kind": "index", **probe})
    kind = source_kind(source)
    if kind != "index":
        probe = _probe_capture(cv2, source)
        if probe:
            out["devices"].append({"source": source, "kind": kind, **probe})
    out["configured"] = next((d for d in out["devices"] if d["source"] == source), None)
    if out["configured"] is None:
        out["error"] = f"camera.source {source!r} does not open"
    return out


def survey(cfg) -> dict:
    mic = list_microphones(cfg.microphone.device)
    cam = list_cameras(cfg.camera.source)
    for d in mic["devices"]:
        d["configured"] = d["index"] == mic["configured"]
    for d in cam["devices"]:
        d["configured"] = d is cam["configured"]
    return {
        "microphone": {
            "enabled": cfg.microphone.enabled,
            "device": cfg.microphone.device,
            "portaudio": mic["portaudio"],
            "error": mic["error"],
            "devices": mic["devices"],
        },
        "pulseaudio": pulse_sources(),
        "camera": {
            "enabled": cfg.camera.enabled,
            "source": cfg.camera.source,
            "error": cam["error"],
            "devices": cam["devices"],
        },
    }


def format_survey(s: dict) -> str:
    mic, cam, pulse = s["microphone"], s["camera"], s["pulseaudio"]
    spec = repr(mic["device"]) if mic["device"] else '"" (system default)'
    lines = [
        f"microphones (PortAudio {mic['portaudio'] or '-'}); microphone.device = {spec}"
        + ("" if mic["enabled"] else "  [microphone.enabled = false]")
    ]
    if mic["devices"]:
        lines.append(f"     {'index':>5}  {'name':<32} {'host API':<10} {'in':>3}  rate")
    for d in mic["devices"]:
        mark = "*" if d["configured"] else " "
        lines.append(
            f"  {mark}  {d['index']:>5}  {d['name'][:32]:<32} {d['host_api'][:10]:<10} "
            f"{d['input_channels']:>3}  {d['default_samplerate']:.0f} Hz"
        )
    if mic["error"]:
        lines.append(f"  ! {mic['error']}")
    if pulse is not None:
        lines.append("pulseaudio sources (what the ALSA devices 'pulse' and 'default' record; * = the default source)")
        lines += [f"  {'*' if n == pulse['default'] else ' '}  {n}" for n in pulse["sources"]]
    lines.append(
        f"cameras (OpenCV indices 0..{MAX_CAMERA_INDEX}); camera.source = {cam['source']!r}"
        + ("" if cam["enabled"] else "  [camera.enabled = false]")
    )
    for d in cam["devices"]:
        mark = "*" if d["configured"] else " "
        fps = f"{d['fps']:g} fps" if d["fps"] else "fps unknown"
        reads = "" if d["reads"] else "  (opens, but no frame read)"
        lines.append(f"  {mark}  {d['source']:<24} {d['kind']:<5}  {d['width']}x{d['height']}  {fps}{reads}")
    if not any(d["kind"] == "index" for d in cam["devices"]):
        none = "" if glob.glob("/dev/video*") or not sys.platform.startswith("linux") else " (no /dev/video*)"
        lines.append(f"  ! no camera device opened{none}")
    if cam["error"]:
        lines.append(f"  ! {cam['error']}")
    lines.append("* = what `run` would use with this configuration")
    return "\n".join(lines)


def run_devices(cfg, as_json: bool) -> int:
    s = survey(cfg)
    print(json.dumps(s, indent=2) if as_json else format_survey(s))
    return 0
