"""A real, small tmpfs for full-disk tests: mounted for a block, always unmounted after it.

Mounting needs root (CI runs as root); where it is not allowed the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "8M") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``folder`` (created) for the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(mounted.stderr or 'mount failed').strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file into ``folder`` so that about ``leave`` bytes stay free; return its path."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(free - leave, 0))
    return filler
