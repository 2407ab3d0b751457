"""What the audio thread hands the utterance thread while a segment is still spoken.

After each audio block the Node asks its ``SegmentSchedule`` what is due for the open segment
(``due(t, wall)``), and queues what it returns (node/speech_in_progress.py handles each):
  SpeakerProbe  at speakers.probe_s and each of PROBE_TIMES_S into the segment: has the voice
                changed since the open turn? (a new voice ends that turn now, not at the pause)
  TurnSoFar     every asr.incremental_s (and once at half of it, for the early estimate):
                decode the turn so far; every speakers.live_change_s: a voice change inside it?
  PartialAudio  every asr.partial_after_s: the `utterance.partial` transcript
Times are capture times, so a replay hands over the same items at any speed. Live, on a busy
machine, the load shedder may refuse decodes and partials (counted there).
"""

from __future__ import annotations

from robot_emotion.audio.speakers import PROBE_TIMES_S
from robot_emotion.node.speech_in_progress import PartialAudio, SpeakerProbe, TurnSoFar


class SegmentSchedule:
    def __init__(self, cfg, segmenter, perception, robot, load):
        self.cfg, self.segmenter, self.perception, self.robot, self.load = cfg, segmenter, perception, robot, load
        self._probe_times = sorted({cfg.speakers.probe_s, *PROBE_TIMES_S})  # (s into a segment)
        self._probes: tuple[str | None, int] = (None, 0)  # (segment, probes handed over)
        self._ticks: dict[str, tuple[str, int]] = {}  # per-step work on the open segment (_every)
        self._partial_at: tuple[str, float] | None = None  # (segment, capture time of the next partial)

    def due(self, t: float, wall: float) -> list:
        """The items due for the open segment now that audio up to capture time ``t`` is in."""
        seg = self.segmenter.open_segment()
        if seg is None or self.perception is None:
            self._partial_at = None
            return []
        uid, start = seg
        if self.robot.intervals and self.robot.is_robot(uid, start):
            return []  # the robot's own voice: nothing to probe
        items = []
        asr, spk = self.perception.asr, self.perception.speakers
        if spk is not None:
            sent = self._probes[1] if self._probes[0] == uid else 0
            due = [s for s in self._probe_times if t - start >= s]
            if len(due) > sent:  # a quick check, then one on enough voice to trust
                self._probes = (uid, len(due))
                audio_t0, audio = self.segmenter.open_audio()
                items.append(SpeakerProbe(uid, start, t, audio, audio_t0, wall))
        # A decode holds the recogniser 0.1-0.4 s: none while the segment may be ending (its
        # last frame unvoiced; the VAD closes it 2 frames later and the turn is transcribed
        # then) once it has had one for its early estimate; it runs when speech goes on.
        ending = self._ticks.get("decode", (None, 0))[0] == uid and self.segmenter.trailing_silence_s() > 0
        decode = (
            asr is not None
            and asr.incremental
            and not ending
            and self._every("decode", uid, t - start, self.cfg.asr.incremental_s, early=self.cfg.emotion.early)
        )
        if decode and not self.load.allow("incremental"):  # shed (counted): no early estimate
            decode = False
        check = spk is not None and self._every("voice", uid, t - start, self.cfg.speakers.live_change_s)
        if decode or check:  # one item, one pass over the audio so far
            audio_t0, audio = self.segmenter.open_audio()
            agree = t - start >= self.cfg.asr.incremental_s
            items.append(TurnSoFar(uid, start, t, audio, audio_t0, wall, decode=decode, check_voice=check, agree=agree))
        if asr is None:
            return items
        if self._partial_at is None or self._partial_at[0] != uid:
            self._partial_at = (uid, start + self.cfg.asr.partial_after_s)
        if t >= self._partial_at[1]:
            self._partial_at = (uid, self._partial_at[1] + self.cfg.asr.partial_after_s)
            if self.load.allow("partial"):  # else shed (counted)
                audio_t0, audio = self.segmenter.open_audio()
                items.append(PartialAudio(uid, start, t, audio, audio_t0, wall))
        return items

    def _every(self, what: str, uid: str, spoken: float, step: float, early: bool = False) -> bool:
        """Is another ``step`` seconds of segment ``uid`` spoken since ``what`` was last due?
        ``early``: also once at half a step."""
        if step <= 0:
            return False
        last_uid, done = self._ticks.get(what, (None, 0))
        n = int(spoken / step) + (1 if early and spoken >= step / 2 else 0)
        if n > (done if last_uid == uid else 0):
            self._ticks[what] = (uid, n)
            return True
        return False
