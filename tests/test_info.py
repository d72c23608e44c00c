"""kamim_fast.backend_info(): what runs where, with the versions; right after `import kamim_fast`."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

import kamim_fast
from kamim_fast import _backend, _ext


def test_it_works_right_after_import_in_a_fresh_process():
    code = ("import json, kamim_fast; i = kamim_fast.backend_info(); print(i); "
            "print(json.dumps({'ops': i.ops, 'extension': i.extension, 'versions': i.versions}))")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "KAMIM_FAST_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report["ops"]) == set(_backend.TABLE)
    assert report["versions"]["kamim_fast"] == kamim_fast.__version__
    assert "Triton interpreter: off" in out.stdout
    if report["extension"] != "reference":  # the native kernels serve CPU tensors, as the table's auto column says
        assert all(where["cpu"] == _backend.TABLE[op].auto["cpu"] for op, where in report["ops"].items())


def test_versions_are_the_installed_ones():
    v = kamim_fast.backend_info().versions
    assert v["kamim_fast"] == kamim_fast.__version__ == importlib.metadata.version("kamim-fast")
    assert v["torch"] == torch.__version__ and v["cuda"] == torch.version.cuda
    assert v["python"] == platform.python_version()
    assert v["triton"] == importlib.metadata.version("triton")
    assert v["numpy"] == importlib.metadata.version("numpy")


def test_the_extension_is_the_loaders():
    info = kamim_fast.backend_info()
    assert (info.extension, info.extension_detail) == _ext.loaded()
    assert info.extension_cuda == (info.extension != "reference" and _ext.has_cuda())


@pytest.mark.parametrize("backend", ["auto", "torch", "cpp", "triton"])
def test_each_op_reports_what_resolve_runs(backend, monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", backend)
    info = kamim_fast.backend_info()
    assert info.backend == backend
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert set(info.ops) == set(_backend.TABLE)
    for op, where in info.ops.items():
        assert list(where) == devices
        for device in devices:
            try:
                want = _backend.resolve(op, device).backend
            except RuntimeError as exc:
                want = f"unavailable: {exc}"
            assert where[device] == want, (op, device)
    if backend == "torch":
        assert all(w["cpu"] == "torch" for w in info.ops.values())
    if backend == "triton" and _backend.interpreter_active():
        assert info.ops["fast_corners"]["cpu"] == "triton" and info.ops["amt_masking"]["cpu"] == "cpp"


def test_a_backend_that_cannot_run_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("KAMIM_FAST_BACKEND", "bogus")
    info = kamim_fast.backend_info()
    assert info.backend == "bogus"
    assert all(w["cpu"].startswith("unavailable: KAMIM_FAST_BACKEND must be one of") for w in info.ops.values())
    assert "unavailable" in str(info)


def test_the_report_names_every_op_and_version():
    text = str(kamim_fast.backend_info())
    assert text.startswith(f"kamim_fast {kamim_fast.__version__}\n")
    assert f"torch {torch.__version__}" in text and f"python {platform.python_version()}" in text
    for op in _backend.TABLE:
        assert f"\n{op} " in text
