"""Audio side of the node: VAD (vad.py), turns (turns.py), speakers (speakers.py, voice_encoder.py), ASR (asr.py, whisper_short.py, incremental.py)."""
