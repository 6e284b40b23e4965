"""The engine's two exceptions, kept free of torch so callers can catch them cheaply."""

from __future__ import annotations


class TrainingError(Exception):
    """A run could not finish; the message is written for the person who started it."""


class TrainingCancelled(Exception):
    """The caller asked the run to stop (``should_stop()`` returned True)."""
