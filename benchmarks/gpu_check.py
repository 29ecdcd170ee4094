"""What only a GPU can show, in one run: CUDA tests, gradients, appendix-C memory, bf16, the CLI.

    python benchmarks/gpu_check.py --out gpu-check-report

Writes OUT/report.md and OUT/report.json (plus the bench-memory JSON records it compared). On CUDA:
1. the tests that need CUDA (``pytest -k cuda``);
2. memory-free against plain-autograd gradients of a tiny i-RIM in float64 on CUDA;
3. ``irecon bench-memory --device cuda`` as appendix C prescribes: paper-2d, 320 x 320, T = 1, 4, 8,
   training and inference, memory-free and plain, 10 mini-batches;
4. the planner (meta) for the same settings and both CPU meters for T = 1 and 4 (one mini-batch), as
   ratios to the CUDA peak;
5. a bf16-autocast training step on CUDA;
6. synth -> train -> reconstruct of a tiny model through the real CLI on CUDA;
7. --fit-memory's promise on CUDA: paper-2d 320 x 320 under 400 MiB, the planner's deepest T measured
   with ``max_memory_allocated`` (and T + 1), the planner's margin on a real GPU.
Always, and alone without CUDA: the planner against the CPU storage tracker on a small size, and
--fit-memory's promise on the CPU at a tiny size (the allocator meter's margin).
Exit status 1 when a check fails; a check that cannot pass or fail (a ratio) is reported only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from irecon.bench.options import BenchOptions
from irecon.bench.records import Measurement
from irecon.bench.sweep import run_bench
from irecon.files import check_writable_folder, write_bytes, write_json
from irecon.losses import mean_mse
from irecon.models.presets import preset
from irecon.planning.fit import find_fit
from irecon.planning.peaks import InputShape, measured_peaks, planned_peak

MIB = 2**20
DEADLINE_S = 7.5 * 60  # sections that would start later are reported as not run
APPENDIX_C = dict(model="paper-2d", size=(320, 320), steps=(1, 4, 8), compare_plain=True)
CPU_STEPS = (1, 4)
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    """One section of the report: ``passed`` is None for figures that are reported, not judged."""

    name: str
    title: str
    passed: bool | None = None
    summary: str = ""
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def _ratio(a: int | None, b: int | None) -> str:
    return "-" if not a or not b else f"{a / b:.3f}"


def _key(m: Measurement) -> tuple[str, bool, int]:
    return m.mode, m.memory_free, m.steps


def _engine(memory_free: bool) -> str:
    return "memory-free" if memory_free else "plain"


def planner_against_tracker() -> Check:
    """The planner equals the CPU storage tracker to the byte; the allocator sees at least as much."""
    check = Check("planner_vs_cpu_tracker", "Planner (meta) against the CPU storage tracker, tiny-2d 32 x 32")
    common = dict(model="tiny-2d", size=(32, 32), steps=(2,), compare_plain=True, timing_batches=1)
    cpu = run_bench(BenchOptions(device="cpu", meter="storages", batches=2, **common))
    meta = {_key(m): m for m in run_bench(BenchOptions(device="meta", **common))}
    check.columns = ["mode", "engine", "T", "CPU storage tracker (B)", "planner (B)", "CPU allocator (B)", "equal"]
    equal = allocator_above = True
    for c in cpu:
        m = meta[_key(c)]
        same = c.storage_peak_bytes == m.peak_bytes
        equal &= same
        allocator_above &= (c.allocator_peak_bytes or 0) >= (c.storage_peak_bytes or 0)
        check.rows.append(
            [
                c.mode,
                _engine(c.memory_free),
                c.steps,
                c.storage_peak_bytes,
                m.peak_bytes,
                c.allocator_peak_bytes,
                "yes" if same else "NO",
            ]
        )
    check.passed = equal and allocator_above
    check.summary = (
        f"{len(cpu)} settings: planner {'equals' if equal else 'DIFFERS FROM'} the tracker to the byte; "
        f"allocator >= tracker: {'yes' if allocator_above else 'NO'}"
    )
    return check


def fit_memory(device: str) -> Check:
    """--fit-memory's promise: the planner's deepest T measured on the device stays within the budget.

    CUDA: paper-2d 320 x 320 under 400 MiB, the margin being what ``max_memory_allocated`` sees beyond
    the planner (cuDNN/cuBLAS workspaces); the CPU: tiny-2d 32 x 24 under 2 MiB, the allocator's margin.
    """
    on_cuda = device.startswith("cuda")
    model, shape, budget = (
        ("paper-2d", InputShape(1, 1, 320, 320, (320, 320)), 400 * MIB)
        if on_cuda
        else ("tiny-2d", InputShape(1, 1, 32, 24, (16, 16)), 2 * MIB)
    )
    check = Check(
        f"fit_memory_{'cuda' if on_cuda else 'cpu'}", f"--fit-memory on {device}: {model}, {shape.describe()}"
    )
    target = torch.device(device)
    fit = find_fit("steps", lambda t: preset(model, steps=t), lambda _: shape, (budget, "given"), 100, target)
    measured = {
        t: max(measured_peaks(preset(model, steps=t), shape, target, repeats=3)) for t in (fit.value, fit.value + 1)
    }
    check.columns = ["T", "planner (MiB)", "margin (MiB)", "predicted (MiB)", "measured (MiB)", "budget (MiB)"]
    for t, peak in measured.items():
        planned = planned_peak(preset(model, steps=t), shape)
        check.rows.append(
            [t, _mib(planned), _mib(fit.margin_bytes), _mib(planned + fit.margin_bytes), _mib(peak), _mib(budget)]
        )
    check.passed = measured[fit.value] <= budget and fit.next_bytes is not None and fit.next_bytes > budget
    check.summary = (
        f"T={fit.value} measured {_mib(measured[fit.value])} MiB within {_mib(budget)} MiB: "
        f"{'yes' if measured[fit.value] <= budget else 'NO'}; T={fit.value + 1} measured "
        f"{_mib(measured[fit.value + 1])} MiB; margin {_mib(fit.margin_bytes)} MiB ({fit.margin_method})"
    )
    return check


def cuda_tests(out: Path) -> Check:
    """Every test selected by ``-k cuda`` (they skip without a GPU)."""
    check = Check("cuda_tests", "Tests that need CUDA (pytest -k cuda)")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-k", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    write_bytes(out / "cuda-tests.txt", (done.stdout + done.stderr).encode())
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    check.summary = lines[-1] if lines else f"pytest exit status {done.returncode}"
    check.passed = done.returncode == 0 and "passed" in check.summary and "needs a CUDA" not in done.stdout
    return check


def gradients_float64(device: str) -> Check:
    """Memory-free and plain gradients of one tiny i-RIM on CUDA in float64: largest relative gap."""
    check = Check("gradients_float64", "Memory-free vs plain gradients, tiny-2d, float64, CUDA")
    torch.manual_seed(0)
    config = preset("tiny-2d", steps=3)
    free = config.build(memory_free=True).double().to(device)
    plain = config.build(memory_free=False).double().to(device)
    plain.load_state_dict(free.state_dict())
    generator = torch.Generator().manual_seed(1)
    mask = (torch.rand(1, 1, 1, 40, generator=generator) < 0.4).double()
    kspace = (torch.randn(1, 1, 48, 40, dtype=torch.complex128, generator=generator) * mask).to(device)
    mask, target = mask.to(device), torch.rand(1, 48, 40, dtype=torch.float64, generator=generator).to(device)
    for model in (free, plain):
        mean_mse(model(kspace, mask), target).backward()
    worst, name_of_worst = 0.0, ""
    for (name, p_free), p_plain in zip(free.named_parameters(), plain.parameters()):
        scale = p_plain.grad.abs().max().item() or 1.0
        gap = (p_free.grad - p_plain.grad).abs().max().item() / scale
        if gap > worst:
            worst, name_of_worst = gap, name
    check.passed = worst <= 1e-8
    check.summary = f"max relative gradient difference {worst:.2e} (at {name_of_worst or '-'}; limit 1e-8)"
    check.columns = ["parameters", "max relative difference"]
    check.rows = [[sum(1 for _ in free.parameters()), f"{worst:.3e}"]]
    return check


def bench_cuda(out: Path, device: str) -> tuple[Check, list[Measurement]]:
    """``irecon bench-memory --device cuda`` through the CLI, appendix C at paper-2d 320 x 320."""
    check = Check("bench_cuda", "bench-memory --device cuda: paper-2d 320 x 320, T = 1, 4, 8 (appendix C)")
    path = out / "bench-cuda.json"
    command = [
        sys.executable,
        "-m",
        "irecon.cli",
        "bench-memory",
        "--model",
        "paper-2d",
        "--size",
        "320",
        "320",
        "--steps",
        "1",
        "4",
        "8",
        "--compare-plain",
        "--device",
        device,
        "--json",
        str(path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    write_bytes(out / "bench-cuda.txt", (done.stdout + done.stderr).encode())
    if done.returncode != 0:
        check.passed, check.summary = False, f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"
        return check, []
    records = [Measurement(**r) for r in json.loads(path.read_text())]
    check.columns = ["mode", "engine", "T", "peak MiB", "activations MiB", "weights MiB", "s/batch"]
    for r in records:
        weights = r.param_bytes + r.grad_bytes + r.optimizer_bytes
        check.rows.append(
            [
                r.mode,
                _engine(r.memory_free),
                r.steps,
                r.skipped or _mib(r.peak_bytes),
                _mib(r.activation_bytes),
                _mib(weights),
                "-" if r.step_seconds is None else f"{r.step_seconds:.3f}",
            ]
        )
    free_train = [r.activation_bytes for r in records if r.mode == "train" and r.memory_free and r.activation_bytes]
    flat = len(free_train) == 3 and max(free_train) <= 1.05 * min(free_train)
    ran = all(r.peak_bytes is not None for r in records)
    check.passed = ran and flat
    spread = f"{max(free_train) / min(free_train):.3f}" if free_train else "-"
    check.summary = (
        f"{len(records)} settings, all measured: {'yes' if ran else 'NO'}; memory-free training "
        f"activations T=8 / T=1: {spread} (must be <= 1.05)"
    )
    return check, records


def cuda_against_planner_and_cpu(out: Path, cuda: list[Measurement]) -> Check:
    """The planner's figure and both CPU meters for the same settings, as ratios to the CUDA peak."""
    check = Check("cuda_vs_planner_and_cpu", "CUDA peak against the planner (meta) and the CPU meters")
    meta = run_bench(BenchOptions(device="meta", **APPENDIX_C))
    cpu_steps = {**APPENDIX_C, "steps": CPU_STEPS}  # T = 8 plain would take minutes on the CPU
    cpu = run_bench(BenchOptions(device="cpu", batches=1, timing_batches=1, **cpu_steps))
    write_json(out / "bench-meta.json", [asdict(m) for m in meta])
    write_json(out / "bench-cpu.json", [asdict(m) for m in cpu])
    by_meta, by_cpu = {_key(m): m for m in meta}, {_key(m): m for m in cpu}
    check.columns = [
        "mode",
        "engine",
        "T",
        "CUDA MiB",
        "planner MiB",
        "CPU tracker MiB",
        "CPU allocator MiB",
        "CUDA / planner",
        "CUDA / CPU allocator",
    ]
    ratios = []
    for c in cuda:
        m, p = by_meta.get(_key(c)), by_cpu.get(_key(c))
        planner = m.peak_bytes if m else None
        allocator = p.allocator_peak_bytes if p else None
        check.rows.append(
            [
                c.mode,
                _engine(c.memory_free),
                c.steps,
                _mib(c.peak_bytes),
                _mib(planner),
                _mib(p.storage_peak_bytes if p else None),
                _mib(allocator),
                _ratio(c.peak_bytes, planner),
                _ratio(c.peak_bytes, allocator),
            ]
        )
        if c.peak_bytes and planner:
            ratios.append(c.peak_bytes / planner)
    check.summary = (
        f"CUDA / planner from {min(ratios):.3f} to {max(ratios):.3f}" if ratios else "no CUDA figures to compare"
    )
    return check


def bf16_step(device: str) -> Check:
    """One bf16-autocast training step of tiny-2d on CUDA, memory-free and plain: finite, and how close."""
    check = Check("bf16_step", "bf16 autocast training step on CUDA, tiny-2d 64 x 64")
    torch.manual_seed(0)
    config = preset("tiny-2d")
    models = {True: config.build(memory_free=True).to(device)}
    models[False] = config.build(memory_free=False).to(device)
    models[False].load_state_dict(models[True].state_dict())
    generator = torch.Generator().manual_seed(2)
    mask = (torch.rand(1, 1, 1, 64, generator=generator) < 0.3).float()
    kspace = (torch.randn(1, 1, 64, 64, dtype=torch.complex64, generator=generator) * mask).to(device)
    mask, target = mask.to(device), torch.rand(1, 64, 64, generator=generator).to(device)
    check.columns = ["engine", "loss", "finite gradients", "peak MiB"]
    grads, finite = {}, True
    on_cuda = device.startswith("cuda")
    for memory_free, model in models.items():
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            estimate = model(kspace, mask)
        loss = mean_mse([e.float() for e in estimate], target)
        loss.backward()
        ok = math.isfinite(loss.item()) and all(torch.isfinite(p.grad).all().item() for p in model.parameters())
        grads[memory_free] = torch.cat([p.grad.flatten() for p in model.parameters()])
        optimizer.step()
        finite &= ok and all(torch.isfinite(p).all().item() for p in model.parameters())
        check.rows.append(
            [
                _engine(memory_free),
                f"{loss.item():.6f}",
                "yes" if ok else "NO",
                _mib(torch.cuda.max_memory_allocated(device)) if on_cuda else "-",
            ]
        )
    gap = ((grads[True] - grads[False]).norm() / grads[False].norm()).item()
    check.passed = finite
    check.summary = f"finite loss, gradients and weights: {'yes' if finite else 'NO'}; bf16 memory-free vs plain gradient gap {gap:.2e} (relative 2-norm)"
    return check


def cli_end_to_end(out: Path, device: str) -> Check:
    """synth -> train (2 epochs) -> reconstruct with the real ``irecon`` commands on CUDA."""
    check = Check("cli_end_to_end", "irecon synth / train / reconstruct on CUDA, tiny-2d")
    size = ["--kspace-size", "64", "64", "--recon-size", "48", "48"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps = [
            ["synth", work / "train", "--volumes", 4, "--slices", 3, *size, "--seed", 0],
            ["synth", work / "val", "--split", "val", "--volumes", 1, "--slices", 3, *size, "--seed", 1],
            [
                "train",
                work / "train",
                "--val",
                work / "val",
                "--model",
                "tiny-2d",
                "--out",
                work / "run",
                "--epochs",
                2,
                "--batch-size",
                2,
                "--device",
                device,
            ],
            [
                "reconstruct",
                work / "val",
                "--checkpoint",
                work / "run" / "best.pt",
                "--out",
                work / "recon",
                "--json",
                work / "val.json",
                "--device",
                device,
            ],
        ]
        log = []
        check.columns = ["command", "exit status", "seconds"]
        for words in steps:
            words = [str(w) for w in words]
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "irecon.cli", *words], cwd=ROOT, capture_output=True, text=True, timeout=240
            )
            log.append(f"$ irecon {' '.join(words)}\n{done.stdout}{done.stderr}")
            check.rows.append([f"irecon {words[0]}", done.returncode, f"{time.perf_counter() - started:.1f}"])
            if done.returncode != 0:
                break
        write_bytes(out / "cli.txt", "\n".join(log).encode())
        report = work / "val.json"
        ssim = json.loads(report.read_text())["mean"]["metrics"]["ssim"] if report.exists() else None
    check.passed = all(row[1] == 0 for row in check.rows) and len(check.rows) == len(steps) and ssim is not None
    check.summary = f"all four commands exit 0: {'yes' if check.passed else 'NO'}; validation SSIM {ssim}"
    return check


def run_check(checks: list[Check], started: float, name: str, fn: Callable[[], Check]) -> Check | None:
    """Run one section unless the deadline has passed; a crash becomes a failed check with its traceback."""
    if time.perf_counter() - started > DEADLINE_S:
        check = Check(name, name, passed=False, summary=f"not run: past the {DEADLINE_S / 60:.1f}-minute deadline")
        checks.append(check)
        return None
    begun = time.perf_counter()
    try:
        check = fn()
    except Exception as err:  # noqa: BLE001 - the report records every failure and goes on
        check = Check(
            name,
            name,
            passed=False,
            summary=f"{type(err).__name__}: {err}",
            rows=[[line] for line in traceback.format_exc().splitlines()[-12:]],
            columns=["traceback"],
        )
    check.seconds = time.perf_counter() - begun
    checks.append(check)
    print(
        f"gpu_check: {check.name}: {'ok' if check.passed else 'report' if check.passed is None else 'FAILED'}"
        f" ({check.seconds:.0f} s) {check.summary}",
        flush=True,
    )
    return check


def markdown(report: dict[str, Any], checks: list[Check]) -> str:
    lines = [
        "# irecon GPU check",
        "",
        f"- device: {report['device'] or 'none (CUDA not available: CPU part only)'}",
        f"- torch {report['torch']}, CUDA {report['cuda_version'] or '-'}, python {report['python']}",
        f"- total: {report['seconds']:.0f} s; result: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
    ]
    for check in checks:
        verdict = "report" if check.passed is None else "ok" if check.passed else "FAILED"
        lines += [f"## {check.title}", "", f"**{verdict}** ({check.seconds:.0f} s): {check.summary}", ""]
        if check.columns:
            lines.append("| " + " | ".join(check.columns) + " |")
            lines.append("|" + "---|" * len(check.columns))
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in check.rows]
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-report"), help="report folder")
    args = parser.parse_args()
    out = check_writable_folder(args.out)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    checks: list[Check] = []
    if not cuda:
        print(
            "gpu_check: CUDA is not available; running the CPU part only (planner against the CPU tracker, "
            "--fit-memory at a tiny size)",
            flush=True,
        )
    run_check(checks, started, "planner_vs_cpu_tracker", planner_against_tracker)
    run_check(checks, started, "fit_memory_cpu", lambda: fit_memory("cpu"))
    if cuda:
        device = "cuda"
        run_check(checks, started, "fit_memory_cuda", lambda: fit_memory(device))
        run_check(checks, started, "cuda_tests", lambda: cuda_tests(out))
        run_check(checks, started, "gradients_float64", lambda: gradients_float64(device))
        records: list[Measurement] = []

        def bench() -> Check:
            check, found = bench_cuda(out, device)
            records.extend(found)
            return check

        run_check(checks, started, "bench_cuda", bench)
        if records:
            run_check(checks, started, "cuda_vs_planner_and_cpu", lambda: cuda_against_planner_and_cpu(out, records))
        run_check(checks, started, "bf16_step", lambda: bf16_step(device))
        run_check(checks, started, "cli_end_to_end", lambda: cli_end_to_end(out, device))
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python": platform.python_version(),
        "seconds": time.perf_counter() - started,
        "passed": all(c.passed is not False for c in checks),
        "checks": [asdict(c) for c in checks],
    }
    write_json(out / "report.json", report)
    write_bytes(out / "report.md", markdown(report, checks).encode())
    print(
        f"gpu_check: {'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s; "
        f"wrote {out / 'report.md'} and {out / 'report.json'}",
        flush=True,
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
