"""Per-session dialogue history: the past turns that give the text encoder its context.

Thread-safe and bounded. Turns are kept in order of their start time (the recogniser
may finish them slightly out of order). Only PAST turns are ever handed out: a live
robot never knows the reply, so neither does training.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from dataclasses import asdict, dataclass, field


@dataclass
class DialogueTurn:
    utterance_id: str
    speaker: str | None
    text: str | None
    start: float
    end: float
    emotion: str | None = None
    probs: dict | None = field(default=None, repr=False)


class DialogueHistory:
    def __init__(self, max_turns: int = 200):
        self.max_turns = max_turns
        self._turns: deque[DialogueTurn] = deque()
        self._lock = threading.Lock()

    def add(self, turn: DialogueTurn) -> None:
        with self._lock:
            starts = [t.start for t in self._turns]
            self._turns.insert(bisect.bisect_right(starts, turn.start), turn)
            while len(self._turns) > self.max_turns:
                self._turns.popleft()

    def set_emotion(self, utterance_id: str, label: str | None, probs: dict | None) -> bool:
        with self._lock:
            for turn in reversed(self._turns):
                if turn.utterance_id == utterance_id:
                    turn.emotion, turn.probs = label, probs
                    return True
        return False

    def context(self, before: float, max_turns: int = 8) -> list[DialogueTurn]:
        """Up to max_turns turns that started before `before`, oldest first, with text."""
        with self._lock:
            past = [t for t in self._turns if t.start < before and t.text]
        return past[-max_turns:] if max_turns > 0 else []

    def clear(self) -> None:
        """Forget every turn (the controllers' ``reset``: a new conversation starts)."""
        with self._lock:
            self._turns.clear()

    def turns(self) -> list[DialogueTurn]:
        with self._lock:
            return list(self._turns)

    def __len__(self) -> int:
        with self._lock:
            return len(self._turns)

    def to_list(self) -> list[dict]:
        return [asdict(t) for t in self.turns()]
