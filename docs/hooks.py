"""MkDocs hooks (mkdocs.yml): the pages made from files outside docs/, the API reference, the figures, and
the links between them.

- ``index.md`` is README.md, ``quickstart.md`` its "Install" and "Quickstart" sections, ``contributing.md``
  CONTRIBUTING.md, ``changelog.md`` CHANGELOG.md, and ``examples.md`` examples/README.md followed by each
  script's source: one source for each text, whether read on a code host or on the site.
- ``api.md`` documents every name of ``kamim_fast.__all__`` (grouped by the module that defines it) and the
  public names of the integrations, through mkdocstrings; it is read from the source, nothing is imported.
- Links are written for the repository (README.md links ``docs/kamim.md``); each is resolved from the file
  it is written in and mapped to the page or image the site has. A link to any other file of the repository
  fails the build: the site has no copy of it (name such files as code instead).
- Before the build, ``docs/figures.py`` draws the figures into ``docs/images/`` (``KAMIM_FAST_DOCS_FIGURES=0``
  skips it and uses the committed ones).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
EXAMPLES = ROOT / "examples"
# repository file -> the page made from it
PAGES = {"README.md": "index.md", "CONTRIBUTING.md": "contributing.md", "CHANGELOG.md": "changelog.md",
         "examples/README.md": "examples.md"}
INTEGRATIONS = ("simmim", "hf", "timm", "mae", "data", "amt_bank", "amt_data")
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```$", re.S | re.M)


def _section(text: str, start: str, end: str) -> str:
    i, j = text.index(start), text.index(end)
    return text[i:j]


def _quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    return "# Quickstart\n\n" + _section(readme, "## Install\n", "## KAMIM\n")


def _examples() -> str:
    parts = [(EXAMPLES / "README.md").read_text()]
    for script in sorted(EXAMPLES.glob("*.py")):
        parts.append(f"## `{script.name}`\n\n```python\n{script.read_text()}```\n")
    return "\n".join(parts)


def _public_names() -> dict[str, list[str]]:
    """kamim_fast.__all__, grouped by the module each name is imported from (read from __init__.py's source)."""
    tree = ast.parse((ROOT / "kamim_fast" / "__init__.py").read_text())
    exported: list[str] = []
    origin: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module or ""
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            exported = list(ast.literal_eval(node.value))
    groups: dict[str, list[str]] = {}
    for name in exported:
        if name not in origin:
            raise PluginError(f"kamim_fast.__all__ names {name!r}, which kamim_fast/__init__.py does not import")
        groups.setdefault(origin[name], []).append(name)
    return groups


GROUP_TITLES = {"weights": "KAMIM's weights", "mim_loss": "The loss", "fast": "FAST", "gray": "Gray",
                "detectors": "ORB and SIFT", "amt": "AMT and MAE", "_backend": "Backends",
                "_info": "What runs where", "amt_presets": "AMT's presets"}


def _api() -> str:
    lines = ["# API reference", "",
             "Every public name of `kamim_fast` (its `__all__`) and of `kamim_fast.integrations`, from their "
             "docstrings. The examples in the docstrings run as tests.", ""]
    for module, names in _public_names().items():
        lines += [f"## {GROUP_TITLES.get(module, module)}", ""]
        for name in names:
            lines += [f"::: kamim_fast.{name}", "    options:", "      show_root_full_path: true", ""]
    for module in INTEGRATIONS:
        lines += [f"## `kamim_fast.integrations.{module}`", "", f"::: kamim_fast.integrations.{module}",
                  "    options:", "      show_root_heading: false", "      heading_level: 3", ""]
    return "\n".join(lines)


GENERATED = {"index.md": ("README.md", lambda: (ROOT / "README.md").read_text()),
             "quickstart.md": ("README.md", _quickstart),
             "contributing.md": ("CONTRIBUTING.md", lambda: (ROOT / "CONTRIBUTING.md").read_text()),
             "changelog.md": ("CHANGELOG.md", lambda: (ROOT / "CHANGELOG.md").read_text()),
             "examples.md": ("examples/README.md", _examples),
             "api.md": ("kamim_fast/__init__.py", _api)}


def on_pre_build(config, **kwargs) -> None:
    if os.environ.get("KAMIM_FAST_DOCS_FIGURES", "1") == "0":
        return
    spec = importlib.util.spec_from_file_location("kamim_fast_docs_figures", DOCS / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    figures.main([])


def on_files(files: Files, config, **kwargs) -> Files:
    for uri, (source, make) in GENERATED.items():
        if files.get_file_from_path(uri) is not None:
            raise PluginError(f"docs/{uri} must not exist: the site makes that page from {source}")
        files.append(File.generated(config, uri, content=make()))
    return files


def _source_of(page) -> str:
    """The repository path the page's text comes from."""
    uri = page.file.src_uri
    return GENERATED[uri][0] if uri in GENERATED else "docs/" + uri


def _site_target(repo_path: str) -> str | None:
    if repo_path in PAGES:
        return PAGES[repo_path]
    if repo_path.rstrip("/") == "examples":
        return "examples.md"
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    return None


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    source = _source_of(page)
    here = posixpath.dirname(source)
    page_dir = posixpath.dirname(page.file.src_uri)
    fences = [(m.start(), m.end()) for m in FENCE.finditer(markdown)]

    def rewrite(match: re.Match) -> str:
        if any(a <= match.start() < b for a, b in fences):
            return match.group(0)  # code, not a link
        label, target = match.groups()
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(here, path))
        site = _site_target(repo_path)
        if site is None or files.get_file_from_path(site) is None:
            raise PluginError(f"{source}: the link {target!r} leads to {repo_path}, which the site does not have "
                              f"(link a page of docs/, or write the path as code)")
        new = posixpath.relpath(site, page_dir or ".")
        return f"{label}({new}{'#' + anchor if anchor else ''})"

    return LINK.sub(rewrite, markdown)
