"""robot_emotion: per-speaker, per-utterance multimodal emotion perception for social robots."""
import os as _os

__version__ = "0.1.0"

# Thread pools that no stage sized (numpy's OpenBLAS, torch's and CTranslate2's OpenMP) start
# one worker per core, and the workers spin after each call: a 1-thread CTranslate2 decode took
# 2x its wall time in CPU, the extra being OpenBLAS spinning after the feature extractor's
# matmul. The node's stages are threads of their own, so on a 2-core robot PC that spinning took
# ~30% of the CPU (demo replay: 12.6 -> 9.0 s). What wants more threads sets them itself
# (training, CTranslate2's cpu_threads). The pools read this when they load, hence here, before
# numpy, torch or ctranslate2; a value the user set wins.
_os.environ.setdefault("OMP_NUM_THREADS", "1")

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SAMPLE_RATE = 16000


def __getattr__(name: str):
    """``from robot_emotion import EmotionNode`` (api.py) loads it on first use: importing the
    package stays cheap (no numpy, torch or ZeroMQ)."""
    if name == "EmotionNode":
        from robot_emotion.api import EmotionNode
        return EmotionNode
    raise AttributeError(f"module 'robot_emotion' has no attribute {name!r}")
