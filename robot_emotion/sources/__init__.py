"""Sources of timed samples: live camera and microphone, and replay of recordings."""

from robot_emotion.sources.base import AudioBlock, Frame, LatestFrameSlot  # noqa: F401
