"""Transcribing a turn while it is spoken, so that at its end only the tail is left.

Every ``asr.incremental_s`` of speech the utterance thread decodes the open turn's audio so
far (short window, audio/whisper_short.py). Tokens that two consecutive decodes agree on
are stable (LocalAgreement-2, as in whisper_streaming): later decodes of the same audio
stream, and the turn's result at the end of speech, force them as a prefix and decode only
what follows. A 3 s sentence then costs the encoder pass (~10 ms) and a few tokens at its
end instead of the whole decode (measured: `benchmarks/conversations/score.py`, README).

The stream is identified by its origin, the capture time of its first sample: the turn's
result uses the prefix only when its audio starts where the partial decodes' did (a turn
that turned out to be someone else's starts elsewhere and is decoded whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOLD_BACK_WORDS = 2


def common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


@dataclass
class Hypotheses:
    """The last two decodes of one growing audio stream (origin ``t0``, session seconds)."""

    t0: float
    previous: list[int] = field(default_factory=list)
    last: list[int] = field(default_factory=list)
    decodes: int = 0
    logprob: float | None = None  # mean token log-prob of the last decode

    def matches(self, t0: float) -> bool:
        return abs(self.t0 - t0) < 1e-6

    def stable(self, starts_word=None, hold_back: int = HOLD_BACK_WORDS) -> list[int]:
        """Tokens both of the last two decodes begin with (nothing after a single decode),
        less their last ``hold_back`` words: the words near the cut of a partial decode are
        guessed without what follows and agree by chance too often (conversation set WER
        +1.2 points when every agreed token was kept). ``starts_word(token)``: does the token
        begin a word (a leading space in Whisper's vocabulary)?"""
        agreed = common_prefix(self.previous, self.last) if self.decodes >= 2 else []
        if starts_word is None or hold_back <= 0:
            return agreed
        starts = [i for i, tok in enumerate(agreed) if starts_word(tok)]
        return agreed[: starts[-hold_back]] if len(starts) >= hold_back else []

    def push(self, tokens: list[int], logprob: float | None) -> None:
        self.previous, self.last = self.last, list(tokens)
        self.decodes += 1
        self.logprob = logprob
