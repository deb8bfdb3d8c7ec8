"""The errors lamina raises for bad configs, bad data and bad model folders.

Each message says what was found, what was expected and how to fix it, in one line.
"""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """The config is invalid: an unknown key, a wrong type, a bad value."""


class DataError(ValueError):
    """The data does not fit the config: a missing column, an unparsable value."""


class ArtifactError(ValueError):
    """A saved model folder is missing files, truncated, tampered with or of an unknown format."""


def did_you_mean(word: str, choices) -> str:
    """'; did you mean 'x'?' when a close match exists, else the list of valid choices."""
    choices = [str(choice) for choice in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(choices)}" if choices else ""
