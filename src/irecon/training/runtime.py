"""The process a run lives in: the torchrun world, its process group, stop signals and rank reductions."""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from irecon.metrics import Scores

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True)
class World:
    """This process's place among ``torchrun``'s (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def all_reduce(self, values: Tensor, op: Any = dist.ReduceOp.SUM) -> Tensor:
        if self.size > 1:
            dist.all_reduce(values, op=op)
        return values

    def gather(self, values: Sequence[float], device: torch.device) -> list[list[float]]:
        """Every rank's ``values`` (as float64), in rank order (every rank must call this)."""
        mine = torch.tensor(list(values), dtype=torch.float64, device=device)
        if self.size == 1:
            return [mine.tolist()]
        every = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(every, mine)
        return [t.tolist() for t in every]

    def mean_scores(self, scores: Sequence[Scores], device: torch.device) -> dict[str, float]:
        """Mean NMSE/PSNR/SSIM over all volumes of all ranks (every rank must call this)."""
        sums = [sum(getattr(s, key) for s in scores) for key in ("nmse", "psnr", "ssim")]
        totals = self.all_reduce(torch.tensor([*sums, len(scores)], dtype=torch.float64, device=device))
        count = max(float(totals[3]), 1.0)
        return {key: float(totals[i]) / count for i, key in enumerate(("nmse", "psnr", "ssim"))}


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the process group (nccl on CUDA, gloo on CPU) unless single-process or already joined."""
    if world.size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


class StopSignals:
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second signal stops at once.

    With ``announce`` the first signal prints one line to stderr saying it was heard. At the second
    ``on_second`` (if set) gives one line for stderr, and the process ends there with the signal's
    exit status, running no clean-up or ``atexit`` handlers (which a third Ctrl-C would interrupt
    with a traceback). Handlers can only be installed in the main thread;
    elsewhere the signals keep their defaults.
    """

    def __init__(self, announce: bool = False) -> None:
        self.signum: int | None = None
        self.announce = announce
        self.on_second: Callable[[], str] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and self.on_second is not None:
            os.write(sys.stderr.fileno(), (self.on_second() + "\n").encode())
            os._exit(EXIT_CODES[signum])
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum
        if self.announce:
            os.write(sys.stderr.fileno(), (first_interrupt_line(signum) + "\n").encode())

    def any_rank(self, world: World, device: torch.device) -> int:
        """The signal any rank got (0 for none), the same on every rank (every rank must call this)."""
        flag = torch.tensor([self.signum or 0], device=device)
        signum = int(world.all_reduce(flag, dist.ReduceOp.MAX))
        if signum:
            self.signum = signum
        return signum


def first_interrupt_line(signum: int) -> str:
    """What the first stop signal prints at once: that it was heard, and how to stop without waiting."""
    again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
    return f"{signal.Signals(signum).name}: finishing the step under way, then writing last.pt; {again} stops at once"


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM: the training process gets them (also when a
    scheduler signals the whole process group), finishes its step and then ends the workers."""
    for signum in EXIT_CODES:
        signal.signal(signum, signal.SIG_IGN)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory_kind(device: torch.device) -> str:
    return "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"
