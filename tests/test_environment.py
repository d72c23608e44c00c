"""The environment the suite runs in is the one the repository says.

- ``make test`` installs the exact versions of ``constraints.txt`` (``make lock`` writes it from a passing
  ``.venv``): every pinned distribution is installed at its pinned version.
- ``make test-floor`` installs ``constraints-floor.txt``, the lowest torch and Triton ``pyproject.toml``
  admits; the two files must say the same floors.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT = os.environ.get("KAMIM_FAST_ENVIRONMENT")  # set by the Makefile: locked, latest or floor


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is no exact pin"
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.skipif(ENVIRONMENT != "locked", reason="runs under make test (the locked environment)")
def test_make_test_installs_the_locked_versions():
    wanted = pins(ROOT / "constraints.txt")
    assert {"torch", "triton", "transformers", "kernels"} <= set(wanted)
    wrong = {name: (version, installed(name)) for name, version in wanted.items() if installed(name) != version}
    assert not wrong, f"installed versions differ from constraints.txt (pinned, installed): {wrong}"


@pytest.mark.skipif(ENVIRONMENT != "floor", reason="runs under make test-floor")
def test_make_test_floor_installs_the_floors():
    for name, version in pins(ROOT / "constraints-floor.txt").items():
        assert installed(name) == version, (name, version, installed(name))


def test_the_floors_are_pyprojects_lower_bounds():
    text = (ROOT / "pyproject.toml").read_text()
    floors = dict(re.findall(r'"(torch|triton)>=([\d.]+)', text))
    floor_pins = pins(ROOT / "constraints-floor.txt")
    for name, bound in floors.items():
        assert floor_pins[name].split(".")[:2] == bound.split(".")[:2], (name, bound, floor_pins[name])
    assert set(floors) == {"torch", "triton"}, floors
