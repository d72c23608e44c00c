"""The conformance suite, driven by the op registry: every op x its sample inputs (its module's ``samples``) x every
implementation the registry lists for the device, against the op's PyTorch reference; the public op routed
to that implementation by KAMIM_FAST_BACKEND; opcheck (schema, fake kernel, autograd registration); and
torch.compile(fullgraph=True) with no graph break. A backend gets this coverage as soon as its table row
exists. The outside oracles (OpenCV, the published code, MAE) stay in the per-op test files."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, runnable
from samples import sample_inputs

import kamim_fast  # noqa: F401  (registers the ops)
from kamim_fast import _backend
from kamim_fast.ops._common import REDUCTION, ROUNDING

CASES = [(name, backend, device) for name, entry in _backend.TABLE.items() for backend, impl in entry.impls.items()
         for device in DEVICES if device in impl.devices and backend != "torch" and runnable(backend, device)]
OPS = [(name, device) for name in _backend.TABLE for device in DEVICES]

# Each op's module says how its outputs compare with the reference (OpEntry.tolerances: bit for bit unless
# "reduction", a float sum in another order, held to a bound relative to the reference's own float32 rounding,
# or "rounding", the same factors multiplied in another order: a few ulps) and which inputs its autograd
# differentiates (OpEntry.differentiable: opcheck checks the autograd registration with them requiring grad).


def _flat(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _assert_conforms(name, got, want):
    got, want = _flat(got), _flat(want)
    assert len(got) == len(want), name
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, (name, i, g.shape, w.shape, g.dtype, w.dtype)
        tolerance = _backend.TABLE[name].tolerances.get(i)
        if tolerance == REDUCTION:
            torch.testing.assert_close(g, w, rtol=2e-6 * max(1, w.numel() ** 0.5), atol=1e-6, msg=lambda m: f"{name}[{i}]: {m}")
        elif tolerance == ROUNDING and g.is_floating_point() and g.numel():
            tol = torch.finfo(g.dtype).eps * 4
            torch.testing.assert_close(g, w, rtol=tol, atol=tol * float(w.abs().max()), msg=lambda m: f"{name}[{i}]: {m}")
        else:
            assert torch.equal(g.cpu(), w.cpu()), (name, i, (g.cpu().float() - w.cpu().float()).abs().max())


@pytest.mark.parametrize("name, backend, device", CASES, ids=[f"{n}-{b}-{d}" for n, b, d in CASES])
def test_implementation_equals_reference(name, backend, device, rng, monkeypatch):
    entry = _backend.TABLE[name]
    for args in sample_inputs(name, device, rng):
        want = entry.impls["torch"].kernel(*args)
        got = entry.impls[backend].kernel(*args)
        _assert_conforms(name, got, want)
        monkeypatch.setenv(_backend.ENV_VAR, backend)  # the public op reaches that implementation
        routed = getattr(torch.ops.kamim_fast, name)(*args)
        monkeypatch.delenv(_backend.ENV_VAR)
        _assert_conforms(name, routed, got)


@pytest.mark.parametrize("name, device", OPS, ids=[f"{n}-{d}" for n, d in OPS])
def test_opcheck(name, device, rng, monkeypatch):
    """Schema, fake kernel, autograd registration and dispatch, on every sample and every backend the device runs."""
    op = getattr(torch.ops.kamim_fast, name).default
    backends = ["torch"] + [b for n, b, d in CASES if n == name and d == device]
    for backend in backends:
        monkeypatch.setenv(_backend.ENV_VAR, backend)
        for args in sample_inputs(name, device, rng):
            args = tuple(a.detach().requires_grad_() if i in _backend.TABLE[name].differentiable else a
                         for i, a in enumerate(args))
            torch.library.opcheck(op, args)


@pytest.mark.parametrize("name, device", OPS, ids=[f"{n}-{d}" for n, d in OPS])
def test_compile_fullgraph(name, device, rng, monkeypatch):
    """torch.compile(fullgraph=True) of the op: one opaque node, values equal eager, on every backend."""
    op = getattr(torch.ops.kamim_fast, name)
    args = sample_inputs(name, device, rng)[0]
    backends = ["torch"] + [b for n, b, d in CASES if n == name and d == device]
    for backend in backends:
        monkeypatch.setenv(_backend.ENV_VAR, backend)
        torch._dynamo.reset()
        compiled = torch.compile(lambda *a: op(*a), fullgraph=True, backend="aot_eager")
        _assert_conforms(name, compiled(*args), op(*args))
