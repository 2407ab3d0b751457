"""Offline training and evaluation on MELD."""
