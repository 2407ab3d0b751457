"""The Node's face thread: frames in, sampled at faces.rate_hz by capture time, to perception.

Frames arrive in the latest-frame slot live (a camera never waits; the slot counts what it
drops) and in a bounded queue in a replay (no drops: the replay waits). A frame is taken when
its capture time reaches the next sample time, so replay speed cannot change which frames are
seen. The utterance thread waits (``wait_until``) until the frames up to a turn's end were
handled, so `--speed max` and recorded pace agree; while it computes a turn's result
(``turn_in_progress``) the face thread yields the CPU at recorded pace and live.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

from robot_emotion.sources.base import Frame, LatestFrameSlot

FACE_YIELD_S = 1.0  # longest a face frame waits for the utterance thread
_END = object()  # replay: no more frames


class FaceThread:
    def __init__(self, cfg, mode: str, perception, load, stats, publish, stopping: threading.Event, camera_down, seen):
        """``publish``: the face topic's sink; ``stopping``: the Node's stop event; ``camera_down()``:
        live, is the camera lost now? ``seen()``: a frame was handled (the Node's progress)."""
        self.cfg, self.mode, self.perception, self.load, self.stats = cfg, mode, perception, load, stats
        self._publish, self._stopping, self._camera_down, self._seen = publish, stopping, camera_down, seen
        self.slot = LatestFrameSlot()  # live video
        self._queue: queue.Queue = queue.Queue(maxsize=8)  # replay video: no drops
        self.has_video = False
        self.realtime = True  # live or paced replay: latency matters more than throughput
        self.face_time = -1.0  # capture time of the last frame handled
        self._cond = threading.Condition()
        self._frames_done = threading.Event()  # no more frames will arrive
        self._finished = threading.Event()  # the thread has handled all of them
        self._turn_idle = threading.Event()  # clear while a turn's result is computed
        self._turn_idle.set()
        self._due = 0  # frames due at faces.rate_hz (load: every other one shed)

    @property
    def wants_frames(self) -> bool:
        return bool(self.has_video and self.perception is not None and self.perception.uses_faces)

    def queued(self) -> int:
        return self._queue.qsize()

    # ---- replay input ----------------------------------------------------------------
    def feed(self, frame: Frame) -> bool:
        """Replay frame sink: blocking (no drops), returns False once stopping."""
        if not self.wants_frames:
            return True
        return self._put(frame)

    def end_of_frames(self) -> None:
        """Replay: the recording has no more frames (the thread ends after the queued ones)."""
        if self.wants_frames:
            self._put(_END)

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def no_more_frames(self) -> None:
        """The sources stopped: the thread ends once its input is empty."""
        self._frames_done.set()
        with self._cond:
            self._cond.notify_all()

    # ---- the utterance thread's side ---------------------------------------------------
    def wait_until(self, t: float) -> None:
        """Block until the frames up to capture time t were handled (live: at most 0.3 s)."""
        if not self.wants_frames or (self.mode == "live" and self._camera_down()):
            return  # a lost camera: audio-only until it is back
        timeout = None if self.mode == "replay" else 0.3
        with self._cond:
            self._cond.wait_for(
                lambda: self.face_time >= t or self._finished.is_set() or self._stopping.is_set(), timeout=timeout
            )

    @contextlib.contextmanager
    def turn_in_progress(self):
        """Two cores: a face frame must not delay a turn's result (see run)."""
        self._turn_idle.clear()
        try:
            yield
        finally:
            self._turn_idle.set()

    # ---- the thread --------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.wants_frames:
                self._frames()
        finally:
            self._finished.set()
            with self._cond:
                self._cond.notify_all()

    def _next(self) -> Frame | None:
        if self.mode == "live":
            return self.slot.get(timeout=0.1)
        try:
            return self._queue.get(timeout=0.1)
        except queue.Empty:
            return None

    def _frames(self) -> None:
        period = 1.0 / self.cfg.faces.rate_hz
        next_t = 0.0
        while not self._stopping.is_set():
            frame = self._next()
            if frame is _END:
                break
            if frame is None:
                if self._frames_done.is_set():
                    break
                continue
            # Sample by CAPTURE time, so replay speed cannot change which frames are seen.
            if frame.t + 1e-9 >= next_t:
                next_t = max(next_t + period, frame.t + period / 2) if self.mode == "live" else next_t + period
                while next_t <= frame.t:
                    next_t += period
                self._due += 1
                if self._due % 2 == 0 and not self.load.allow("faces"):
                    self._handled(frame.t)  # shed (counted): half the face rate
                    continue
                # The face thread waits (at most FACE_YIELD_S) while the utterance thread
                # computes a turn's result; live, the latest-frame slot drops the frames it
                # misses (counted in status). Not in a replay at --speed max, where both run
                # side by side for throughput.
                if self.realtime:
                    self._turn_idle.wait(FACE_YIELD_S)
                t0 = time.perf_counter()
                body = self.perception.process_frame(frame)
                self.stats.add("faces", (time.perf_counter() - t0) * 1000.0)
                if body is not None and self.cfg.publish.face_topic:
                    self._publish(body)
            self._handled(frame.t)

    def _handled(self, t: float) -> None:
        with self._cond:
            self.face_time = t
            self._cond.notify_all()
        self._seen()
