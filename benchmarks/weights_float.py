"""KAMIM's weights from a normalised float batch on the CPU, at one thread: the float -> gray pass against its copy
floor, and ``patch_weights`` from float input (with the normalisation check's statistics, as the first calls run
it, and without) against the published pipeline (OpenCV FAST + drawKeypoints + pooling per image, from uint8).

    python -m benchmarks.weights_float [--quick] [--out benchmarks/results]

Writes ``weights-float-cpu-<isa>-<cores>cores-<date>.json`` and ``.md``. Inputs: B crops of scikit-image's colour
photographs, 192 x 192, ImageNet-normalised float32, rotating over 4 sets (beyond the L3 cache). Each figure is
the min and the median of whole calls timed with ``time.perf_counter``, the steps taking turns (one call of each
per round) so that each sees the same load; ratios are of medians measured in the same run.

The floor of float -> gray: read 3 float32 and write 1 uint8 per pixel, 13 B, at the copy bandwidth measured in
the same run (``dst.copy_(src)`` of 256 MB, read + written bytes per second).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ROTATE = 4


def _time_round_robin(fns: dict, reps: int, slow: set) -> dict:
    """name -> (min, median) seconds of whole calls, after two warm-up calls each. The calls take turns (one of
    each per round), so that every implementation sees the same neighbours' load on a shared machine; the
    ``slow`` ones run in the first 3 rounds only."""
    for fn in fns.values():
        fn(), fn()
    times = {name: [] for name in fns}
    for i in range(reps):
        for name, fn in fns.items():
            if name in slow and i >= 3:
                continue
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (min(t), float(np.median(t))) for name, t in times.items()}


def _cycle(items):
    state = {"i": 0}

    def nxt():
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return nxt


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(quick: bool, reps: int | None = None) -> dict:
    import kamim_fast
    from kamim_fast import _ext
    from kamim_fast.weights import _NORMALIZATION_CHECK

    from .cases_fast import photo_crops_rgb
    from .cases_mim_loss import cpu_copy_bandwidth
    from .cases_weights import published_weights_one

    ok, why = _ext.status()
    if not ok:
        raise SystemExit(f"the native kernels did not load: {why}")
    torch.set_num_threads(1)
    B, S = (8, 192) if quick else (48, 192)
    reps = reps or (5 if quick else 61)
    rgb = [photo_crops_rgb(B, S, S, i) for i in range(ROTATE)]
    u8 = [torch.from_numpy(r).permute(0, 3, 1, 2).contiguous() for r in rgb]
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    xs = [((u.float() / 255 - m) / s).contiguous() for u in u8]
    x, u, imgs = _cycle(xs), _cycle(u8), _cycle(rgb)
    cpp = torch.ops.kamim_fast_cpp
    opts = (8, 0.25, 10, "ring", "bgr", MEAN, STD)  # KAMIM_PAPER

    def public_first_call():  # the check's budget fresh: the statistics are asked for and read
        _NORMALIZATION_CHECK.reset()
        kamim_fast.patch_weights(x(), **kamim_fast.KAMIM_PAPER)

    def public_steady():
        _NORMALIZATION_CHECK.budget[("images", tuple(MEAN), tuple(STD))] = _NORMALIZATION_CHECK.MAX_CHECKS
        kamim_fast.patch_weights(x(), **kamim_fast.KAMIM_PAPER)

    def old_check():  # what the check cost before its statistics came from the gray pass: one aminmax per channel
        torch.aminmax(x().transpose(0, 1).reshape(3, -1), dim=1)

    rows = {
        "copy of the float batch (x.clone())": lambda: x().clone(),
        "float -> gray (rgb_to_gray_u8, native)": lambda: cpp.rgb_to_gray_u8(x(), "bgr", MEAN, STD),
        "uint8 -> gray (rgb_to_gray_u8, native)": lambda: cpp.rgb_to_gray_u8(u(), "bgr", [], []),
        "the check's former aminmax (first 16 calls)": old_check,
        "patch_weights op, float, no statistics": lambda: cpp.patch_weights(x(), *opts, False),
        "patch_weights op, float, with statistics": lambda: cpp.patch_weights(x(), *opts, True),
        "patch_weights, float, first calls (public, checked)": public_first_call,
        "patch_weights, float, steady (public, check spent)": public_steady,
        "patch_weights, uint8 (public)": lambda: kamim_fast.patch_weights(u(), **kamim_fast.KAMIM_PAPER),
        "published pipeline, 1 process (uint8)": lambda: [published_weights_one(im) for im in imgs()],
    }
    bandwidth = cpu_copy_bandwidth(1)
    torch.set_num_threads(1)
    slow = {"published pipeline, 1 process (uint8)"}
    timings = {}
    for name, (lo, med) in _time_round_robin(rows, reps, slow).items():
        timings[name] = {"min_ms": lo * 1e3, "median_ms": med * 1e3}
        print(f"{name:55s} min {lo * 1e3:8.3f} ms  median {med * 1e3:8.3f} ms", flush=True)
    pixels = B * S * S
    floor_bytes = 13 * pixels
    floor_ms = floor_bytes / bandwidth * 1e3
    published = timings["published pipeline, 1 process (uint8)"]["median_ms"]
    gray = timings["float -> gray (rgb_to_gray_u8, native)"]
    result = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "isa": cpp.fast_cpu_isa(), "threads": 1,
                    "load_average": os.getloadavg()},
        "versions": {"torch": torch.__version__, "kamim_fast": kamim_fast.__version__},
        "date": datetime.date.today().isoformat(),
        "shape": [B, 3, S, S],
        "rounds": reps,
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "gray_floor": {"bytes": floor_bytes, "bytes_per_pixel": 13, "ms": floor_ms,
                       "measured_min_ms": gray["min_ms"], "measured_median_ms": gray["median_ms"],
                       "ratio_min": gray["min_ms"] / floor_ms, "ratio_median": gray["median_ms"] / floor_ms},
        "timings": timings,
        "speedup_vs_published": {k: published / v["median_ms"] for k, v in timings.items() if "patch_weights" in k},
    }
    return result


def markdown(r: dict) -> str:
    mach = r["machine"]
    lines = [f"# patch_weights from normalised float input, CPU, 1 thread ({r['date']})", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, ISA {mach['isa']}, load average "
             f"{', '.join(f'{v:.1f}' for v in mach['load_average'])}; torch {r['versions']['torch']}. "
             f"Shape {tuple(r['shape'])} float32, ImageNet-normalised photo crops; KAMIM_PAPER.", "",
             f"Copy bandwidth (read + written): {r['copy_bandwidth_GBps']:.2f} GB/s. float -> gray floor: "
             f"{r['gray_floor']['bytes'] / 1e6:.2f} MB (13 B/pixel) = {r['gray_floor']['ms']:.3f} ms; measured "
             f"{r['gray_floor']['measured_min_ms']:.3f} ms min / {r['gray_floor']['measured_median_ms']:.3f} ms "
             f"median: {r['gray_floor']['ratio_min']:.2f}x / {r['gray_floor']['ratio_median']:.2f}x the floor.", "",
             "| step | min ms | median ms | published / this (medians) |", "|---|---|---|---|"]
    for name, t in r["timings"].items():
        sp = r["speedup_vs_published"].get(name)
        lines.append(f"| {name} | {t['min_ms']:.3f} | {t['median_ms']:.3f} | {f'{sp:.1f}x' if sp else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="B=8 and 5 repeats (seconds)")
    ap.add_argument("--reps", type=int, default=None, help="rounds of calls (default 61; 5 with --quick)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the .json and .md (default: print only)")
    args = ap.parse_args(argv)
    r = run(args.quick, args.reps)
    md = markdown(r)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"weights-float-cpu-{r['machine']['isa']}-{r['machine']['cores']}cores-{r['date']}"
        (args.out / f"{stem}.json").write_text(json.dumps(r, indent=1))
        (args.out / f"{stem}.md").write_text(md)


if __name__ == "__main__":
    main()
