"""robot_emotion: per-speaker, per-utterance multimodal emotion perception for social robots."""
__version__ = "0.1.0"

EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
SAMPLE_RATE = 16000
