"""An output folder that appears whole or not at all: built under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from irecon.errors import IreconError
from irecon.files import os_problem

FOLDER_EXISTS_MESSAGE = "folder exists; pass «overwrite» to replace it"


def refuse_existing_folder(folder: Path, overwrite: bool) -> None:
    """Raise IreconError when ``folder`` exists and may not be replaced, or is not a folder."""
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise IreconError("exists and is not a folder", folder)
        if not overwrite:
            raise IreconError(FOLDER_EXISTS_MESSAGE, folder)


@contextlib.contextmanager
def atomic_folder(folder: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder`` for the caller to fill; then rename it.

    The caller fsyncs the files it writes; the folder and its parent are fsynced here. With
    ``overwrite`` an existing folder is moved aside, replaced, then deleted, so ``folder`` is
    never partial. On any failure the temporary folder is deleted; an OSError is an IreconError.
    """
    folder = Path(folder)
    refuse_existing_folder(folder, overwrite)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp = folder.parent / f".{folder.name}.{tag}.tmp"
    old = folder.parent / f".{folder.name}.{tag}.old"
    try:
        try:
            tmp.mkdir()
            yield tmp
            _fsync_dir(tmp)
            _swap_in(tmp, folder, old if overwrite and folder.is_dir() else None)
            _fsync_dir(folder.parent)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise IreconError(FOLDER_EXISTS_MESSAGE, folder) from None
            raise IreconError(os_problem(err), folder) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path, aside: Path | None) -> None:
    """Rename ``tmp`` to ``folder``, first moving an existing ``folder`` to ``aside`` if given.

    If the final rename fails, the moved folder is put back before the error propagates.
    """
    if aside is None:
        os.rename(tmp, folder)
        return
    os.rename(folder, aside)
    try:
        os.rename(tmp, folder)
    except OSError:
        os.rename(aside, folder)
        raise


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk where the platform allows opening folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
