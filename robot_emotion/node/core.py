"""The Node: threads and queues from sources to the ZeroMQ publisher.

    sources --audio blocks (bounded queue)--> [audio thread: VAD] --speech.start/end--> publisher
                                                   | segments (queue)
                                                   v
    frames (latest slot live / queue replay) -> [face thread] -> face topic, face tracks
                                                   v
                                      [utterance thread: speakers, ASR, active speaker,
                                       dialogue history, emotion] -> utterance, emotion

Every thread has a stop event and is joined with a timeout. Results depend only on
capture times: in replay the utterance thread waits until the face thread has seen
the frames up to an utterance's end, so ``--speed max`` and recorded pace agree.
The face thread: face_thread.FaceThread (a part); what a segment still spoken hands the
utterance thread: segment_schedule.SegmentSchedule (a part);
the robot's own voice and the controllers' requests: robot_voice.RobotVoiceControl (a part);
live on a busy machine, what optional work to shed: load.LoadShedder (a part).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
import uuid

import numpy as np

from robot_emotion.audio.vad import Segmenter, SpeechEnd, SpeechStart, TurnGap
from robot_emotion.config import Config
from robot_emotion.node.dialogue import DialogueHistory, DialogueTurn
from robot_emotion.node.load import LoadShedder
from robot_emotion.node.robot_voice import RobotVoice, RobotVoiceControl
from robot_emotion.bus import messages
from robot_emotion.bus.publish import Publisher
from robot_emotion.node.face_thread import FaceThread
from robot_emotion.sources.base import AudioQueue, Frame
from robot_emotion.node.segment_schedule import SegmentSchedule
from robot_emotion.node.speech_in_progress import PartialAudio, SpeakerProbe, TurnSoFar
from robot_emotion.node.stats import StageStats

_STOP = object()


class Node:
    def __init__(
        self,
        cfg: Config,
        clock,
        *,
        mode: str = "live",
        session_id: str | None = None,
        perception=None,
        sinks=(),
        zmq_context=None,
    ):
        self.cfg, self.clock, self.mode = cfg, clock, mode
        self.session_id = session_id or cfg.node.session_id or uuid.uuid4().hex[:12]
        # which configuration produced this stream (ready, status): equal digests, equal settings
        self.config_digest = hashlib.sha256(
            json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()[:12]
        self.perception = perception
        self.stats = StageStats()
        self.history = DialogueHistory(cfg.node.history_max_turns)
        self.audio_q = AudioQueue(cfg.microphone.queue_blocks if mode == "live" else 64)
        self.segments: queue.Queue = queue.Queue()  # (time queued, item): never bounded, never dropped
        self.skipped = {"provisional": 0, "partial": 0, "incremental": 0}  # live backlog policy (see _utterance_loop)
        # live, a busy machine: optional work is shed in a fixed order (load.py); a replay never sheds
        self.load = LoadShedder(cfg.node.lag_budget_ms, enabled=mode == "live")
        self.progress = 0  # items the stages have finished (the drain watches it)
        self.sources: list = []
        self.recorders: list = []  # session writers (their failures end the run non-zero)
        self.device_events: list[dict] = []
        self.control_server = None  # live: control.ControlServer (its state is in status)
        self.publisher = Publisher(
            cfg.publish.endpoint,
            self.session_id,
            cfg.publish.sndhwm,
            cfg.publish.status_hz,
            self.status,
            list(sinks),
            zmq_context,
            options=cfg.publish,
        )
        self.segmenter = Segmenter(cfg.vad)
        self.robot = RobotVoice(cfg.control.barge_in_db, cfg.microphone.block_ms / 1000.0)
        # what the segment being spoken hands the utterance thread, and when
        self.schedule = SegmentSchedule(cfg, self.segmenter, perception, self.robot, self.load)
        self.control = RobotVoiceControl(
            self.robot,
            cfg.control.robot_voice,
            self.publisher.publish,
            self.history,
            clock,
            self.segmenter.open_segment,
        )
        self._input_finished = False
        self._stop = threading.Event()
        self.faces = FaceThread(
            cfg,
            mode,
            perception,
            self.load,
            self.stats,
            self.publisher.publish,
            self._stop,
            camera_down=self._camera_down,
            seen=self._made_progress,
        )
        self._audio_done = threading.Event()
        self._t_start = time.monotonic()
        self.utterances = 0
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        if perception is not None:  # what the stages may use of this node (perception.NodeLink)
            from robot_emotion.node.perception import NodeLink

            perception.attach(
                NodeLink(
                    mode=mode,
                    stats=self.stats,
                    history=self.history,
                    publish=self.publish_results,
                    queued=self.queued,
                    stopping=self._stop.is_set,
                )
            )

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def slot(self):
        """Live video: the latest-frame slot a camera source puts its frames in."""
        return self.faces.slot

    @property
    def realtime(self) -> bool:
        """Live or paced replay: latency matters more than throughput (False at --speed max)."""
        return self.faces.realtime

    @realtime.setter
    def realtime(self, value: bool) -> None:
        self.faces.realtime = bool(value)

    def start(self, sources: list, has_video: bool = False, before_sources=None) -> None:
        self.faces.has_video = has_video
        self.publisher.start()
        self.sources = sources
        for name, target in (
            ("audio", self._audio_loop),
            ("utterances", self._utterance_loop),
            ("faces", self.faces.run),
        ):
            th = threading.Thread(target=self._guard(target), name=name, daemon=True)
            th.start()
            self._threads.append(th)
        if before_sources is not None:
            before_sources()
        for s in sources:
            s.start()

    def _guard(self, fn):
        def run():
            try:
                fn()
            except Exception as e:  # a crashed stage must not hang the node silently
                from robot_emotion.errors import Failure  # a runtime failure (exit 4)

                self.errors.append(Failure(f"{threading.current_thread().name}: {type(e).__name__}: {e}"))
                self._stop.set()

        return run

    def feed_frame(self, frame: Frame) -> bool:
        """Replay frame sink: blocking (no drops), returns False once stopping."""
        return self.faces.feed(frame)

    def stop(self, drain: bool = True, stall_s: float = 120.0, progress=None, reason: str | None = None) -> None:
        """Stop sources, let the stages finish ALL they hold, then close the publisher.

        Draining waits as long as the stages make progress (a long replay at --speed max can
        queue minutes of work); it gives up only when nothing finished for ``stall_s``, and
        says so in ``errors``. ``progress(n_queued)`` is called every few seconds meanwhile.
        Without drain (interrupted) the item in hand is finished and the rest is skipped.
        The last message is ``session.end`` (``reason``: end of input, stopped, interrupted, error)."""
        began = time.monotonic()
        for s in self.sources:
            s.stop()
        if drain:
            self.finish_input()  # live sources just stopped: flush what the VAD holds
        else:
            self._stop.set()
        self._audio_done.wait(stall_s if drain else 5.0)
        self.faces.no_more_frames()
        last, last_change, last_report = self.progress, time.monotonic(), time.monotonic()
        for th in self._threads:
            while th.is_alive():
                th.join(timeout=0.5)
                now = time.monotonic()
                if self.progress != last:
                    last, last_change = self.progress, now
                elif now - last_change > stall_s:
                    from robot_emotion.errors import Failure  # a runtime failure (exit 4)

                    self.errors.append(Failure(f"{th.name} made no progress for {stall_s:.0f} s while finishing"))
                    break
                if progress is not None and now - last_report >= 5.0:
                    last_report = now
                    progress(self.segments.qsize())
        self.drain_s = time.monotonic() - began
        self._stop.set()
        close = getattr(self.perception, "close", None)
        if close is not None:  # the stages' own worker threads: a node embedded in a
            close()  # program (api.py) must leave none behind when it stops
        self.publisher.publish(
            {
                "topic": "session.end",
                "t": self.clock.now(),
                "reason": "error" if self.errors else reason or ("stopped" if drain else "interrupted"),
                "unix_start": getattr(self.clock, "unix_start", None) or None,
                "utterances": self.utterances,
                "wall_s": time.monotonic() - self._t_start,
            }
        )
        self.publisher.stop()

    def finish_input(self) -> None:
        """No more input: flush the segmenter, then let every stage drain (idempotent)."""
        if self._input_finished:
            return
        self._input_finished = True
        self.faces.end_of_frames()
        self.audio_q.put(_EndOfAudio(), self._stop)

    # ---- audio: VAD -> speech.start / speech.end --------------------------------------
    def _audio_loop(self) -> None:
        last_t = 0.0
        while not self._stop.is_set():
            block = self.audio_q.get(timeout=0.1)
            if block is None:
                continue
            self._audio_picked = time.monotonic()  # (the backlog ends here: publish.py)
            if isinstance(block, _EndOfAudio):
                for ev in self.segmenter.flush(last_t):
                    self._on_vad_event(ev, time.monotonic())
                break
            self._observe_lag(block.wall)
            samples = block.samples
            if self.robot.muted:  # the controllers muted us: perceive silence
                samples = np.zeros_like(samples)
            if self.perception is not None:
                self.perception.on_audio(block.t, samples)
            t0 = time.perf_counter()
            events = self.segmenter.push(block.t, samples)
            self.stats.add("vad", (time.perf_counter() - t0) * 1000.0)
            last_t = block.t + block.samples.size / 16000
            for ev in events:
                self._on_vad_event(ev, block.wall)
            if self.robot.intervals:
                self.control.check_barge_in(block.t, samples)
            for item in self.schedule.due(last_t, block.wall):
                self._enqueue(item)
        self._enqueue(_STOP)
        if self.perception is not None:
            self.perception.close_audio()
        self._audio_done.set()

    def _on_vad_event(self, ev, wall: float) -> None:
        ev.wall = wall
        if isinstance(ev, (SpeechStart, SpeechEnd)) and self.control.robot_segment(ev):
            return
        if isinstance(ev, SpeechStart):
            # speaker: not known at onset (the voice is checked from probe_s on; the turn's
            # utterance carries it); "robot" for the robot's own segments (robot_voice.py)
            self.publisher.publish(messages.speech_start(ev.utterance_id, ev.start, ev.decided_at))
        elif isinstance(ev, SpeechEnd):
            self.publisher.publish(
                {
                    **messages.speech_end(ev.utterance_id, ev.start, ev.end, ev.decided_at, ev.forced, ev.dropped),
                    "_wall_end": wall,
                    **self._backlog_mark(getattr(self, "_audio_picked", None)),
                }
            )
            if not ev.dropped:
                self._enqueue(ev)
        elif isinstance(ev, TurnGap) and self.perception is not None:
            self._enqueue(ev)

    def _observe_lag(self, block_wall: float) -> None:
        """The load's lag: the oldest work waiting in the utterance queue, or the audio block
        just taken, whichever waited longer (load.py)."""
        now = time.monotonic()
        with self.segments.mutex:
            oldest = self.segments.queue[0][0] if self.segments.queue else now
        lag = max(now - oldest, now - block_wall if block_wall else 0.0)
        self.load.observe(lag * 1000.0, now, busy=self.segmenter.in_speech or oldest < now)

    def on_control(self, req: dict) -> dict:
        """A controller's request (the control thread): see robot_voice.py."""
        return self.control.on_control(req)

    # ---- utterances: speakers, ASR, faces, dialogue, emotion ---------------------------
    def _enqueue(self, item) -> None:
        self.segments.put((time.monotonic(), item))

    def queued(self, match) -> bool:
        """Is an item that ``match(item)`` accepts already waiting in the utterance queue?"""
        with self.segments.mutex:
            return any(match(item) for _, item in self.segments.queue)

    def _backlogged(self) -> bool:
        """Live only: more work is already queued behind the current item."""
        return self.mode == "live" and self.segments.qsize() > 0

    def _utterance_loop(self) -> None:
        """Every queued item is handled, in order; nothing is dropped. Live backlog policy:
        when more work is already queued, a provisional result (the turn will be extended or
        closed by that work) and a partial transcript are skipped and counted in status
        ``skipped``; the final result of every turn is always computed. Replay never skips
        (its events must not depend on the machine's speed). Before that, a busy machine sheds
        optional work where it is scheduled (``self.load``, load.py: counted in status ``load``)."""
        while True:
            queued, item = self.segments.get()
            self._picked = time.monotonic()
            self.stats.add("wait_utterances", (time.monotonic() - queued) * 1000.0)
            if item is _STOP:
                if self.perception is not None:
                    self.publish_results(self.perception.finish())
                break
            if self._stop.is_set():  # interrupted: no new work, the session is finalised
                continue
            if isinstance(item, SpeakerProbe):  # (a PartialAudio: test it first)
                self.publish_results(self.perception.on_probe(item))
            elif isinstance(item, TurnSoFar):
                if self._backlogged():
                    self.skipped["incremental"] += 1
                else:
                    self.publish_results(self.perception.on_turn_so_far(item))
            elif isinstance(item, PartialAudio):
                if self._backlogged():
                    self.skipped["partial"] += 1
                else:
                    body = self.perception.transcribe_partial(item)
                    if body is not None:
                        self.publisher.publish(body)
            elif isinstance(item, TurnGap):
                self.publish_results(self.perception.on_turn_gap(item))
            elif self.perception is None:
                self.publish_results([self._plain_utterance(item)])
            else:
                self.faces.wait_until(item.end)
                with self.faces.turn_in_progress():  # faces yield the CPU meanwhile
                    bodies = self.perception.process_segment(item, provisional=not self._backlogged())
                self.publish_results(bodies)
            self.progress += 1

    def publish_results(self, bodies: list[dict]) -> None:
        """Only final turns enter the dialogue history (the text context of later turns)."""
        for body in bodies:
            if body.get("final"):
                if body["topic"] == "utterance" and body.get("speech", True):
                    self.utterances += 1
                    self.history.add(
                        DialogueTurn(body["utterance_id"], body["speaker"], body["text"], body["start"], body["end"])
                    )
                elif body["topic"] == "emotion" and body.get("label"):
                    self.history.set_emotion(body["utterance_id"], body["label"], body["probs"])
            if "_wall_end" in body:
                body.update(self._backlog_mark(getattr(self, "_picked", None)))
            self.publisher.publish(body)

    def _backlog_mark(self, picked: float | None) -> dict:
        """A replay at --speed max reads ahead of the node: the time its work waited in the
        queues is backlog, not the node's latency. ``_picked`` (when the stage took the work up)
        lets the publisher split latency_ms.total into ``backlog`` + ``processing``."""
        return {} if self.realtime or picked is None else {"_picked": picked}

    def _plain_utterance(self, seg: SpeechEnd) -> dict:
        """Spine only (no perception): every segment is its own final utterance."""
        return {
            **messages.utterance(
                seg.utterance_id,
                final=True,
                start=seg.start,
                end=seg.end,
                speaker=None,
                text=None,
                segments=[seg.utterance_id],
                spans=[[seg.start, seg.end]],
                forced=seg.forced,
            ),
            "_wall_end": seg.wall,
        }

    def _made_progress(self) -> None:
        self.progress += 1

    # ---- devices -----------------------------------------------------------------------
    def device_event(self, device: str, state: str, t: float) -> None:
        """A device lost or restored: published (``device`` topic) and kept in the session."""
        self.device_events.append({"device": device, "state": state, "t": t})
        self.publisher.publish({"topic": "device", "device": device, "state": state, "t": t})
        for r in self.recorders:
            r.note_device(device, state, t)

    def _camera_down(self) -> bool:
        return any(s.name == "camera" and s.state != "running" for s in self.sources)

    # ---- status ------------------------------------------------------------------------
    def output_failures(self) -> list[str]:
        """Outputs that failed (reported once each, when they failed)."""
        return list(self.publisher.sink_failures) + [r.failure for r in self.recorders if r.failure]

    def status(self) -> dict:
        # Once a minute (status runs at 1 Hz on the publisher thread): hand the heap pages the
        # stages freed back to the system; a node that runs for days must stay flat.
        self._status_calls = getattr(self, "_status_calls", 0) + 1
        if self._status_calls % 60 == 0:
            from robot_emotion.node.footprint import release_free_memory

            release_free_memory()
        dropped = {
            "frames": self.faces.slot.dropped,
            "audio_overflows": self.audio_q.overflows,
            "publish": self.publisher.dropped,
        }
        skipped = dict(self.skipped)
        for s in self.sources:
            if hasattr(s, "portaudio_overflows"):
                dropped["portaudio_overflows"] = s.portaudio_overflows
            if hasattr(s, "corrupt_frames"):  # replay: video frames that did not decode
                skipped["corrupt_frames"] = s.corrupt_frames
        return {
            "uptime": time.monotonic() - self._t_start,
            "t": self.clock.now(),
            # the session's state for a subscriber that joined late (or before the node)
            "ready": self.publisher.latched_ready is not None,
            "mode": self.mode,
            "unix_start": getattr(self.clock, "unix_start", None) or None,
            "config_digest": self.config_digest,
            "stages": self.stats.summary(),
            "queues": {
                "audio": self.audio_q.qsize(),
                "frames": self.faces.queued(),
                "segments": self.segments.qsize(),
                "publish": self.publisher.pending(),
            },
            "dropped": dropped,
            "sources": {s.name: s.state for s in self.sources},
            "skipped": skipped,
            "load": self.load.snapshot(time.monotonic()),
            "robot": {
                "speaking": self.robot.speaking,
                "muted": self.robot.muted,
                "segments_dropped": self.robot.robot_segments,
                **(
                    {"control": self.control_server.state, "control_failures": self.control_server.failures}
                    if self.control_server is not None
                    else {}
                ),
            },
            "outputs": {
                **self.publisher.outputs(),
                **{"session": "failed" if r.failure else "recording" for r in self.recorders},
            },
            "utterances": self.utterances,
            "in_speech": self.segmenter.in_speech,
            "asr_fallbacks": getattr(getattr(self.perception, "asr", None), "fallbacks", 0),
        }


class _EndOfAudio:
    """Sentinel block: the recording is over."""

    t = 0.0
    samples = np.zeros(0, np.int16)
    wall = 0.0
