"""Audio side of the node: VAD (vad.py), speaker change + clustering (speakers.py, embedding.py), ASR (asr.py)."""
