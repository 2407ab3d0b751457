"""Perception stages behind the Node: speakers, ASR, faces, active speaker, emotion.

The Node attaches a NodeLink (what the stages may use of it: stats, dialogue history,
publishing, its queue, whether it is stopping) and calls these hooks, each from its own thread:
  on_audio(block)            audio thread   speech energy for the active-speaker match
  process_frame(frame)       face thread    faces -> `face` message
  process_segment(seg)       utterance thread: a VAD segment extends or closes turns
                             (audio/turns.py) -> provisional / final `utterance` + `emotion`
  on_turn_gap, finish        the other ways a turn closes (a pause, the end of the input)
  on_probe, on_turn_so_far   the segment still being spoken (speech_in_progress.py, the part
                             ``live``): a new voice closes the open turn now; decode the turn so far

Face tracks are shared between the face and utterance threads under one lock. In replay
the face thread waits for the audio energy up to each frame's time, so a replay at max
speed and one at recorded pace give the same results.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.audio.turns import Piece, Turn, TurnBuilder
from robot_emotion.bus import messages
from robot_emotion.config import Config
from robot_emotion.node.dialogue import DialogueHistory
from robot_emotion.node.speech_in_progress import SpeechInProgress
from robot_emotion.node.stats import StageStats

ENERGY_HOP_S = 0.03
ENERGY_KEEP_S = 60.0


@dataclass
class NodeLink:
    """What the perception stages may use of the Node that runs them, and nothing more. The
    default is a node of one's own (training's feature extraction: replay, nothing published)."""

    mode: str = "replay"  # "live" | "replay"
    stats: StageStats = field(default_factory=StageStats)  # per-stage timings (status)
    history: DialogueHistory = field(default_factory=DialogueHistory)  # final turns: text context
    publish: Callable[[list], None] = lambda bodies: None  # results out now, in order
    queued: Callable[[Callable], bool] = lambda match: False  # such an item already waiting?
    stopping: Callable[[], bool] = lambda: False  # the node is stopping


class Perception:
    def __init__(self, cfg: Config, *, asr=None, speakers=None, faces=None, emotion=None, people=None):
        self.cfg, self.asr, self.speakers, self.faces, self.emotion = cfg, asr, speakers, faces, emotion
        self.people = people  # PeopleLink (people/voice.py) when people.enabled
        self.uses_faces = faces is not None
        self._energy_cond = threading.Condition()
        self._energy_t: list[float] = []
        self._energy: list[float] = []
        self._audio_time = 0.0
        self._audio_closed = False
        self._fed = 0  # energy samples already pushed to faces
        self._seen_speakers: set[str] = set()
        self._face_votes: dict[int, dict[str, int]] = {}  # face track -> voice ids heard from it
        self.turns = TurnBuilder(cfg.vad.turn_gap_ms / 1000.0, cfg.vad.max_utterance_s)
        self.link = NodeLink()
        self.live = SpeechInProgress(self)  # the segment still being spoken

    def attach(self, link: NodeLink) -> None:
        """The Node that runs these stages (core.Node does this when it is built)."""
        self.link = link

    @classmethod
    def from_config(cls, cfg: Config, has_video: bool, log=None) -> "Perception | None":
        """The configured stages, models loaded; ``log(line)`` hears progress (loading takes
        10-15 s on a small CPU: a robot's operator should see why nothing happens yet)."""
        log = log or (lambda line: None)
        from robot_emotion.node.footprint import bound_primitive_caches

        wanted = (
            cfg.asr.enabled and cfg.asr.backend != "none",
            cfg.speakers.enabled,
            has_video and cfg.faces.enabled,
            cfg.emotion.enabled,
        )
        if not any(wanted):
            bound_primitive_caches()  # (silero VAD's, before it runs)
            return None  # the spine alone never imports torch (~300 MB)
        from robot_emotion.config import ConfigError
        from robot_emotion.compute import resolve_device

        try:
            device = resolve_device(cfg.node.device)
        except ValueError as e:  # e.g. cuda asked for on a machine without one
            raise ConfigError(f"node.device: {e}") from None
        from robot_emotion.threads import use_node_threads

        # The node's stages run in their own threads (VAD, faces, utterances) on a small CPU:
        # torch's intra-op threads on top oversubscribe it (first emotion p95 on the
        # conversation set 466-515 ms with 2 threads, 400 ms with 1; bench 352 ms).
        use_node_threads()
        asr = speakers = faces = emotion = None
        if cfg.emotion.enabled:  # a checkpoint that cannot work is refused before any model loads
            from robot_emotion.node.emotion import precheck_checkpoint

            precheck_checkpoint(cfg)
        if cfg.asr.enabled and cfg.asr.backend != "none":
            from robot_emotion.audio.asr import make_asr

            log(f"loading speech recognition ({cfg.asr.backend})")
            asr = make_asr(cfg.asr, device=device)
        # Before any other model runs: oneDNN's caches, CTranslate2's read at the recogniser's
        # warm-up, then torch's (footprint.py says why they differ).
        bound_primitive_caches(getattr(asr, "warm_up", None))
        if cfg.speakers.enabled:
            from robot_emotion.audio.speakers import SpeakerTracker

            log("loading the speaker encoder")
            speakers = SpeakerTracker(cfg.speakers)
        people = None
        if cfg.people.enabled and speakers is not None:
            from robot_emotion.people.store import Matcher, PeopleStore, store_path
            from robot_emotion.people.voice import PeopleLink

            matcher = Matcher.load(cfg.people.match) if cfg.people.match else Matcher.load()
            people = PeopleLink(cfg.people, PeopleStore(store_path(cfg.people.store)), matcher)
        if has_video and cfg.faces.enabled:
            from robot_emotion.vision.faces import FacePipeline

            log("loading face detection and expressions")
            faces = FacePipeline(cfg.faces, device=device)
        if cfg.emotion.enabled:
            from robot_emotion.node.emotion import EmotionScorer

            log("loading the emotion model")
            emotion = EmotionScorer.from_config(cfg, device=device, asr=asr)
        from robot_emotion.node.footprint import release_free_memory

        release_free_memory()  # loading left ~120 MB of freed temporaries in malloc's heap
        if not any((asr, speakers, faces, emotion)):
            return None
        return cls(cfg, asr=asr, speakers=speakers, faces=faces, emotion=emotion, people=people)

    # ---- audio energy (audio thread) -----------------------------------------------------
    def on_audio(self, t: float, samples: np.ndarray) -> None:
        if not self.uses_faces:
            return
        hop = int(ENERGY_HOP_S * SAMPLE_RATE)
        x = samples.astype(np.float32) / 32768.0
        with self._energy_cond:
            for i in range(0, x.size - hop + 1, hop):
                self._energy_t.append(t + (i + hop / 2) / SAMPLE_RATE)
                self._energy.append(float(np.sqrt(np.mean(x[i : i + hop] ** 2))))
            self._audio_time = t + x.size / SAMPLE_RATE
            # Keep a minute: enough for any utterance plus padding, bounded for a robot that runs for days.
            drop = next((i for i, tt in enumerate(self._energy_t) if tt >= self._audio_time - ENERGY_KEEP_S), 0)
            if drop > 2000 and drop <= self._fed:
                del self._energy_t[:drop], self._energy[:drop]
                self._fed -= drop
            self._energy_cond.notify_all()

    def close_audio(self) -> None:
        with self._energy_cond:
            self._audio_closed = True
            self._energy_cond.notify_all()

    # ---- faces (face thread) -------------------------------------------------------------
    def process_frame(self, frame) -> dict | None:
        if self.link.mode == "replay":
            with self._energy_cond:
                self._energy_cond.wait_for(
                    lambda: self._audio_time >= frame.t or self._audio_closed or self.link.stopping()
                )
        with self._energy_cond:
            n = sum(1 for tt in self._energy_t[self._fed :] if tt <= frame.t)
            new_t, new_e = self._energy_t[self._fed : self._fed + n], self._energy[self._fed : self._fed + n]
            self._fed += n
        if new_t:
            self.faces.push_audio(new_t, new_e)
        tracks = self.faces.process(frame.image, frame.t)  # (locks its tracker only to update it)
        for name, ms in self.faces.timings_ms.items():
            if name in ("detect", "expression"):
                self.link.stats.add(f"face_{name}", ms)
        return {
            "topic": "face",
            "t": frame.t,
            "tracks": tracks,
            "frame_size": [int(frame.image.shape[1]), int(frame.image.shape[0])],
        }

    def face_data(self, t0: float, t1: float) -> dict:
        if not self.uses_faces:
            return {}
        with self.faces.lock:
            return self.faces.tracker.tracks_between(t0, t1)

    def active_speaker(self, t0: float, t1: float, tracks: dict) -> tuple[int | None, float]:
        from robot_emotion.vision.active_speaker import assign_active_speaker

        series = {k: (v["t"], v["mouth_activity"]) for k, v in tracks.items()}
        with self._energy_cond:
            et, ee = np.asarray(self._energy_t), np.asarray(self._energy)
        keep = (et >= t0 - 1.0) & (et <= t1 + 1.0)
        return assign_active_speaker(series, et[keep], ee[keep], t0, t1)

    # ---- utterances (utterance thread) ---------------------------------------------------
    def _pieces(self, seg) -> list[Piece]:
        """The segment's speech split at voice changes, every piece with its speaker id."""
        first = getattr(seg, "first_index", 0)
        if self.speakers is None:
            return [Piece(seg, first, True, seg.start, seg.end)]
        t0 = time.perf_counter()
        a0 = max(0, int(round((seg.start - seg.audio_t0) * SAMPLE_RATE)))
        a1 = int(round((seg.end - seg.audio_t0) * SAMPLE_RATE))
        audio = seg.audio[a0:a1].astype(np.float32) / 32768.0
        voice = self.speakers.label(
            self.speakers.split(audio, seg.start), seg.utterance_id, self.live.prefer(seg.utterance_id), first
        )
        self.link.stats.add("speakers", (time.perf_counter() - t0) * 1000.0)
        pieces = [
            Piece(
                seg, first + i, i == len(voice) - 1, v.start, v.end, v.speaker, v.confidence, v.overlap, v.heard_until
            )
            for i, v in enumerate(voice)
        ]
        pieces[0].start, pieces[-1].end = seg.start, seg.end  # exact VAD boundaries
        pieces[0].overlap = getattr(seg, "overlap_start", False)  # decided at a live cut, if any
        return pieces

    def process_segment(self, seg, provisional: bool = True) -> list[dict]:
        """A VAD segment (speech up to a pause): extend or close turns, publish the open
        turn so far as provisional (``final: false``) unless the node is behind (live)."""
        seg = self.live.rest_of(seg)
        began = time.monotonic()
        guess = self.live.speculate(seg) if provisional else None
        if provisional:  # (while the second core transcribes the tail)
            self.link.publish(self.live.early_result(seg))
        bodies = []
        split_began = time.monotonic()
        pieces = self._pieces(seg)
        # where a provisional result's time went before its own stages: the queue in front of
        # the utterance thread, and the speaker split of the segment (README "Latency")
        pre = {"queue": (began - seg.wall) * 1000.0, "speakers": (time.monotonic() - split_began) * 1000.0}
        self.live.segment_over()
        for piece in pieces:
            for closed in self.turns.add(piece):
                # out now, not after the open turn's result (~100-250 ms of recognition and
                # text), and into the dialogue history first, as when a probe closes a turn
                self.link.publish(self.finalize(closed))
        t = self.turns.open
        if t is not None and t.dirty and provisional:
            bodies += self._result(t, final=False, guess=guess, pre=pre)
        elif guess is not None:
            guess.result()  # (never leave the recogniser busy behind our back)
        return bodies

    def on_turn_gap(self, gap) -> list[dict]:
        t = self.turns.gap(gap.last_end)
        return self.finalize(t) if t is not None else []

    # the segment still being spoken (speech_in_progress.py)
    def on_probe(self, probe) -> list[dict]:
        return self.live.on_probe(probe)

    def on_turn_so_far(self, item) -> list[dict]:
        return self.live.on_turn_so_far(item)

    def transcribe_partial(self, part) -> dict | None:
        return self.live.transcribe_partial(part)

    def close(self) -> None:
        """The node stopped: let the recogniser thread go (a process may run many sessions)."""
        self.live.close()

    def finish(self) -> list[dict]:
        """End of stream: the open turn is final."""
        t = self.turns.close()
        return self.finalize(t) if t is not None else []

    def finalize(self, turn: Turn) -> list[dict]:
        """Publish a closed turn with ``final: true``. Its last provisional result already
        covers all of it unless pieces arrived since: then it is reused, not recomputed."""
        if turn.dirty or turn.bodies is None:
            bodies = self._result(turn, final=True)
        else:
            # (the publisher popped `_wall_end` from the provisional bodies: set it again)
            bodies = [
                dict(b, final=True, latency_ms=dict(b.get("latency_ms", {})), _wall_end=turn.wall_end)
                for b in turn.bodies
            ]
        utt = bodies[0]
        if self.speakers is not None and utt.get("speech") is False:
            for p in turn.pieces:  # not a voice: it must not found or move a speaker
                self.speakers.clusterer.unassign(p.key)
        # Once per turn (not per provisional): check the voice id against the speaking face.
        speaker = self._reconcile(utt["speaker"], utt["face_track"], utt["face_confidence"])
        person = self.person(speaker)
        for b in bodies:
            b["speaker"], b["person"] = speaker, person
        return bodies

    def person(self, speaker: str | None) -> dict | None:
        """The stored person whose voice the speaker's is ({id, name, confidence}), or None."""
        if self.people is None or speaker is None:
            return None
        return self.people.person(speaker, self.speakers.clusterer)

    def prompt(self, turn: Turn) -> str | None:
        """The recogniser's prompt: the words of the last asr.prompt_turns turns before this one."""
        n = self.cfg.asr.prompt_turns
        texts = [t.text for t in self.link.history.context(turn.start, n)] if n > 0 else []
        return " ".join(texts)[-400:] or None

    def past_turns(self, start: float) -> list:
        """The dialogue turns before ``start`` that the emotion model reads as context."""
        return self.link.history.context(start, self.emotion.history_turns)

    def score_emotion(self, body: dict, audio: np.ndarray, face: dict | None) -> dict:
        """The `emotion` body of an `utterance` body (its stage timings go to status)."""
        emo = self.emotion.score(body, audio, face, self.past_turns(body["start"]))
        for k, v in emo["latency_ms"].items():
            self.link.stats.add(k, v)
        return emo

    def _result(self, turn: Turn, final: bool, guess=None, pre=None) -> list[dict]:
        """Transcribe the whole turn so far, find its face, score its emotion."""
        audio_t0, audio = turn.audio()
        lat: dict[str, float] = dict(pre or {})
        text, asr_conf, speech = None, None, True
        if self.asr is not None:
            t0 = time.perf_counter()
            prompt = self.prompt(turn)
            tr = None
            if guess is not None:
                key, tr = guess.result()
                if key != (audio_t0, audio.size, prompt):
                    tr = None  # the turn came out otherwise: decode it now
                    self.link.stats.add("asr_guess_missed", 1.0)
            if tr is None:
                tr = self.asr.transcribe(audio, prompt=prompt, hypotheses=self.live.hypotheses(audio_t0))
            lat["asr"] = (time.perf_counter() - t0) * 1000.0  # what this result waited for it
            self.link.stats.add("asr", tr.ms)  # what the recognition cost
            text, asr_conf = tr.text.strip(), tr.confidence
            speech = bool(text)  # Whisper heard no words: noise, applause, a door
        start, end = turn.start, turn.end
        tracks = self.face_data(start, end)
        face_track, face_conf = None, None
        if tracks and speech:
            t0 = time.perf_counter()
            face_track, face_conf = self.active_speaker(start, end, tracks)
            self.link.stats.add("active_speaker", (time.perf_counter() - t0) * 1000.0)
        speaker = turn.speaker if speech else None
        body = messages.utterance(
            turn.id,
            final=final,
            speech=speech,
            start=start,
            end=end,
            speaker=speaker,
            speaker_confidence=turn.speaker_confidence if speech else None,
            person=self.person(speaker),
            face_track=face_track,
            face_confidence=face_conf if face_track is not None else None,
            text=text or None,
            asr_confidence=asr_conf if speech else None,
            language=self.cfg.asr.language if text else None,  # what the recogniser was told
            segments=turn.segments,
            spans=turn.spans,
            forced=turn.forced,
            overlap=turn.overlap,
            latency_ms=lat,
        )
        bodies = [body]
        if self.emotion is not None and speech:
            face = tracks.get(face_track) if face_track is not None else None
            # the whole turn as the recogniser heard it: its encoding is reused (whisper_short.py)
            emo = self.score_emotion(body, audio, face)
            emo["final"], emo["person"] = final, body["person"]
            bodies.append(emo)
        for b in bodies:
            b["_wall_end"] = turn.wall_end
        turn.bodies, turn.dirty = bodies, False
        return bodies

    def _relabel_open(self, speaker: str) -> None:
        """A merge renamed a voice: the open turn's pieces of it carry the surviving id."""
        merged = set(self.speakers.clusterer.speakers)
        if self.turns.open is not None:
            for p in self.turns.open.pieces:
                if p.speaker not in merged:
                    p.speaker = speaker

    def _reconcile(self, speaker: str | None, face_track: int | None, face_conf: float | None) -> str | None:
        """Voice ids checked against faces: a voice never heard before that comes from a face
        which has consistently been one speaker is that speaker (emotion shifts pitch and
        timbre; a new person would bring a new face track)."""
        if speaker is None:
            return None
        new = speaker not in self._seen_speakers
        if face_track is not None and (face_conf or 0.0) >= 0.3:
            votes = self._face_votes.setdefault(face_track, {})
            if new and votes:
                usual = max(votes, key=votes.get)
                if (
                    votes[usual] >= 2
                    and votes[usual] >= 0.75 * sum(votes.values())
                    and self.speakers.clusterer.merge(speaker, usual)
                ):
                    speaker, new = usual, False
                    self._relabel_open(speaker)
            votes[speaker] = votes.get(speaker, 0) + 1
        self._seen_speakers.add(speaker)
        return speaker
