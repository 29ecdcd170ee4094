"""Option values shared by every command: sizes, durations, counts, threads and device names."""

from __future__ import annotations

import pytest

from irecon.errors import IreconError
from irecon.values import check_count, check_device_name, check_threads, parse_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GiB", 24 * 2**30),
        ("24 gib", 24 * 2**30),
        ("40GB", 40 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5MB", 1_500_000),
        ("3KiB", 3072),
        ("1e9", 10**9),
        ("4096", 4096),
        ("2TiB", 2 * 2**40),
    ],
)
def test_memory_sizes_read_binary_and_decimal_units(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "24 parsecs", "-1GB", "0.1", "1..5GB"])
def test_unreadable_memory_sizes_are_user_errors(text: str) -> None:
    with pytest.raises(IreconError):
        parse_bytes(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1h30m", 5400.0)]
)
def test_durations_read_hours_minutes_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "0", "-3s", "inf", "nan", "1h30"])
def test_bad_durations_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_counts_name_the_option_and_the_bound() -> None:
    check_count("epochs", None)
    check_count("epochs", 1)
    check_count("seed", 0, minimum=0)
    with pytest.raises(IreconError, match="--epochs must be at least 1, got 0"):
        check_count("epochs", 0)
    with pytest.raises(IreconError, match="--seed must not be negative, got -1"):
        check_count("seed", -1, minimum=0)
    with pytest.raises(IreconError, match="--batch-size must be a whole number, got True"):
        check_count("batch_size", True)
    with pytest.raises(IreconError, match="--threads must be at least 1, got 0"):
        check_threads(0)


@pytest.mark.parametrize("name", [None, "cpu", "cuda", "cuda:1"])
def test_device_names_that_pass(name: str | None) -> None:
    check_device_name(name)


def test_device_names_that_fail_before_torch_loads() -> None:
    for name in ("gpu", "cuda:x", "tpu", "meta"):
        with pytest.raises(IreconError, match="unknown device"):
            check_device_name(name)
    check_device_name("meta", meta=True)
