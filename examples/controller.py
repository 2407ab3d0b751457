"""A behaviour controller: what the robot would do after each person's turn.

    robot-emotion replay --demo &                     # or: robot-emotion run
    python examples/controller.py [tcp://127.0.0.1:5556]

Subscribes to ``emotion`` and ``utterance`` with robot_emotion.bus.client.Subscriber, keeps the
latest emotion estimate of every speaker, and prints one decision per final turn, e.g.
``S1 sounds sad (0.71) -> comfort: "I wish I could say the same"``. Ctrl-C ends it. Everything
between the ``core`` markers is README's controller example, verbatim (a test checks it).
"""

# --- core ---
import sys

from robot_emotion.bus.client import Subscriber

REACTIONS = {
    "neutral": ("calm", "carry on"),
    "joy": ("happy", "smile"),
    "sadness": ("sad", "comfort"),
    "anger": ("angry", "de-escalate"),
    "surprise": ("surprised", "explain"),
    "fear": ("afraid", "reassure"),
    "disgust": ("disgusted", "change the subject"),
}


def decide(speaker: str, emotion: dict | None, text: str | None) -> str:
    """One line: how the speaker sounds (their latest estimate) and what the robot does."""
    if emotion is None:  # no estimate for this voice yet (no words, no face)
        return f'{speaker} sounds unknown -> listen: "{text or ""}"'
    mood, action = REACTIONS[emotion["label"]]
    return f'{speaker} sounds {mood} ({emotion["probs"][emotion["label"]]:.2f}) -> {action}: "{text or ""}"'


def control(endpoint: str = "tcp://127.0.0.1:5556") -> None:
    latest = {}  # speaker -> their latest emotion message
    with Subscriber(endpoint, topics=["emotion", "utterance"]) as sub:
        for msg in sub:
            # "utterance" also matches "utterance.partial" (prefix subscription): test the topic
            if msg["topic"] == "emotion" and msg["label"] and msg["speaker"]:
                latest[msg["speaker"]] = msg  # provisional ones too: the freshest estimate
            elif msg["topic"] == "utterance" and msg["final"] and msg["speaker"] not in (None, "robot"):
                # one decision per person's final turn (no speaker: not speech, or no voice model)
                print(decide(msg["speaker"], latest.get(msg["speaker"]), msg["text"]), flush=True)


if __name__ == "__main__":
    try:
        control(*sys.argv[1:2])  # optional: the node's publish.endpoint
    except KeyboardInterrupt:  # Ctrl-C ends it
        pass
# --- core ---
