"""The data layer's error and warning types."""

from __future__ import annotations


class DataError(Exception):
    """Bad dataset layout, configuration or content; the message is one line naming the path."""


class BadImageWarning(UserWarning):
    """An image file of a dataset could not be read and was skipped (the message names it)."""
