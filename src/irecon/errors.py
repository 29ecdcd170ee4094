"""The one error type irecon raises for bad user input, and how messages name options.

Below the CLI a message names an option by its options-dataclass field, written ``option("steps")``
(a ``«steps»`` marker). The CLI installs its spelling (:func:`use_spelling`: the running command's
own flag, ``--val`` for ``val_dir``, ``TRAIN_DIR`` for an argument); without one a marker reads
``--field-name``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_OPTION = re.compile(r"«(\w+)»")


def option(name: str) -> str:
    """The marker for option ``name`` (a field of the command's options dataclass) inside a message."""
    return f"«{name}»"


def default_spelling(name: str) -> str:
    """A field as a flag when no command is there to ask: ``lr_step`` -> ``--lr-step``."""
    return "--" + name.replace("_", "-")


_spelling: list[Callable[[str], str]] = [default_spelling]


def use_spelling(spell: Callable[[str], str]) -> None:
    """Spell option markers with ``spell`` from now on (the CLI calls it with its command's flags)."""
    _spelling[0] = spell


def spell_options(text: str, spell: Callable[[str], str] | None = None) -> str:
    """``text`` with every option marker spelled by ``spell`` (default: the installed spelling)."""
    chosen = spell or _spelling[0]
    return _OPTION.sub(lambda match: chosen(match.group(1)), text)


class IreconError(Exception):
    """A user-facing problem: what is wrong, and with which file or option.

    The CLI turns it into ``error: <path>: <problem>`` and exit status 1, never a traceback.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = None if path is None else str(path)

    def render(self, spell: Callable[[str], str] | None = None) -> str:
        """The one line, with options spelled by ``spell`` (the CLI passes the command's flags)."""
        problem = spell_options(self.problem, spell)
        return f"{self.path}: {problem}" if self.path else problem

    def __str__(self) -> str:
        return self.render()
