"""The work behind ``irecon check PATH...``: validate every volume and summarise what was found.

Checking must survive bad files, so each problem becomes one ``"<path>: <problem>"`` line and the
check goes on with the next file; only when nothing at all can be checked does it raise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from irecon.data.masks import centre_lines, mask_from_sampled_columns
from irecon.data.volumes import VolumeInfo, find_volumes, read_sampled_columns, read_volume_info
from irecon.errors import IreconError


@dataclass
class CheckResult:
    """Volumes that passed, one line per problem found, and notes (e.g. skipped non-.h5 files)."""

    files: list[VolumeInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def check_paths(paths: Iterable[str | Path], check_values: bool = True) -> CheckResult:
    """Validate every volume under ``paths``, recording problems instead of stopping at the first.

    Each path is expanded on its own, so a missing path or an empty folder is recorded as a
    problem while the other paths are still checked. ``check_values`` also scans k-space and
    targets for NaN/Inf (it reads the whole file). Raises IreconError only when no file at all
    could be found to check.
    """
    result = CheckResult()
    errors: list[IreconError] = []
    seen: set[Path] = set()
    for path in paths:
        try:
            files, notes = find_volumes([path])
        except IreconError as exc:
            errors.append(exc)
            result.problems.append(str(exc))
            continue
        result.notes.extend(notes)
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                info = read_volume_info(file, check_values=check_values)
                result.files.append(info)
                if check_values and not info.has_mask and info.target_key is None:
                    _note_zero_lines(info, result)
            except IreconError as exc:
                result.problems.append(str(exc))
    if not seen:
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise IreconError("nothing to check: " + "; ".join(str(e) for e in errors))
        raise IreconError("nothing to check: no files or folders given")
    return result


def _note_zero_lines(info: VolumeInfo, result: CheckResult) -> None:
    """Say when a file without mask or target is undersampled: reconstruct takes its mask from its zero lines."""
    mask = mask_from_sampled_columns(read_sampled_columns(info.path), info.padding_left, info.padding_right)
    if mask is not None:
        result.notes.append(
            f"{info.path}: no mask dataset, but {int(mask.sum())} of {mask.size} k-space lines are non-zero "
            f"({centre_lines(mask)} in the centre): reconstruct uses them as its mask"
        )
