"""The version of kamim_fast: the installed distribution's (pyproject.toml is its one source)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path


def _version() -> str:
    """The installed distribution's version; from a checkout that is not installed, pyproject.toml's own line."""
    try:
        return importlib.metadata.version("kamim-fast")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
