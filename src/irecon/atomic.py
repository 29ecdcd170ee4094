"""Write files so that a crash or kill at any moment never leaves a torn or partial file."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from irecon.errors import IreconError


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to create; then fsync and move it.

    On success the file is renamed over ``path``; with ``overwrite=False`` it is hard-linked
    instead, so a file that appeared at ``path`` meanwhile is refused, not replaced. On any failure
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a plain rename where links are unsupported)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise IreconError("file exists; pass --overwrite to replace it", path) from None
    except OSError:
        if path.exists():
            raise IreconError("file exists; pass --overwrite to replace it", path) from None
        os.replace(tmp, path)
