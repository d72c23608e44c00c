"""The command line's own options: --version, info (kamim_fast.backend_info), and usage on errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kamim_fast
from kamim_fast.cli import main


def test_version_prints_the_distributions_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kamim-fast {kamim_fast.__version__}"


def test_version_from_the_installed_command():
    out = subprocess.run([sys.executable, "-m", "kamim_fast", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"kamim-fast {kamim_fast.__version__}"


def test_info_prints_the_backend_report(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == str(kamim_fast.backend_info()).strip()
    assert f"kamim_fast {kamim_fast.__version__}" in out and "fast_corners" in out


def test_a_missing_subcommand_prints_the_top_level_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kamim-fast [-h] [--version]") and "required: command" in err


@pytest.mark.parametrize("message, want", [
    ("weight_patch_size must divide 32, got 5", "--weight-patch-size must divide 32, got 5"),
    ("threshold must be in [0, 255], got 300", "--threshold must be in [0, 255], got 300"),
    ("temperature=0 is not positive", "--temperature=0 is not positive"),
    ("the FAST threshold of OpenCV", "the FAST threshold of OpenCV"),  # a plain word is not an argument
    ("max_side and mask_seed", "--max-side and --mask-seed"),
])
def test_errors_name_the_flags(message, want, capsys):
    from kamim_fast import cli

    parser = __import__("argparse").ArgumentParser(prog="kamim-fast show")
    for flag in ("--threshold", "--weight-patch-size", "--temperature", "--max-side", "--mask-seed"):
        parser.add_argument(flag)
    with pytest.raises(SystemExit):
        cli._cli_error(parser, message)
    assert capsys.readouterr().err.splitlines()[-1] == f"kamim-fast show: error: {want}"
