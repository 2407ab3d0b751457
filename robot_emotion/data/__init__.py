"""MELD data readers (text CSVs here; the MELD.Raw media reader lives in data/meld.py)."""
