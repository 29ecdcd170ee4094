"""Read-only HDF5 handles kept open per process, and slice reads through them.

Opening a fastMRI file parses its metadata; a training epoch reads each file once per slice, so a
dataset keeps one handle per file and process instead of reopening it for every item. Handles
belong to the process that opened them (a forked DataLoader worker opens its own) and are never
pickled (a spawned worker starts with none).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from irecon.data.volumes import READ_FAILED, VolumeInfo, check_finite_kspace, open_problem
from irecon.errors import IreconError


class OpenFiles:
    """This process's read-only ``h5py.File`` per path, opened on first use and kept until :meth:`close`."""

    def __init__(self) -> None:
        self._files: dict[Path, h5py.File] = {}
        self._pid: int | None = None

    def get(self, path: Path) -> h5py.File:
        """The handle on ``path``; a process that inherited handles (fork) drops them unused and opens its own."""
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        handle = self._files.get(path)
        if handle is None:
            try:
                handle = h5py.File(path, "r")
            except OSError as err:
                raise IreconError(open_problem(err), path) from None
            self._files[path] = handle
        return handle

    def read(self, info: VolumeInfo, selection: int | slice, start: int) -> tuple[np.ndarray, np.ndarray | None]:
        """k-space (complex64) and target (float32, None without one) of one slice (int) or slab (slice).

        Errors are the one-line IreconErrors of :func:`irecon.data.volumes.read_kspace`, NaN/Inf
        k-space included (``start`` numbers the slices in that message).
        """
        handle = self.get(info.path)
        try:
            kspace = np.asarray(handle["kspace"][selection]).astype(np.complex64, copy=False)
            target = None
            if info.target_key is not None:
                target = np.asarray(handle[info.target_key][selection], dtype=np.float32)
        except (OSError, KeyError, RuntimeError):
            self._files.pop(info.path, None)
            raise IreconError(READ_FAILED, info.path) from None
        check_finite_kspace(kspace, one_slice=isinstance(selection, int), first=start, path=info.path)
        return kspace, target

    def close(self) -> None:
        """Close the handles this process opened (inherited ones are only dropped)."""
        files, self._files = self._files, {}
        if self._pid == os.getpid():
            for handle in files.values():
                handle.close()

    def __len__(self) -> int:
        return len(self._files) if self._pid == os.getpid() else 0

    def __getstate__(self) -> dict[str, Any]:
        return {"_files": {}, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._files, self._pid = {}, None
