"""How the C++/CUDA extension is built: which torch, which CUDA toolkit, which GPU architectures, which sources.

One policy for both builds of ``csrc/``: ``setup.py`` (``pip install``, the prebuilt ``kamim_fast._C``)
and the JIT build at first use (``kamim_fast/_ext.py``). Standard library only, and torch is imported
only inside the functions that need it: ``setup.py`` loads this file by path, before kamim_fast is
importable.

- **Torch.** The extension is on the LibTorch stable ABI of :data:`TORCH_FLOOR` (``TORCH_TARGET_VERSION``) and on
  Python's limited API: a build with any torch >= the floor runs with every torch >= the floor and every
  Python >= 3.10 (one ``cp310-abi3`` wheel per platform and CUDA major version).
- **Toolkit.** torch guesses ``CUDA_HOME`` from ``$CUDA_HOME``/``$CUDA_PATH``, else as the folder above the
  ``nvcc`` on ``PATH``, which may be a wrapper script outside any toolkit (then the link fails: no
  ``libcudart``). A folder is a toolkit when it holds ``bin/nvcc``, the CUDA runtime library
  (``lib64/libcudart.so`` or ``lib/libcudart.so``) and ``include/cuda_runtime.h``, and its nvcc has torch's
  CUDA major version. When torch's guess is not one, ``/usr/local/cuda`` and ``/usr/local/cuda-*`` (newest
  first) are tried; when none is, the extension is built with its CPU kernels only.
- **Whether CUDA.** A wheel build compiles the CUDA kernels when a toolkit is found and there is something to
  build for: ``TORCH_CUDA_ARCH_LIST``, or a visible GPU (:func:`cuda_build`). A toolkit on a machine without a
  GPU builds the CPU kernels only unless ``TORCH_CUDA_ARCH_LIST`` is set (release wheels set it). The JIT build
  compiles them for the visible GPUs (``KAMIM_FAST_JIT=cuda``: even without one).
- **Architectures.** ``TORCH_CUDA_ARCH_LIST`` when set; else the visible GPUs' capabilities (for a wheel,
  together with the default list, so it also runs elsewhere); else the default list
  ``8.0;8.6;8.9;9.0+PTX``: A100, A10/3090, L4/4090, H100, and PTX that newer GPUs compile at load.
- **Sources and flags.** Every ``csrc/*.cpp`` and ``csrc/*.cu``; ``compiler_flags()`` for both builds.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ARCH_ENV_VAR = "TORCH_CUDA_ARCH_LIST"
# The oldest torch the extension is built for (the LibTorch stable ABI of that release): one build runs on it and
# every newer torch. pyproject.toml's torch requirements name the same release (tests/test_packaging.py).
TORCH_FLOOR = (2, 11)
PY_LIMITED_API_TAG = "cp310"  # the wheel's Python tag: the extension uses Python's limited API of 3.10
DEFAULT_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"
STANDARD_TOOLKITS = ("/usr/local/cuda",)  # then /usr/local/cuda-*, newest first
SOURCE_PATTERNS = ("*.cpp", "*.cu", "*.cuh", "*.h", "*.hpp")  # what the wheel ships of csrc/


# --- the toolkit ----------------------------------------------------------------------------------------


def toolkit_problem(home: str | os.PathLike | None) -> str | None:
    """None when ``home`` is a CUDA toolkit one can compile and link with, else what it lacks (words)."""
    if not home:
        return "not set"
    root = Path(home)
    if not root.is_dir():
        return "no such folder"
    missing = []
    if not any((root / "bin" / name).is_file() for name in ("nvcc", "nvcc.exe")):
        missing.append("bin/nvcc")
    runtime = ("lib64/libcudart.so", "lib/libcudart.so", "lib/x64/cudart.lib")
    if not any((root / name).exists() for name in runtime):
        missing.append("lib64/libcudart.so")
    if not (root / "include" / "cuda_runtime.h").is_file():
        missing.append("include/cuda_runtime.h")
    return f"no {', '.join(missing)}" if missing else None


def nvcc_version(home: str | os.PathLike) -> tuple[int, int] | None:
    """The release of ``home/bin/nvcc`` (``nvcc --version``), None when it does not run."""
    nvcc = Path(home) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc")
    try:
        out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else None


def candidate_toolkits(guess: str | None, environ=None) -> list[str]:
    """Where to look, in order: torch's guess, ``$CUDA_HOME``, ``$CUDA_PATH``, the standard folders."""
    environ = os.environ if environ is None else environ
    found = [guess, environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), *STANDARD_TOOLKITS]

    def version_key(path: Path):
        return tuple(int(n) for n in re.findall(r"\d+", path.name))

    found += [str(p) for p in sorted(Path("/usr/local").glob("cuda-*"), key=version_key, reverse=True)]
    unique: list[str] = []
    seen: set[str] = set()
    for home in found:
        if home and os.path.realpath(home) not in seen:  # /usr/local/cuda is often a link to cuda-12.x
            seen.add(os.path.realpath(home))
            unique.append(os.path.normpath(home))
    return unique


def choose_cuda_toolkit(torch_cuda: str | None, guess: str | None, candidates: list[str] | None = None,
                        version_of=nvcc_version) -> tuple[str | None, str]:
    """The toolkit to build the CUDA kernels with, and one line saying what was decided and why.

    ``torch_cuda`` is ``torch.version.cuda`` (None: a CPU build of torch), ``guess`` torch's
    ``cpp_extension.CUDA_HOME``. Returns (None, why) when the extension must be built for the CPU only.
    """
    if torch_cuda is None:
        return None, "torch is a CPU-only build"
    guess = os.path.normpath(guess) if guess else None
    candidates = candidate_toolkits(guess) if candidates is None else candidates
    torch_major = int(torch_cuda.split(".")[0])

    def problem_of(home: str) -> str | None:
        problem = toolkit_problem(home)
        if problem is None:
            release = version_of(home)
            if release is None:
                problem = "its nvcc does not run"
            elif release[0] != torch_major:
                problem = f"its nvcc is CUDA {release[0]}.{release[1]}, torch is built with CUDA {torch_cuda}"
        return problem

    guess_problem = problem_of(guess) if guess else None
    if guess and guess_problem is None:
        return guess, f"CUDA toolkit at {guess}"
    said = [f"CUDA_HOME={guess} (torch's guess) is not a usable CUDA toolkit ({guess_problem})" if guess
            else "torch found no CUDA_HOME"]
    others = []
    for home in candidates:
        if home == guess:
            continue
        problem = problem_of(home)
        if problem is None:
            return home, f"{said[0]}; using the toolkit at {home}"
        others.append(f"{home}: {problem}")
    if others:
        said.append("nor is " + "; ".join(others))
    return None, f"{', '.join(said)}; set CUDA_HOME to a CUDA toolkit for the CUDA kernels"


# --- architectures --------------------------------------------------------------------------------------


def visible_gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capabilities of the visible CUDA GPUs, each capped at the newest architecture this torch
    was built for (as torch does: a newer GPU runs that architecture's PTX); [] without a GPU."""
    try:
        import torch

        if torch.version.cuda is None or not torch.cuda.is_available():
            return []
        built = [tuple(divmod(int(re.sub(r"\D", "", a.split("_")[1])), 10)) for a in torch.cuda.get_arch_list()
                 if a.startswith("sm_")]
        newest = max(built) if built else (99, 9)
        return sorted({min(torch.cuda.get_device_capability(i), newest) for i in range(torch.cuda.device_count())})
    except Exception:  # noqa: BLE001 - a broken driver is no GPU, for the build
        return []


def arch_entries(arch_list: str) -> list[str]:
    """The architectures of a ``TORCH_CUDA_ARCH_LIST`` value (``"8.0;9.0+PTX"`` -> ``["8.0", "9.0+PTX"]``)."""
    return [a for a in re.split(r"[;\s]+", arch_list.strip()) if a]


def cuda_arch_list(environ=None, gpu_capabilities: list[tuple[int, int]] | None = None, *,
                   portable: bool = True) -> str:
    """The ``TORCH_CUDA_ARCH_LIST`` to build with: the variable when set; else the visible GPUs'
    capabilities (``gpu_capabilities``), joined with the default list when ``portable`` (a wheel may be
    copied to other machines; a JIT build serves this one); else ``DEFAULT_ARCH_LIST``. The newest entry
    carries ``+PTX``."""
    environ = os.environ if environ is None else environ
    if environ.get(ARCH_ENV_VAR, "").strip():
        return environ[ARCH_ENV_VAR].strip()
    if not gpu_capabilities:
        return DEFAULT_ARCH_LIST
    archs = {f"{major}.{minor}" for major, minor in gpu_capabilities}
    if portable:
        archs |= {a.replace("+PTX", "") for a in arch_entries(DEFAULT_ARCH_LIST)}
    ordered = sorted(archs, key=lambda a: tuple(int(n) for n in a.split(".")))
    ordered[-1] += "+PTX"
    return ";".join(ordered)


def cuda_build(torch_cuda: str | None, guess: str | None, have_sources: bool = True, environ=None,
               gpu_capabilities: list[tuple[int, int]] | None = None) -> tuple[str | None, str, str]:
    """Whether a wheel build (setup.py) compiles the CUDA kernels: (toolkit, ``TORCH_CUDA_ARCH_LIST``, why), or
    (None, "", why) for the CPU kernels only.

    CUDA kernels need a CUDA build of torch, a toolkit (:func:`choose_cuda_toolkit`) and something to build for:
    ``TORCH_CUDA_ARCH_LIST``, or a visible GPU (:func:`cuda_arch_list`, portable). A toolkit on a machine without
    a GPU builds nothing for CUDA unless ``TORCH_CUDA_ARCH_LIST`` names the architectures: a plain ``pip install``
    there stays a CPU build of a minute, not minutes of nvcc for GPUs that may never run it.
    """
    environ = os.environ if environ is None else environ
    if not have_sources:
        return None, "", "no csrc/*.cu"
    if torch_cuda is None:
        return None, "", "torch is a CPU-only build"
    gpus = visible_gpu_capabilities() if gpu_capabilities is None else gpu_capabilities
    if not gpus and not environ.get(ARCH_ENV_VAR, "").strip():
        return None, "", (f"no GPU is visible and {ARCH_ENV_VAR} is not set (set it, e.g. {ARCH_ENV_VAR}=9.0, "
                          "to build the CUDA kernels for GPUs elsewhere)")
    home, why = choose_cuda_toolkit(torch_cuda, guess)
    if home is None:
        return None, "", why
    return home, cuda_arch_list(environ, gpus, portable=True), why


# --- torch ----------------------------------------------------------------------------------------------


def torch_floor_problem(version: str) -> str | None:
    """None when torch ``version`` (``torch.__version__``) is the floor or newer, else what is needed (words)."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) >= TORCH_FLOOR:
        return None
    return f"torch >= {TORCH_FLOOR[0]}.{TORCH_FLOOR[1]} (the LibTorch stable ABI they are built on), this is {version}"


# --- compiler flags -------------------------------------------------------------------------------------


def torch_target_version(floor: tuple[int, int] = TORCH_FLOOR) -> str:
    """``TORCH_TARGET_VERSION`` for a floor: major and minor in the top two bytes (``0x020b000000000000``: 2.11)."""
    return f"0x{floor[0]:02x}{floor[1]:02x}000000000000"


def compiler_flags() -> dict[str, list[str]]:
    """The flags of every build of ``csrc/`` (setup.py, the JIT build, the sanitizer build): ``cxx`` (C++ files),
    ``nvcc`` (CUDA files), ``link``.

    ``TORCH_TARGET_VERSION``: the stable API of :data:`TORCH_FLOOR` only (torch's other headers refuse to compile
    under it). No OpenMP flag: the CPU kernels run on torch's thread pool through the stable ``parallel_for``.
    ``USE_CUDA`` declares the stable C shim's CUDA functions (the current stream) to nvcc.
    """
    target = f"-DTORCH_TARGET_VERSION={torch_target_version()}"
    return {"cxx": ["-O3", "-DNDEBUG", target], "nvcc": ["-O3", "-DNDEBUG", "-lineinfo", target, "-DUSE_CUDA"],
            "link": []}


# --- how long a build takes -------------------------------------------------------------------------------

# Compiler time measured on the development machine (x86-64, gcc 12, nvcc 13, -O3): all C++ files together, the
# longest of them, and the CUDA file per architecture (nvcc compiles the architectures one after the other). ninja
# compiles the files in parallel.
CPP_COMPILE_SECONDS = 20
CPP_LONGEST_FILE_SECONDS = 15
CUDA_COMPILE_SECONDS_PER_ARCH = 15


def estimated_build_seconds(cuda_archs: int = 0, cores: int | None = None) -> float:
    """Roughly how long a build of the extension takes, in seconds, with ``cuda_archs`` CUDA architectures."""
    cores = max(1, cores or os.cpu_count() or 1)
    cuda = CUDA_COMPILE_SECONDS_PER_ARCH * cuda_archs
    return max(CPP_LONGEST_FILE_SECONDS, cuda, (CPP_COMPILE_SECONDS + cuda) / cores)


def estimated_build_time(cuda_archs: int = 0, cores: int | None = None) -> str:
    """:func:`estimated_build_seconds` in words: "about 40 s", "about 2 min"."""
    seconds = estimated_build_seconds(cuda_archs, cores)
    return f"about {round(seconds / 60)} min" if seconds >= 90 else f"about {10 * max(1, round(seconds / 10))} s"


# --- sources --------------------------------------------------------------------------------------------


def find_sources(package_dir: str | os.PathLike) -> Path | None:
    """The folder holding the C++ sources: beside the installed package (``kamim_fast/csrc``, shipped in the
    wheel), else the checkout's ``csrc/`` above it; None when neither holds them."""
    package_dir = Path(package_dir)
    for folder in (package_dir / "csrc", package_dir.parent / "csrc"):
        if (folder / "amt.cpp").is_file():
            return folder
    return None


def source_files(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(C++ files, CUDA files) to compile: every ``*.cpp`` and every ``*.cu`` of ``folder``, sorted."""
    folder = Path(folder)
    return sorted(str(p) for p in folder.glob("*.cpp")), sorted(str(p) for p in folder.glob("*.cu"))


def stale_extensions(package_dir: str | os.PathLike, built: str) -> list[Path]:
    """The other builds of ``_C`` beside ``built`` (the file name a build just wrote) in ``package_dir``.

    An in-place build (an editable install) writes ``_C.abi3.so``; a ``_C.cpython-311-x86_64-linux-gnu.so`` left by an
    earlier build for one Python would still be imported first (Python tries the interpreter's own tag before
    ``abi3``), so the package would run the old kernels. setup.py removes these after an in-place build.
    """
    return sorted(p for p in Path(package_dir).glob("_C.*") if p.name != built
                  and p.suffix in (".so", ".pyd", ".dylib") and p.is_file())
