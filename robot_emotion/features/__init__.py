"""Featurizers shared by the live node and offline training (train/serve parity)."""
