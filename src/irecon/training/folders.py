"""Run folders chosen when ``--out`` is left out: a new ``runs/<preset>-<N>``, or the latest run to resume.

Relative to the working directory, like every path a user types. Torch-free.
"""

from __future__ import annotations

import re
from pathlib import Path

from irecon.errors import IreconError

RUNS = Path("runs")


def new_run_folder(preset: str, runs: Path = RUNS) -> Path:
    """``runs/<preset>-<N>``: N is one more than the highest number of that preset's folders (1 for the first)."""
    pattern = re.compile(rf"{re.escape(preset)}-(\d+)")
    numbers = [int(m.group(1)) for p in _children(runs) if (m := pattern.fullmatch(p.name)) and p.is_dir()]
    return runs / f"{preset}-{max(numbers, default=0) + 1}"


def latest_run_folder(runs: Path = RUNS) -> Path:
    """The run folder in ``runs/`` whose ``last.pt`` was written last (the newest, whatever its preset)."""
    checkpoints = [p / "last.pt" for p in _children(runs) if (p / "last.pt").is_file()]
    if not checkpoints:
        raise IreconError("«resume» without «out»: no run folder here holds a last.pt; pass «out» RUN_DIR", runs)
    return max(checkpoints, key=lambda path: (path.stat().st_mtime_ns, path.parent.name)).parent


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []
