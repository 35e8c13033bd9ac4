"""Errors govml raises for problems the user can fix.

The CLI prints the message of a :class:`GovmlError` without a traceback and exits with
its ``exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class GovmlError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 2


class ConfigError(GovmlError):
    """The pipeline or gateway YAML is invalid."""


class DataError(GovmlError):
    """The data cannot be read or does not pass validation."""


class GateFailedError(GovmlError):
    """A strict responsible-AI gate failed: the model was registered without `champion`."""

    exit_code = 1
