"""No import name of the checkout shadows an installed distribution.

Python puts the folder of the script it runs, or the current folder (``python -m``, ``python -c``), first on
``sys.path``; pytest puts ``tests/`` there (its files are no package). A regular package (a folder with an
``__init__.py``) or a module found there wins over the installed distribution of the same name. A top-level
``kernels/`` package once shadowed Hugging Face's ``kernels``, which ``import transformers`` imports, so every
test and script that touched transformers from the checkout's root failed. The Triton kernels are
``kamim_fast/kernels/`` for that reason, and these tests keep every other name clear too.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders that Python or pytest puts on sys.path when something runs from the checkout: the root (python -m,
# python -c, make), tests/ (pytest's rootdir-less test files), scripts/ and benchmarks/ (their scripts run as
# files: the script's folder comes first), docs/ (tests read its examples).
SEARCHED = ("", "tests", "scripts", "benchmarks", "docs")


def import_names(folder: Path) -> set[str]:
    """The top-level names a folder on sys.path provides: regular packages and modules. A folder without
    ``__init__.py`` is a namespace portion, which never wins over an installed package or module."""
    names = set()
    for path in folder.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file():
            names.add(path.name)
        elif path.is_file() and path.suffix in (".py", ".so", ".pyd") and path.name.isascii():
            names.add(path.name.split(".")[0])
    return names


def test_no_name_on_sys_path_is_an_installed_distributions():
    theirs = importlib.metadata.packages_distributions()
    clashes = {}
    for rel in SEARCHED:
        for name in import_names(ROOT / rel):
            owners = [d for d in theirs.get(name, ()) if d.lower().replace("_", "-") != "kamim-fast"]
            if owners:
                clashes[f"{rel or '.'}/{name}"] = owners
    assert not clashes, f"names of the checkout that shadow installed distributions: {clashes}"


def test_the_guard_sees_a_shadowing_package(tmp_path):
    """The guard above finds a regular package named like an installed distribution, and ignores a namespace
    folder (no ``__init__.py``) of the same name."""
    taken = next(iter(sorted(importlib.metadata.packages_distributions())))
    (tmp_path / taken).mkdir()
    assert taken not in import_names(tmp_path)
    (tmp_path / taken / "__init__.py").write_text("")
    assert taken in import_names(tmp_path)


def test_hugging_face_kernels_resolve_to_site_packages_from_the_root():
    """From the checkout's root, as ``python -m pytest`` and ``python -c`` run: transformers imports, and
    ``import kernels`` is Hugging Face's package (a test dependency, so this runs wherever the suite runs)."""
    dist = importlib.metadata.distribution("kernels")  # raises when the test extra's kernels is missing
    code = ("import kernels, kamim_fast.kernels as ours\n"
            "from transformers import ViTForMaskedImageModeling\n"
            "print(kernels.__file__)\nprint(ours.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs, ours = (Path(line) for line in out.stdout.split())
    assert theirs == Path(dist.locate_file("kernels/__init__.py")).resolve(), theirs
    assert ours == ROOT / "kamim_fast" / "kernels" / "__init__.py", ours
