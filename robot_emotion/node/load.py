"""Load shedding on a busy robot (issue 24): optional work goes first, in a fixed order.

A live node shares its cores with the robot's other software (navigation, arm control, the
behaviour stack). When its work waits too long, it sheds optional work, one level at a time,
in this order (``LEVELS``; level n sheds the first n kinds):

  1 ``partial``      `utterance.partial` transcripts (a whole decode of a long segment every
                     asr.partial_after_s, for display only)
  2 ``incremental``  decodes of a segment while it is spoken (every asr.incremental_s); the early
                     estimate goes with them: a turn's first emotion then comes on its whole transcript
  3 ``faces``        every other face frame (half of faces.rate_hz): face tracks, the face branch
                     and the active-speaker evidence thin out, but go on

Never shed: speech.start / speech.end, the voice probes and voice-change checks (they decide
where turns end) and the final result of every turn. The beam width is not a level: the
recogniser takes its beam once, at load (audio/asr.py), not per call.

Lag is how long work has waited: the oldest item in the utterance queue, or the audio block
the audio thread just took, whichever is older (the Node measures it, ``observe``). Lag above
the budget (node.lag_budget_ms) enters the next level, at most one level every ESCALATE_S;
lag below half the budget for CALM_S (counted while speech or work comes in: a silent robot
proves nothing) leaves one level. Between half and the whole budget the level holds.

Nothing is shed silently: ``allow(kind)`` refuses only what the level sheds and counts each
refusal (``shed``); ``shed_s`` is how long each kind has been shed so far. A replay never sheds
(``enabled`` false: its events must not depend on the machine); its lag is still reported.
"""

from __future__ import annotations

import threading

LEVELS = ("partial", "incremental", "faces")  # the order work is shed in (module docstring)
# Why 1 s: what a level sheds stops being queued at once, but the work already queued still runs
# (about one incremental decode, 0.1-0.4 s, more on a starved core): give it that long to show
# in the lag before shedding more.
ESCALATE_S = 1.0
# Why 5 s: a few incremental steps of speech with the lag under half the budget, so one quick
# turn between two slow ones does not bring the shed work back only to shed it again.
CALM_S = 5.0


class LoadShedder:
    """The shedding policy the Node holds (see the module docstring). Thread-safe: the audio
    thread observes, the audio and face threads ask ``allow``, the publisher reads ``snapshot``."""

    def __init__(self, budget_ms: float, enabled: bool = True):
        self.budget_ms = float(budget_ms)
        self.enabled = bool(enabled) and self.budget_ms > 0  # budget 0: never shed
        self.level = 0
        self.lag_ms = 0.0
        self.peak_lag_ms = 0.0
        self.shed = {kind: 0 for kind in LEVELS}
        self.changes = 0  # level changes so far (up or down)
        self._shed_s = {kind: 0.0 for kind in LEVELS}
        self._level_since: float | None = None  # when the current level began
        self._changed = float("-inf")
        self._calm_s = 0.0
        self._last: float | None = None
        self._lock = threading.Lock()

    @property
    def shedding(self) -> tuple[str, ...]:
        return LEVELS[: self.level]

    def observe(self, lag_ms: float, now: float, busy: bool = True) -> None:
        """The lag now (ms; ``now`` in time.monotonic() seconds). ``busy``: speech or work is
        coming in (only then does a low lag count towards leaving a level)."""
        with self._lock:
            dt = 0.0 if self._last is None else max(0.0, now - self._last)
            self._last = now
            self.lag_ms = float(lag_ms)
            self.peak_lag_ms = max(self.peak_lag_ms, self.lag_ms)
            if not self.enabled:
                return
            if self.lag_ms > self.budget_ms:
                self._calm_s = 0.0
                if self.level < len(LEVELS) and now - self._changed >= ESCALATE_S:
                    self._set(self.level + 1, now)
            elif self.lag_ms < self.budget_ms / 2:
                if busy:
                    self._calm_s += dt
                if self.level > 0 and self._calm_s >= CALM_S:
                    self._set(self.level - 1, now)
                    self._calm_s = 0.0
            else:
                self._calm_s = 0.0

    def _set(self, level: int, now: float) -> None:
        if self._level_since is not None:
            for kind in self.shedding:
                self._shed_s[kind] += now - self._level_since
        self.level, self._level_since, self._changed = level, now, now
        self.changes += 1

    def allow(self, kind: str) -> bool:
        """May optional work of ``kind`` (one of LEVELS) run now? A refusal is counted."""
        with self._lock:
            if kind in self.shedding:
                self.shed[kind] += 1
                return False
            return True

    def shed_s(self, now: float) -> dict[str, float]:
        """Seconds each kind has been shed so far (the current level's time included)."""
        with self._lock:
            out = dict(self._shed_s)
            if self._level_since is not None:
                for kind in self.shedding:
                    out[kind] += now - self._level_since
            return out

    def snapshot(self, now: float) -> dict:
        """status ``load``: lag, level, what is shed, how many items and for how long."""
        shed_s = self.shed_s(now)
        with self._lock:
            return {
                "lag_ms": round(self.lag_ms, 1),
                "peak_lag_ms": round(self.peak_lag_ms, 1),
                "budget_ms": self.budget_ms,
                "enabled": self.enabled,
                "level": self.level,
                "shedding": list(self.shedding),
                "level_s": round(now - self._level_since, 2) if self.level and self._level_since is not None else 0.0,
                "shed": dict(self.shed),
                "shed_s": {k: round(v, 2) for k, v in shed_s.items()},
                "changes": self.changes,
            }
