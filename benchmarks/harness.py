"""Timing, the roofline, and the result files shared by every benchmark case.

A :class:`Case` is one shape of one workload with several implementations: the library's (``ours``) and
what a user would otherwise run. Each implementation is a callable that does one whole step (forward and
backward where the case says so) and cycles through its own input sets, so caches do not flatter it.

- CUDA implementations are timed with ``triton.testing.do_bench`` (CUDA events, warm-up, many repeats).
- CPU implementations (OpenCV, the PyTorch reference on a CPU-only machine) are timed with
  ``time.perf_counter`` around whole calls after one warm-up call.

Per implementation the JSON keeps min, median and max in milliseconds; speed-ups compare medians.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Impl:
    """One implementation of a case: ``step()`` runs it once; ``device`` says which timer applies."""

    name: str
    step: Callable[[], object]
    device: str  # "cuda" or "cpu"


@dataclass
class Case:
    group: str  # "fast", "mim_loss", "amt select+gather", "gather", "weights"
    name: str  # the shape, e.g. "B=256 3x192x192 p=8 bf16"
    size: float  # x axis of the plot (pixels or tokens x dim)
    ours: str  # the library implementation's name among impls
    impls: list[Impl]
    min_bytes: int | None = None  # the fewest bytes the step must move through device memory
    notes: dict = field(default_factory=dict)
    bandwidth: float | None = None  # bytes/s of the floor when the case measures its own (CPU cases)


def rotating(make: Callable[[int], object], count: int) -> Callable[[], object]:
    """The ``count`` inputs ``make(i)`` built once, handed out in turn on each call."""
    inputs = [make(i) for i in range(count)]
    state = {"i": -1}

    def next_input():
        state["i"] = (state["i"] + 1) % count
        return inputs[state["i"]]

    return next_input


def time_impl(impl: Impl, quick: bool) -> list[float]:
    """Milliseconds per call, one entry per repeat (GPU: do_bench's samples)."""
    if impl.device == "cuda":
        import triton.testing

        times = triton.testing.do_bench(impl.step, warmup=10 if quick else 50, rep=40 if quick else 300,
                                        return_mode="all")
        return [float(t) for t in times]
    impl.step()  # warm-up: lazy imports, pools, allocator, the ops' first-call dispatch caches
    impl.step()
    samples = []
    budget = time.perf_counter() + (0.5 if quick else 3.0)
    while len(samples) < 3 or (time.perf_counter() < budget and len(samples) < 50):
        t = time.perf_counter()
        impl.step()
        samples.append((time.perf_counter() - t) * 1e3)
    return samples


def peak_memory(impl: Impl) -> int:
    """Bytes of the highest point of memory the step allocates above what it started with (one call).

    CUDA: the caching allocator's peak. CPU: the profiler's allocation and free events in time order (self
    allocations of each op, frees as ``[memory]`` events), summed as they come.
    """
    if impl.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        impl.step()
        torch.cuda.synchronize()
        return max(0, torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        impl.step()
    level = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


def table_impls(op: str, device: str, step_under: Callable[[str], Callable[[], object]]) -> list[Impl]:
    """One implementation per row of kamim_fast's implementation table for ``op`` that runs on ``device``
    (``_backend.TABLE``; Triton on CPU tensors only through the interpreter, which is not timed):
    ``step_under(backend)`` is the step to time with ``KAMIM_FAST_BACKEND=backend``."""
    from kamim_fast import _backend

    found = []
    for backend, impl in _backend.TABLE[op].impls.items():
        if device not in impl.devices or (backend == "triton" and device == "cpu"):
            continue
        if not _backend._available(backend, op, device)[0]:
            continue
        step = step_under(backend)

        def under(step=step, backend=backend):
            previous = os.environ.get(_backend.ENV_VAR)
            os.environ[_backend.ENV_VAR] = backend
            try:
                return step()
            finally:
                os.environ.pop(_backend.ENV_VAR) if previous is None else os.environ.__setitem__(_backend.ENV_VAR, previous)

        found.append(Impl(f"kamim_fast {backend}", under, device))
    return found


def auto_impl(op: str, device: str) -> str:
    """The name :func:`table_impls` gives the implementation ``auto`` takes for ``op`` on ``device``."""
    from kamim_fast import _backend

    return f"kamim_fast {_backend.TABLE[op].auto.get(device, 'torch')}"


def ops_of(step: Callable[[], object]) -> list[str]:
    """The ``kamim_fast::`` ops that one call of ``step`` runs (the registry's dispatch, spied on)."""
    from kamim_fast import _backend

    seen, real = [], _backend.run

    def spy(name, device, *args):
        seen.append(name)
        return real(name, device, *args)

    _backend.run = spy
    try:
        step()
    finally:
        _backend.run = real
    return sorted(set(seen))


def summary(samples: list[float]) -> dict:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples), "n": len(samples)}


def copy_bandwidth(device: str) -> float | None:
    """Bytes/s (read + written) of a 1 GiB device-to-device copy; None on the CPU."""
    if device != "cuda":
        return None
    import triton.testing

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=20, rep=200, return_mode="median")
    del src, dst
    return 2 * (1 << 30) / (ms * 1e-3)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("triton", "cv2", "numpy", "kamim_fast"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = None
    return found


def run_cases(cases: list[Case], device: str, quick: bool, progress: bool = True) -> dict:
    """Time every implementation of every case; returns the result document (see ``write_results``)."""
    from tqdm import tqdm

    bandwidth = copy_bandwidth(device)
    rows = []
    bar = tqdm(total=sum(len(c.impls) for c in cases), disable=not progress, unit="impl")
    for case in cases:
        timed = {}
        for impl in case.impls:
            bar.set_description(f"{case.group} {case.name} {impl.name}"[:70])
            timed[impl.name] = {**summary(time_impl(impl, quick)), "peak_MB": peak_memory(impl) / 1e6}
            bar.update()
        ours = timed[case.ours]["median"]
        ops = sorted({op for impl in case.impls if impl.name.startswith("kamim_fast") for op in ops_of(impl.step)})
        row = {"group": case.group, "case": case.name, "size": case.size, "ours": case.ours, "ops": ops, "times_ms": timed,
               "speedup": {name: t["median"] / ours for name, t in timed.items() if name != case.ours},
               "min_bytes": case.min_bytes, **case.notes}
        floor_bandwidth = case.bandwidth or bandwidth
        if floor_bandwidth and case.min_bytes:
            row["floor_bandwidth_GBps"] = floor_bandwidth / 1e9
            row["floor_ms"] = case.min_bytes / floor_bandwidth * 1e3
            row["fraction_of_floor"] = row["floor_ms"] / ours  # 1.0 = at the copy bandwidth
        rows.append(row)
    bar.close()
    return {"device": device_name(device), "device_type": device, "date": datetime.date.today().isoformat(),
            "commit": git_commit(), "versions": versions(), "quick": quick,
            "copy_bandwidth_GBps": bandwidth / 1e9 if bandwidth else None, "rows": rows}


def markdown(result: dict) -> str:
    head = (f"{result['device']}, commit {result['commit']}, {result['date']}, torch {result['versions']['torch']}, "
            f"triton {result['versions']['triton']}, OpenCV {result['versions']['cv2']}"
            + (f", copy bandwidth {result['copy_bandwidth_GBps']:.0f} GB/s" if result["copy_bandwidth_GBps"] else "")
            + (" (quick sizes)" if result["quick"] else ""))
    lines = [head, "", "| workload | case | kamim_fast (median ms, peak memory) | others: median ms (kamim_fast's speed-up, peak memory) | floor (ms) | of floor |",
             "|---|---|---:|---|---:|---:|"]
    for r in result["rows"]:
        others = "; ".join(f"{name} {t['median']:.3f} ({r['speedup'][name]:.1f}x{_peak(t)})"
                           for name, t in r["times_ms"].items() if name != r["ours"])
        floor = f"{r['floor_ms']:.3f}" if "floor_ms" in r else "-"
        frac = f"{r['fraction_of_floor']:.0%}" if "fraction_of_floor" in r else "-"
        ours = r["times_ms"][r["ours"]]
        lines.append(f"| {r['group']} | {r['case']} | {ours['median']:.3f}{_peak(ours)} | {others} | {floor} | {frac} |")
    return "\n".join(lines) + "\n"


def _peak(timed: dict) -> str:
    return f", peak {timed['peak_MB']:.1f} MB" if "peak_MB" in timed else ""


def plot(result: dict, path: Path) -> None:
    """Speed-up of kamim_fast over each alternative against the case size, one panel per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups = list(dict.fromkeys(r["group"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = sorted((r for r in result["rows"] if r["group"] == group), key=lambda r: r["size"])
        for other in dict.fromkeys(name for r in rows for name in r["speedup"]):
            pts = [(r["size"], r["speedup"][other]) for r in rows if other in r["speedup"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"vs {other}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", title=group, xlabel="size (elements)", ylabel="kamim_fast speed-up")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['device']} ({result['date']}, {result['commit']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(result: dict, out: Path) -> list[Path]:
    """``<out>/<device>-<date>.{json,md,png}``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{result['device']}-{result['date']}")
    paths = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths
