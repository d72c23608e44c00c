"""``make sanitize``'s build step: the extension's CPU sources (csrc/*.cpp) compiled with AddressSanitizer and
UndefinedBehaviorSanitizer into a copy of the package, so the tests can import it instead of the normal build.

    python tests/sanitize_build.py OUT     # writes OUT/kamim_fast (the package, its kernels, the sanitized _C)

Run it with libasan (and libstdc++) in ``LD_PRELOAD``: the JIT build loads the library it builds, and the ASan
runtime must come first. Then run pytest with ``PYTHONPATH=OUT``, ``PYTHONSAFEPATH=1`` and the same LD_PRELOAD
(the Makefile's ``sanitize`` target does all of it).
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-sanitize=vptr"]  # vptr: false alarms on types whose RTTI lives in libtorch


def _build_policy():
    """kamim_fast/_build.py, loaded by path (the package copy is not importable before the build)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_kamim_fast_build", ROOT / "kamim_fast" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(out: Path) -> int:
    from torch.utils import cpp_extension

    pkg = out / "kamim_fast"
    for old in (pkg, out / "csrc"):  # the package copy is refreshed; the ninja build folder is kept (incremental)
        if old.exists():
            shutil.rmtree(old)
    shutil.copytree(ROOT / "kamim_fast", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "csrc", out / "csrc")  # where kamim_fast/_ext.py looks for the sources
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in (ROOT / "csrc").glob("*.cpp"))
    # the build policy's flags (the torch floor, ...) but its optimisation: -O1 -g under the sanitizers
    policy = [f for f in _build_policy().compiler_flags()["cxx"] if not f.startswith(("-O", "-DNDEBUG"))]
    lib = cpp_extension.load(name="kamim_fast_sanitized", sources=sources, extra_include_paths=[str(ROOT / "csrc")],
                             extra_cflags=FLAGS + policy, extra_ldflags=["-fsanitize=address,undefined"],
                             build_directory=str(build), is_python_module=False, verbose=False)
    target = pkg / ("_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    shutil.copy2(lib, target)
    print(f"sanitized extension: {target} ({len(sources)} sources)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
