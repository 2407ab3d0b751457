"""One corrupt video frame costs that frame, not the rest of the video (issue 25): a session
with a smashed keyframe, an MJPEG AVI with one bad JPEG, a session whose video is not a video
or whose capture times are missing -- all generated here from the shared face clip."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FACE_CLIP, run_cli, shared_file
from robot_emotion.media import iter_video
from robot_emotion.sources.session import SessionWriter, open_session

FPS, N_FRAMES = 15.0, 450  # 30 s; one keyframe a second (the writer's GOP)
FACES_ONLY = [
    "asr.enabled=false",
    "speakers.enabled=false",
    "emotion.enabled=false",
    'publish.endpoint="tcp://127.0.0.1:*"',
]


def _clip_frames(step: int = 2) -> list[np.ndarray]:
    import av

    with av.open(str(shared_file(FACE_CLIP))) as c:
        return [f.to_ndarray(format="rgb24")[::step, ::step] for f in c.decode(video=0)]


def _session(folder: Path, n: int = N_FRAMES) -> Path:
    """A real session (SessionWriter): the face clip looped, silence as audio."""
    frames = _clip_frames()
    w = SessionWriter(folder, "smash", 0.0, None, {}, fps=FPS)
    for i in range(n):
        t = i / FPS
        w.write_audio(np.zeros(int(16000 / FPS), np.int16), t)
        w.write_frame(t, frames[i % len(frames)])
    w.close()
    return folder


def _smash(path: Path, which: int) -> None:
    """Overwrite most bytes of the which-th keyframe of the file's video stream."""
    import av

    with av.open(str(path)) as c:
        keys = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.size]
    pos, size = keys[which]
    raw = bytearray(path.read_bytes())
    for i in range(pos + 100, pos + size - 50, 7):
        raw[i] = (raw[i] * 31 + 17) & 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def smashed(tmp_path_factory):
    base = tmp_path_factory.mktemp("corrupt")
    intact = _session(base / "intact")
    broken = base / "smashed"
    shutil.copytree(intact, broken)
    _smash(broken / "video.mp4", 10)  # the keyframe at ~10 s of 30 s
    return intact, broken


def test_a_smashed_keyframe_costs_its_frames_not_the_rest(smashed):
    import av

    intact, broken = smashed
    with av.open(str(broken / "video.mp4")) as c, pytest.raises(av.error.InvalidDataError):
        for _ in c.decode(video=0):  # FFmpeg's own loop stops at the bad packet (the old bug)
            pass
    s = open_session(broken)
    video = iter_video(s.video_path, s.frame_times, s.fps)
    got = [(t, img) for t, img in video]
    assert len(got) >= 0.95 * N_FRAMES, len(got)
    assert got[-1][0] == pytest.approx((N_FRAMES - 1) / FPS)  # decoded to the end
    assert video.skipped == N_FRAMES - len(got) and video.skipped > 0
    # every frame keeps its own capture time: the frames after the hole are the intact ones
    ref = {t: img for t, img in iter_video(open_session(intact).video_path, open_session(intact).frame_times)}
    late = [(t, img) for t, img in got if t > 12.0]
    assert late and all(np.abs(img.astype(int) - ref[t]).mean() < 3 for t, img in late[::20])


def test_replay_of_a_smashed_session_keeps_its_faces_and_says_what_it_skipped(smashed, tmp_path):
    intact, broken = smashed
    counts, stderr = {}, {}
    for name, folder in (("intact", intact), ("smashed", broken)):
        out = tmp_path / f"{name}.jsonl"
        r = run_cli("replay", folder, "--out", out, *sum([["--set", o] for o in FACES_ONLY], []))
        assert r.returncode == 0, r.stderr[-2000:]
        bodies = [json.loads(line) for line in out.read_text().splitlines()]
        counts[name] = sum(1 for b in bodies if b["topic"] == "face" and b["tracks"])
        stderr[name] = r.stderr
        if name == "smashed":
            status = [b for b in bodies if b["topic"] == "status"]
    assert counts["intact"] > 100, counts
    assert counts["smashed"] >= 0.95 * counts["intact"], counts
    assert "corrupt video frame(s) skipped" in stderr["smashed"], stderr["smashed"][-800:]
    assert "corrupt" not in stderr["intact"]
    assert status and status[-1]["skipped"]["corrupt_frames"] > 0  # replay runs for seconds


def test_one_bad_jpeg_in_an_mjpeg_avi_is_one_frame(tmp_path):
    import av

    path = tmp_path / "clip.avi"
    frames = _clip_frames(4)
    with av.open(str(path), "w") as c:
        st = c.add_stream("mjpeg", rate=15)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuvj420p"
        for i in range(60):
            for p in st.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    with av.open(str(path)) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(video=0) if p.size][20]
    raw = bytearray(path.read_bytes())
    raw[pos + 8 : pos + size - 8] = bytes(size - 16)  # the JPEG's markers and data zeroed
    path.write_bytes(bytes(raw))
    video = iter_video(path)
    got = [t for t, _ in video]
    assert 57 <= len(got) <= 59 and video.skipped == 60 - len(got), (len(got), video.skipped)
    assert got[-1] == pytest.approx(59 / 15)


@pytest.mark.parametrize(
    "damage,fragment",
    [
        ("not-a-video", "video.mp4 is unreadable"),
        ("no-times", "video.mp4 has no video_times.csv"),
    ],
)
def test_a_session_video_that_cannot_be_replayed_is_said_in_one_line(tmp_path, damage, fragment):
    folder = _session(tmp_path / "s", n=30)
    if damage == "not-a-video":
        (folder / "video.mp4").write_bytes(b"this is not a video\n" * 100)
    else:
        (folder / "video_times.csv").unlink()
    r = run_cli("replay", folder, *sum([["--set", o] for o in FACES_ONLY + ["faces.enabled=false"]], []))
    assert r.returncode == 0, r.stderr[-2000:]
    notes = [line for line in r.stderr.splitlines() if fragment in line]
    assert len(notes) == 1 and notes[0].startswith("# session s: ") and "audio only" in notes[0], r.stderr
