"""Perception stages behind the Node: speakers, ASR, faces, active speaker, emotion.

The Node calls three hooks, each from its own thread:
  on_audio(block)            audio thread   speech energy for the active-speaker match
  process_frame(frame, node) face thread    faces -> `face` message
  process_segment(seg, node) utterance thread -> `utterance` (+ `emotion`) messages

Face tracks are shared between the face and utterance threads under one lock. In replay
the face thread waits for the audio energy up to each frame's time, so a replay at max
speed and one at recorded pace give the same results.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from robot_emotion import SAMPLE_RATE
from robot_emotion.config import Config

ENERGY_HOP_S = 0.03
ENERGY_KEEP_S = 60.0


class Perception:
    def __init__(self, cfg: Config, *, asr=None, speakers=None, faces=None, emotion=None):
        self.cfg, self.asr, self.speakers, self.faces, self.emotion = cfg, asr, speakers, faces, emotion
        self.uses_faces = faces is not None
        self._lock = threading.Lock()            # guards the face tracker
        self._energy_cond = threading.Condition()
        self._energy_t: list[float] = []
        self._energy: list[float] = []
        self._audio_time = 0.0
        self._audio_closed = False
        self._fed = 0                            # energy samples already pushed to faces
        self._seen_speakers: set[str] = set()
        self._face_votes: dict[int, dict[str, int]] = {}  # face track -> voice ids heard from it

    @classmethod
    def from_config(cls, cfg: Config, has_video: bool) -> "Perception | None":
        wanted = (cfg.asr.enabled and cfg.asr.backend != "none", cfg.speakers.enabled,
                  has_video and cfg.faces.enabled, cfg.emotion.enabled)
        if not any(wanted):
            return None  # the spine alone never imports torch (~300 MB)
        from robot_emotion.config import ConfigError
        from robot_emotion.device import resolve_device
        try:
            device = resolve_device(cfg.node.device)
        except ValueError as e:  # e.g. cuda asked for on a machine without one
            raise ConfigError(f"node.device: {e}") from None
        asr = speakers = faces = emotion = None
        if cfg.asr.enabled and cfg.asr.backend != "none":
            from robot_emotion.audio.asr import make_asr
            asr = make_asr(cfg.asr, device=device)
        if cfg.speakers.enabled:
            from robot_emotion.audio.speakers import SpeakerTracker
            speakers = SpeakerTracker(cfg.speakers, min_segment_s=cfg.speakers.min_turn_s)
        if has_video and cfg.faces.enabled:
            from robot_emotion.vision.faces import FacePipeline
            faces = FacePipeline(cfg.faces, device=device)
        if cfg.emotion.enabled:
            from robot_emotion.emotion import EmotionScorer
            emotion = EmotionScorer.from_config(cfg, device=device, asr=asr)
        if not any((asr, speakers, faces, emotion)):
            return None
        return cls(cfg, asr=asr, speakers=speakers, faces=faces, emotion=emotion)

    # ---- audio energy (audio thread) -----------------------------------------------------
    def on_audio(self, t: float, samples: np.ndarray) -> None:
        if not self.uses_faces:
            return
        hop = int(ENERGY_HOP_S * SAMPLE_RATE)
        x = samples.astype(np.float32) / 32768.0
        with self._energy_cond:
            for i in range(0, x.size - hop + 1, hop):
                self._energy_t.append(t + (i + hop / 2) / SAMPLE_RATE)
                self._energy.append(float(np.sqrt(np.mean(x[i:i + hop] ** 2))))
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
    def process_frame(self, frame, node) -> dict | None:
        if node.mode == "replay":
            with self._energy_cond:
                self._energy_cond.wait_for(lambda: self._audio_time >= frame.t or self._audio_closed
                                           or node._stop.is_set())
        with self._energy_cond:
            n = sum(1 for tt in self._energy_t[self._fed:] if tt <= frame.t)
            new_t, new_e = self._energy_t[self._fed:self._fed + n], self._energy[self._fed:self._fed + n]
            self._fed += n
        with self._lock:
            if new_t:
                self.faces.push_audio(new_t, new_e)
            tracks = self.faces.process(frame.image, frame.t)
        for name, ms in self.faces.timings_ms.items():
            if name in ("detect", "expression"):
                node.stats.add(f"face_{name}", ms)
        return {"topic": "face", "t": frame.t, "tracks": tracks,
                "frame_size": [int(frame.image.shape[1]), int(frame.image.shape[0])]}

    def face_data(self, t0: float, t1: float) -> dict:
        if not self.uses_faces:
            return {}
        with self._lock:
            return self.faces.tracker.tracks_between(t0, t1)

    def _active_speaker(self, t0: float, t1: float, tracks: dict) -> tuple[int | None, float]:
        from robot_emotion.vision.active_speaker import assign_active_speaker
        series = {k: (v["t"], v["mouth_activity"]) for k, v in tracks.items()}
        with self._energy_cond:
            et, ee = np.asarray(self._energy_t), np.asarray(self._energy)
        keep = (et >= t0 - 1.0) & (et <= t1 + 1.0)
        return assign_active_speaker(series, et[keep], ee[keep], t0, t1)

    # ---- utterances (utterance thread) ---------------------------------------------------
    def _parts(self, seg, node) -> list[tuple[float, float, str | None, float | None]]:
        if self.speakers is None:
            return [(seg.start, seg.end, None, None)]
        t0 = time.perf_counter()
        audio = seg.audio.astype(np.float32) / 32768.0
        turns = self.speakers.process(audio, seg.audio_t0)
        node.stats.add("speakers", (time.perf_counter() - t0) * 1000.0)
        if not turns:
            return [(seg.start, seg.end, None, None)]
        parts = []
        for tr in turns:  # a "change" back to the same voice is no change: merge it
            if parts and parts[-1][2] == tr.speaker:
                parts[-1] = (parts[-1][0], min(tr.end, seg.end), tr.speaker, max(parts[-1][3], tr.confidence))
            else:
                parts.append((max(tr.start, seg.start), min(tr.end, seg.end), tr.speaker, tr.confidence))
        # The first part starts at the VAD start and the last ends at the VAD end.
        parts[0] = (seg.start,) + parts[0][1:]
        parts[-1] = parts[-1][:1] + (seg.end,) + parts[-1][2:]
        return [p for p in parts if p[1] > p[0]]

    def transcribe_partial(self, part, node) -> dict | None:
        t0 = time.perf_counter()
        text = self.asr.transcribe(part.audio.astype(np.float32) / 32768.0).text.strip()
        node.stats.add("asr_partial", (time.perf_counter() - t0) * 1000.0)
        return {"topic": "utterance.partial", "utterance_id": part.utterance_id, "start": part.start,
                "end": part.end, "text": text}

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
                if votes[usual] >= 2 and votes[usual] >= 0.75 * sum(votes.values()) \
                        and self.speakers.clusterer.merge(speaker, usual):
                    speaker, new = usual, False
            votes[speaker] = votes.get(speaker, 0) + 1
        self._seen_speakers.add(speaker)
        return speaker

    def process_segment(self, seg, node) -> list[dict]:
        parts = self._parts(seg, node)
        bodies = []
        for i, (start, end, speaker, spk_conf) in enumerate(parts):
            uid = seg.utterance_id if len(parts) == 1 else f"{seg.utterance_id}.{i}"
            a0 = max(0, int(round((start - seg.audio_t0) * SAMPLE_RATE)))
            if i == 0:
                a0 = 0  # keep the VAD pre-roll for the recogniser
            a1 = int(round((end - seg.audio_t0) * SAMPLE_RATE))
            audio = seg.audio[a0:a1].astype(np.float32) / 32768.0
            lat: dict[str, float] = {}
            text, asr_conf = None, None
            if self.asr is not None:
                t0 = time.perf_counter()
                tr = self.asr.transcribe(audio)
                lat["asr"] = (time.perf_counter() - t0) * 1000.0
                node.stats.add("asr", lat["asr"])
                text, asr_conf = tr.text.strip(), tr.confidence
            tracks = self.face_data(start, end)
            face_track, face_conf = None, None
            if tracks:
                t0 = time.perf_counter()
                face_track, face_conf = self._active_speaker(start, end, tracks)
                node.stats.add("active_speaker", (time.perf_counter() - t0) * 1000.0)
            speaker = self._reconcile(speaker, face_track, face_conf)
            body = {"topic": "utterance", "utterance_id": uid, "start": start, "end": end,
                    "speaker": speaker, "speaker_confidence": spk_conf, "face_track": face_track,
                    "face_confidence": face_conf if face_track is not None else None,
                    "text": text, "asr_confidence": asr_conf, "duration": end - start,
                    "forced": seg.forced, "latency_ms": lat}
            bodies.append(body)
            if self.emotion is not None:
                face = tracks.get(face_track) if face_track is not None else None
                bodies.append(self.emotion.score(body, audio, face, node))
        return bodies
