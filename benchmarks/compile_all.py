"""Compile every Triton kernel configuration a user can reach, for every GPU the project targets, with both
Triton versions, and keep the result as a committed report that CI checks without compiling.

    python -m benchmarks.ptxas_report --all [--jobs N] [--only REGEX] [--force] [--out FILE]   (make compile-all)

What is compiled: ``compile_specs(full=True)`` of each kernel module (``KERNEL_MODULES``: the enumeration
and its rule live beside the launchers) x sm_80, sm_89, sm_90a x the run-time specialisation (Triton's, for an
aligned case: 16-byte aligned pointers and ints divisible by 16 marked so, ints equal to 1 made constants)
and the generic kernel x the installed Triton (CI's) and the GPU machines' (side-installed in
``.venv/triton-gpu`` by the Makefile). Each row holds ptxas's registers, spills, stack frame, Triton's shared
memory and the resident blocks per SM (``_launch.resident_blocks``), as ``ptxas_report.compile_spec`` reports
them for the very cubin Triton built.

The report (``REPORT``) carries a fingerprint: a hash of each kernel module's source and of the project files it
imports (transitively: ``kernels/_launch.py``, ``kernels/fast_tile.py``, ``kamim_fast/_opencv.py``, ...), and of
the code that compiles and measures (``ptxas_report.compile_spec`` and its helpers). Rerunning is incremental:
rows whose module fingerprint and Triton version are unchanged are kept, so a change to one kernel module
recompiles that module's configurations only. The report is written after every batch, so an interrupted run
resumes where it stopped.

Status (issue 12, open): no report of the kernels as they are is committed yet (a full run is about 2.5 h on 2
cores), so CI does not check it; the planned check in ``tests/test_compile.py`` fails when the report does not
cover exactly the current enumeration, when a fingerprint differs from the current sources', or when a row
spills, has a stack frame or failed to compile.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import hashlib
import importlib
import inspect
import itertools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "compile-all.json"
GPU_MACHINES_TRITON = ROOT / ".venv" / "triton-gpu"  # the GPU machines' Triton, side-installed by the Makefile
TRITONS = ("installed", "gpu-machines")
VARIANTS = ("runtime", "generic")
KERNEL_MODULES = ("fast", "gray", "mim_loss")
# Where the package's modules live in the checkout (setup.py's package_dir).
PACKAGE_DIRS = {"kamim_fast.kernels": ROOT / "kernels", "kamim_fast": ROOT / "kamim_fast"}
COLUMNS = ("name", "arch", "variant", "triton", "num_warps", "registers", "spill_stores", "spill_loads", "stack_frame",
           "shared_memory", "resident_blocks_per_sm", "fingerprint", "error")
REFRESH = "run `make compile-all` (python -m benchmarks.ptxas_report --all) and commit benchmarks/results/compile-all.json"


# --- what is compiled, and from which sources ------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    for package, folder in PACKAGE_DIRS.items():
        if name == package:
            return folder / "__init__.py"
        if name.startswith(package + "."):
            path = folder.joinpath(*name[len(package) + 1:].split("."))
            return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    return None


def _project_imports(path: Path, package: str) -> set[Path]:
    """The project files that ``path`` (a module of ``package``) imports, directly."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]  # `from . import x` names a module
        for name in names:
            file = _module_file(name)
            if file is not None and file.exists() and file != path:
                if name in PACKAGE_DIRS and not isinstance(node, ast.Import):
                    continue  # `from kamim_fast.kernels import x`: x's file, not the package's __init__
                found.add(file)
    return found


def module_files(module: str) -> list[Path]:
    """A kernel module's file and every project file it imports, transitively: what shapes its code."""
    todo, seen = [ROOT / "kernels" / f"{module}.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = "kamim_fast.kernels" if path.parent == ROOT / "kernels" else "kamim_fast"
        todo += _project_imports(path, package)
    return sorted(seen)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tool_source() -> str:
    """The code that compiles a configuration and measures it: a change to it makes every row stale."""
    from benchmarks import ptxas_report as pr

    parts = [inspect.getsource(f) for f in (pr.compile_spec, pr._ptxas_figures, pr._resident, pr._sm, _compile_row)]
    return "\n".join(parts) + repr(sorted(pr.ARCHES.items())) + repr(pr._SM_OF.keys())


def fingerprints() -> dict:
    """{"files": {path: sha256}, "modules": {module: hash of its files and of the tool}, "tool": sha256}."""
    tool = _sha(_tool_source().encode())
    files, modules = {}, {}
    for module in KERNEL_MODULES:
        paths = module_files(module)
        for p in paths:
            files[str(p.relative_to(ROOT))] = _sha(p.read_bytes())
        joined = "".join(f"{p.relative_to(ROOT)}:{files[str(p.relative_to(ROOT))]}\n" for p in paths) + tool
        modules[module] = {"files": [str(p.relative_to(ROOT)) for p in paths], "hash": _sha(joined.encode())[:16]}
    return {"files": dict(sorted(files.items())), "modules": modules, "tool": tool[:16]}


def triton_versions() -> dict[str, str | None]:
    """The Triton version of each compiler this project ships for: the installed one (CI's) and the GPU
    machines' (the side folder's dist-info; None when it is not installed)."""
    from importlib.metadata import version

    side = sorted(GPU_MACHINES_TRITON.glob("triton-*.dist-info"))
    return {"installed": version("triton"),
            "gpu-machines": side[0].name.removeprefix("triton-").removesuffix(".dist-info") if side else None}


def enumeration() -> list[tuple[str, str]]:
    """(module, name) of every configuration a user can reach, in the modules' order."""
    out = []
    for module in KERNEL_MODULES:
        specs = importlib.import_module(f"kamim_fast.kernels.{module}").compile_specs(full=True)
        out += [(module, s["name"]) for s in specs]
    names = [n for _, n in out]
    assert len(set(names)) == len(names), "compile_specs(full=True) names must be unique"
    return out


def wanted(enum: list[tuple[str, str]], versions: dict) -> dict[tuple, str]:
    """Row key (name, arch, variant, triton version) -> module, for every row the report must hold."""
    from benchmarks.ptxas_report import ARCHES

    return {(name, arch, variant, versions[t]): module for module, name in enum for arch in ARCHES
            for variant in VARIANTS for t in TRITONS}


def _key(row: dict) -> tuple:
    return row["name"], row["arch"], row["variant"], row["triton"]


# --- the report ------------------------------------------------------------------------------------------

def load(path: Path = REPORT) -> dict | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    data["kernels"] = [dict(zip(data["columns"], r)) for r in data.pop("rows")]
    return data


def write(path: Path, header: dict, rows: list[dict]) -> None:
    """JSON with one row per line (a table: "columns" and "rows"), so that a refresh diffs row by row."""
    head = json.dumps({**header, "columns": list(COLUMNS)}, indent=1)[:-2]
    lines = ",\n".join(json.dumps([r.get(c) for c in COLUMNS], separators=(",", ":")) for r in rows)
    tmp = path.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(f'{head},\n "rows": [\n{lines}\n ]\n}}\n')
    tmp.replace(path)


def problems(report: dict | None, fp: dict | None = None, enum=None, versions=None) -> dict[str, list[str]]:
    """What is wrong with a report against the current sources, by kind: "missing" (no report, or rows of the
    enumeration absent), "extra" (rows of configurations no longer reachable), "stale" (a fingerprint or
    Triton version that is not the current one), "failed" (compile errors), "spills" (spills or a stack frame)."""
    fp = fp or fingerprints()
    enum = enum or enumeration()
    versions = versions or triton_versions()
    out = {k: [] for k in ("missing", "extra", "stale", "failed", "spills")}
    if report is None:
        out["missing"].append(f"no report at {REPORT.relative_to(ROOT)}")
        return out
    want = wanted(enum, versions)
    have = {_key(r): r for r in report["kernels"]}
    out["missing"] += [" ".join(k) for k in want if k not in have]
    out["extra"] += [" ".join(k) for k in have if k not in want]
    for key, module in want.items():
        row = have.get(key)
        if row is None:
            continue
        if row["fingerprint"] != fp["modules"][module]["hash"]:
            out["stale"].append(f"{' '.join(key)}: fingerprint {row['fingerprint']}, sources "
                                f"{fp['modules'][module]['hash']} ({module}: {', '.join(fp['modules'][module]['files'])})")
        if row.get("error"):
            out["failed"].append(f"{' '.join(key)}: {row['error'][:300]}")
        elif row["spill_stores"] or row["spill_loads"] or row["stack_frame"]:
            out["spills"].append(f"{' '.join(key)}: {row['registers']} registers, spills {row['spill_stores']}/"
                                 f"{row['spill_loads']} bytes, stack {row['stack_frame']}")
    return out


def summarise(found: dict[str, list[str]], limit: int = 12) -> str:
    lines = []
    for kind, items in found.items():
        if items:
            lines.append(f"{len(items)} {kind}:")
            lines += [f"  {x}" for x in items[:limit]] + ([f"  ... {len(items) - limit} more"] if len(items) > limit else [])
    return "\n".join(lines)


# --- compiling (a worker process per batch, one Triton each) ---------------------------------------------

def _compile_row(spec: dict, arch: str, variant: str) -> dict:
    from benchmarks.ptxas_report import _SM_OF, _resident, compile_spec

    row, _ = compile_spec(spec, arch, variant == "runtime")
    row["resident_blocks_per_sm"] = _resident(row, _SM_OF[arch]())
    return row


def worker(keys_file: Path, out_file: Path) -> int:
    """Compile the rows of keys_file ({"fingerprints": {module: hash}, "keys": [[module, name, arch, variant],
    ...]}); one JSON line each to out_file."""
    import triton

    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v of the cubin Triton builds, printed: captured
    triton.knobs.compilation.always_compile = True  # a cache hit would print no log
    batch = json.loads(keys_file.read_text())
    keys, now = batch["keys"], fingerprints()["modules"]
    changed = sorted(m for m, h in batch["fingerprints"].items() if now[m]["hash"] != h)
    if changed:  # the rows would be of other sources than the report says
        raise SystemExit(f"the sources of {changed} changed during the run: run it again")
    specs = {}
    for module in sorted({k[0] for k in keys}):
        specs.update((s["name"], s) for s in
                     importlib.import_module(f"kamim_fast.kernels.{module}").compile_specs(full=True))
    with out_file.open("a") as out:
        for _, name, arch, variant in keys:
            try:
                row = _compile_row(specs[name], arch, variant)
            except Exception as e:  # noqa: BLE001  (recorded in the report; the CI test fails on it)
                row = {"name": name, "arch": arch, "variant": variant, "triton": triton.__version__,
                       "error": f"{type(e).__name__}: {str(e).strip()[-2000:]}"}
            out.write(json.dumps(row) + "\n")
            out.flush()
    return 0


def _env(which: str, cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_PTXAS_PATH")}
    env["TRITON_CACHE_DIR"] = cache  # thousands of compiles: not into ~/.triton
    if which == "gpu-machines":
        env["PYTHONPATH"] = os.pathsep.join([str(GPU_MACHINES_TRITON), env.get("PYTHONPATH", "")])
    return env


def _run_batch(which: str, version: str, keys: list, fp: dict, tmp: Path, index: int, nice: int) -> list[dict]:
    keys_file, out_file = tmp / f"keys-{index}.json", tmp / f"rows-{index}.jsonl"
    keys_file.write_text(json.dumps({"fingerprints": {m: v["hash"] for m, v in fp["modules"].items()}, "keys": keys}))
    cache = tmp / f"cache-{index}"
    run = subprocess.run([sys.executable, "-m", "benchmarks.compile_all", "--worker", str(keys_file), str(out_file)],
                         cwd=ROOT, env=_env(which, str(cache)), capture_output=True, text=True,
                         preexec_fn=(lambda: os.nice(nice)) if nice else None)
    subprocess.run(["rm", "-rf", str(cache)], check=False)
    rows = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.exists() else []
    done = {(r["name"], r["arch"], r["variant"]) for r in rows}
    for _, name, arch, variant in keys:  # a worker that died: its remaining rows fail, with its output
        if (name, arch, variant) not in done:
            rows.append({"name": name, "arch": arch, "variant": variant, "triton": version,
                         "error": f"worker exited {run.returncode}: {(run.stdout + run.stderr)[-1500:]}"})
    return rows


def run(out: Path = REPORT, jobs: int | None = None, only: str | None = None, force: bool = False,
        nice: int = 10) -> int:
    if os.environ.get("TRITON_PTXAS_PATH"):
        raise SystemExit("unset TRITON_PTXAS_PATH: the report is of each Triton's own ptxas, as at run time")
    versions = triton_versions()
    if versions["gpu-machines"] is None:
        raise SystemExit(f"{GPU_MACHINES_TRITON} is missing: `make` installs the GPU machines' Triton there")
    fp, enum = fingerprints(), enumeration()
    want = wanted(enum, versions)
    old = load(out)
    kept = {}
    for row in (old or {}).get("kernels", []):
        key = _key(row)
        if (not force and key in want and row["fingerprint"] == fp["modules"][want[key]]["hash"]
                and not row.get("error")):
            kept[key] = row
    todo = [k for k in want if k not in kept and (only is None or re.search(only, k[0]))]
    if only is not None:  # rows left out keep what they hold (stale or not: CI says so)
        kept.update((_key(r), r) for r in (old or {}).get("kernels", []) if _key(r) in want and
                    not re.search(only, r["name"]) and _key(r) not in kept)
    jobs = jobs or os.cpu_count() or 1
    by_version = {v: t for t, v in versions.items()}
    print(f"{len(enum)} configurations, {len(want)} rows ({len(kept)} kept, {len(todo)} to compile) "
          f"with {jobs} processes; Triton {versions['installed']} (installed) and {versions['gpu-machines']} "
          f"(GPU machines)", flush=True)
    header = {
        "about": "Every reachable Triton kernel configuration (compile_specs(full=True) of kernels/fast.py, gray.py, "
                 "mim_loss.py) x sm_80/sm_89/sm_90a x run-time specialised/generic x the installed and the GPU "
                 "machines' Triton: ptxas registers, spills, stack frame, shared memory, resident blocks per SM "
                 "(benchmarks/compile_all.py). Refresh: make compile-all.",
        "fingerprint": fp,
        "tritons": {t: v for t, v in versions.items()},
        "configurations": {m: sum(1 for mm, _ in enum if mm == m) for m in KERNEL_MODULES},
    }
    rows = dict(kept)
    t0, cpu0 = time.perf_counter(), _cpu()
    order = {k: i for i, k in enumerate(want)}

    def save(final: bool = False):
        listed = sorted((r for k, r in rows.items() if k in want), key=lambda r: order[_key(r)])
        extra = {"last_run": {"compiled": len(todo), "kept": len(kept), "processes": jobs,
                              "wall_s": round(time.perf_counter() - t0), "cpu_s": round(_cpu() - cpu0),
                              "complete": final}}
        write(out, {**header, **extra}, listed)

    # Batches of a few minutes each, one Triton per batch: the heavy configurations (the fused loss) spread out.
    size = max(8, min(250, len(todo) // (jobs * 6) + 1))
    per_version = []
    for version in (versions["installed"], versions["gpu-machines"]):
        mine = [k for k in todo if k[3] == version]
        n = -(-len(mine) // size)
        per_version.append([(by_version[version], version, [[want[k], *k[:3]] for k in mine[i::n]]) for i in range(n)])
    batches = [b for pair in itertools.zip_longest(*per_version) for b in pair if b is not None]  # the two in turn
    done = 0
    with tempfile.TemporaryDirectory(prefix="compile-all-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_batch, *batch, fp, Path(tmp), i, nice) for i, batch in enumerate(batches)]
        for future in concurrent.futures.as_completed(futures):
            for row in future.result():
                key = _key(row)
                assert key in want, f"a worker compiled with another Triton than asked: {key}"
                row["fingerprint"] = fp["modules"][want[key]]["hash"]
                rows[key] = row
            done += 1
            elapsed = time.perf_counter() - t0
            compiled = sum(1 for k in todo if k in rows)
            print(f"  batch {done}/{len(batches)}: {compiled}/{len(todo)} rows in {elapsed:.0f} s"
                  + (f", about {elapsed / compiled * (len(todo) - compiled):.0f} s to go" if compiled else ""),
                  flush=True)
            save()
    save(final=True)
    report = load(out)
    found = problems(report, fp, enum, versions)
    print(f"{len(todo)} compiled, {len(kept)} kept in {time.perf_counter() - t0:.0f} s wall, {_cpu() - cpu0:.0f} s CPU; "
          f"wrote {out}", flush=True)
    if any(found.values()):
        print(summarise(found), flush=True)
        return 1
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers and their ptxas
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORT, help="the report (default: %(default)s)")
    parser.add_argument("--jobs", type=int, help="worker processes (default: the CPU count)")
    parser.add_argument("--only", help="compile only the rows whose name matches this regular expression")
    parser.add_argument("--force", action="store_true", help="recompile rows whose fingerprint is current")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the workers (default: %(default)s)")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    return run(args.out, args.jobs, args.only, args.force, args.nice)


if __name__ == "__main__":
    sys.exit(main())
