"""`robot-emotion calibrate`: a guided run on the live devices that writes a calibration TOML.

Phases (prompts on stderr; with a terminal each waits for Enter unless --yes):
  1. stay quiet      -> noise floor        2. speak normally -> speech level
  3. clap once in view of the camera -> audio-video offset (only with a camera that opens)
The microphone is opened once, through the node's own MicrophoneSource at gain 0, and the
camera through its CameraSource with offset 0, so the times compared are the ones the node
stamps. calibration_measure.py measures and suggests; this module runs the phases and writes
the file: the current calibration's text with only the changed values replaced (comments and
layout kept), checked by the config loader, printed as a unified diff against the current one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import sys
import threading
import time
import tomllib
from datetime import datetime
from pathlib import Path

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.cli import calibration_measure as M
from robot_emotion.clock import WallClock
from robot_emotion.config import Config, merge
from robot_emotion.errors import InputError, UsageError

HEADER = "# Measured by `robot-emotion calibrate`"
FIRST_BLOCK_TIMEOUT_S = 10.0  # ALSA's pulse plugin may take over a second to deliver audio
SETTLE_S = 0.5  # interactive phases start this long after the prompt


class _AudioLog:
    """Collects the microphone's blocks (duck-types the node's AudioQueue)."""

    def __init__(self):
        self._lock, self.blocks, self.overflows = threading.Lock(), [], 0

    def put_nowait(self, block) -> None:
        with self._lock:
            self.blocks.append(block)

    def end(self) -> float:
        with self._lock:
            return self.blocks[-1].t + len(self.blocks[-1].samples) / SAMPLE_RATE if self.blocks else -1.0

    def between(self, t0: float, t1: float) -> np.ndarray:
        with self._lock:
            blocks = list(self.blocks)
        x = np.concatenate([b.samples for b in blocks])
        a = max(0, int(round((t0 - blocks[0].t) * SAMPLE_RATE)))  # sample-clock times: contiguous
        return x[a : max(a, int(round((t1 - blocks[0].t) * SAMPLE_RATE)))]


class _FrameLog:
    """Keeps every camera frame as small grey images (duck-types the LatestFrameSlot)."""

    def __init__(self):
        self.frames: list[tuple[float, np.ndarray]] = []

    def put(self, frame) -> None:
        import cv2

        h, w = frame.image.shape[:2]
        small = cv2.resize(frame.image, (160, max(1, round(160 * h / w))), interpolation=cv2.INTER_AREA)
        self.frames.append((frame.t, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)))


class _Session:
    def __init__(self, interactive: bool):
        self.interactive, self.clock, self.audio = interactive, WallClock(), _AudioLog()

    def say(self, text: str) -> None:
        print(f"# calibrate: {text}", file=sys.stderr, flush=True)

    def phase(self, prompt: str, seconds: float) -> tuple[float, float]:
        """Prompt, then capture `seconds` of audio; returns the phase's (t0, t1) capture times."""
        if self.interactive:
            self.say(f"next: {prompt}; press Enter to start")
            sys.stdin.readline()
        self.say(f"{prompt} for {seconds:g} s ...")
        if self.interactive:
            time.sleep(SETTLE_S)  # not the Enter key's click
        t0 = self.clock.now()
        time.sleep(seconds)
        deadline = time.monotonic() + 5.0
        while self.audio.end() < t0 + seconds and time.monotonic() < deadline:
            time.sleep(0.02)  # the microphone's blocks arrive a latency behind the clock
        if self.audio.end() < t0 + seconds:
            raise InputError("the microphone stopped delivering audio during calibration")
        return t0, t0 + seconds


def _capture(cfg: Config, args, s: _Session) -> dict:
    from robot_emotion.sources.camera import CameraSource
    from robot_emotion.sources.microphone import MicrophoneSource, SourceError

    mic = MicrophoneSource(dataclasses.replace(cfg.microphone, gain_db=0.0), s.clock, s.audio)
    mic.start()
    got: dict = {}
    try:
        deadline = time.monotonic() + FIRST_BLOCK_TIMEOUT_S
        while not s.audio.blocks and time.monotonic() < deadline:
            time.sleep(0.02)
        if not s.audio.blocks:
            raise InputError(f"microphone {cfg.microphone.device or '(default)'} delivered no audio")
        if args.only != "offset":
            got["quiet"] = s.audio.between(*s.phase("[1/3] stay quiet (noise floor)", args.seconds_quiet))
            got["speech"] = s.audio.between(
                *s.phase(
                    "[2/3] speak normally, from where people talk to the robot (speech level)", args.seconds_speech
                )
            )
        if args.only == "levels":
            return got
        if not cfg.camera.enabled:
            got["no_camera"] = "camera.enabled is false"
            return got
        src = cfg.camera.source
        if src.isdigit() and sys.platform.startswith("linux") and not Path(f"/dev/video{src}").exists():
            got["no_camera"] = f"no /dev/video{src}"  # OpenCV would only warn, slowly
            return got
        log = _FrameLog()
        cam = CameraSource(cfg.camera, s.clock, log, offset_s=0.0)
        try:
            cam.start()
        except SourceError as e:
            got["no_camera"] = str(e)
            return got
        try:
            deadline = time.monotonic() + 5.0
            while not log.frames and time.monotonic() < deadline:
                time.sleep(0.01)
            if not log.frames:
                got["no_camera"] = f"camera {cfg.camera.source!r} delivered no frame"
                return got
            t0, t1 = s.phase(
                "[3/3] clap your hands once, in view of the camera (audio-video offset)", args.seconds_clap
            )
        finally:
            cam.stop()
        got["clap"] = (s.audio.between(t0, t1), t0, [f for f in log.frames if t0 <= f[0] <= t1 + 0.5])
    finally:
        mic.stop()
    return got


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    return str(v)


_SECTION = re.compile(r"^\s*\[(?P<name>[A-Za-z0-9_-]+)\]\s*(#.*)?$")
_KEY = re.compile(r"^(?P<head>\s*(?P<key>[A-Za-z0-9_-]+)\s*=\s*)(?P<rest>.*)$")


def _split_value(rest: str) -> tuple[str, str]:
    """'value   # comment' -> ('value', '   # comment'), minding '#' inside a quoted string."""
    if rest.startswith('"'):
        i = 1
        while i < len(rest) and rest[i] != '"':
            i += 2 if rest[i] == "\\" else 1
        return rest[: i + 1], rest[i + 1 :]
    i = rest.find("#")
    value = (rest if i < 0 else rest[:i]).rstrip()
    return value, rest[len(value) :]


def render_toml(base: str, values: dict[str, object], header: list[str]) -> str:
    """`base` with each "section.key" set to its value (in place, comments kept) and `header`
    replacing an earlier calibrate header (inserted before the first table)."""
    lines = base.splitlines()
    while any(x.startswith(HEADER) for x in lines):  # drop the previous header block
        i = next(k for k, x in enumerate(lines) if x.startswith(HEADER))
        j = i + 1
        while j < len(lines) and lines[j].startswith("#   "):
            j += 1
        del lines[i : j + (j < len(lines) and lines[j] == "")]
    todo, section, last_key = dict(values), None, {}
    for n, line in enumerate(lines):
        if m := _SECTION.match(line):
            section = m["name"]
            last_key.setdefault(section, n)
        elif (m := _KEY.match(line)) and section and f"{section}.{m['key']}" in todo:
            value, tail = _split_value(m["rest"])
            new = toml_value(todo.pop(f"{section}.{m['key']}"))
            if tail.lstrip().startswith("#"):  # keep the comment's column where there is room
                tail = " " * max(1, len(value) + len(tail) - len(tail.lstrip()) - len(new)) + tail.lstrip()
            lines[n] = m["head"] + new + tail
            last_key[section] = n
        elif m and section:
            last_key[section] = n
    for dotted in sorted(todo, key=lambda k: -last_key.get(k.split(".")[0], -1)):
        sec, key = dotted.split(".", 1)
        if sec in last_key:  # after the section's last key (bottom-up keeps indices valid)
            lines.insert(last_key[sec] + 1, f"{key} = {toml_value(todo[dotted])}")
        else:
            lines += ["", f"[{sec}]", f"{key} = {toml_value(todo[dotted])}"]
            last_key[sec] = len(lines) - 1
    first = next((k for k, x in enumerate(lines) if _SECTION.match(x)), len(lines))
    lines[first:first] = header + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _header(cfg: Config, lv: dict | None, offset_note: str) -> list[str]:
    out = [f"{HEADER} {datetime.now():%Y-%m-%d %H:%M}, microphone {cfg.microphone.device or '(default)'!r}"]
    if lv and lv["speech"]:
        nz, sp = lv["noise"], lv["speech"]
        out += [
            f"#   noise floor {nz['floor_dbfs']:.1f} dBFS (frames p10 {nz['p10']:.1f}, p90 {nz['p90']:.1f}), "
            f"speech {sp['level_dbfs']:.1f} dBFS active, SNR {lv['snr_db']:.1f} dB, peak {sp['peak_dbfs']:.1f} dBFS"
        ]
    return out + [f"#   av offset: {offset_note}"]


def _report(lv: dict | None, sugg: dict | None, cfg: Config, base: dict, values: dict, offset_note: str) -> list[str]:
    out = []
    if lv:
        nz = lv["noise"]
        out.append(
            f"noise floor   {nz['floor_dbfs']:7.1f} dBFS   frames ({lv['frame_ms']} ms) p10 {nz['p10']:.1f}"
            f" / p50 {nz['p50']:.1f} / p90 {nz['p90']:.1f} / p99 {nz['p99']:.1f}"
        )
        sp = lv["speech"]
        out.append(
            f"speech level  {sp['level_dbfs']:7.1f} dBFS   active frames ({sp['active_fraction']:.0%}) "
            f"p10 {sp['p10']:.1f} / p50 {sp['p50']:.1f} / p90 {sp['p90']:.1f}; peak {sp['peak_dbfs']:.1f} dBFS"
        )
        out.append(f"SNR           {lv['snr_db']:7.1f} dB")
        out.append(
            f"energy gate   {sugg['gate_dbfs']:7.1f} dBFS   (adaptive floor + vad.energy_margin_db, "
            f"after gain; used by vad.backend = \"webrtcvad\", configured: {cfg.vad.backend})"
        )
    cur = cfg.to_dict()
    for dotted, v in values.items():
        sec, key = dotted.split(".", 1)
        old = base.get(sec, {}).get(key, cur[sec][key])  # the current file's value, else the config's
        out.append(
            f"  {dotted:<24} {toml_value(old):>8} -> {toml_value(v)}"
            if old != v
            else f"  {dotted:<24} {toml_value(v):>8}    (unchanged)"
        )
    out.append(f"av offset: {offset_note}")
    return out


def run_calibrate(cfg: Config, provenance: dict, args) -> int:
    for name in ("seconds_quiet", "seconds_speech", "seconds_clap"):
        if not 1.0 <= getattr(args, name) <= 600:
            raise UsageError(f"--{name.replace('_', '-')} must be 1..600 s")
    if not cfg.microphone.enabled:
        raise UsageError("microphone.enabled is false: calibrate measures the microphone")
    interactive = not args.yes
    if interactive and not sys.stdin.isatty():
        raise UsageError("calibrate prompts on a terminal: pass --yes to run the phases without Enter")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the path of a TOML file")
    s = _Session(interactive)
    got = _capture(cfg, args, s)
    values: dict[str, object] = {"microphone.device": cfg.microphone.device}
    lv = sugg = None
    notes: list[str] = []
    if "quiet" in got:
        lv = M.measure_levels(got["quiet"], got["speech"], cfg.vad.frame_ms)
        if lv["speech"] is None:
            raise InputError(
                "no speech heard in the speech phase (nothing 6 dB over the noise): "
                "check microphone.device with `robot-emotion devices` and the input volume"
            )
        if lv["noise"]["floor_dbfs"] <= M.SILENT_DBFS + 1:
            notes.append("the quiet phase was digital silence: a muted or virtual input?")
        if lv["noise"]["p99"] - lv["noise"]["p50"] > 15:
            notes.append(
                "the quiet phase had loud moments (p99 is {:.0f} dB over the median): the gate "
                "was kept above them; calibrate again in quiet for a lower one".format(
                    lv["noise"]["p99"] - lv["noise"]["p50"]
                )
            )
        sugg, more = M.suggest(lv, cfg.microphone.gain_db, cfg.vad.energy_margin_db)
        notes += more
        values.update({k: sugg[k] for k in ("microphone.gain_db", "vad.aggressiveness", "vad.energy_margin_db")})
        silero, more = M.vad_threshold(got["quiet"], got["speech"], sugg["microphone.gain_db"])
        sugg.update(silero)
        notes += more
        values["vad.threshold"] = silero["vad.threshold"]
    offset = None
    if "clap" in got:
        offset, why = M.av_offset_ms(*got["clap"])
        if offset is not None and abs(offset) > 2000:
            offset, why = None, f"{why}: {offset:.0f} ms is outside -2000..2000 (a second clap?)"
        offset_note = (
            f"{offset:+.0f} ms ({why})"
            if offset is not None
            else f"not measured ({why}); av.offset_ms left at {cfg.av.offset_ms:g}"
        )
        if offset is not None:
            values.update({"camera.source": cfg.camera.source, "av.offset_ms": offset})
    elif args.only == "levels":
        offset_note = f"not measured (--only levels); av.offset_ms left at {cfg.av.offset_ms:g}"
    else:
        offset_note = f"no camera ({got.get('no_camera')}): av.offset_ms left as is ({cfg.av.offset_ms:g} ms)"
    if args.only == "offset" and offset is None:
        raise InputError(f"--only offset: {offset_note}")
    cal = provenance.get("calibration")
    base_path = Path(os.path.normpath(cal)) if cal else None
    base = base_path.read_text(encoding="utf-8") if base_path and base_path.is_file() else ""
    text = render_toml(base, values, _header(cfg, lv, offset_note))
    merge(Config(), tomllib.loads(text), origin=str(out))  # the file must load (ranges checked)
    _warn_launch_overrides(provenance, values, s)
    report = _report(lv, sugg, cfg, tomllib.loads(base), values, offset_note)
    print("\n".join(report + [f"note: {n}" for n in notes]))
    diff = list(
        difflib.unified_diff(
            base.splitlines(),
            text.splitlines(),
            lineterm="",
            fromfile=str(base_path or "(no calibration)"),
            tofile=str(out),
        )
    )
    print("\n".join(diff) if diff else "# no change against the current calibration")
    if args.report:
        _write(
            Path(args.report),
            json.dumps(
                {
                    "levels": lv,
                    "suggested": sugg,
                    "values": values,
                    "av_offset_ms": offset,
                    "av_offset": offset_note,
                    "notes": notes,
                },
                indent=2,
            )
            + "\n",
            "--report",
        )
    if interactive:
        s.say(f"write {out}? [y/N]")
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            s.say("nothing written")
            return 0
    _write(out, text, "--out")
    s.say(f"wrote {out}; use it with --calibration {out} (or a launch profile's calibration = ...)")
    return 0


def _write(path: Path, text: str, flag: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write it ({e.strerror or e})") from None


def _warn_launch_overrides(provenance: dict, values: dict, s: _Session) -> None:
    """A launch profile's value wins over the calibration's: say which written keys it hides."""
    launch = provenance.get("launch")
    if not launch or not Path(launch).is_file():
        return
    data = tomllib.loads(Path(launch).read_text(encoding="utf-8"))
    hidden = [
        k for k in values if isinstance(data.get(k.split(".")[0]), dict) and k.split(".", 1)[1] in data[k.split(".")[0]]
    ]
    if hidden:
        s.say(f"note: {launch} sets {', '.join(hidden)}, which override(s) the calibration file")
