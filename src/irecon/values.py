"""Option values every command shares: byte sizes, durations, counts, thread counts and device names.

Pure checks and parsers for the options dataclasses' ``validate()``; imports nothing heavy, so the
command line can check its options before torch loads. Each raises :class:`IreconError`.
"""

from __future__ import annotations

import math
import re

from irecon.errors import IreconError, option

BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DEVICE = re.compile(r"cpu|cuda(:[0-9]+)?")


def parse_bytes(text: str) -> int:
    """``"24GiB"``, ``"40 GB"``, ``"512MiB"``, ``"1.5e9"`` as a whole number of bytes (GB = 10^9, GiB = 2^30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in BYTE_UNITS:
        raise IreconError(f"cannot read '{text}' as a memory size (e.g. 24GiB, 40GB, 512MiB, 1e9)")
    value = float(match.group(1)) * BYTE_UNITS[match.group(2).lower()]
    if value < 1:
        raise IreconError(f"memory size '{text}' is below one byte")
    return int(value)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``2h`` or ``1h30m``; ValueError for anything else."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        seconds, number = 0.0, ""
        for char in value:
            if char.isdigit() or char == ".":
                number += char
            elif char in DURATION_UNITS and number:
                seconds += float(number) * DURATION_UNITS[char]
                number = ""
            else:
                raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h or 1h30m)") from None
        if number:
            raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h or 1h30m)") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{text!r} is not a positive, finite duration")
    return seconds


def check_count(name: str, value: int | None, minimum: int = 1) -> None:
    """Option ``name`` (a field) is a whole number of at least ``minimum`` (None passes: it was left out)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise IreconError(f"{option(name)} must be a whole number, got {value!r}")
    if value < minimum:
        word = "not be negative" if minimum == 0 else f"be at least {minimum}"
        raise IreconError(f"{option(name)} must {word}, got {value}")


def check_threads(threads: int | None) -> None:
    """``--threads``: left out (torch's default) or at least 1."""
    check_count("threads", threads)


def check_device_name(name: str | None, *, meta: bool = False) -> None:
    """``--device``: left out, cpu, cuda or cuda:N (and meta where the planner runs); availability is the run's check."""
    if name is None or _DEVICE.fullmatch(name) or (meta and name == "meta"):
        return
    choices = "cpu, cuda, cuda:N" + (" or meta" if meta else "")
    raise IreconError(f"unknown device {name!r} (use {choices})")
