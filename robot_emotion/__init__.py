"""robot_emotion: per-speaker, per-utterance multimodal emotion perception for social robots."""

from robot_emotion.threads import set_pool_defaults as _set_pool_defaults

__version__ = "0.1.0"

# OMP_NUM_THREADS=1 unless the user set it (robot_emotion.threads says why): the thread pools
# read it when they load, hence here, before numpy, torch or ctranslate2.
_set_pool_defaults()

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SAMPLE_RATE = 16000


def __getattr__(name: str):
    """``from robot_emotion import EmotionNode`` (api.py) loads it on first use: importing the
    package stays cheap (no numpy, torch or ZeroMQ)."""
    if name == "EmotionNode":
        from robot_emotion.api import EmotionNode

        return EmotionNode
    raise AttributeError(f"module 'robot_emotion' has no attribute {name!r}")
