"""Whisper on the utterance's own length instead of a 30 s window (CPU latency).

faster-whisper pads every call to 30 s of features, and Whisper tiny.en's encoder costs
~190 ms for that window on two CPU cores however short the turn; the decoder then reads
1500 encoder states. CTranslate2's encoder accepts shorter inputs, so this encodes the
turn plus ``PAD_S`` of silence and decodes greedily or with a small beam from there:
a 3 s sentence in 60-180 ms instead of 540-730 ms (measured on the LibriSpeech sentences).

Whisper was trained on 30 s windows, and on short ones it often does not stop: it
repeats the sentence into the padding ("Drop the two when you add the figures. Drop the
two when you add"; with the dialogue prompt, about one turn in five of the conversation
set). Guards: a token budget from the duration (6 tokens per second of audio + 10), and a
tail that repeats a block of >= 3 words to the end is cut (``repeat_cut``). The price: a
speaker who says the same phrase twice in a row at the end of a turn gets it once (the
conversation set has none; cutting only when the decoder hit the budget or ran faster
than 4 words/s let loops through: WER 9.3% vs 8.3%). Text still looping by audio/asr.py's
``looping`` is decoded again on the full 30 s window (counted). Decoding with timestamps,
to drop segments that start in the padding, was tried: on these windows the timestamps
are too coarse, and 45% of the turns still looped.
"""

from __future__ import annotations

import zlib

import numpy as np

from robot_emotion import SAMPLE_RATE

PAD_S = 3.0  # silence after the turn: with 1 s the decoder ran on in 10 of 12 sentences
LEAD_S = 0.5  # silence before it: first words came out better (conversation set, WER)
MAX_S = 27.0  # longer audio (with its padding) needs the full window


def repeat_cut(words: list[str]) -> list[str]:
    """Cut a decoding loop: the earliest place after which the text only repeats a block of
    itself to the end ("X. Y. Y. Y" -> "X. Y."; "a b c a b c a" -> "a b c"; "Hello. Hello.
    Hello. Hello." -> "Hello."). The repeating tail must be at least 3 words ("no, no" and
    "no, no, no" stay). Compared case- and punctuation-blind, because the repeats differ in
    both ("Terra ... pan. terra ...")."""
    n = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in words]
    for i in range(len(n)):
        for k in range(1, len(n) - i - 2):
            if n[i + k :] == n[i : len(n) - k]:  # from word i, a block of k words repeats
                return words[: i + k]
    return words


FRAME = 320  # one encoder state per 20 ms (two mel hops of 160 samples)


def encode(model, audio: np.ndarray):
    """The encoder output (a CTranslate2 StorageView) of ``LEAD_S`` silence + audio + ``PAD_S``
    silence: what the decoder reads, and what the voice-emotion branch pools (turn_states)."""
    x = np.concatenate(
        [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32), audio, np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)]
    )
    feats = model.feature_extractor(x)
    return model.encode(feats[:, : feats.shape[1] - feats.shape[1] % 2])  # the encoder halves it


def turn_states(enc, n_samples: int) -> np.ndarray:
    """The (ceil(n/320), d) float32 states of the audio itself, padding left out."""
    a = int(LEAD_S * SAMPLE_RATE) // FRAME
    n = max(1, -(-int(n_samples) // FRAME))
    return np.ascontiguousarray(np.asarray(enc)[0, a : a + n], dtype=np.float32)


def audio_key(audio: np.ndarray) -> tuple[int, int]:
    return audio.size, zlib.crc32(np.ascontiguousarray(audio).view(np.uint8))


class ShortWindowDecoder:
    def __init__(self, model, beam_size: int = 5, language: str = "en"):
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model, self.beam_size = model, int(beam_size)
        self.tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        self.suppress = get_suppressed_tokens(self.tokenizer, [-1])
        self._pieces: dict[int, str] = {}
        self._encoded: dict[tuple, object] = {}  # the last few encodings, by audio_key

    def states(self, audio: np.ndarray, lock=None) -> np.ndarray:
        """turn_states of this audio, reusing the encoding a decode of the same audio made (the
        node scores a turn's emotion right after transcribing it: the encoder runs once). The
        model ``lock`` is taken only to encode: a reused encoding does not wait behind a decode
        running on the other core (an early estimate waited 200-400 ms for that)."""
        enc = self._encoded.get(audio_key(audio))
        if enc is None:
            if lock is None:
                enc = self._remember(audio, encode(self.model, audio))
            else:
                with lock:
                    enc = self._remember(audio, encode(self.model, audio))
        if str(getattr(enc, "device", "cpu")) != "cpu":  # numpy reads host memory only
            import ctranslate2

            enc = enc.to_device(ctranslate2.Device.cpu)
        return turn_states(enc, audio.size)

    def _remember(self, audio: np.ndarray, enc):
        self._encoded[audio_key(audio)] = enc
        while len(self._encoded) > 4:
            del self._encoded[next(iter(self._encoded))]
        return enc

    def starts_word(self, token: int) -> bool:
        """Does this token begin a word (Whisper's word pieces carry the leading space)?"""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.tokenizer.decode([token])
        return piece.startswith(" ") or not piece[:1].isalnum()

    def fits(self, audio: np.ndarray) -> bool:
        return audio.size / SAMPLE_RATE + LEAD_S + PAD_S <= MAX_S

    def decode(
        self, audio: np.ndarray, prompt: str | None, prefix: list[int] | None = None
    ) -> tuple[str, float, float, bool, list[int]]:
        """(text, mean token log-prob, no-speech probability, does the text repeat itself?,
        the text's tokens). ``prefix``: tokens already agreed on for the start of this audio
        (audio/incremental.py): forced, so only what follows them is decoded."""
        m, tok = self.model, self.tokenizer
        enc = self._remember(audio, encode(m, audio))
        previous = tok.encode(" " + prompt.strip()) if prompt else []
        start = m.get_prompt(tok, previous, without_timestamps=True)
        prefix = list(prefix or [])
        budget = max(int(6 * audio.size / SAMPLE_RATE + 10), len(prefix) + 4)
        r = m.model.generate(
            enc,
            [start + prefix],
            beam_size=self.beam_size,
            max_length=len(start) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
        )[0]
        tokens = [t for t in r.sequences_ids[0] if t < tok.eot]  # (the forced prefix included)
        # the score is the decoded part's: log-prob sum / (tokens + eot), length penalty 1
        avg_logprob = r.scores[0] if prefix else r.scores[0] * len(tokens) / (len(tokens) + 1)
        words = tok.decode(tokens).strip().split()
        kept = repeat_cut(words)
        return " ".join(kept), float(avg_logprob), float(r.no_speech_prob), len(kept) < len(words), tokens
