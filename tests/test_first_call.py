"""The first call in a fresh process stays off ``torch._dynamo`` (about 1 s to import, paid again in every
DataLoader worker that does not persist), and the ops stay what ``torch.compile`` needs once it is imported.

``torch.library.custom_op`` wraps each registered kernel in ``torch._disable_dynamo``, which imports dynamo at the
kernel's first call; ``kamim_fast._backend`` calls the kernel without that wrapper until dynamo is imported by
someone else (``torch.compile``), and through it from then on. The assertions are on ``sys.modules``, in child
processes, not on times (the times are in ``benchmarks/first_call.py``). The compiled ops themselves (fullgraph,
fake tensors, autocast, opcheck) are tested in test_conformance.py, test_ops.py, test_mim_loss.py and test_amt.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# Every op of the registry on its conformance samples, through the public API and through torch.ops, with the
# loss's backward; then, after `import torch._dynamo`, the same kernels again, now through torch's wrapper.
CHILD = r"""
import sys
import numpy as np, torch
import kamim_fast
from kamim_fast import _backend

x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
kamim_fast.patch_weights(x)
pred = torch.randn(2, 3, 64, 64, requires_grad=True)
mask = (torch.rand(2, 2, 2) < 0.6).float()
kamim_fast.weighted_mim_loss(pred, (x.float() / 255 - 0.45) / 0.225, mask, weights="fast").backward()
assert "torch._dynamo" not in sys.modules, "the first public calls imported torch._dynamo"

from samples import sample_inputs
rng = np.random.default_rng(1)
for name in _backend.TABLE:
    for args in sample_inputs(name, "cpu", rng):
        getattr(torch.ops.kamim_fast, name)(*args)
    assert "torch._dynamo" not in sys.modules, f"kamim_fast::{name} imported torch._dynamo"
print("ops", len(_backend.TABLE))

import torch._dynamo
for name in _backend.TABLE:
    op = getattr(torch.ops.kamim_fast, name)
    for args in sample_inputs(name, "cpu", rng):
        op(*args)
    # torch's wrapper ran: it caches dynamo's disabled kernel on the function it wraps
    import inspect
    from torch._library.custom_ops import OPDEFS
    plain = inspect.unwrap(OPDEFS[f"kamim_fast::{name}"]._backend_fns["cpu"])
    assert getattr(plain, "__dynamo_disable", None) is not None, name
print("guarded after import")
"""


def _child(backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAMIM_FAST_BACKEND": backend, "PYTHONPATH": str(TESTS)}
    if backend == "triton":
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600, env=env,
                          cwd=TESTS)


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
def test_the_eager_ops_never_import_dynamo(backend):
    out = _child(backend)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "guarded after import" in out.stdout


def test_importing_kamim_fast_does_not_import_dynamo():
    code = "import sys, kamim_fast, kamim_fast.integrations.simmim; assert 'torch._dynamo' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
