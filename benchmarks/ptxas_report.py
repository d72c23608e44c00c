"""Compile every shipped Triton kernel for sm_80, sm_89 and sm_90a without a GPU, report ptxas's
figures, and model the H100 time of the benchmark cases from the SASS.

    python -m benchmarks.ptxas_report [--json FILE] [--arch sm_90a ...] [--generic-arch sm_90a ...] [--update-budgets]
    python -m benchmarks.ptxas_report --all [--jobs N] [--only REGEX] [--force]   (make compile-all)

``benchmarks/compile_specs.py`` lists, per kernel module of the op registry, the configurations that CI compiles
live and the model reads (``specs()``; ``specs(full=True)``: every one a user can reach, which ``--all`` compiles
with both Triton versions into ``benchmarks/results/compile-all.json``, see ``benchmarks/compile_all.py``), with
the launch arguments of the benchmark case (meta tensors). Each is compiled with ``triton.compile`` for every
``--arch`` with the specialisations Triton makes at run time for aligned tensors (16-byte aligned pointers and
ints divisible by 16 marked ``tt.divisibility``, ints equal to 1 made constants:
``kernels._launch.compile_source``), and for every ``--generic-arch`` without them (default: sm_90a). The
registers, spills, stack frame and shared memory are ptxas's own report (``-v``) for the very cubin Triton
built. The interpreter accepts code the compiler rejects, so this is the check that the kernels build for the
GPU. Must run without TRITON_INTERPRET.

The model (``--json`` writes ``{"kernels": [...], "modelled": [...], "assumptions": {...}}``): the
sm_90a run-time cubins are disassembled with ``nvdisasm`` (pip ``nvidia-cuda-nvdisasm``, a dev
dependency; without it the kernel rows carry no SASS counts and there is no model). For each kernel
the steady-state instructions per output item come from the SASS's loops (backward branches), each
weighted by the trip count of the source loop its line information points at (the ``range`` bounds
evaluated with the case's arguments), per tile of the persistent loop, times the tiles, over the
items. Counted by class; see ``ASSUMPTIONS`` for the H100 rates that turn them into time.

The SASS budgets (``benchmarks/sass_budgets.json``: per Triton version and configuration, today's count and
the budget, today + 10%) are data: ``tests/test_compile.py`` holds every configuration of the representative set
to its budget; ``--update-budgets`` rewrites this Triton version's entries from the run (after a deliberate
change; run it once with each Triton, the GPU machines' with PYTHONPATH=.venv/triton-gpu).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGETS = Path(__file__).resolve().parent / "sass_budgets.json"
BUDGET_MARGIN = 0.10  # a budget is today's SASS instructions per item + 10%
# The architecture each target stands for in the occupancy figures: A100 (sm_80), L4 (sm_89), H100 (sm_90a).
ARCHES = {"sm_80": 80, "sm_89": 89, "sm_90a": 90}
MODEL_ARCH = "sm_90a"

# Written once: the figures that turn SASS counts and bytes into H100 time.
ASSUMPTIONS = {
    "gpu": "H100 SXM5 (the workplace's H100 machines)",
    "sms": 132,
    "clock_ghz": 1.98,  # H100 SXM5 boost clock: 132 SMs x 128 FP32 lanes x 2 x 1.98 GHz = the datasheet's 67 TFLOPS
    "copy_bandwidth_tb_s": 3.0,  # measured device-to-device copy on the workplace's H100 (NOTES.md); datasheet 3.35
    # lanes per SM per clock (CUDA C++ Programming Guide, arithmetic instruction throughput, cc 9.0):
    "issue_lanes_per_clock": 128,  # 4 schedulers x 1 warp instruction
    "int_alu_lanes_per_clock": 64,  # integer add/logical/shift/compare/select/min/max/multiply-add
    "fp32_lanes_per_clock": 128,
    "lsu_lanes_per_clock": 32,  # global and shared loads/stores: one warp instruction per clock per SM
    "model": "time = max(instruction time, byte time); instruction time = the busiest of the issue slots, "
             "the integer pipe (int ALU + min/max), the FP32 pipe and the load/store unit, with every SM busy "
             "(no latency, no tail effects); byte time = compulsory bytes (inputs once, outputs once) over the "
             "copy bandwidth. Both branches of run-time conditionals are counted.",
    # IMAD issues on the FMA pipe's heavy half on sm_90 (64 lanes per clock, shared with FP32), not on the
    # integer pipe: both ends of the range count it there.
    "imad_lanes_per_clock": 64,
    # The range: modelled_ms is the fast end (boost clock, one load/store slot per instruction); its slow end,
    # modelled_ms_sustained, takes the clock an H100 SXM sustains under load, and a load/store slot per
    # 128-byte cache line a warp touches (its width's lines plus one: a warp's bytes at an unaligned offset,
    # such as FAST's circle loads, straddle a line).
    "sustained_clock_ghz": 1.83,
    "h200": "H200: the same 132 SMs and clocks, 4.8 TB/s HBM3e (datasheet): byte times shrink by about 1.4x "
            "(scaled from the measured 3.0 TB/s: about 4.3 TB/s), issue times are the same",
    "fast_floor": "the loss with FAST weights computes FAST with NMS on every pixel of its target, so beside its "
                  "byte floor it has a floor of its own: the byte floor plus the modelled issue time of the FAST "
                  "kernel (fast[gray-uint8,nms=1]) on the same B x H x W pixels (fast_floor_ms, of_fast_floor); "
                  "of_byte_floor stays the issue's measure",
}

SASS_CLASSES = ("int_alu", "min_max", "fp32", "global_load", "global_store", "shared", "barrier", "branch",
                "uniform", "other")


def find_ptxas() -> str | None:
    for folder in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if folder and (Path(folder) / "bin" / "ptxas").exists():
            return str(Path(folder) / "bin" / "ptxas")
    return shutil.which("ptxas")


def find_nvdisasm() -> str | None:
    """nvdisasm from the pip package nvidia-cuda-nvdisasm, else CUDA_HOME, else PATH."""
    try:
        import nvidia

        for base in nvidia.__path__:
            for path in Path(base).glob("*/bin/nvdisasm"):
                return str(path)
    except ImportError:
        pass
    for folder in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if folder and (Path(folder) / "bin" / "nvdisasm").exists():
            return str(Path(folder) / "bin" / "nvdisasm")
    return shutil.which("nvdisasm")


# --- compiling --------------------------------------------------------------------------------------

def _ptxas_figures(log: str) -> dict:
    def number(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack_frame": number(r"(\d+) bytes stack frame"),
    }


def compile_spec(spec: dict, arch: str, specialise: bool) -> tuple[dict, bytes]:
    """One compile: (row, cubin). ptxas's -v log is Triton's own (knobs.nvidia.dump_ptxas_log)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kamim_fast.kernels._launch import compile_source

    signature, constexprs, attrs = compile_source(spec["fn"], spec["args"], specialise)
    source = ASTSource(fn=spec["fn"], signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": spec["num_warps"], "enable_fp_fusion": False,
               **({"maxnreg": spec["maxnreg"]} if spec.get("maxnreg") else {})}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(source, target=GPUTarget("cuda", ARCHES[arch], 32), options=options)
    cubin = compiled.asm.get("cubin")
    assert cubin, f"{spec['name']}: no cubin"
    figures = _ptxas_figures(log.getvalue())
    assert figures["registers"] > 0, f"{spec['name']}: no ptxas report in\n{log.getvalue()}"
    ptx = compiled.asm["ptx"]
    return {
        "name": spec["name"], "arch": arch, "variant": "runtime" if specialise else "generic",
        "num_warps": spec["num_warps"], **figures, "shared_memory": compiled.metadata.shared,
        "ld_global_v4": ptx.count("ld.global.v4"), "triton": triton.__version__,
    }, cubin


# --- SASS and the model -----------------------------------------------------------------------------

_LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_FRAME = re.compile(r'"([^"]+)", line (\d+)')
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")


def disassemble(cubin: bytes, nvdisasm: str, sass_dir: Path | None = None, name: str = "kernel") -> list[dict]:
    """SASS instructions in address order: opcode, address, branch target, and the line information's frames
    (the source line, then the call sites it is inlined at, as far as the compiler names them). With
    ``sass_dir`` the listing is kept there as NAME.sass."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([nvdisasm, "-c", "-gi", str(path)], capture_output=True, text=True, check=True).stdout
    if sass_dir is not None:
        sass_dir.mkdir(parents=True, exist_ok=True)
        (sass_dir / (re.sub(r"[^\w.=,-]+", "_", name) + ".sass")).write_text(text)
    instrs, labels, where = [], {}, None
    pending = []
    for line in text.splitlines():
        if _LINE.search(line):  # the location, then the call sites it is inlined at, innermost first
            where = tuple((f, int(n)) for f, n in _FRAME.findall(line))
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            addr = int(m.group(1), 16)
            for label in pending:
                labels[label] = addr
            pending = []
            target = re.search(r"`\((\.L_x_\d+)\)", m.group(3))
            instrs.append({"addr": addr, "op": m.group(2), "target": target.group(1) if target else None,
                           "where": where})
    for ins in instrs:
        ins["target_addr"] = labels.get(ins["target"]) if ins["target"] else None
    return instrs


def sass_class(op: str) -> str:
    base = op.split(".")[0]
    if base in ("IMNMX", "VIMNMX", "VIMNMX3", "FMNMX", "VIMNMX16x2"):
        return "min_max"
    if base.startswith("U") or base in ("R2UR", "S2UR"):
        return "uniform"
    if base in ("LDG", "LD"):
        return "global_load"
    if base in ("STG", "ST", "RED", "ATOMG"):
        return "global_store"
    if base in ("LDS", "STS", "ATOMS", "LDSM", "STSM"):
        return "shared"
    if base in ("BAR", "MEMBAR", "DEPBAR", "SYNCS", "WARPSYNC"):
        return "barrier"
    if base in ("BRA", "BRX", "JMP", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "BREAK", "YIELD"):
        return "branch"
    if base in ("FADD", "FMUL", "FFMA", "FSETP", "FSEL", "F2I", "I2F", "MUFU", "FRND", "F2F", "FSET", "HADD2", "HMUL2",
                "HFMA2", "F2FP"):
        return "fp32"
    if base in ("IADD3", "IMAD", "LOP3", "SHF", "ISETP", "SEL", "LEA", "IABS", "PRMT", "VIADD", "SGXT", "PLOP3",
                "P2R", "R2P", "IMUL", "IADD", "SHL", "SHR", "LOP", "BMSK", "POPC", "FLO", "BREV", "MOV", "S2R",
                "CS2R", "IDP", "VIADDMNMX", "I2IP", "LDC", "ICMP"):
        return "int_alu"
    return "other"


class _TL:
    """``tl.minimum``/``tl.maximum`` of loop bounds, evaluated on the host."""

    minimum, maximum = staticmethod(min), staticmethod(max)


def _source_loops(fn, namespace: dict, tile_vars: list[dict] | None = None) -> list[dict]:
    """The ``for ... in range(...)`` loops of a kernel's module (kernel and helpers): file, function, line
    range, enclosing loop, trip count (None: the persistent tile loop, or a bound that cannot be evaluated)."""
    module = inspect.getmodule(fn.fn if hasattr(fn, "fn") else fn)
    file = inspect.getsourcefile(module)
    tree = ast.parse(Path(file).read_text())
    scope = dict(vars(module))
    scope.update(namespace)
    scope["tl"] = _TL
    loops = []
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        local = dict(scope)
        for node in ast.walk(func):  # constexpr assignments in the body (OUT_H: tl.constexpr = ...)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                with contextlib.suppress(Exception):
                    local[node.target.id] = _eval(node.value, local)
        mine = []
        for node in ast.walk(func):
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and getattr(node.iter.func, "id", "") == "range":
                try:  # bounds that vary per tile (tile_vars: e.g. the bottom tiles' rows) are averaged
                    trips = sum(len(range(*[_eval(a, {**local, **v}) for a in node.iter.args]))
                                for v in tile_vars or [{}]) / len(tile_vars or [{}])
                except Exception:
                    trips = None
                mine.append({"file": file, "func": func.name, "first": node.lineno, "last": node.end_lineno,
                             "trips": trips})
        for lp in mine:  # the innermost loop of the same function that encloses it
            outer = [o for o in mine if o is not lp and o["first"] <= lp["first"] and lp["last"] <= o["last"]]
            lp["parent"] = max(outer, key=lambda o: o["first"]) if outer else None
        loops += mine
    return loops


def _call_sites(fn) -> tuple[dict, dict]:
    """The kernel module's functions: {name: (first line, last line)} and {name: [lines that call it]}.
    Triton 3.6's line information names only the innermost frame of an inlined helper; a helper called
    from one place is then attributed to that call site (``model_counts``)."""
    module = inspect.getmodule(fn.fn if hasattr(fn, "fn") else fn)
    tree = ast.parse(Path(inspect.getsourcefile(module)).read_text())
    funcs = {n.name: (n.lineno, n.end_lineno) for n in tree.body if isinstance(n, ast.FunctionDef)}
    calls: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs:
            calls.setdefault(node.func.id, []).append(node.lineno)
    return funcs, calls


def _eval(node, scope):
    value = eval(compile(ast.Expression(node), "<loop bound>", "eval"), {"__builtins__": {}}, scope)
    value = getattr(value, "value", value)  # tl.constexpr
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def global_lines(op: str) -> int:
    """128-byte cache lines a warp's global load or store touches at worst: its 32 lanes' bytes (from the
    opcode's width: .U8/.S8 1 byte, .U16/.S16 2, none 4, .64 8, .128 16) plus one for an unaligned start."""
    parts = op.split(".")
    width = 1 if {"U8", "S8"} & set(parts) else 2 if {"U16", "S16"} & set(parts) else \
        8 if "64" in parts else 16 if "128" in parts else 4
    return -(-32 * width // 128) + 1


def model_counts(spec: dict, instrs: list[dict]) -> dict:
    """Steady-state SASS instructions per output item, by class, in lane slots (warp instructions x 32); and
    for the sustained bound the IMADs among the integer ones and the global accesses' cache-line slots."""
    fn = spec["fn"]
    names = {k: v for k, v in spec["args"].items() if isinstance(v, (int, bool))}
    loops = _source_loops(fn, names, spec.get("tile_vars"))
    file = loops[0]["file"] if loops else None
    sass_loops = [(ins["target_addr"], ins["addr"]) for ins in instrs
                  if ins["op"] == "BRA" and ins["target_addr"] is not None and ins["target_addr"] < ins["addr"]]

    kernel = fn.__name__
    funcs, calls = _call_sites(fn)

    def chain(lp):
        while lp is not None:
            yield lp
            lp = lp["parent"]

    def source_loops_at(where):
        """The source loops around an instruction: for each of its frames in the kernel's file (a helper's
        line, then the call sites it is inlined at), that frame's innermost loop and the loops around it.
        All frames count: a helper's loop and the kernel loop that calls the helper both hold it."""
        frames = [n for f, n in where or () if f == file]
        while frames:  # complete the call chain where the line information stops inside a helper
            func = next((name for name, (a, b) in funcs.items() if a <= frames[-1] <= b), None)
            if func is None or func == kernel or len(calls.get(func, ())) != 1 or calls[func][0] in frames:
                break
            frames.append(calls[func][0])
        held = {}
        for n in frames:  # innermost frame first: a tie between frames goes to the helper's loop
            found = [lp for lp in loops if lp["first"] <= n <= lp["last"]]
            if found:
                for anc in chain(max(found, key=lambda lp: lp["first"])):
                    held.setdefault(id(anc), (anc, 1.0 if not held else 1.0 - 1e-6))
        return list(held.values())

    # Match the SASS loop nest to the source loop nest, outermost first: a SASS loop is the source loop,
    # among those directly inside its parent's (or a helper's outermost loops), that holds most of its
    # instructions' lines. Source loops with no SASS loop were unrolled: their copies count once each.
    sass_loops.sort(key=lambda lh: lh[0] - lh[1])  # outermost (largest) first
    mapped: dict = {}
    for lo, hi in sass_loops:
        enclosing = [lh for lh in mapped if lh[0] <= lo and hi <= lh[1]]
        parent = mapped[min(enclosing, key=lambda lh: lh[1] - lh[0])] if enclosing else None
        candidates = [lp for lp in loops if (parent is not None and lp["parent"] is parent)
                      or (lp["parent"] is None and (parent is None or lp["func"] != parent["func"]))]
        candidates = [lp for lp in candidates if lp["func"] == kernel or not lp["func"].endswith("_kernel")]
        votes: dict[int, int] = {}
        for ins in instrs:
            if lo <= ins["addr"] <= hi:
                for anc, vote in source_loops_at(ins["where"]):
                    if any(anc is c for c in candidates):
                        votes[id(anc)] = votes.get(id(anc), 0) + vote
        if not votes and len(candidates) == 1:  # a helper's loop whose lines carry only the call site
            votes[id(candidates[0])] = 1
        best = max(votes, key=votes.get) if votes else None
        mapped[(lo, hi)] = next((lp for lp in loops if id(lp) == best), None)
    trips_of = {lh: (lp["trips"] if lp else None) for lh, lp in mapped.items()}
    tile_loop = [lh for lh, t in trips_of.items() if t is None]
    outer = max(tile_loop, key=lambda lh: lh[1] - lh[0]) if tile_loop else None
    per_program = {c: 0.0 for c in SASS_CLASSES}
    detail = {"imad": 0.0, "global_line_slots": 0.0}
    for ins in instrs:
        if outer and not (outer[0] <= ins["addr"] <= outer[1]):
            continue  # the persistent kernel's prologue and epilogue: once per program, amortised
        weight = 1.0
        for (lo, hi), trips in trips_of.items():
            if lo <= ins["addr"] <= hi and trips is not None:
                weight *= trips
        cls = sass_class(ins["op"])
        per_program[cls] += weight
        if ins["op"].split(".")[0] == "IMAD":
            detail["imad"] += weight
        if cls in ("global_load", "global_store"):
            detail["global_line_slots"] += weight * global_lines(ins["op"])
    args = spec["args"]
    units = args.get("n_tiles") or spec["programs"]  # tiles of the persistent loop, else programs
    lanes = 32 * spec["num_warps"] * units / spec["items"]
    per_item = {c: round(v * lanes, 2) for c, v in per_program.items()}
    return {"sass_per_item": per_item, "sass_instructions_per_item": round(sum(per_item.values()), 1),
            "sass_sustained_per_item": {k: round(v * lanes, 2) for k, v in detail.items()},
            "sass_loops": len(sass_loops), "sass_loop_trips": sorted(t for t in trips_of.values() if t is not None)}


def bytes_per_item(spec: dict) -> float:
    """Compulsory bytes: every tensor argument read or written once (the scratch excluded), per item."""
    import torch

    seen, total = set(), 0
    for name, value in spec["args"].items():
        if isinstance(value, torch.Tensor) and name != "scratch_ptr" and id(value) not in seen:
            seen.add(id(value))
            total += value.numel() * value.element_size()
    return total / spec["items"]


def issue_seconds(row: dict, items: int, a: dict = ASSUMPTIONS, sustained: bool = False) -> float:
    """The busiest pipe's time for ``items`` of a kernel row (its ``sass_per_item`` and
    ``sass_sustained_per_item``): the range's fast end, or with ``sustained`` its slow end (ASSUMPTIONS)."""
    per_item, detail = row["sass_per_item"], row["sass_sustained_per_item"]
    clock = a["sustained_clock_ghz"] if sustained else a["clock_ghz"]
    lanes_per_s = a["sms"] * clock * 1e9
    total = sum(per_item.values())
    imad = detail["imad"]  # on the FMA pipe's heavy half, with the FP32 instructions
    lsu = (detail["global_line_slots"] if sustained else per_item["global_load"] + per_item["global_store"]) \
        + per_item["shared"]
    pipes = [total / a["issue_lanes_per_clock"],
             (per_item["int_alu"] - imad + per_item["min_max"]) / a["int_alu_lanes_per_clock"],
             imad / a["imad_lanes_per_clock"],
             (per_item["fp32"] + imad) / a["fp32_lanes_per_clock"],
             lsu / a["lsu_lanes_per_clock"]]
    return max(pipes) * items / lanes_per_s


# The benchmark cases (benchmarks/cases_*.py's headline shapes) and the kernels each runs; the loss cases
# with FAST weights name the pixels their FAST covers (their second floor, ASSUMPTIONS["fast_floor"]).
_LOSS_ITEMS = 256 * 3 * 192 * 192
MODEL_CASES = [
    ("fast gray uint8 B=256 192x192 NMS", ["fast[gray-uint8,nms=1]"], 256 * 192 * 192, "pixel"),
    ("fast gray uint8 1x4096x4096 NMS", ["fast[gray-uint8,nms=1]"], 4096 * 4096, "pixel"),
    ("fast rgb uint8 B=256 192x192 NMS", ["fast[rgb-uint8,nms=1]"], 256 * 192 * 192, "pixel"),
    ("gray rgb uint8 B=256 192x192", ["gray[uint8]"], 256 * 192 * 192, "pixel"),
    ("loss fwd+bwd B=256 3x192x192 bf16 p=8 ring", ["mim_loss_fwd[bfloat16,fast-ring,p=8]",
                                                    "mim_loss_bwd[bfloat16,weights=1,grad_target=0]"],
     _LOSS_ITEMS, "element", 256 * 192 * 192),
    ("loss fwd+bwd B=256 3x192x192 fp32 p=8 ring", ["mim_loss_fwd[float32,fast-ring,p=8]",
                                                    "mim_loss_bwd[float32,weights=1,grad_target=0]"],
     _LOSS_ITEMS, "element", 256 * 192 * 192),
    ("loss fwd+bwd B=256 3x192x192 bf16 no weights", ["mim_loss_fwd[bfloat16,no-weights]",
                                                      "mim_loss_bwd[bfloat16,weights=0,grad_target=0]"],
     _LOSS_ITEMS, "element"),
    ("loss fwd+bwd B=256 3x192x192 fp32 no weights", ["mim_loss_fwd[float32,no-weights]",
                                                      "mim_loss_bwd[float32,weights=0,grad_target=0]"],
     _LOSS_ITEMS, "element"),
    ("loss fwd+bwd B=256 3x192x192 bf16 p=8 given weights", ["mim_loss_fwd[bfloat16,weights,p=8]",
                                                             "mim_loss_bwd[bfloat16,weights=1,grad_target=0]"],
     _LOSS_ITEMS, "element"),
    ("loss fwd+bwd B=256 3x192x192 fp32 p=8 given weights", ["mim_loss_fwd[float32,weights,p=8]",
                                                             "mim_loss_bwd[float32,weights=1,grad_target=0]"],
     _LOSS_ITEMS, "element"),
]
# The loss's byte floor (issue 3): read pred (bf16 2 B / fp32 4 B) and target (4 B) once, write grad once.
LOSS_FLOOR_BYTES = {"bf16": 2 + 4 + 2, "fp32": 4 + 4 + 4}
FAST_KERNEL = "fast[gray-uint8,nms=1]"  # the FAST of the fast-floor (ASSUMPTIONS["fast_floor"])


def modelled(kernel_rows: list[dict], a: dict = ASSUMPTIONS) -> list[dict]:
    rows = {r["name"]: r for r in kernel_rows if r["arch"] == MODEL_ARCH and r["variant"] == "runtime"}
    out = []
    for case, kernels, items, unit, *fast_pixels in MODEL_CASES:
        if not all(k in rows and "sass_per_item" in rows[k] for k in kernels):
            continue
        issue = sum(issue_seconds(rows[k], items, a) for k in kernels)
        byte_s = sum(rows[k]["bytes_per_item"] for k in kernels) * items / (a["copy_bandwidth_tb_s"] * 1e12)
        # per kernel, the larger of its two times (kernels run one after the other)
        per_kernel = [max(issue_seconds(rows[k], items, a),
                          rows[k]["bytes_per_item"] * items / (a["copy_bandwidth_tb_s"] * 1e12)) for k in kernels]
        seconds = sum(per_kernel)
        # the sustained bound: the same, at the sustained clock, with cache-line slots and IMAD on its pipe
        slow = sum(max(issue_seconds(rows[k], items, a, sustained=True),
                       rows[k]["bytes_per_item"] * items / (a["copy_bandwidth_tb_s"] * 1e12)) for k in kernels)
        row = {"case": case, "modelled_ms": round(seconds * 1e3, 4), "modelled_ms_sustained": round(slow * 1e3, 4),
               "bound": "issue" if issue > byte_s else "bytes",
               "issue_ms": round(issue * 1e3, 4), "bytes_ms": round(byte_s * 1e3, 4), "kernels": kernels}
        if unit == "pixel":
            row["modelled_gpixel_s"] = round(items / seconds / 1e9, 1)
            row["modelled_gpixel_s_sustained"] = round(items / slow / 1e9, 1)
        else:
            dt = "bf16" if "bf16" in case else "fp32"
            floor = LOSS_FLOOR_BYTES[dt] * items / (a["copy_bandwidth_tb_s"] * 1e12)
            row["byte_floor_ms"] = round(floor * 1e3, 4)
            row["of_byte_floor"] = round(seconds / floor, 2)
            row["of_byte_floor_sustained"] = round(slow / floor, 2)
            if fast_pixels and FAST_KERNEL in rows and "sass_per_item" in rows[FAST_KERNEL]:
                fast_floor = floor + issue_seconds(rows[FAST_KERNEL], fast_pixels[0], a)
                row["fast_floor_ms"] = round(fast_floor * 1e3, 4)
                row["of_fast_floor"] = round(seconds / fast_floor, 2)
                fast_slow = floor + issue_seconds(rows[FAST_KERNEL], fast_pixels[0], a, sustained=True)
                row["of_fast_floor_sustained"] = round(slow / fast_slow, 2)
        out.append(row)
    return out


# --- the report -------------------------------------------------------------------------------------

def specs() -> list[dict]:
    """The representative set: ``compile_specs.specs()`` of every kernel module of the registry."""
    from benchmarks import compile_specs

    return compile_specs.specs()


def load_budgets(path: Path = BUDGETS) -> dict[tuple[str, str], float]:
    """(configuration name, Triton major.minor) -> its budget of SASS instructions per item."""
    data = json.loads(path.read_text())
    return {(name, version): row["budget"] for version, rows in data["triton"].items() for name, row in rows.items()}


def update_budgets(rows: list[dict], path: Path = BUDGETS) -> str:
    """Rewrites the entries of this run's Triton version for the configurations it compiled (``--only`` may
    narrow them) from its sm_90a run-time rows: today's count and today + ``BUDGET_MARGIN``. Entries of
    configurations no longer in the representative set are dropped; the other versions' are kept. One line per
    configuration, so a change diffs line by line. Returns the version."""
    counted = [r for r in rows if r["arch"] == MODEL_ARCH and r["variant"] == "runtime" and
               "sass_instructions_per_item" in r]
    if not counted:
        raise SystemExit("no SASS counts to update the budgets from: nvdisasm is missing (pip install "
                         "nvidia-cuda-nvdisasm, the dev extra)")
    version = ".".join(counted[0]["triton"].split(".")[:2])
    data = json.loads(path.read_text()) if path.exists() else {}
    tritons = dict(data.get("triton", {}))
    names = [spec["name"] for spec in specs()]
    rows_now = {**tritons.get(version, {}),
                **{r["name"]: {"today": r["sass_instructions_per_item"],
                               "budget": round(r["sass_instructions_per_item"] * (1 + BUDGET_MARGIN), 1)}
                   for r in counted}}
    tritons[version] = {name: rows_now[name] for name in names if name in rows_now}
    write_budgets(tritons, path)
    return version


def write_budgets(tritons: dict[str, dict[str, dict]], path: Path = BUDGETS) -> None:
    about = ("Steady-state SASS instructions per item (lane slots: warp instructions x 32 / items; pixels for FAST, "
             "gray and the density, elements for the loss) of each configuration of the representative set "
             "(benchmarks/compile_specs.py), sm_90a, run-time specialisation, per Triton version: 'today' as "
             "measured, 'budget' = today + 10%, which tests/test_compile.py holds each to. Rewritten by "
             "python -m benchmarks.ptxas_report --update-budgets (once per Triton version) after a deliberate change.")
    lines = ["{", f' "about": {json.dumps(about)},', ' "triton": {']
    for i, (version, rows) in enumerate(sorted(tritons.items(), reverse=True)):
        lines.append(f"  {json.dumps(version)}: {{")
        body = [f"   {json.dumps(name)}: {json.dumps(row)}" for name, row in rows.items()]
        lines.append(",\n".join(body))
        lines.append("  }" + ("," if i < len(tritons) - 1 else ""))
    lines += [" }", "}"]
    path.write_text("\n".join(lines) + "\n")


def report(arches=tuple(ARCHES), generic_arches=(MODEL_ARCH,), progress=None, only: str | None = None,
           sass_dir: Path | None = None) -> list[dict]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    if find_ptxas() is None:
        raise SystemExit("ptxas not found: set CUDA_HOME to the CUDA toolkit folder")
    import triton

    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v of the cubin Triton builds, printed: captured
    triton.knobs.compilation.always_compile = True  # a cache hit would print no log
    nvdisasm = find_nvdisasm()
    rows = []
    for spec in specs():
        if only and not re.search(only, spec["name"]):
            continue
        for arch in ARCHES:
            variants = ((True,) if arch in arches else ()) + ((False,) if arch in generic_arches else ())
            for specialise in variants:
                t0 = time.perf_counter()
                row, cubin = compile_spec(spec, arch, specialise)
                row["compile_s"] = round(time.perf_counter() - t0, 2)
                sm = _SM_OF[arch]()
                row["resident_blocks_per_sm"] = _resident(row, sm)
                if arch == MODEL_ARCH and specialise:
                    row["bytes_per_item"] = round(bytes_per_item(spec), 3)
                    if nvdisasm:
                        row.update(model_counts(spec, disassemble(cubin, nvdisasm, sass_dir, spec["name"])))
                rows.append(row)
                if progress:
                    progress(row)
    return rows


def _resident(row: dict, sm) -> int:
    from kamim_fast.kernels._launch import resident_blocks

    return resident_blocks(row["registers"], row["shared_memory"], row["num_warps"], sm)


def _sm(name):
    def get():
        from kamim_fast.kernels import _launch

        return getattr(_launch, name)
    return get


_SM_OF = {"sm_80": _sm("A100"), "sm_89": _sm("L4"), "sm_90a": _sm("H100_SXM")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write {kernels, modelled, assumptions} as JSON here")
    parser.add_argument("--arch", action="append", choices=tuple(ARCHES),
                        help="compile the run-time specialisation for these (default: all)")
    parser.add_argument("--only", metavar="REGEX", help="only the kernels whose name matches (e.g. 'fast\\[gray')")
    parser.add_argument("--sass-dir", type=Path, help="keep the sm_90a run-time SASS listings here, to read")
    parser.add_argument("--generic-arch", action="append", choices=(*ARCHES, "none"),
                        help="compile the generic kernels for these (default: sm_90a)")
    parser.add_argument("--update-budgets", action="store_true",
                        help=f"rewrite this Triton version's entries of {BUDGETS.name} from this run (today + 10%%)")
    parser.add_argument("--all", action="store_true",
                        help="every configuration a user can reach, every arch and variant, the installed and the GPU "
                             "machines' Triton, into benchmarks/results/compile-all.json, incrementally "
                             "(benchmarks/compile_all.py; its options: --jobs N, --only REGEX, --force, --out FILE; "
                             "--check: the report against the sources, compiling nothing)")
    args, rest = parser.parse_known_args(argv)
    if args.all:
        from benchmarks import compile_all

        return compile_all.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    t0 = time.perf_counter()
    print(f"{'kernel':48s} {'arch':6s} {'variant':8s} {'regs':>4s} {'spill st/ld':>11s} {'stack':>5s} "
          f"{'blk/SM':>6s} {'SASS/item':>9s} {'B/item':>6s}", flush=True)

    def show(r):
        print(f"{r['name']:48s} {r['arch']:6s} {r['variant']:8s} {r['registers']:4d} {r['spill_stores']:>5d}/"
              f"{r['spill_loads']:<5d} {r['stack_frame']:5d} {r['resident_blocks_per_sm']:6d} "
              f"{r.get('sass_instructions_per_item', ''):>9} {r.get('bytes_per_item', ''):>6}", flush=True)

    generic = tuple(a for a in (args.generic_arch or [MODEL_ARCH]) if a != "none")
    rows = report(tuple(args.arch or ARCHES), generic, progress=show, only=args.only, sass_dir=args.sass_dir)
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + children.ru_utime + children.ru_stime  # ptxas and nvdisasm included
    model = modelled(rows)
    for m in model:
        extra = (f"{m['modelled_gpixel_s_sustained']}-{m['modelled_gpixel_s']} Gpixel/s" if "modelled_gpixel_s" in m
                 else f"{m['of_byte_floor']}-{m['of_byte_floor_sustained']}x the byte floor ({m['byte_floor_ms']} ms)"
                 + (f", {m['of_fast_floor']}-{m['of_fast_floor_sustained']}x byte floor + FAST ({m['fast_floor_ms']} ms)"
                    if "of_fast_floor" in m else ""))
        print(f"model: {m['case']:48s} {m['modelled_ms']:.4f}-{m['modelled_ms_sustained']:.4f} ms ({m['bound']}-bound)"
              f"  {extra}")
    print(f"{len(rows)} compiles in {time.perf_counter() - t0:.0f} s wall, {cpu:.0f} s CPU "
          f"(Triton {rows[0]['triton'] if rows else '?'})")
    if args.update_budgets:
        print(f"budgets of Triton {update_budgets(rows)} written to {BUDGETS}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kernels": rows, "modelled": model, "assumptions": ASSUMPTIONS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
