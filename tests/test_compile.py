"""Every shipped Triton kernel compiles for sm_80 (A100), sm_89 (L4) and sm_90a (H100) with no spills,
generic and with the run-time specialisations; and its SASS stays under its budget in benchmarks/sass_budgets.json.
This live compile of the representative set is the merge gate for the kernels.

The interpreter runs code the GPU compiler rejects (it once accepted a non-constexpr global here), so
this builds real PTX and cubins without a GPU, in a subprocess free of TRITON_INTERPRET
(``python -m benchmarks.ptxas_report``), once per Triton version per session:

- the installed Triton (CI's, 3.8): the run-time specialisation and the generic kernels for sm_90a, and
  the SASS model (``nvdisasm`` from the dev dependency ``nvidia-cuda-nvdisasm``);
- the GPU machines' Triton (3.6, side-installed by the Makefile): the run-time specialisation for
  sm_80, sm_89 and sm_90a (its generic sm_90a kernels: ``make compile-report`` with PYTHONPATH on the side
  folder; left out of CI to keep the compile test at about 200 compiles, ~3 CPU-minutes).

The representative set is ``benchmarks/compile_specs.py``'s ``specs()``, one function per kernel module of the
op registry. Every configuration a user can reach (``specs(full=True)``, about 12,500 compiles with both Tritons)
is compiled by ``make compile-all`` into ``benchmarks/results/compile-all.json``: a tool run before a release or
after a large kernel change (about 1.5 h on 2 cores), not a condition for landing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GPU_MACHINES_TRITON, triton_env

from benchmarks.ptxas_report import ARCHES, find_nvdisasm, find_ptxas, load_budgets

ROOT = Path(__file__).resolve().parents[1]
# The GPU machines' Triton (3.6) is GPU_MACHINES_TRITON; the installed one is CI's (3.8).
RUNS = {
    "installed": ["--arch", "sm_90a", "--generic-arch", "sm_90a"],
    "gpu-machines": [*(x for a in ARCHES for x in ("--arch", a)), "--generic-arch", "none"],
}


@pytest.fixture(scope="module", params=list(RUNS), ids=["triton-installed", "triton-gpu-machines"])
def report(request, tmp_path_factory):
    if find_ptxas() is None:
        if os.environ.get("CI"):
            pytest.fail("ptxas not found in CI: set CUDA_HOME to the CUDA toolkit folder")
        pytest.skip("ptxas not found (set CUDA_HOME to the CUDA toolkit folder)")
    env = triton_env(request.param)
    out = tmp_path_factory.mktemp("ptxas") / "report.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.ptxas_report", "--json", str(out), *RUNS[request.param]],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    print(run.stdout)
    result = json.loads(out.read_text())
    if request.param == "gpu-machines":  # the side folder's Triton really did the compiling
        side = next(GPU_MACHINES_TRITON.glob("triton-*.dist-info")).name.removeprefix("triton-").removesuffix(".dist-info")
        assert {r["triton"] for r in result["kernels"]} == {side}, (side, result["kernels"][0]["triton"])
    result["param"] = request.param
    return result


def test_every_configuration_compiles_for_every_arch(report):
    from kamim_fast import _backend

    from benchmarks import compile_specs
    from benchmarks.ptxas_report import specs

    names = {s["name"] for s in specs()}
    assert {s["module"] for s in specs()} == set(_backend.kernel_modules())  # every kernel module of the registry
    assert {s["module"] for s in compile_specs.specs(full=True)} == set(_backend.kernel_modules())
    assert any(n.startswith("fast[") for n in names) and any(n.startswith("gray[") for n in names), names
    assert any("fast-count,p=64" in n for n in names) and any("fast-ring,p=1]" in n for n in names), names
    args = RUNS[report["param"]]
    arches = [a for flag, a in zip(args[::2], args[1::2]) if flag == "--arch"]
    generic = [a for flag, a in zip(args[::2], args[1::2]) if flag == "--generic-arch" and a != "none"]
    wanted = {(n, a, "runtime") for n in names for a in arches} | {(n, a, "generic") for n in names for a in generic}
    got = {(r["name"], r["arch"], r["variant"]) for r in report["kernels"]}
    assert got == wanted, (sorted(wanted - got)[:5], sorted(got - wanted)[:5])
    assert all(r["registers"] > 0 and r["resident_blocks_per_sm"] >= 1 for r in report["kernels"])


def test_no_spills(report):
    spilled = [r for r in report["kernels"] if r["spill_stores"] or r["spill_loads"] or r["stack_frame"]]
    assert not spilled, spilled


def test_sass_per_item_within_the_budget(report):
    """Each shipped kernel's steady-state SASS instructions per item (sm_90a, run-time specialisation)
    stay under today's count + 10%, recorded in benchmarks/sass_budgets.json: a GPU-performance guard without a
    GPU."""
    rows = [r for r in report["kernels"] if r["arch"] == "sm_90a" and r["variant"] == "runtime"]
    if not any("sass_instructions_per_item" in r for r in rows):
        if os.environ.get("CI"):
            pytest.fail("nvdisasm not found in CI: pip install nvidia-cuda-nvdisasm (the dev extra)")
        pytest.skip("nvdisasm not found: pip install nvidia-cuda-nvdisasm (the dev extra)")
    budgets = load_budgets()
    version = ".".join(rows[0]["triton"].split(".")[:2])
    over, missing = [], []
    for r in rows:
        budget = budgets.get((r["name"], version))
        if budget is None:
            missing.append(r["name"])
        elif r["sass_instructions_per_item"] > budget:
            over.append((r["name"], r["sass_instructions_per_item"], budget))
    stale = {name for name, v in budgets if v == version} - {r["name"] for r in rows}
    assert not stale, f"budgets of configurations no longer compiled: {sorted(stale)} (--update-budgets)"
    assert not missing, (f"no budget in benchmarks/sass_budgets.json for Triton {version}: {missing} (python -m "
                         f"benchmarks.ptxas_report --update-budgets)")
    assert not over, over


def test_the_model_report(report):
    """--json writes {kernels, modelled}: the issue's fields, for the benchmark cases."""
    if report["param"] != "installed" or find_nvdisasm() is None:
        pytest.skip("the model is read from the installed Triton's SASS (nvdisasm)")
    for r in report["kernels"]:
        assert {"name", "arch", "registers", "spill_stores", "spill_loads", "resident_blocks_per_sm"} <= set(r)
    model = report["modelled"]
    assert {m["case"] for m in model} >= {"fast gray uint8 B=256 192x192 NMS", "loss fwd+bwd B=256 3x192x192 bf16 p=8 ring"}
    for m in model:
        assert m["modelled_ms"] > 0 and m["bound"] in ("issue", "bytes"), m
        assert m["modelled_ms_sustained"] >= m["modelled_ms"], m  # a range: the sustained end is the slower
    assert report["assumptions"]["sms"] == 132


def test_a_fingerprint_follows_its_own_compile_inputs():
    """A row is kept across runs while its fingerprint holds: it must change with the configuration's options,
    constexprs and specialisation, and not with another configuration's."""
    code = """if True:
        from benchmarks import compile_all
        specs = compile_all.enumeration_specs()
        a, b = "gray[uint8]", "gray[float32]"
        base = compile_all.fingerprints({a: specs[a], b: specs[b]})
        assert base[a, "runtime"] != base[a, "generic"] and base[a, "runtime"] != base[b, "runtime"]
        for change in ({"maxnreg": 64}, {"num_warps": 8}, {"args": {**specs[a]["args"], "CHANNEL_ORDER": "bgr"}}):
            now = compile_all.fingerprints({a: {**specs[a], **change}, b: specs[b]})
            assert now[a, "runtime"] != base[a, "runtime"] and now[a, "generic"] != base[a, "generic"], change
            assert now[b, "runtime"] == base[b, "runtime"] and now[b, "generic"] == base[b, "generic"], change
        print("ok")
    """
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=triton_env("installed"), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout[-3000:] + run.stderr[-3000:]


def _row(**counts) -> dict:
    from benchmarks.ptxas_report import SASS_CLASSES

    per_item = {c: counts.get(c, 0.0) for c in SASS_CLASSES}
    return {"sass_per_item": per_item, "sass_sustained_per_item": {"imad": counts.get("imad", 0.0),
                                                                   "global_line_slots": counts.get("lines", 0.0)}}


def test_the_model_is_a_range_with_imad_on_its_pipe():
    """The modelled times are a range: the fast end at the boost clock with one load/store slot per instruction,
    the slow end at the sustained clock with a slot per cache line touched; IMAD issues on the FMA pipe's heavy
    half (64 lanes per clock on sm_90, shared with FP32) at both ends, not on the integer pipe."""
    from benchmarks.ptxas_report import ASSUMPTIONS as A
    from benchmarks.ptxas_report import global_lines, issue_seconds

    items = 10**9
    lanes = A["sms"] * A["clock_ghz"] * 1e9
    # 64 integer lane slots per item, half of them IMAD: the integer pipe holds 32, the FMA pipe 32
    mixed = _row(int_alu=64.0, imad=32.0)
    assert issue_seconds(mixed, items) == pytest.approx(32 / 64 * items / lanes)
    # IMAD shares the FMA pipe with FP32: 32 IMAD + 96 FP32 fill 128 lanes of it
    assert issue_seconds(_row(int_alu=32.0, imad=32.0, fp32=96.0), items) == pytest.approx(128 / 128 * items / lanes)
    # the slow end: the sustained clock, and a slot per cache line (byte loads straddle a line: 2 each)
    byte_loads = _row(global_load=32.0, lines=64.0)
    assert issue_seconds(byte_loads, items) == pytest.approx(32 / 32 * items / lanes)
    assert issue_seconds(byte_loads, items, sustained=True) == pytest.approx(
        64 / 32 * items / (A["sms"] * A["sustained_clock_ghz"] * 1e9))
    assert (global_lines("LDG.E.U8"), global_lines("LDG.E"), global_lines("STG.E.64"), global_lines("LDG.E.128.CONSTANT")) \
        == (2, 2, 3, 5)
