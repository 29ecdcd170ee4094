"""The one error type irecon raises for bad user input; the CLI prints it as a single line."""

from __future__ import annotations

from pathlib import Path


class IreconError(Exception):
    """A user-facing problem: what is wrong, and with which file or option.

    The CLI turns it into ``error: <path>: <problem>`` and exit status 1, never a traceback.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem
