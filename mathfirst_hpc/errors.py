"""User-facing errors.

Everything a user can get wrong (a bad config key, a missing file, a truncated shard) raises a subclass of
:class:`MathfirstError`. The CLI prints ``error: <message>`` on one line and exits with code 2. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class MathfirstError(Exception):
    """Base class of every user-facing error; ``hint`` says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self)
        if self.hint:
            text = f"{text} ({self.hint})"
        return " ".join(text.split())


class ConfigError(MathfirstError):
    """A config value or key is wrong."""


class RunDirError(MathfirstError):
    """The run directory is missing, locked, or in a state that forbids the request."""


class ShardError(MathfirstError):
    """An HDF5 shard is truncated, corrupt, or of another schema version."""


class CheckpointError(MathfirstError):
    """A checkpoint is missing or incomplete."""


class DataError(MathfirstError):
    """Input data (parquet/jsonl rows, benchmark files) is missing or malformed."""
