"""The README's command blocks run as written, in order, on tiny sizes, and print what it shows.

Every line of a fenced block that starts with ``$ irecon`` is a command (``\\`` continues it). The
commands run through the real ``main`` group in one folder, so later commands see what earlier
ones wrote. Sizes and counts are made tiny by :data:`TINY`; nothing else is changed. A command is
expected to exit 0 unless its line ends in ``# exit N``. Shown output lines of the forms
``wrote PATH`` and ``N ... volumes in FOLDER`` must be printed by the command too.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from irecon.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
# The import example's raw file, which `make test-tools` unpacks from twixtools' sdist into .cache/.
RAW_EXAMPLE = README.parent / ".cache/twixtools/twixtools-0.24/example_data/gre.dat"
TINY = [
    (r"--kspace-size \d+ \d+", "--kspace-size 32 24"),
    (r"--recon-size \d+ \d+", "--recon-size 16 16"),
    (r"--size \d+ \d+", "--size 16 16"),
    (r"--volumes \d+", "--volumes 2"),
    (r"--slices \d+", "--slices 2"),
    (r"--coils \d+", "--coils 2"),
    (r"--epochs \d+", "--epochs 1"),
    (r"--batches \d+", "--batches 1 --timing-batches 1"),
    (r"--steps( \d+)+", "--steps 1 2"),
    (r"--budget (\S+)", r"--budget \1 --max-steps 3"),
    (r"--fit-memory \S+", "--fit-memory 2MiB"),
    (r"--max-memory \S+", "--max-memory 2MiB"),
]


def readme_commands() -> list[tuple[str, int, list[str]]]:
    """(command line, expected exit status, the output lines shown after it) for every ``$ irecon``."""
    commands: list[tuple[str, int, list[str]]] = []
    in_block, pending = False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        if pending:
            pending += " " + line.strip().rstrip("\\").strip()
            if not line.rstrip().endswith("\\"):
                commands.append(_command(pending))
                pending = ""
        elif line.startswith("$ irecon"):
            text = line[2:].rstrip()
            if text.endswith("\\"):
                pending = text.rstrip("\\").strip()
            else:
                commands.append(_command(text))
        elif line.startswith("$ "):
            continue
        elif commands:
            commands[-1][2].append(line)
    return commands


def _command(text: str) -> tuple[str, int, list[str]]:
    status = 0
    match = re.search(r"#\s*exit (\d+)\s*$", text)
    if match:
        status, text = int(match.group(1)), text[: match.start()].rstrip()
    return text, status, []


def tiny(command: str) -> list[str]:
    for pattern, replacement in TINY:
        command = re.sub(pattern, replacement, command)
    return shlex.split(command)[1:]


def test_the_readme_has_commands() -> None:
    names = {shlex.split(c)[1] for c, _, _ in readme_commands()}
    assert {"synth", "check", "models", "train", "reconstruct", "export", "bench-memory"} <= names


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_every_readme_command_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if RAW_EXAMPLE.is_file():
        (tmp_path / ".cache").symlink_to(README.parent / ".cache")
    for command, status, shown in readme_commands():
        if "scanner" in command and not RAW_EXAMPLE.is_file():
            continue  # the import example needs `make test-tools` (twixtools' example raw data)
        result = CliRunner().invoke(main, tiny(command), terminal_width=200)
        assert result.exit_code == status, f"$ {command}\n{result.output}"
        for line in shown:
            if line.startswith("wrote "):
                assert "wrote " in result.output, f"$ {command}: shows {line!r}"
            if re.match(r"\d+ \w+ \w+ volumes? in ", line):
                assert re.search(r"\d+ \w+ \w+ volumes? in ", result.output), f"$ {command}: shows {line!r}"
            if line.startswith("error: "):
                assert "error: " in result.output, f"$ {command}: shows {line!r}"
