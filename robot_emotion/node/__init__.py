"""The node's inside: threads and queues, perception, speech in progress, emotion, runners.

core.Node owns the threads; perception.Perception the stages; speech_in_progress the work on
the open segment; robot_voice the robot's own voice and the controllers' requests; dialogue
the history; emotion the fusion model's scoring; runner the replay and live entry points."""
