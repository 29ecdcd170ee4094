"""Invertible-engine speed: where a training step's time goes, against plain autograd and another irecon tree.

One training step (zero_grad, forward, MSE loss, backward, Adam as the tree's ``irecon train`` builds it) is timed in three forms of a model
preset: ``memory-free`` (the default engine, loss on the output image), ``plain`` (the same model
under plain autograd), and ``official`` (the official i-RIM form: no output head, ``run_state``, MSE
on the state's two image channels, memory-free). Each form of each tree runs in its own worker
process; the workers take turns step by step, so every measurement sees the same machine load, and
the report gives medians and ratios of medians. Each worker then profiles one step (torch.profiler,
self CPU time; ``--profile-steps N``: N steps, per-step means): total, share of G's
convolution kernels (torch's conv ops, plus the GEMMs irecon runs as convolutions under the
``irecon::conv_gemm`` label), share of the GEMMs that apply each layer's orthogonal 1x1 conv folded
into its coupling (``irecon::rotation_gemm``, counted apart), top ops, and the
``aten::copy_`` calls of at least a state's size (not those inside an in-place ``baddbmm_``, which
copy the result onto the same tensor: no data moves). The labels cost time of their own under the
profiler (irecon opens them only there; tens of microseconds of self time around a GEMM), so
their self time is left out of the total. The report checks that: each labelled step is followed
by one profiled with the labels switched off (where the tree has them), and the median totals of
the two kinds are printed side by side (a mean would take the odd slow step, e.g. page faults in
the state's copies, from one kind only).

Compare with the tree of another commit (``--baseline``), e.g. the one before the engine work:

    git worktree add /tmp/irecon-base 27f81e7
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 \\
        python benchmarks/engine.py --model tiny-2d --batch 2 --size 160 128 --baseline /tmp/irecon-base
    python benchmarks/engine.py --model paper-2d --steps 1 --batch 1 --size 320 320 --baseline /tmp/irecon-base

The glibc variables keep freed activations in the heap (otherwise plain autograd pays page faults
on every large activation). ``--round-trip`` also prints the float32 round-trip error of the
paper-2d invertible chain against depth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

FORMS = ("memory-free", "plain", "official")
CONV_MARKERS = ("conv", "mkldnn_convolution")
CONV_GEMM_LABEL = "irecon::conv_gemm"  # irecon.invertible.coupling.CONV_GEMM; absent from the baseline tree
ROTATION_GEMM_LABEL = "irecon::rotation_gemm"  # irecon.invertible.coupling.ROTATION_GEMM
LABELS = (CONV_GEMM_LABEL, ROTATION_GEMM_LABEL)


def _is_conv(name: str) -> bool:
    return any(marker in name for marker in CONV_MARKERS)


class Stepper:
    """One model form with its data and optimiser; ``step()`` is one timed training step."""

    def __init__(self, form: str, model: str, steps: int | None, batch: int, size: tuple[int, int]) -> None:
        import torch
        import torch.nn.functional as F

        from irecon.models import presets
        from irecon.training.optim import build_optimizer

        torch.manual_seed(0)
        overrides = {"steps": steps} if steps else {}
        if form == "official":
            overrides["parametric_output"] = False
        config = presets.preset(model, **overrides)
        if hasattr(config, "build"):  # config classes; the baseline tree (27f81e7) has build_model
            self.model = config.build(memory_free=form != "plain")
        else:
            self.model = presets.build_model(config, memory_free=form != "plain")
        h, w = size
        generator = torch.Generator().manual_seed(1)
        self.mask = (torch.rand(batch, 1, 1, w, generator=generator) < 0.3).float()
        self.mask[..., w // 2 - 4 : w // 2 + 4] = 1
        self.kspace = torch.randn(batch, 1, h, w, dtype=torch.complex64, generator=generator) * self.mask
        self.target = torch.rand(batch, h, w, generator=generator)
        self.state_numel = batch * self.model.n_latent * h * w
        self.optimizer = build_optimizer(self.model.parameters(), 1e-3, shard=False, world_size=1)  # the tree's own
        self.form, self.mse = form, F.mse_loss

    def step(self) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        if self.form == "official":
            state, _, _ = self.model.run_state(self.kspace, self.mask)
            loss = self.mse(state[:, 0], self.target) + self.mse(state[:, 1], self.target)
        else:
            loss = self.mse(self.model(self.kspace, self.mask)[0], self.target)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def profile(self, top: int, steps: int = 1) -> dict:
        """Self CPU time per step over ``steps`` steps: total, convolution share, top ops, state-sized copies.

        Times come from profiles without shapes, one step each (their total is within a few % of an unprofiled
        step; recording shapes added ~30 % to it, unevenly across ops), less the labels' own self time. Each
        labelled step is followed by a step profiled with irecon's labels switched off: the two kinds' median
        totals check that correction. The copies come from a further profile with shapes.
        """
        from torch.profiler import ProfilerActivity, profile

        self_time: dict[str, float] = {}  # per event name, summed over the labelled steps
        counts: dict[str, int] = {}
        gemm = rotation = 0.0
        labelled: list[float] = []  # per labelled step: its total less the labels' self time
        unlabelled: list[float] = []  # per step profiled with the labels switched off
        for _ in range(steps):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                self.step()
            averages = prof.key_averages()
            for e in averages:
                self_time[e.key] = self_time.get(e.key, 0.0) + e.self_cpu_time_total
                counts[e.key] = counts.get(e.key, 0) + e.count
            labelled.append(sum(e.self_cpu_time_total for e in averages if e.key not in LABELS))
            kernels = [e for e in prof.events() if e.name not in LABELS and not _is_conv(e.name)]
            gemm += sum(e.self_cpu_time_total for e in kernels if _label_of(e) == CONV_GEMM_LABEL)
            rotation += sum(e.self_cpu_time_total for e in kernels if _label_of(e) == ROTATION_GEMM_LABEL)
            with _labels_off() as switched:
                if switched:
                    with profile(activities=[ProfilerActivity.CPU]) as prof:
                        self.step()
                    unlabelled.append(sum(e.self_cpu_time_total for e in prof.key_averages()))
        labels = sum(t for key, t in self_time.items() if key in LABELS)
        total = sum(labelled)
        conv = sum(t for key, t in self_time.items() if _is_conv(key))
        ranked = sorted((key for key in self_time if key not in LABELS), key=self_time.__getitem__, reverse=True)[:top]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                self.step()
        copies = [
            e
            for e in prof.events()
            if e.name == "aten::copy_"
            and e.input_shapes
            and _numel(e.input_shapes[0]) >= self.state_numel
            and not (e.cpu_parent is not None and e.cpu_parent.name == "aten::baddbmm_")  # result onto itself
        ]
        return {
            "total_ms": total / 1e3 / steps,
            "conv_share": conv / total,
            "conv_gemm_share": gemm / total,
            "rotation_gemm_share": rotation / total,
            "labels_ms": labels / 1e3 / steps,
            "labelled_median_ms": statistics.median(labelled) / 1e3,
            "unlabelled_median_ms": statistics.median(unlabelled) / 1e3 if unlabelled else None,
            "top": [(key, self_time[key] / 1e3 / steps, counts[key] // steps) for key in ranked],
            "state_copies": len(copies) // steps,
            "state_copy_ms": sum(e.self_cpu_time_total for e in copies) / 1e3 / steps,
        }


@contextlib.contextmanager
def _labels_off() -> Iterator[bool]:
    """irecon's profiler labels switched off while inside (yields whether this tree has them to switch)."""
    from irecon.invertible import coupling, layers

    if not hasattr(coupling, "profiler_label"):
        yield False
        return
    saved = coupling.profiler_label, getattr(layers, "profiler_label", None)
    coupling.profiler_label = layers.profiler_label = lambda name: contextlib.nullcontext()
    try:
        yield True
    finally:
        coupling.profiler_label, layers.profiler_label = saved


def _label_of(event) -> str | None:
    """The innermost of irecon's profiler labels a profiler event runs inside, if any."""
    while event is not None:
        if event.name in LABELS:
            return event.name
        event = event.cpu_parent
    return None


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def worker(args: argparse.Namespace) -> None:
    """Serve 'step' and 'profile' requests on stdin, one JSON line each on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    stepper = Stepper(args.worker, args.model, args.steps, args.batch, tuple(args.size))
    stepper.step()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            print(json.dumps({"seconds": stepper.step()}), flush=True)
        elif command == "profile":
            print(json.dumps(stepper.profile(args.top, args.profile_steps)), flush=True)


class Worker:
    """A worker process for one (tree, form), irecon imported from ``tree``/src."""

    def __init__(self, label: str, tree: Path, form: str, args: argparse.Namespace) -> None:
        self.label, self.form = label, form
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        command = [sys.executable, __file__, "--worker", form, "--model", args.model, "--batch", str(args.batch)]
        command += ["--size", *map(str, args.size), "--threads", str(args.threads), "--top", str(args.top)]
        command += ["--profile-steps", str(args.profile_steps)]
        command += ["--steps", str(args.steps)] if args.steps else []
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.times: list[float] = []

    def ask(self, command: str) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label}/{self.form} ended")
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def describe_machine() -> str:
    """The CPU's model name, its core count, torch's CPU kernels and the load average: the shares and times
    depend on the CPU (its convolution kernels against its Python and dispatch speed)."""
    import torch

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} "
        f"kernels), load average {os.getloadavg()[0]:.1f}"
    )


def compare(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parents[1]
    trees = [("this", here)] + ([("base", Path(args.baseline).resolve())] if args.baseline else [])
    workers = [Worker(label, tree, form, args) for label, tree in trees for form in args.forms]
    for w in workers:
        w.ask("")
    machine = describe_machine()
    for r in range(args.repeats):
        order = workers if r % 2 == 0 else workers[::-1]
        for w in order:
            w.times.append(w.ask("step")["seconds"])
    print(
        f"{args.model}{f' steps={args.steps}' if args.steps else ''}, batch {args.batch}, "
        f"{args.size[0]}x{args.size[1]}, float32, {args.threads} thread(s), {args.repeats} interleaved steps each"
    )
    print(f"  on {machine} (at the start; {os.getloadavg()[0]:.1f} after the steps)")
    median = {(w.label, w.form): statistics.median(w.times) for w in workers}
    for w in workers:
        print(f"  {w.label:>4} {w.form:<12} median step {median[w.label, w.form]:.3f} s")
    if ("this", "plain") in median and ("this", "memory-free") in median:
        print(f"  memory-free / plain (this tree): {median['this', 'memory-free'] / median['this', 'plain']:.3f}")
    for form in args.forms:
        if ("base", form) in median:
            ratio = median["base", form] / median["this", form]
            print(f"  speed-up of {form} over the baseline: {ratio:.2f}x")
    for w in workers:
        p = w.ask("profile")
        rotation = p.get("rotation_gemm_share", 0.0)
        basis = f"the labels' own {p.get('labels_ms', 0.0):.1f} ms left out"
        if p.get("unlabelled_median_ms") is not None:
            basis += (
                f"; median step {p['labelled_median_ms']:.0f} ms so, {p['unlabelled_median_ms']:.0f} ms "
                "profiled in turn without the labels"
            )
        print(
            f"\n{w.label} {w.form}: profiled step {p['total_ms']:.0f} ms self CPU (mean of {args.profile_steps}; "
            f"{basis}), G's convolutions "
            f"{100 * (p['conv_share'] + p['conv_gemm_share']):.1f}% ({100 * p['conv_share']:.1f}% conv ops + "
            f"{100 * p['conv_gemm_share']:.1f}% convs run as GEMMs), the folded orthogonal 1x1 conv's GEMMs "
            f"{100 * rotation:.1f}%, state-sized copy_ calls {p['state_copies']} ({p['state_copy_ms']:.1f} ms)"
        )
        for name, ms, count in p["top"]:
            print(f"    {name[:48]:<48} {ms:9.1f} ms {100 * ms / p['total_ms']:5.1f}% {count:6d} calls")
        w.close()


def round_trip(size: int, depths: list[int]) -> None:
    """Float32 max |x - reverse(forward(x))| / max |x| of the paper-2d chain at several depths."""
    import torch

    from irecon.invertible.engine import invertible_chain, reverse_chain
    from irecon.models.irim import IRIM

    for steps in depths:
        torch.manual_seed(0)
        model = IRIM(coils=1, n_latent=64, steps=steps, parametric_output=False)
        generator = torch.Generator().manual_seed(1)
        mask = (torch.rand(1, 1, 1, size, generator=generator) < 0.3).float()
        kspace = torch.randn(1, 1, size, size, dtype=torch.complex64, generator=generator) * mask
        with torch.no_grad():
            x, scaled, _ = model.initial_state(kspace, mask)
            x[:, 4:] = torch.randn_like(x[:, 4:])
            y = invertible_chain(x, model.ops(), (scaled, mask))
            restored = reverse_chain(y, model.ops(), (scaled, mask), inplace=True)
        error = ((restored - x).abs().max() / x.abs().max()).item()
        print(f"round trip at {10 * steps:>4} coupling layers: max |x - reverse(forward(x))| / max |x| = {error:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-2d")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's time steps")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[160, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--profile-steps", type=int, default=1, help="steps profiled together (one step varies)")
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    parser.add_argument("--baseline", help="another irecon tree (its src/ is imported), e.g. a git worktree")
    parser.add_argument("--round-trip", type=int, nargs="*", metavar="STEPS", help="also the round trip at these T")
    parser.add_argument("--worker", choices=FORMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    compare(args)
    if args.round_trip is not None:
        round_trip(320, args.round_trip or [1, 10, 40])


if __name__ == "__main__":
    main()
