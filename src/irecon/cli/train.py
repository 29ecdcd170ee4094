"""``irecon train``: options from :class:`TrainOptions`, the run from :func:`irecon.training.loop.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from irecon.cli.options import ListCommand, default_of, device_option, exit_with, threads_option
from irecon.data.masks import MASK_TYPES
from irecon.data.splits import SELECTIONS
from irecon.errors import spell_options
from irecon.models.names import IRIM_OUTPUTS, PRESET_NAMES
from irecon.text import say
from irecon.training.options import TrainOptions
from irecon.values import parse_duration


def _default(name: str) -> Any:
    return default_of(TrainOptions, name)


@click.command("train", cls=ListCommand)
@click.argument("train_dir", required=False, type=click.Path(path_type=Path))
@click.option(
    "--val",
    "val_dir",
    type=click.Path(path_type=Path),
    help="Folder of validation .h5 volumes (whole volumes, file-name-seeded masks). Needed for a new run.",
)
@click.option(
    "--model",
    metavar="PRESET",
    help=f"Needed for a new run. One of {', '.join(n for n in PRESET_NAMES if n != 'zero-filled')} "
    "(irecon models describes them).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="RUN_DIR for last.pt, best.pt, metrics.jsonl, training_curve.png.  [default: a new runs/<preset>-<N>; "
    "with --resume the run in runs/ whose last.pt is newest]",
)
@click.option(
    "--init",
    metavar="CKPT",
    help="Start a new run from these weights: default (the bundled model for the training data's coils), "
    "bundled:NAME or a checkpoint. They fix the model (--model and size options may be left out); "
    "the optimiser starts fresh.",
)
@click.option(
    "--epochs", type=int, default=_default("epochs"), show_default=True, help="Epochs in all (a resume may raise it)."
)
@click.option(
    "--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Slices (or slabs) per step."
)
@click.option("--lr", type=float, default=_default("lr"), show_default=True, help="Adam learning rate.")
@click.option(
    "--lr-step", type=int, default=_default("lr_step"), show_default=True, help="StepLR: epochs between decays."
)
@click.option("--lr-gamma", type=float, default=_default("lr_gamma"), show_default=True, help="StepLR: decay factor.")
@click.option(
    "--loss",
    default=_default("loss"),
    show_default=True,
    help="ssim (1-SSIM, fastmri SSIMLoss), ssim-l1 (1-SSIM + L1), l1 or mse, each with the data range = "
    "the volume's max.",
)
@click.option(
    "--train-resolution",
    nargs=2,
    type=int,
    default=_default("train_resolution"),
    metavar="H W",
    help="Crop/pad training k-space in image space (official i-RIM: 368 368).  [default: native size; "
    "volumes of different sizes are batched apart]",
)
@click.option(
    "--accelerations",
    multiple=True,
    type=int,
    default=_default("accelerations"),
    show_default=True,
    help="One or more values, paired with --center-fractions; validation uses the first pair.",
)
@click.option(
    "--center-fractions",
    multiple=True,
    type=float,
    default=_default("center_fractions"),
    show_default=True,
    help="Fully sampled centre of each mask, paired with --accelerations.",
)
@click.option(
    "--mask-type",
    type=click.Choice(MASK_TYPES),
    default=_default("mask_type"),
    show_default=True,
    help="fastMRI mask family.",
)
@click.option(
    "--slab", type=int, default=_default("slab"), help="Slices per 3-D training slab.  [default: 8 for 3-D presets]"
)
@click.option(
    "--seed", type=int, default=_default("seed"), show_default=True, help="Seeds the weights, sample order and masks."
)
@device_option
@click.option(
    "--amp",
    type=click.Choice(["bf16"]),
    default=_default("amp"),
    help="bfloat16 autocast for the model's forward pass (the loss stays float32).",
)
@click.option(
    "--memory-free/--no-memory-free",
    default=_default("memory_free"),
    show_default=True,
    help="Invert-to-learn backprop for the i-RIM (memory independent of depth).",
)
@click.option("--steps", type=int, default=_default("steps"), help="Override the preset's steps.")
@click.option("--layers", type=int, default=_default("layers"), help="Override the i-RIM layers per step.")
@click.option("--n-latent", type=int, default=_default("n_latent"), help="Override the i-RIM state channels.")
@click.option("--multiplicity", type=int, default=_default("multiplicity"), help="Override the i-RIM multiplicity.")
@click.option(
    "--shared-weights/--no-shared-weights",
    default=_default("shared_weights"),
    help="Override weight sharing across steps.",
)
@click.option(
    "--output-head",
    "output",
    type=click.Choice(IRIM_OUTPUTS),
    default=_default("output"),
    help="Override the i-RIM output head.  [default: the preset's; residual presets take residual-rss "
    "on multi-coil data]",
)
@click.option(
    "--unet-chans", type=int, default=_default("unet_chans"), help="Override the U-Net's first-level channels."
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=_default("checkpoint_every"),
    show_default=True,
    help="Write last.pt every N steps.",
)
@click.option(
    "--num-workers",
    type=int,
    default=_default("num_workers"),
    help="DataLoader worker processes per training process (0: read in the training process).  "
    "[default: 0 on the CPU, min(4, CPUs per process - 1) on a GPU]",
)
@click.option(
    "--shard-optimizer/--no-shard-optimizer",
    default=_default("shard_optimizer"),
    show_default=True,
    help="Under torchrun, shard the Adam state over the processes (ZeRO); checkpoints stay whole and "
    "resume on any number of processes. On one process it is plain Adam.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in RUN_DIR from last.pt, exactly where it stopped, with its options "
    "(TRAIN_DIR, --val and --model may be left out; an option given must not conflict).",
)
@click.option("--overwrite", is_flag=True, help="Start afresh in a RUN_DIR that holds checkpoints.")
@click.option(
    "--max-steps",
    type=int,
    default=_default("max_steps"),
    help="Stop after N optimisation steps in total (demos, tests); resume to continue.",
)
@click.option(
    "--max-bad-steps",
    type=int,
    default=_default("max_bad_steps"),
    show_default=True,
    help="Steps with a non-finite loss or gradient are skipped and counted; this many in a row stop the run.",
)
@click.option(
    "--time-budget",
    "time_budget_s",
    callback=lambda ctx, param, value: _duration(value),
    default=None,
    metavar="DURATION",
    help="Stop cleanly (last.pt + resume command) after this wall time, validation "
    "included: 90s, 15m, 2h, 1h30m or seconds. Applies to each launch.",
)
@threads_option
@click.option(
    "--scan/--no-scan",
    default=_default("scan"),
    show_default=True,
    help="Read every training and validation file whole for NaN/Inf before the first step, as irecon "
    "check does (--no-scan for huge datasets already checked).",
)
@click.option(
    "--log-every",
    type=float,
    default=_default("log_every"),
    show_default=True,
    metavar="SECONDS",
    help="Seconds between plain progress lines when the output is not a terminal (logs, nohup).",
)
@click.option(
    "--virtual-coils",
    type=int,
    default=_default("virtual_coils"),
    metavar="N",
    help="Compress each volume's coils to N virtual coils (SVD of its calibration region) before the model, "
    "so files of any coil count >= N train one model; targets stay the RSS of all physical coils.",
)
@click.option(
    "--tensorboard/--no-tensorboard",
    default=_default("tensorboard"),
    show_default=True,
    help="Write TensorBoard event files to RUN_DIR/tensorboard: per-step loss, lr, throughput, memory; "
    "per-epoch scores and a validation slice (needs pip install 'irecon[tensorboard]').",
)
@click.option(
    "--fit-memory",
    default=_default("fit_memory"),
    metavar="SIZE",
    help="Let the planner choose --fit (T, the batch size or the 3-D slab) as the largest whose training step "
    "fits SIZE (22GiB, 400MiB; auto: 90% of the free memory), with the device's measured margin; prints the "
    "choice and the predicted peak, then measures the first steps.",
)
@click.option(
    "--fit",
    type=click.Choice(["steps", "batch", "slab"]),
    default=_default("fit"),
    show_default=True,
    help="What --fit-memory chooses.",
)
@click.option(
    "--self-supervised",
    is_flag=True,
    help="SSDU: no targets needed (test-style files welcome); per sample the acquired lines are split at random "
    "into lines the model sees and held-out lines the k-space loss is computed on (docs/self-supervised.md).",
)
@click.option(
    "--ssdu-rho",
    type=float,
    default=_default("ssdu_rho"),
    show_default=True,
    help="Fraction of the acquired lines held out for the loss (the calibration region is never held out).",
)
@click.option(
    "--ssdu-selection",
    type=click.Choice(SELECTIONS),
    default=_default("ssdu_selection"),
    show_default=True,
    help="How held-out lines are drawn: uniformly, or with a Gaussian density around k-space's centre.",
)
@click.option(
    "--ssdu-splits",
    type=int,
    default=_default("ssdu_splits"),
    show_default=True,
    help="Splits per sample and step (each a forward pass; their losses are averaged).",
)
@click.option(
    "--ssdu-seen-weight",
    type=float,
    default=_default("ssdu_seen_weight"),
    show_default=True,
    help="Weight of the same k-space loss on the lines the model saw (0: held-out lines only, as in SSDU).",
)
def train_command(**params: Any) -> None:
    """Train a preset on TRAIN_DIR, validating on --val after every epoch.

    Writes RUN_DIR/last.pt (every --checkpoint-every steps and each epoch), best.pt (highest mean
    validation SSIM), metrics.jsonl and training_curve.png. Ctrl-C or SIGTERM finishes the step,
    writes last.pt and exits 130/143; --resume continues. Run under torchrun for multi-GPU.
    """
    from irecon.training.loop import Outcome, train

    ctx = click.get_current_context()
    sources = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given = {name for name in params if ctx.get_parameter_source(name) in sources}
    from irecon.training.plan import with_defaults
    from irecon.training.runtime import World

    options, _, notes = with_defaults(TrainOptions(**params), World.from_env().size)
    for note in notes:
        click.echo(spell_options(note))
    try:
        result = train(options, given=given)
    except KeyboardInterrupt:
        click.echo("interrupted before training started; nothing was written", err=True)
        exit_with(130)
        return
    if result.is_main:
        console = Console()
        if result.history:
            console.print(summary_table(result))
        if result.exit_code:
            say(
                console,
                f"interrupted at epoch {result.epochs_done + 1} step {result.epoch_step} "
                f"(step {result.global_step} in all); resume with: {result.resume_command}",
            )
        elif result.stopped is Outcome.MAX_STEPS:
            say(console, f"stopped at step {result.global_step} (--max-steps); continue with: {result.resume_command}")
        elif result.stopped is Outcome.TIME_BUDGET:
            say(
                console,
                f"stopped at step {result.global_step} after {result.wall_time_s:.0f} s (--time-budget); "
                f"continue with: {result.resume_command}",
            )
    exit_with(result.exit_code)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def summary_table(result: Any) -> Table:
    """One row per epoch of a :class:`TrainResult` (the best in bold) and a zero-filled reference row.

    A self-supervised run adds the held-out k-space loss column.
    """
    table = Table(title=f"training run {result.run_dir}")
    heldout = any("val_kspace_loss" in r for r in result.history)
    for column in ("epoch", "train loss", "NMSE", "PSNR", "SSIM", *(("held-out k-space",) if heldout else ()), "lr"):
        table.add_column(column, justify="right")
    for r in result.history:
        table.add_row(
            str(r["epoch"]),
            f"{r['train_loss']:.4f}",
            f"{r['val_nmse']:.4f}",
            f"{r['val_psnr']:.2f}",
            f"{r['val_ssim']:.4f}",
            *((f"{r['val_kspace_loss']:.4f}",) if heldout else ()),
            f"{r['lr']:.2e}",
            style="bold" if r["epoch"] == result.best_epoch else None,
        )
    zero = result.zero_filled
    if zero:
        blank = ("",) if heldout else ()
        row = ("zero-filled", "", f"{zero['nmse']:.4f}", f"{zero['psnr']:.2f}", f"{zero['ssim']:.4f}", *blank, "")
        table.add_row(*row, style="dim")
    if result.best_epoch is not None:
        table.caption = (
            f"best.pt = epoch {result.best_epoch} (SSIM {result.best_ssim:.4f}); "
            f"{result.total_wall_time_s:.0f} s in all"
        )
    return table
