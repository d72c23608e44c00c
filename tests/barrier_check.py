"""Static race check of the Triton kernels that share a per-program scratch (run without TRITON_INTERPRET).

    python tests/barrier_check.py [--json FILE]

The interpreter runs one program, one lane at a time, so it cannot show a missing ``tl.debug_barrier()``.
This lowers each shipped configuration (``sm90_specs()`` of ``kamim_fast/kernels/fast.py`` and ``kamim_fast/kernels/mim_loss.py``)
to TTGIR for sm_90a without a GPU (the ttir and ttgir stages of ``triton.compile``; no ptxas needed), then
follows the pointers derived from ``scratch_ptr`` through the IR and checks, inside the persistent tile
loop, in program order:

- read after write: between every store to the scratch and every later load from it, a barrier;
- across tiles: between a load of one tile and a store of the next (or a store of one tile and a load of the
  next), a barrier at the end or the start of the loop body.

It prints one JSON row per configuration (barriers, scratch stores and loads, violations with source lines).
tests/test_barriers.py runs it under each Triton the project supports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

BARRIER = re.compile(r"\b(?:gpu|ttg)\.barrier\b")
VALUE = re.compile(r"%[\w.$-]+")
RESULTS = re.compile(r"^\s*((?:%[\w.$-]+(?::\d+)?)(?:\s*,\s*%[\w.$-]+(?::\d+)?)*)\s*=\s*(\"?[\w.]+\"?)")
ITER_ARG = re.compile(r"(%[\w.$-]+)\s*=\s*(%[\w.$-]+)")
LOC_REF = re.compile(r"loc\((#loc\d*)\)\s*$")
LOC_DEF = re.compile(r"^(#loc\d*) = loc\((.*)\)\s*$")


def _base(token: str) -> str:
    return token.split("#")[0]


def _source_lines(text: str) -> dict[str, str]:
    """#locN -> "file.py:line" (call sites resolved to the innermost frame's line and its caller's)."""
    raw = {m.group(1): m.group(2) for m in map(LOC_DEF.match, text.splitlines()) if m}

    def resolve(name: str, depth: int = 0) -> str:
        body = raw.get(name, "")
        if depth > 20:
            return "?"
        m = re.match(r'"([^"]+)":(\d+):\d+', body)
        if m:
            return f"{os.path.basename(m.group(1))}:{m.group(2)}"
        m = re.match(r"callsite\((#loc\d*) at (#loc\d*)\)", body)
        if m:
            return f"{resolve(m.group(1), depth + 1)} (from {resolve(m.group(2), depth + 1)})"
        m = re.match(r'"[^"]*"\((#loc\d*)\)', body)  # a named location
        if m:
            return resolve(m.group(1), depth + 1)
        return "?"

    return {name: resolve(name) for name in raw}


def analyse(ttgir: str, scratch: str = "%scratch_ptr") -> dict:
    """Scratch stores, loads and barriers of the persistent tile loop, and the unordered pairs among them."""
    lines = [line for line in ttgir.splitlines() if not line.startswith("#")]
    locs = _source_lines(ttgir)
    tainted = {scratch}
    for _ in range(4):  # to a fixed point: loop-carried pointers
        before = len(tainted)
        for line in lines:
            code = line.split(" loc(")[0]
            m = RESULTS.match(code)
            if not m or m.group(2) == "tt.load":
                continue
            operands = {_base(t) for t in VALUE.findall(code[m.end():])}
            if operands & tainted:
                tainted |= {_base(r.split(":")[0].strip()) for r in m.group(1).split(",")}
            for arg, init in ITER_ARG.findall(code[m.end():]):
                if _base(init) in tainted:
                    tainted.add(arg)
        if len(tainted) == before:
            break
    # The persistent loop: the function's outermost scf.for; events are numbered in program order.
    events, depth, loop_depth, in_loop = [], 0, None, False
    outside = []
    for line in lines:
        code = line.split(" loc(")[0]
        m = LOC_REF.search(line)
        where = locs.get(m.group(1), "?") if m else "?"
        kind = None
        if BARRIER.search(code):
            kind = "barrier"
        else:
            op = re.search(r"\btt\.(store|load)\s+(%[\w.$-]+)", code)
            if op and _base(op.group(2)) in tainted:
                kind = op.group(1)
        if "scf.for" in code and loop_depth is None and "tt.func" not in code:
            loop_depth, in_loop = depth, True
        if kind:
            (events if in_loop else outside).append((kind, where))
        depth += code.count("{") - code.count("}")
        if in_loop and depth <= loop_depth:
            in_loop = False
    violations = []
    idx = {k: [i for i, e in enumerate(events) if e[0] == k] for k in ("store", "load", "barrier")}

    def barrier_between(a: int, b: int) -> bool:
        return any(a < i < b for i in idx["barrier"])

    for s in idx["store"]:
        for ld in idx["load"]:
            if s < ld and not barrier_between(s, ld):
                violations.append(f"read after write without a barrier: store at {events[s][1]}, load at {events[ld][1]}")
    n = len(events)
    for a, b in [(x, y) for x in idx["load"] for y in idx["store"]] + [(x, y) for x in idx["store"] for y in idx["load"]]:
        # a in one tile, b in the next: a barrier after a (to the end of the body) or before b (from the start)
        if not (barrier_between(a, n) or barrier_between(-1, b)):
            violations.append(f"across tiles without a barrier: {events[a][0]} at {events[a][1]}, "
                              f"then {events[b][0]} at {events[b][1]} of the next tile")
    return {
        "barriers": len(idx["barrier"]),
        "scratch_stores": len(idx["store"]),
        "scratch_loads": len(idx["load"]),
        "outside_loop": [f"{k} at {w}" for k, w in outside if k != "barrier"],
        "violations": sorted(set(violations)),
    }


def ttgir_of(spec: dict) -> str:
    """The TTGIR of one sm90 spec, for sm_90a, built without a GPU (the first two stages of triton.compile)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton._C.libtriton import ir

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    source = ASTSource(fn=spec["fn"], signature=spec["signature"], constexprs=spec["constexprs"])
    options = backend.parse_options({"num_warps": spec["num_warps"], "enable_fp_fusion": False,
                                     **({"maxnreg": spec["maxnreg"]} if spec.get("maxnreg") else {})})
    stages: dict = {}
    try:
        backend.add_stages(stages, options, source.language)
    except TypeError:  # older Triton: add_stages(stages, options)
        backend.add_stages(stages, options)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    codegen = backend.get_codegen_implementation(options)
    module_map = backend.get_module_map()
    module = source.make_ir(target, options, codegen, module_map, context)
    metadata: dict = {}
    for stage in ("ttir", "ttgir"):
        module = stages[stage](module, metadata)
    del triton
    return str(module)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET")
    import importlib

    import triton

    from kamim_fast.kernels._launch import compile_source

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's benchmarks/
    from benchmarks import compile_specs

    rows = []
    for spec in compile_specs.specs():  # the representative set of every kernel module of the registry
        spec = dict(spec)
        spec["signature"], spec["constexprs"], _ = compile_source(spec["fn"], spec["args"], specialise=False)
        if "scratch_ptr" not in spec["signature"] or "bfloat16" in spec["name"] or "bf16" in spec["name"]:
            continue  # kernels without scratch have no barrier to check; the dtype moves no barrier
        mod = importlib.import_module(f"kamim_fast.kernels.{spec['module']}")
        row = {"name": spec["name"], "file": mod.__file__, "triton": triton.__version__, **analyse(ttgir_of(spec))}
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f)


if __name__ == "__main__":
    sys.exit(main())
