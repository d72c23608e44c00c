"""Run the benchmark matrix on this machine's device and write the results.

    python -m benchmarks [--quick] [--only STEM,...] [--out benchmarks/results] [--compile-all]

On a machine with CUDA every case runs at full size on the GPU (OpenCV on the CPU beside it); without one,
CPU-sized cases run. Writes ``<out>/<device>-<date>.json`` (versions, git commit, device, per case and
implementation min/median/max ms, the speed-ups, the roofline), a Markdown table and a PNG of speed-up
against size, and prints the table.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

import torch

from .harness import markdown, run_cases, write_results

GROUPS = tuple(sorted(p.stem.removeprefix("cases_") for p in Path(__file__).parent.glob("cases_*.py")))
"""The stems of the cases_<stem>.py modules; each row of the results names the ops its case ran (harness.py), and
tests/test_benchmarks_runner.py checks that they are every op of the registry."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short timing, to check everything runs")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {GROUPS}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--compile-all", action="store_true",
                        help="torch.compile the loss reference on every shape (minutes each), not only the headline one")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the loss cases")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--max-cases", type=int, metavar="N",
                        help="the first N cases of each group only (a smoke run: benchmarks/gpu_session.sh's dry run)")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"--only takes {GROUPS}, got {sorted(unknown)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = []
    limit = slice(args.max_cases)
    for group in groups:
        module = importlib.import_module(f"{__package__}.cases_{group}")
        options = {"compile_all": args.compile_all, "compile_any": not args.no_compile}
        accepted = inspect.signature(module.cases).parameters
        cases += module.cases(device, args.quick, **{k: v for k, v in options.items() if k in accepted})[limit]
    result = run_cases(cases, device, args.quick, progress=not args.no_progress)
    paths = write_results(result, args.out)
    print(markdown(result))
    print("wrote", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
