"""Packaging (issue 16) and the extension's build policy (issue 12, item 4).

- The sdist holds every file its build needs (all of csrc/, the package with its kernels/, README, LICENSE), and a
  wheel built from it ships the C++ sources as ``kamim_fast/csrc`` with the metadata users see.
- ``kamim_fast/_build.py``: the CUDA toolkit check (a folder holding only ``bin/nvcc`` is no toolkit),
  the architecture list, where the sources are; setup.py and the JIT build both follow it.
- ``kamim_fast.__version__`` is the distribution's.

The whole user path (sdist -> wheel -> fresh venv -> smoke test, CUDA_HOME unset) is ``make install-check``.
"""

from __future__ import annotations

import email
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import kamim_fast
from kamim_fast import _build, _ext

ROOT = Path(__file__).resolve().parent.parent
SKIP_PARTS = {"__pycache__", ".pytest_cache"}


def _tree(folder: str) -> set[str]:
    """Files under ROOT/folder (relative, posix), without caches and build products."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
            if p.is_file() and not SKIP_PARTS & set(p.parts) and p.suffix not in (".so", ".pyc", ".o")}


def _needs_build_module() -> None:
    try:
        import build  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must install the `build` package (the [test] extra) to check the sdist")
        pytest.skip("the `build` package is not installed (pip install -e '.[test]')")


def _fake_toolkit(root: Path, *, nvcc=True, cudart=True, header=True) -> Path:
    if nvcc:
        (root / "bin").mkdir(parents=True, exist_ok=True)
        (root / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
        (root / "bin" / "nvcc").chmod(0o755)
    if cudart:
        (root / "lib64").mkdir(parents=True, exist_ok=True)
        (root / "lib64" / "libcudart.so").write_bytes(b"")
    if header:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "cuda_runtime.h").write_text("")
    return root


# --- the sdist and the wheel -----------------------------------------------------------------------------


def test_sdist_and_wheel_hold_every_source(tmp_path):
    """One test, so two xdist workers never build in the checkout at once (egg-info is written there)."""
    _needs_build_module()
    env = dict(os.environ, KAMIM_FAST_NO_EXTENSION="1")  # the file list does not depend on the extension
    command = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sdist,) = tmp_path.glob("kamim_fast-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name and tar.getmember(name).isfile()}
    needed = _tree("csrc") | _tree("kamim_fast") | {
        "README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in"}
    assert _tree("csrc") >= {"csrc/amt.cpp", "csrc/amt.h", "csrc/amt_checks.h", "csrc/amt_cuda.cu"}
    assert not needed - shipped, f"missing from {sdist.name}: {sorted(needed - shipped)} (MANIFEST.in)"

    # a wheel from that sdist (pure Python here: KAMIM_FAST_NO_EXTENSION=1 keeps this test fast; the
    # compiled wheel is `make install-check`) ships the C++ sources for the JIT fallback
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "--no-index",
               "-w", str(tmp_path / "wheel"), str(sdist)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("kamim_fast-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(whl.read(meta_name))
    sources = {p for p in _tree("csrc") if Path(p).suffix in (".cpp", ".cu", ".cuh", ".h", ".hpp")}
    in_package = {"kamim_fast/" + p for p in sources} | {p for p in _tree("kamim_fast") if p.endswith(".py")}
    assert not in_package - names, f"missing from {wheel.name}: {sorted(in_package - names)}"
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"kamim_fast"}, f"{wheel.name} installs other import names: {sorted(top_level)}"
    assert {"kamim_fast/_build.py", "kamim_fast/_ext.py"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert top == f"kamim_fast-{meta['Version']}"
    assert meta["Version"] == kamim_fast.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert {"test", "demo", "opencv"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("opencv-python-headless") and 'extra == "opencv"' in r for r in requires), requires
    assert not any(r.startswith(("timm", "kornia")) and "extra" not in r for r in requires), requires
    # what `pip show` and the package index show; type checkers read the annotations (PEP 561)
    assert "kamim_fast/py.typed" in names, "py.typed is not in the wheel (MANIFEST.in)"
    assert meta["Author"] or meta["Author-email"], "no author"
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "License :: OSI Approved :: Apache Software License" not in classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["KAMIM (published code)"] == "https://github.com/madhava20217/KAMIM", urls


def test_version_is_the_distributions():
    assert kamim_fast.__version__ == importlib.metadata.version("kamim-fast")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == kamim_fast.__version__
    assert "__version__ = \"" not in (ROOT / "kamim_fast" / "__init__.py").read_text()  # no second copy


def test_license_is_an_spdx_string():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M), "project.license must be an SPDX string"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()


# --- the toolkit ------------------------------------------------------------------------------------------


def test_a_folder_with_only_nvcc_is_no_toolkit(tmp_path):
    only_nvcc = _fake_toolkit(tmp_path / "wrapper", cudart=False, header=False)
    assert _build.toolkit_problem(only_nvcc) == "no lib64/libcudart.so, include/cuda_runtime.h"
    assert _build.toolkit_problem(_fake_toolkit(tmp_path / "nohdr", header=False)) == "no include/cuda_runtime.h"
    assert _build.toolkit_problem(_fake_toolkit(tmp_path / "full")) is None
    assert _build.toolkit_problem(tmp_path / "absent") == "no such folder"
    assert _build.toolkit_problem(None) == "not set"
    lib = _fake_toolkit(tmp_path / "lib", cudart=False)
    (lib / "lib").mkdir()
    (lib / "lib" / "libcudart.so").write_bytes(b"")
    assert _build.toolkit_problem(lib) is None  # lib/ instead of lib64/ (conda's layout)


def test_choose_toolkit_falls_back_from_a_wrong_guess(tmp_path):
    wrong = str(_fake_toolkit(tmp_path / "usr-local", cudart=False, header=False))
    real = str(_fake_toolkit(tmp_path / "cuda"))
    v13 = lambda home: (13, 0)  # noqa: E731
    home, why = _build.choose_cuda_toolkit("13.0", wrong, [wrong, real], version_of=v13)
    assert home == real
    assert why == (f"CUDA_HOME={wrong} (torch's guess) is not a usable CUDA toolkit (no lib64/libcudart.so, "
                   f"include/cuda_runtime.h); using the toolkit at {real}")
    assert _build.choose_cuda_toolkit("13.0", real, [real], version_of=v13) == (real, f"CUDA toolkit at {real}")
    # nothing usable: CPU-only, and one line saying why
    home, why = _build.choose_cuda_toolkit("13.0", wrong, [wrong], version_of=v13)
    assert home is None and "not a usable CUDA toolkit" in why and "set CUDA_HOME" in why and "\n" not in why
    home, why = _build.choose_cuda_toolkit("12.4", real, [real], version_of=v13)
    assert home is None and "CUDA 13.0, torch is built with CUDA 12.4" in why
    assert _build.choose_cuda_toolkit(None, real, [real], version_of=v13) == (None, "torch is a CPU-only build")
    home, why = _build.choose_cuda_toolkit("13.0", None, [], version_of=v13)
    assert home is None and why.startswith("torch found no CUDA_HOME")


def test_candidates_are_the_guess_then_the_standard_folders(monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = _build.candidate_toolkits("/opt/guess/")
    assert found[0] == "/opt/guess"
    assert "/usr/local/cuda" in found  # listed whether or not it exists
    assert len({os.path.realpath(f) for f in found}) == len(found)  # a link and its target once


def test_nvcc_version_reads_the_release(tmp_path):
    assert _build.nvcc_version(_fake_toolkit(tmp_path)) == (13, 0)
    assert _build.nvcc_version(tmp_path / "absent") is None


def _setup_py_line(env: dict) -> str:
    """The one line setup.py says about the extension it builds (``setup.py --name``: nothing is compiled)."""
    out = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("kamim_fast: ")]
    assert len(lines) == 1, out.stderr[-3000:]
    return lines[0]


def test_setup_py_says_which_toolkit_it_builds_with(tmp_path):
    """setup.py with CUDA_HOME pointing at a folder that holds only bin/nvcc (the trap of issue 16) and an
    architecture to build for: one line saying it is no toolkit, then either the real toolkit it found or that the
    extension is CPU-only."""
    wrapper = _fake_toolkit(tmp_path / "wrapper", cudart=False, header=False)
    unset = ("CUDA_PATH", "TORCH_CUDA_ARCH_LIST", "KAMIM_FAST_NO_EXTENSION")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(CUDA_HOME=str(wrapper), TORCH_CUDA_ARCH_LIST="9.0")
    line = _setup_py_line(env)
    if torch.version.cuda is None:
        assert line == "kamim_fast: kamim_fast._C with CPU kernels only: torch is a CPU-only build"
        return
    assert f"CUDA_HOME={wrapper} (torch's guess) is not a usable CUDA toolkit" in line, line
    home, _ = _build.choose_cuda_toolkit(torch.version.cuda, str(wrapper))
    if home is None:
        assert line.startswith("kamim_fast: kamim_fast._C with CPU kernels only: "), line
    else:
        assert line.startswith("kamim_fast: kamim_fast._C with CPU and CUDA kernels for 9.0: "), line
        assert line.endswith(f"using the toolkit at {home}"), line


def test_setup_py_without_a_gpu_builds_no_cuda_architecture():
    """A toolkit but no GPU and no TORCH_CUDA_ARCH_LIST: the CPU kernels only (a CPU machine's plain `pip install`
    takes a minute, not minutes of nvcc), and the line says how to get the CUDA kernels."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the build compiles its architecture")
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "KAMIM_FAST_NO_EXTENSION")}
    line = _setup_py_line(env)
    want = ("torch is a CPU-only build" if torch.version.cuda is None else
            "no GPU is visible and TORCH_CUDA_ARCH_LIST is not set (set it, e.g. TORCH_CUDA_ARCH_LIST=9.0, to build "
            "the CUDA kernels for GPUs elsewhere)")
    assert line == f"kamim_fast: kamim_fast._C with CPU kernels only: {want}"


def test_cuda_build_policy(tmp_path):
    real = str(_fake_toolkit(tmp_path / "cuda"))
    found = (real, "found")
    import unittest.mock as mock

    with mock.patch.object(_build, "choose_cuda_toolkit", lambda cuda, guess: found):
        assert _build.cuda_build("13.0", real, True, {}, []) == (
            None, "", "no GPU is visible and TORCH_CUDA_ARCH_LIST is not set (set it, e.g. TORCH_CUDA_ARCH_LIST=9.0, "
                      "to build the CUDA kernels for GPUs elsewhere)")
        assert _build.cuda_build("13.0", real, True, {"TORCH_CUDA_ARCH_LIST": "9.0"}, []) == (real, "9.0", "found")
        assert _build.cuda_build("13.0", real, True, {}, [(8, 6)]) == (real, "8.0;8.6;8.9;9.0+PTX", "found")
        assert _build.cuda_build("13.0", real, False, {"TORCH_CUDA_ARCH_LIST": "9.0"}, [(9, 0)]) == (
            None, "", "no csrc/*.cu")
        assert _build.cuda_build(None, real, True, {"TORCH_CUDA_ARCH_LIST": "9.0"}, [(9, 0)]) == (
            None, "", "torch is a CPU-only build")
    with mock.patch.object(_build, "choose_cuda_toolkit", lambda cuda, guess: (None, "no toolkit")):
        assert _build.cuda_build("13.0", None, True, {"TORCH_CUDA_ARCH_LIST": "9.0"}, []) == (None, "", "no toolkit")


# --- architectures ----------------------------------------------------------------------------------------


def test_arch_list_policy():
    assert _build.DEFAULT_ARCH_LIST == "8.0;8.6;8.9;9.0+PTX"  # A100, A10/3090, L4/4090, H100 (+PTX: newer)
    assert _build.cuda_arch_list({}, []) == "8.0;8.6;8.9;9.0+PTX"  # no GPU
    assert _build.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": " 9.0a "}, [(8, 0)]) == "9.0a"  # the variable wins
    assert _build.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": ""}, []) == "8.0;8.6;8.9;9.0+PTX"
    # a wheel: the present GPU plus the default list; a JIT build: the present GPUs only
    assert _build.cuda_arch_list({}, [(8, 0)]) == "8.0;8.6;8.9;9.0+PTX"
    assert _build.cuda_arch_list({}, [(12, 0)]) == "8.0;8.6;8.9;9.0;12.0+PTX"
    assert _build.cuda_arch_list({}, [(7, 5)]) == "7.5;8.0;8.6;8.9;9.0+PTX"
    assert _build.cuda_arch_list({}, [(8, 6)], portable=False) == "8.6+PTX"
    assert _build.cuda_arch_list({}, [(9, 0), (8, 0)], portable=False) == "8.0;9.0+PTX"
    assert _build.cuda_arch_list({}, [(10, 0)], portable=False) == "10.0+PTX"  # numeric order, not text


def test_compiler_flags():
    """Every build targets the floor's stable ABI (torch's other headers then refuse to compile); no OpenMP: the CPU
    kernels run on torch's thread pool (the stable parallel_for)."""
    assert _build.torch_target_version((2, 11)) == "0x020b000000000000"
    assert _build.torch_target_version((2, 9)) == "0x0209000000000000"
    target = f"-DTORCH_TARGET_VERSION={_build.torch_target_version()}"
    assert _build.compiler_flags() == {"cxx": ["-O3", "-DNDEBUG", target],
                                       "nvcc": ["-O3", "-DNDEBUG", "-lineinfo", target, "-DUSE_CUDA"], "link": []}


def test_visible_gpus_are_none_without_cuda():
    caps = _build.visible_gpu_capabilities()
    if not torch.cuda.is_available():
        assert caps == []
    else:
        assert caps and all(isinstance(c, tuple) and len(c) == 2 for c in caps)


# --- the JIT build follows the same policy ----------------------------------------------------------------


@pytest.fixture
def captured_load(monkeypatch, tmp_path):
    """cpp_extension.load replaced by a recorder of its arguments and of the build's environment."""
    from torch.utils import cpp_extension

    calls = []

    def load(**kwargs):
        calls.append({**kwargs, "CUDA_HOME": cpp_extension.CUDA_HOME, "archs": os.environ.get("TORCH_CUDA_ARCH_LIST")})
        return "/built/lib.so"

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    return calls


def test_jit_build_uses_the_policy_with_a_gpu(monkeypatch, tmp_path, captured_load):
    from torch.utils import cpp_extension

    real = str(_fake_toolkit(tmp_path / "cuda"))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(_build, "visible_gpu_capabilities", lambda: [(8, 6)])
    monkeypatch.setattr(_build, "choose_cuda_toolkit", lambda cuda, guess: (real, "found"))
    monkeypatch.setenv("KAMIM_FAST_JIT", "")
    before = cpp_extension.CUDA_HOME
    assert _ext._jit_build() == "/built/lib.so"
    (call,) = captured_load
    assert call["name"] == "kamim_fast_cuda" and call["with_cuda"] is True
    assert call["CUDA_HOME"] == real and call["archs"] == "8.6+PTX"  # the present GPU, not 9.0
    assert "-DKAMIM_FAST_ARCHS=8_6_PTX" in call["extra_cuda_cflags"]  # a new list rebuilds
    assert {Path(s).name for s in call["sources"]} >= {"amt.cpp", "amt_cuda.cu"}
    assert call["extra_cflags"] == _build.compiler_flags()["cxx"] and call["extra_ldflags"] == _build.compiler_flags()["link"]
    assert cpp_extension.CUDA_HOME == before and "TORCH_CUDA_ARCH_LIST" not in os.environ  # restored
    assert _ext._loaded["built"] == "CPU and CUDA kernels for 8.6+PTX (found)"  # what the JIT warning says


def test_jit_build_is_cpu_only_without_a_gpu(monkeypatch, captured_load):
    monkeypatch.setattr(_build, "visible_gpu_capabilities", lambda: [])
    monkeypatch.setenv("KAMIM_FAST_JIT", "")
    _ext._jit_build()
    if torch.version.cuda is not None:
        assert _ext._loaded["built"] == "CPU kernels only: no GPU is visible (KAMIM_FAST_JIT=cuda builds them anyway)"
    monkeypatch.setenv("KAMIM_FAST_JIT", "cpu")
    monkeypatch.setattr(_build, "visible_gpu_capabilities", lambda: [(9, 0)])
    _ext._jit_build()
    assert _ext._loaded["built"] == "CPU kernels only: KAMIM_FAST_JIT=cpu"
    for call in captured_load:
        assert call["name"] == "kamim_fast_cpu" and call["with_cuda"] is False
        assert all(s.endswith(".cpp") for s in call["sources"])
    monkeypatch.setenv("KAMIM_FAST_JIT", "0")
    with pytest.raises(RuntimeError, match="KAMIM_FAST_JIT=0"):
        _ext._jit_build()


def test_sources_beside_the_package_come_first(tmp_path):
    package = tmp_path / "site" / "kamim_fast"
    (package / "csrc").mkdir(parents=True)
    assert _build.find_sources(package) is None
    (tmp_path / "site" / "csrc").mkdir()
    (tmp_path / "site" / "csrc" / "amt.cpp").write_text("")
    assert _build.find_sources(package) == tmp_path / "site" / "csrc"  # a checkout's csrc/
    (package / "csrc" / "amt.cpp").write_text("")
    assert _build.find_sources(package) == package / "csrc"  # installed: kamim_fast/csrc
    assert _ext.sources_dir() == ROOT / "csrc"  # this checkout (the editable install maps no kamim_fast/csrc)


def test_build_policy_imports_without_torch():
    """setup.py loads kamim_fast/_build.py by path, before torch or kamim_fast may be importable."""
    code = ("import importlib.util, sys\n"
            "sys.modules['torch'] = None\n"
            f"spec = importlib.util.spec_from_file_location('b', {str(ROOT / 'kamim_fast' / '_build.py')!r})\n"
            "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
            "print(b.cuda_arch_list({}, b.visible_gpu_capabilities()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "8.0;8.6;8.9;9.0+PTX", out.stderr


# --- which implementation, and the warning ----------------------------------------------------------------


def test_loaded_says_prebuilt_or_jit_and_the_jit_warning_says_how_to_prebuild():
    kind, where = _ext.loaded()
    ok, reason = _ext.status()
    assert (kind, ok) in (("prebuilt", True), ("jit", True), ("reference", False))
    if kind != "prebuilt":
        pytest.skip(f"kamim_fast._C is not installed here ({kind}: {where or reason})")
    assert Path(where).parent == Path(kamim_fast.__file__).parent
    # without _C, a (stand-in) JIT build: loaded() says so and one warning says how to get the prebuilt one
    code = ("import sys; sys.modules['kamim_fast._C'] = None\n"
            "import warnings, torch\nfrom kamim_fast import _ext\n"
            f"_ext._jit_build = lambda: (torch.ops.load_library({where!r}), {where!r})[1]\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    print('LOADED', _ext.loaded())\n"
            "    _ext.status()\n"
            "for w in caught: print('WARNING', w.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"LOADED ('jit', {where!r})" in out.stdout, out.stdout
    warned = [line for line in out.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warned) == 1 and "JIT build" in warned[0] and _ext.HOW_TO_PREBUILD in warned[0], warned
    assert "pip install --force-reinstall --no-deps kamim-fast" in _ext.HOW_TO_PREBUILD


def test_the_prebuilt_extension_loads_without_a_warning():
    """The silent side of the JIT-build warning (and of the fallback's): with kamim_fast._C installed, the first
    calls of each family's ops on CPU tensors (which load the extension) warn nothing."""
    kind, where = _ext.loaded()
    if kind != "prebuilt":
        pytest.skip(f"kamim_fast._C is not installed here ({kind}: {where})")
    code = ("import warnings, torch, kamim_fast\nfrom kamim_fast import _ext\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    kamim_fast.fast_corners(torch.zeros(9, 9, dtype=torch.uint8))\n"
            "    kamim_fast.gather_patches(torch.randn(2, 5, 3), torch.tensor([[0, 4], [2, 2]]))\n"
            "    kamim_fast.weighted_mim_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 1))\n"
            "print('LOADED', _ext.loaded()[0])\n"
            "for w in caught: print('WARNING', w.category.__name__, w.message)\n")
    env = {k: v for k, v in os.environ.items() if k != "KAMIM_FAST_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED prebuilt" in out.stdout and "WARNING" not in out.stdout, out.stdout


# --- the torch floor and the stable ABI -------------------------------------------------------------------


def test_the_torch_floor_is_written_once():
    """pyproject.toml requires the torch of kamim_fast/_build.py's TORCH_FLOOR, to build (pip's isolated build has
    a torch to compile against) and to run; the C++ targets that release's stable ABI (TORCH_TARGET_VERSION)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = "torch>={}.{}".format(*_build.TORCH_FLOOR)
    assert floor in project["build-system"]["requires"]
    assert floor in project["project"]["dependencies"]
    assert not [r for r in project["project"]["dependencies"] + project["build-system"]["requires"]
                if r.startswith("torch") and r != floor]


def test_torch_floor_problem():
    assert _build.torch_floor_problem("2.11.0+cu130") is None
    assert _build.torch_floor_problem("2.14.1") is None and _build.torch_floor_problem("3.0.0") is None
    assert _build.torch_floor_problem("2.10.0") == (
        "torch >= 2.11 (the LibTorch stable ABI they are built on), this is 2.10.0")
    assert _build.torch_floor_problem(torch.__version__) is None  # this venv


def test_build_time_estimates():
    """What the JIT build says before it compiles: the C++ files in parallel, nvcc one architecture after another."""
    assert _build.estimated_build_seconds(0, 2) == max(_build.CPP_LONGEST_FILE_SECONDS, _build.CPP_COMPILE_SECONDS / 2)
    assert _build.estimated_build_seconds(4, 2) >= 4 * _build.CUDA_COMPILE_SECONDS_PER_ARCH
    assert _build.estimated_build_seconds(0, 1) >= _build.estimated_build_seconds(0, 8)
    assert _build.estimated_build_time(0, 2).startswith("about ") and _build.estimated_build_time(0, 2).endswith(" s")
    assert _build.estimated_build_time(8, 2).endswith(" min")


def test_csrc_includes_only_the_stable_abi():
    """csrc/ reaches torch through torch/csrc/stable and torch/headeronly only (TORCH_TARGET_VERSION makes the other
    headers fail to compile; this names the offending line)."""
    unstable = []
    for path in sorted((ROOT / "csrc").iterdir()):
        if path.suffix not in (".cpp", ".cu", ".cuh", ".h", ".hpp"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = re.match(r'\s*#\s*include\s*[<"]((?:torch|ATen|c10|caffe2|pybind11)/[^>"]+)[>"]', line)
            if found and not found.group(1).startswith(("torch/csrc/stable/", "torch/headeronly/")):
                unstable.append(f"{path.name}:{number}: {found.group(1)}")
    assert not unstable, unstable


def test_an_in_place_build_finds_the_earlier_builds_python_would_import_first(tmp_path):
    from kamim_fast import _build

    for name in ("_C.abi3.so", "_C.cpython-311-x86_64-linux-gnu.so", "_C.cpython-310-x86_64-linux-gnu.so",
                 "_C.pyi", "_Cother.so", "_ext.py"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "_C.dir.so").mkdir()
    found = [p.name for p in _build.stale_extensions(tmp_path, "_C.abi3.so")]
    assert found == ["_C.cpython-310-x86_64-linux-gnu.so", "_C.cpython-311-x86_64-linux-gnu.so"]
    assert _build.stale_extensions(tmp_path, "_C.cpython-311-x86_64-linux-gnu.so")[0].name == "_C.abi3.so"
    setup_py = (ROOT / "setup.py").read_text()
    assert "stale_extensions" in setup_py and "self.inplace" in setup_py


def test_the_extension_uses_no_cpp_symbol_of_libtorch():
    """The built kamim_fast._C (abi3) needs no C++ symbol of libtorch (at::, c10::, torch::): only the stable C shim
    (aoti_torch_*, torch_*), so a new torch does not break it."""
    import shutil

    kind, where = _ext.loaded()
    if kind != "prebuilt":
        pytest.skip(f"kamim_fast._C is not installed here ({kind})")
    assert Path(where).name == "_C.abi3.so", where  # Python's limited API: one build for every CPython >= 3.10
    if shutil.which("nm") is None:
        pytest.skip("no nm to read the symbol table")
    out = subprocess.run(["nm", "-D", "--undefined-only", where], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    symbols = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    cpp = [s for s in symbols if re.match(r"_ZN?K?(2at|3c10|5torch|6caffe2)", s)]
    assert not cpp, cpp[:20]
    assert any(s.startswith("torch_library_impl") or s.startswith("aoti_torch_library_init_impl") for s in symbols)


def test_native_schemas_are_the_public_ones_renamed():
    ok, reason = _ext.status()
    if not ok:
        pytest.skip(reason)
    implemented = _ext.implemented_ops()
    assert set(_ext.INTERNAL_SCHEMAS) <= set(implemented)
    for name in implemented:
        native = str(getattr(torch.ops.kamim_fast_cpp, name).default._schema)
        if name in _ext.INTERNAL_SCHEMAS:
            assert native == "kamim_fast_cpp::" + _ext.INTERNAL_SCHEMAS[name]
        else:
            public = str(getattr(torch.ops.kamim_fast, name).default._schema)
            assert native == public.replace("kamim_fast::", "kamim_fast_cpp::", 1), name
    assert _ext.define_schemas() == []  # idempotent: every op has its schema
    with pytest.raises(RuntimeError, match="no public op kamim_fast::no_such_op"):
        _ext.native_schema("no_such_op")
