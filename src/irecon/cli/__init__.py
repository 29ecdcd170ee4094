"""The irecon command line: the only package that imports click.

``main`` is one group; every command body builds its options dataclass, calls one library
function and renders the result. An :class:`IreconError` from anywhere becomes one line
``error: <path>: <problem>`` on stderr and exit status 1, here and nowhere else. Commands are
loaded when they run, so ``irecon --help`` and every ``--help``/``--version`` start without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from irecon import __version__
from irecon.errors import IreconError, default_spelling, use_spelling

# name -> (module, function, the one-line help shown by ``irecon --help``)
COMMANDS = {
    "synth": ("irecon.cli.data", "synth", "Write realistic synthetic fastMRI-format volumes into OUT_DIR."),
    "check": (
        "irecon.cli.data",
        "check",
        "Validate fastMRI files and folders; exit 0 only when every volume is valid.",
    ),
    "models": (
        "irecon.cli.data",
        "models",
        "List the model presets (kind, dimensionality, steps, layers, parameters) and the bundled weights.",
    ),
    "import": (
        "irecon.cli.importing",
        "import_command",
        "Import raw k-space (ISMRMRD .h5/.mrd, Siemens twix .dat) as fastMRI HDF5 files into --out.",
    ),
    "train": (
        "irecon.cli.train",
        "train_command",
        "Train a preset on TRAIN_DIR, validating on --val after every epoch.",
    ),
    "reconstruct": (
        "irecon.cli.reconstruct",
        "reconstruct_command",
        "Reconstruct fastMRI volumes (files or folders of .h5) into OUT_DIR, one .h5 per input.",
    ),
    "export": (
        "irecon.cli.reconstruct",
        "export_command",
        "Export reconstructions (or targets) already written to NIfTI and/or DICOM for viewers.",
    ),
    "export-model": (
        "irecon.cli.deploy",
        "export_model_command",
        "Export a checkpoint's whole reconstruction (k-space + mask in, magnitude out) as ONNX or TorchScript.",
    ),
    "evaluate": (
        "irecon.cli.evaluate",
        "evaluate_command",
        "Score the reconstructions in PREDICTIONS against the same-named files in TARGETS (fastMRI's metrics).",
    ),
    "bench-memory": (
        "irecon.cli.bench",
        "bench_memory",
        "Peak memory of training and inference, measured as the i-RIM paper's appendix C prescribes.",
    ),
}


class IreconGroup(click.Group):
    """A group that loads its commands on demand and turns user errors into one line and exit status 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        import importlib

        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`COMMANDS`, without importing any command."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command, and from now on messages spell option markers as its flags."""
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            use_spelling(_spelling(command))
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IreconError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _spelling(command: click.Command) -> Callable[[str], str]:
    """Option fields spelled as ``command``'s own flags (``val_dir`` -> ``--val``, ``train_dir`` -> ``TRAIN_DIR``)."""
    spelled: dict[str, str] = {}
    for param in command.params:
        if param.name is None:
            continue
        if isinstance(param, click.Argument):
            spelled[param.name] = param.human_readable_name
        else:
            spelled[param.name] = max(param.opts, key=len)
    return lambda name: spelled.get(name) or default_spelling(name)


@click.group(cls=IreconGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="irecon")
def main() -> None:
    """Reconstruct undersampled MRI with memory-free invertible RIMs (i-RIM)."""
