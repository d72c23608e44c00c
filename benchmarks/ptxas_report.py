"""Compile every shipped Triton kernel for the H100 (sm_90a) without a GPU and report ptxas's figures.

    python -m benchmarks.ptxas_report [--json FILE]

Each kernel module lists its shipped configurations in ``sm90_specs()``. For each, this builds PTX and a
cubin with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``, runs
``ptxas -arch=sm_90a -v`` on the PTX, and prints registers, spills, stack frame, barriers and the
number of 16-byte global loads. The interpreter accepts code the compiler rejects, so this is the check
that the kernels build for the GPU. Must run without TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KERNEL_MODULES = ("fast", "gray", "mim_loss")


def find_ptxas() -> str | None:
    for folder in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if folder and (Path(folder) / "bin" / "ptxas").exists():
            return str(Path(folder) / "bin" / "ptxas")
    return shutil.which("ptxas")


def compile_spec(spec: dict, ptxas: str) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"])
    options = {"num_warps": spec["num_warps"], "enable_fp_fusion": False}
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    ptx = compiled.asm["ptx"]
    assert compiled.asm.get("cubin"), f"{spec['name']}: no cubin"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        run = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(path), "-o", os.devnull], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{spec['name']}: ptxas failed:\n{run.stderr}")

    def number(pattern: str) -> int:
        m = re.search(pattern, run.stderr)
        return int(m.group(1)) if m else 0

    return {
        "name": spec["name"],
        "num_warps": spec["num_warps"],
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack_frame": number(r"(\d+) bytes stack frame"),
        "shared_memory": number(r"(\d+) bytes smem"),
        "ld_global_v4": ptx.count("ld.global.v4"),
        "triton": triton.__version__,
    }


def report() -> list[dict]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    ptxas = find_ptxas()
    if ptxas is None:
        raise SystemExit("ptxas not found: set CUDA_HOME to the CUDA toolkit folder")
    import importlib

    rows = []
    for module in KERNEL_MODULES:
        for spec in importlib.import_module(f"kamim_fast.kernels.{module}").sm90_specs():
            rows.append(compile_spec(spec, ptxas))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = report()
    print(f"{'kernel':40s} {'warps':>5s} {'regs':>5s} {'spill st/ld':>12s} {'stack':>6s} {'ld.v4':>6s}")
    for r in rows:
        print(f"{r['name']:40s} {r['num_warps']:5d} {r['registers']:5d} {r['spill_stores']:>5d}/{r['spill_loads']:<6d} "
              f"{r['stack_frame']:6d} {r['ld_global_v4']:6d}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
