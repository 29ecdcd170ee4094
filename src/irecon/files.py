"""Every file irecon writes goes through here: atomic writes, overwrite refusal, JSON, OS errors, locks.

A crash or kill at any moment never leaves a torn or partial file (temporary file beside the target,
fsync, rename); an existing output is never replaced unless the caller allows it; an ``OSError``
(read-only folder, full disk, a path under a regular file) becomes one :class:`IreconError` line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irecon.errors import IreconError

EXISTS_MESSAGE = "file exists; pass «overwrite» to replace it"


def os_problem(err: OSError) -> str:
    """A short, lower-case description of an OSError without the path (the caller names it).

    A library's re-raised OSError without an errno (pydicom's adds a traceback to the text) is
    described by the OSError behind it, and never by more than one line.
    """
    cause: BaseException | None = err
    while isinstance(cause, OSError) and cause.errno is None:
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        err = cause
    if err.errno == errno.ENOSPC:
        return "no space left on device"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (permission denied or read-only file system)"
    if err.errno == errno.ENOTDIR:
        return "a part of the path is a regular file, not a folder"
    if err.errno == errno.ENOENT:
        return "no such folder"
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (a link that leads back to itself)"
    return ((err.strerror or str(err)).strip().splitlines() or ["unknown error"])[0].lower()


def missing_problem(path: str | Path, what: str = "file or folder") -> str:
    """Why an input ``path`` cannot be found: a symbolic-link loop, a folder that may not be searched, or absence."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return os_problem(err)
        if err.errno in (errno.EACCES, errno.EPERM):
            return "cannot be reached (permission denied on a folder above it)"
        if err.errno == errno.ENOTDIR:
            return os_problem(err)
    return f"no such {what}"


@contextlib.contextmanager
def os_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into ``IreconError(<problem>, path)``.

    The error names ``path`` (what the user asked for), never a temporary file beside it.
    """
    try:
        yield
    except OSError as err:
        raise IreconError(os_problem(err), path) from None


@contextlib.contextmanager
def atomic_write(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to create; then fsync and move it.

    On success the file is renamed over ``path``; with ``overwrite=False`` it is hard-linked
    instead, so a file that appeared at ``path`` meanwhile is refused, not replaced. On any failure
    the temporary file is removed and ``path`` is left as it was; an OSError is an IreconError.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with os_errors(path):
            yield tmp
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                _link_new(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there (a plain rename where links are unsupported)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise IreconError(EXISTS_MESSAGE, path) from None
    except OSError:
        if path.exists():
            raise IreconError(EXISTS_MESSAGE, path) from None
        os.replace(tmp, path)


class Staging:
    """A hidden folder inside ``folder`` whose entries :func:`staged_outputs` moves into ``folder`` together."""

    def __init__(self, folder: Path, area: Path) -> None:
        self.folder, self.area = folder, area

    def final(self, staged: str | Path) -> Path:
        """Where a path inside the staging folder ends up."""
        return self.folder / Path(staged).relative_to(self.area)

    def commit(self, overwrite: bool) -> list[Path]:
        """Move every staged entry into ``folder``; return the final paths.

        Without ``overwrite`` an entry already there is refused and the entries moved so far are
        taken back, so none of them stays; a replaced folder is swapped out, then deleted.
        """
        moved: list[Path] = []
        try:
            for staged in sorted(self.area.iterdir()):
                final = self.final(staged)
                _move_in(staged, final, overwrite)
                moved.append(final)
        except (OSError, IreconError) as err:
            if not overwrite:
                for final in moved:
                    shutil.rmtree(final) if final.is_dir() else final.unlink(missing_ok=True)
            if isinstance(err, IreconError):
                raise
            raise IreconError(os_problem(err), self.folder) from None
        return moved


def _move_in(staged: Path, final: Path, overwrite: bool) -> None:
    """Rename ``staged`` to ``final``; an existing ``final`` is replaced only with ``overwrite``."""
    if final.exists() and not overwrite:
        raise IreconError(EXISTS_MESSAGE if final.is_file() else "folder exists; pass «overwrite» to replace it", final)
    if not staged.is_dir():
        if overwrite:
            os.replace(staged, final)
        else:
            _link_new(staged, final)
            staged.unlink(missing_ok=True)
        return
    aside = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.old"
    if final.exists():
        os.rename(final, aside)
    try:
        os.rename(staged, final)
    except OSError:
        if aside.exists():
            os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(folder: str | Path) -> Iterator[Staging]:
    """Outputs that appear together or not at all: write them into ``staging.area``, then ``commit``.

    Whatever was not committed is deleted when the block ends; an IreconError naming a staged path
    is re-raised naming its final path in ``folder`` (what the user asked for).
    """
    folder = Path(folder)
    area = folder / f".irecon-staging.{os.getpid()}.{secrets.token_hex(4)}"
    with os_errors(folder):
        area.mkdir()
    staging = Staging(folder, area)
    try:
        yield staging
    except IreconError as err:
        if err.path is not None and Path(err.path).is_relative_to(area):
            raise IreconError(err.problem, staging.final(err.path)) from None
        raise
    finally:
        shutil.rmtree(area, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def finite_json(value: Any) -> Any:
    """``value`` with every NaN/Inf float (at any depth) replaced by None: JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (NaN/Inf as null), ending in a newline when indented."""
    text = json.dumps(finite_json(value), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text


def write_json(path: str | Path, value: Any, *, overwrite: bool = True) -> None:
    """Write ``value`` as strict JSON to ``path`` atomically."""
    write_bytes(path, json_text(value).encode(), overwrite=overwrite)


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write one strict-JSON object per line to ``path`` atomically."""
    write_bytes(path, "".join(json_text(r, indent=None) + "\n" for r in records).encode())


def check_writable_file(path: str | Path, *, overwrite: bool = True) -> Path:
    """Refuse, before any work, an output file that cannot be written (or exists, unless ``overwrite``).

    The folder must exist and accept a new file; nothing is left behind by the check.
    """
    path = Path(path)
    if path.is_dir():
        raise IreconError("is a folder; give a file name", path)
    if path.exists() and not overwrite:
        raise IreconError(EXISTS_MESSAGE, path)
    folder = path.parent
    if not folder.exists():
        raise IreconError("no such folder", folder)
    if not folder.is_dir():
        raise IreconError("a part of the path is a regular file, not a folder", folder)
    check_writable_folder(folder)
    return path


def check_writable_folder(folder: str | Path, *, create: bool = True) -> Path:
    """Prove a file can be created in ``folder``; nothing is left behind by the proof.

    With ``create`` a missing folder is made (with its parents); without it nothing is created:
    the nearest existing folder above it is probed instead, for a command that makes it later.
    """
    folder = Path(folder)
    target = folder
    if not create:
        while not target.exists() and target.parent != target:
            target = target.parent
    with os_errors(target):
        if target.exists() and not target.is_dir():
            raise IreconError(
                "a part of the path is a regular file, not a folder"
                if target != folder
                else "exists and is not a folder",
                target,
            )
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".irecon-write-test.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
        except FileNotFoundError:  # the folder is there, yet refuses new files: /proc, /sys
            raise IreconError("not writable (a file system that does not take new files)", target) from None
        probe.unlink()
    return folder


_HELD_LOCKS: set[int] = set()  # descriptors of the locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker), close the parent's lock descriptors.

    A ``flock`` lives as long as any process has its file open: a worker that outlived a killed
    parent would otherwise keep the run folder locked until it noticed.
    """
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, refusal: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    The lock file records the holder (pid, host, start time). Another process holding it is refused
    with ``IreconError(refusal.format(holder=...), path.parent)``. The OS releases the lock when the
    process ends, however it ends (``kill -9`` included), so a lock is never stale; forked children
    do not keep it.
    """
    path = Path(path)
    with os_errors(path.parent):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _HELD_LOCKS.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IreconError(refusal.format(holder=_lock_holder(fd)), path.parent) from None
        except OSError as err:
            raise IreconError(f"cannot lock {path.name}: {os_problem(err)}", path.parent) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        holder = json_text({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
        with os_errors(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # closing the only descriptor releases the lock


def _lock_holder(fd: int) -> str:
    """'pid P on HOST, started T' from a lock file, or a plain note when it cannot be read."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {int(holder['pid'])} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def sha256_of(path: str | Path) -> str:
    """The file's sha256 as lowercase hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
