"""The training bar and lines as a user sees them."""

from __future__ import annotations

import io
import math

from rich.console import Console

from irecon.training.report import loss_text, progress_bar


def render_bar(loss: float) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    bar = progress_bar(console, visible=True)
    bar.add_task("train", total=3, completed=0, epoch="1/1", loss=loss_text(loss), speed=0.0, memory="RSS 1 MiB")
    console.print(bar.make_tasks_table(bar.tasks))
    return out.getvalue()


def test_the_bar_shows_no_nan_loss_before_the_first_step() -> None:
    before = render_bar(math.nan)
    assert "nan" not in before and "loss -" in before
    assert "loss 0.1235" in render_bar(0.12345)
