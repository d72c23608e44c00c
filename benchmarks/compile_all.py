"""Compile every Triton kernel configuration a user can reach, for every GPU the project targets, with both
Triton versions, into a report: a tool run before a release or after a large kernel change (``make compile-all``).

    python -m benchmarks.ptxas_report --all [--jobs N] [--only REGEX] [--force] [--out FILE]   (make compile-all)

What is compiled: ``benchmarks/compile_specs.py``'s ``specs(full=True)``, every configuration of each kernel
module of the op registry (``kamim_fast._backend.kernel_modules()``) x sm_80, sm_89, sm_90a x the run-time
specialisation (Triton's, for an aligned case: 16-byte aligned pointers and ints divisible by 16 marked so, ints equal to 1 made constants)
and the generic kernel x the installed Triton (CI's) and the GPU machines' (side-installed in
``.venv/triton-gpu`` by the Makefile). Each row holds ptxas's registers, spills, stack frame, Triton's shared
memory and the resident blocks per SM (``_launch.resident_blocks``), as ``ptxas_report.compile_spec`` reports
them for the very cubin Triton built.

Each row carries a fingerprint of what its compile takes: Triton's own cache key of the source
(``ASTSource.hash()``: the kernel's source and its callees', the constexpr globals they read, the signature,
the constexprs and the specialisation attributes), the compile options (warps, ``maxnreg``) and the code that
compiles and measures (``ptxas_report.compile_spec`` and its helpers). Rerunning is incremental: a row whose
fingerprint and Triton version are current is kept, so a change that leaves a configuration's compile inputs
alone (another configuration's override, a launcher's comment) keeps its row, and a kernel change recompiles
the configurations of that kernel. The report is written after every batch, so an interrupted run resumes
where it stopped.

``python -m benchmarks.compile_all --check`` checks a report without compiling: it fails when the report does not
cover exactly the current enumeration, when a fingerprint differs from the current sources', or when a row spills,
has a stack frame or failed to compile. Neither the report nor the check is a condition for landing: CI compiles
the representative set live (``tests/test_compile.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
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
COLUMNS = ("name", "arch", "variant", "triton", "num_warps", "registers", "spill_stores", "spill_loads", "stack_frame",
           "shared_memory", "resident_blocks_per_sm", "fingerprint", "error")
REFRESH = "run `make compile-all` (python -m benchmarks.ptxas_report --all) and commit benchmarks/results/compile-all.json"


# --- what is compiled, and from which sources ------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tool_source() -> str:
    """The code that compiles a configuration and measures it: a change to it makes every row stale."""
    from benchmarks import ptxas_report as pr

    parts = [inspect.getsource(f) for f in (pr.compile_spec, pr._ptxas_figures, pr._resident, pr._sm, _compile_row)]
    return "\n".join(parts) + repr(sorted(pr.ARCHES.items())) + repr(pr._SM_OF.keys())


def fingerprints(specs: dict[str, dict] | None = None) -> dict[tuple[str, str], str]:
    """(configuration name, variant) -> the fingerprint of its compile's inputs, for every configuration of
    ``specs`` (default: the enumeration). Needs the compiled kernels (Triton's interpreter unset): the
    interpreter's kernels have no cache key."""
    from triton.compiler import ASTSource

    from kamim_fast.kernels._launch import compile_source

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("fingerprints() needs TRITON_INTERPRET unset: run it in a process of its own")
    tool = _sha(_tool_source().encode())
    out = {}
    for name, spec in (specs or enumeration_specs()).items():
        options = {"num_warps": spec["num_warps"], "maxnreg": spec.get("maxnreg")}
        for variant in VARIANTS:
            signature, constexprs, attrs = compile_source(spec["fn"], spec["args"], variant == "runtime")
            source = ASTSource(fn=spec["fn"], signature=signature, constexprs=constexprs, attrs=attrs)
            out[name, variant] = _sha(f"{source.hash()}-{sorted(options.items())}-{tool}".encode())[:16]
    return out


def all_fingerprints(versions: dict, specs: dict[str, dict] | None = None) -> dict[tuple[str, str, str], str]:
    """(name, variant, Triton version) -> fingerprint, each by its own Triton's cache key: the installed
    Triton's here, the GPU machines' in a process of their own."""
    out = {(name, variant, versions["installed"]): h for (name, variant), h in fingerprints(specs).items()}
    with tempfile.TemporaryDirectory(prefix="compile-all-fp-") as tmp:
        run = subprocess.run([sys.executable, "-m", "benchmarks.compile_all", "--fingerprints"], cwd=ROOT,
                             env=_env("gpu-machines", tmp), capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"fingerprints with the GPU machines' Triton failed:\n{run.stderr[-2000:]}")
    other = json.loads(run.stdout.strip().splitlines()[-1])
    out.update(((name, variant, other["triton"]), h) for name, variant, h in other["fingerprints"])
    return out


def triton_versions() -> dict[str, str | None]:
    """The Triton version of each compiler this project ships for: the installed one (CI's) and the GPU
    machines' (the side folder's dist-info; None when it is not installed)."""
    from importlib.metadata import version

    side = sorted(GPU_MACHINES_TRITON.glob("triton-*.dist-info"))
    return {"installed": version("triton"),
            "gpu-machines": side[0].name.removeprefix("triton-").removesuffix(".dist-info") if side else None}


def enumeration_specs() -> dict[str, dict]:
    """Name -> spec of every configuration a user can reach, in the registry's order of kernel modules."""
    from benchmarks import compile_specs

    out = {}
    for spec in compile_specs.specs(full=True):
        assert spec["name"] not in out, f"specs(full=True) names must be unique: {spec['name']}"
        out[spec["name"]] = spec
    return out


def wanted(names: list[str], versions: dict) -> list[tuple]:
    """Row keys (name, arch, variant, triton version) of every row the report must hold, in order."""
    from benchmarks.ptxas_report import ARCHES

    return [(name, arch, variant, versions[t]) for name in names for arch in ARCHES for variant in VARIANTS
            for t in TRITONS]


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


def problems(report: dict | None, fp: dict | None = None, versions: dict | None = None) -> dict[str, list[str]]:
    """What is wrong with a report against the current sources, by kind: "missing" (no report, or rows of the
    enumeration absent), "extra" (rows of configurations no longer reachable), "stale" (a fingerprint that is
    not the current one), "failed" (compile errors), "spills" (spills or a stack frame). ``fp``:
    :func:`all_fingerprints` of the enumeration."""
    versions = versions or triton_versions()
    fp = fp or all_fingerprints(versions)
    out = {k: [] for k in ("missing", "extra", "stale", "failed", "spills")}
    if report is None:
        out["missing"].append(f"no report at {REPORT.relative_to(ROOT)}")
        return out
    want = wanted(list(dict.fromkeys(name for name, *_ in fp)), versions)
    have = {_key(r): r for r in report["kernels"]}
    out["missing"] += [" ".join(k) for k in want if k not in have]
    out["extra"] += [" ".join(k) for k in have.keys() - set(want)]
    for key in want:
        row = have.get(key)
        if row is None:
            continue
        now = fp[key[0], key[2], key[3]]
        if row["fingerprint"] != now:
            out["stale"].append(f"{' '.join(key)}: fingerprint {row['fingerprint']}, sources {now}")
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
    """Compile the rows of keys_file ({"keys": [[name, arch, variant, fingerprint], ...]}); one JSON line each
    to out_file."""
    import triton

    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v of the cubin Triton builds, printed: captured
    triton.knobs.compilation.always_compile = True  # a cache hit would print no log
    keys = json.loads(keys_file.read_text())["keys"]
    specs = enumeration_specs()
    now = fingerprints({name: specs[name] for name, *_ in keys})
    changed = sorted({name for name, _, variant, fp in keys if now[name, variant] != fp})
    if changed:  # the rows would be of other sources than the report says
        raise SystemExit(f"the sources of {changed[:5]} changed during the run: run it again")
    with out_file.open("a") as out:
        for name, arch, variant, _ in keys:
            try:
                row = _compile_row(specs[name], arch, variant)
            except Exception as e:  # noqa: BLE001  (recorded in the report; --check fails on it)
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


def _run_batch(which: str, version: str, keys: list, tmp: Path, index: int, nice: int) -> list[dict]:
    keys_file, out_file = tmp / f"keys-{index}.json", tmp / f"rows-{index}.jsonl"
    keys_file.write_text(json.dumps({"keys": keys}))
    cache = tmp / f"cache-{index}"
    run = subprocess.run([sys.executable, "-m", "benchmarks.compile_all", "--worker", str(keys_file), str(out_file)],
                         cwd=ROOT, env=_env(which, str(cache)), capture_output=True, text=True,
                         preexec_fn=(lambda: os.nice(nice)) if nice else None)
    subprocess.run(["rm", "-rf", str(cache)], check=False)
    rows = [json.loads(line) for line in out_file.read_text().splitlines()] if out_file.exists() else []
    done = {(r["name"], r["arch"], r["variant"]) for r in rows}
    for name, arch, variant, _ in keys:  # a worker that died: its remaining rows fail, with its output
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
    specs = enumeration_specs()
    fp = all_fingerprints(versions, specs)
    want = wanted(list(specs), versions)
    wanted_keys = set(want)
    old = load(out)
    kept = {}
    for row in (old or {}).get("kernels", []):
        key = _key(row)
        current = key in wanted_keys and row["fingerprint"] == fp[key[0], key[2], key[3]]
        if current and not force and not row.get("error"):
            kept[key] = row
    todo = [k for k in want if k not in kept and (only is None or re.search(only, k[0]))]
    if only is not None:  # rows left out keep what they hold (stale or not: --check says so)
        kept.update((_key(r), r) for r in (old or {}).get("kernels", []) if _key(r) in wanted_keys and
                    not re.search(only, r["name"]) and _key(r) not in kept)
    jobs = jobs or os.cpu_count() or 1
    by_version = {v: t for t, v in versions.items()}
    print(f"{len(specs)} configurations, {len(want)} rows ({len(kept)} kept, {len(todo)} to compile) "
          f"with {jobs} processes; Triton {versions['installed']} (installed) and {versions['gpu-machines']} "
          f"(GPU machines)", flush=True)
    unreachable = [r for r in (old or {}).get("kernels", []) if _key(r) not in wanted_keys]
    if not todo and not unreachable:  # nothing to compile or drop: the report (and its last_run) stays as it is
        found = problems(old, fp, versions)
        print(summarise(found) if any(found.values()) else f"{out} is current", flush=True)
        return int(any(found.values()))
    header = {
        "about": "Every reachable Triton kernel configuration (benchmarks/compile_specs.py, specs(full=True): every "
                 "kernel module of the op registry) x sm_80/sm_89/sm_90a x run-time specialised/generic x the installed and the GPU "
                 "machines' Triton: ptxas registers, spills, stack frame, shared memory, resident blocks per SM, "
                 "and each row's fingerprint of its compile inputs (benchmarks/compile_all.py). Refresh: "
                 "make compile-all.",
        "tritons": {t: v for t, v in versions.items()},
        "configurations": {m: sum(1 for spec in specs.values() if spec["module"] == m)
                           for m in dict.fromkeys(spec["module"] for spec in specs.values())},
    }
    rows = dict(kept)
    t0, cpu0 = time.perf_counter(), _cpu()
    order = {k: i for i, k in enumerate(want)}

    def save(final: bool = False):
        listed = sorted((r for k, r in rows.items() if k in order), key=lambda r: order[_key(r)])
        extra = {"last_run": {"compiled": len(todo), "kept": len(kept), "processes": jobs,
                              "wall_s": round(time.perf_counter() - t0), "cpu_s": round(_cpu() - cpu0),
                              "complete": final}}
        write(out, {**header, **extra}, listed)

    # Batches of a few minutes each, one Triton per batch: the heavy configurations (the fused loss) spread out.
    size = max(8, min(250, len(todo) // (jobs * 6) + 1))
    per_version = []
    for version in (versions["installed"], versions["gpu-machines"]):
        mine = [[name, arch, variant, fp[name, variant, v]] for name, arch, variant, v in todo if v == version]
        n = -(-len(mine) // size)
        per_version.append([(by_version[version], version, mine[i::n]) for i in range(n)])
    batches = [b for pair in itertools.zip_longest(*per_version) for b in pair if b is not None]  # the two in turn
    done, compiled = 0, 0
    with tempfile.TemporaryDirectory(prefix="compile-all-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_batch, *batch, Path(tmp), i, nice) for i, batch in enumerate(batches)]
        for future in concurrent.futures.as_completed(futures):
            for row in future.result():
                key = _key(row)
                assert key in order, f"a worker compiled with another Triton than asked: {key}"
                row["fingerprint"] = fp[key[0], key[2], key[3]]
                rows[key] = row
                compiled += 1
            done += 1
            elapsed = time.perf_counter() - t0
            print(f"  batch {done}/{len(batches)}: {compiled}/{len(todo)} rows in {elapsed:.0f} s"
                  + (f", about {elapsed / compiled * (len(todo) - compiled):.0f} s to go" if compiled else ""),
                  flush=True)
            save()
    save(final=True)
    found = problems(load(out), fp, versions)
    print(f"{len(todo)} compiled, {len(kept)} kept in {time.perf_counter() - t0:.0f} s wall, {_cpu() - cpu0:.0f} s CPU; "
          f"wrote {out}", flush=True)
    if any(found.values()):
        print(summarise(found), flush=True)
        return 1
    return 0


def check(path: Path = REPORT) -> int:
    """The committed report against the current sources, without compiling: 0 when it covers exactly the
    enumeration, every fingerprint is current and no row failed or spills; else 1, with what is wrong."""
    found = problems(load(path))
    if any(found.values()):
        print(summarise(found) + f"\n{REFRESH}", flush=True)
        return 1
    print(f"{path}: every configuration compiled, current, without spills", flush=True)
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
    parser.add_argument("--check", action="store_true",
                        help="check the report against the current sources without compiling (CI)")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fingerprints", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    if args.check:
        return check(args.out)
    if args.fingerprints:  # for all_fingerprints(), under the GPU machines' Triton
        import triton

        print(json.dumps({"triton": triton.__version__, "fingerprints": [[*k, h] for k, h in fingerprints().items()]}))
        return 0
    return run(args.out, args.jobs, args.only, args.force, args.nice)


if __name__ == "__main__":
    sys.exit(main())
