"""Errors raised by taskpgm.

Every error the library raises on purpose derives from :class:`TaskPGMError`
and, where one fits, from the matching builtin, so ``except ValueError`` keeps
working for callers who do not know taskpgm. Messages say what is wrong, where
(file and line, task name, array index) and how to fix it; the command line
prints them without a traceback and exits with status 1.
"""

from __future__ import annotations


class TaskPGMError(Exception):
    """Base class of every error taskpgm raises on purpose."""


class InvalidInputError(TaskPGMError, ValueError):
    """An array or argument passed to the API is malformed (shape, NaN, not a distribution)."""


class InfeasibleError(TaskPGMError, ValueError):
    """A constraint set is empty: caps that sum below 1, a budget that cannot hold the mass."""


class ConfigError(TaskPGMError, ValueError):
    """A configuration file or override is wrong: unknown key, wrong type, impossible value."""


class DataError(TaskPGMError, ValueError):
    """A task file or task source is malformed or unusable."""


class NotFoundError(TaskPGMError, FileNotFoundError):
    """A named file, task, model or artifact does not exist."""


class ModelError(TaskPGMError, RuntimeError):
    """A model, adapter or checkpoint cannot be loaded or does not fit the base model."""
