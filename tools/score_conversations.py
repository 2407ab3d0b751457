#!/usr/bin/env python3
"""Score the node's turns, speakers, words and non-speech text on a conversation set.

A thin wrapper kept for old command lines: the scorer is
``benchmarks/conversations/score.py`` (DER and JER with pyannote.metrics, WER with jiwer
after Whisper's English normaliser); every argument is passed on to it, e.g.

    python tools/score_conversations.py DIR [--set section.key=value ...] [--json out.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.conversations.score import *  # noqa: E402, F403
from benchmarks.conversations.score import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
