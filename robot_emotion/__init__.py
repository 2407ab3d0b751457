"""robot_emotion: per-speaker, per-utterance multimodal emotion perception for social robots."""
__version__ = "0.1.0"

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SAMPLE_RATE = 16000


def __getattr__(name: str):
    """``from robot_emotion import EmotionNode`` (api.py) loads it on first use: importing the
    package stays cheap (no numpy, torch or ZeroMQ)."""
    if name == "EmotionNode":
        from robot_emotion.api import EmotionNode
        return EmotionNode
    raise AttributeError(f"module 'robot_emotion' has no attribute {name!r}")
