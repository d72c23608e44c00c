"""The conformance suite, driven by the op registry: every op x its sample inputs (its module's ``samples``) x every
implementation the registry lists for the device, against the op's PyTorch reference; the public op routed
to that implementation by KAMIM_FAST_BACKEND; opcheck (schema, fake kernel, autograd registration); and
torch.compile(fullgraph=True) with no graph break. A backend gets this coverage as soon as its table row
exists. The outside oracles (OpenCV, the published code, MAE) stay in the per-op test files."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import DEVICES, runnable
from guarded import guarded
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


def _counting(monkeypatch, name: str) -> dict[str, int]:
    """Counts, per backend, the calls of op ``name``'s implementations through the registry."""
    calls = {b: 0 for b in _backend.TABLE[name].impls}
    entry = _backend.TABLE[name]

    def counted(backend, kernel):
        def run(*args):
            calls[backend] += 1
            return kernel(*args)
        return run

    impls = {b: dataclasses.replace(impl, kernel=counted(b, impl.kernel)) for b, impl in entry.impls.items()}
    monkeypatch.setitem(_backend.TABLE, name, dataclasses.replace(entry, impls=impls))
    return calls


@pytest.mark.parametrize("name, backend, device", CASES, ids=[f"{n}-{b}-{d}" for n, b, d in CASES])
def test_implementation_equals_reference(name, backend, device, rng, monkeypatch):
    """Each implementation equals the reference on every sample, and KAMIM_FAST_BACKEND routes the public op to
    that implementation and to no other (their values are equal by design: only the count can tell)."""
    entry = _backend.TABLE[name]
    for args in sample_inputs(name, device, rng):
        want = entry.impls["torch"].kernel(*args)
        got = entry.impls[backend].kernel(*args)
        _assert_conforms(name, got, want)
        with monkeypatch.context() as m:
            calls = _counting(m, name)
            m.setenv(_backend.ENV_VAR, backend)  # the public op reaches that implementation
            routed = getattr(torch.ops.kamim_fast, name)(*args)
        assert calls == {b: int(b == backend) for b in calls}, (name, backend, calls)
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


# --- writes outside the outputs ----------------------------------------------------------------------------------

GUARDED = [(name, backend) for name, entry in _backend.TABLE.items() for backend, impl in entry.impls.items()
           if "cpu" in impl.devices and runnable(backend, "cpu")]


@pytest.mark.parametrize("name, backend", GUARDED, ids=[f"{n}-{b}-cpu" for n, b in GUARDED])
def test_writes_stay_inside_every_output(name, backend, rng, monkeypatch):
    """Every implementation that runs on CPU tensors (Triton through its interpreter, the C++ kernels, the PyTorch
    reference), on every sample: each tensor allocated while it runs (its outputs, its scratch) lies between
    two guard bands of sentinel bytes, and no band changes (tests/guarded.py). The interpreter runs the
    programs one after another, so a block that writes past its end is overwritten by the next one with the
    right value: only the bands see it (on a GPU it is a race). The outputs start filled with 0xFF, so an
    element left unwritten shows too: each output equals the reference computed outside the guard."""
    entry = _backend.TABLE[name]
    for args in sample_inputs(name, "cpu", rng):
        want = entry.impls["torch"].kernel(*args)
        with guarded() as guard:
            got = entry.impls[backend].kernel(*args)
            guard.check()  # the outputs are alive: their bands are checked here
            monkeypatch.setenv(_backend.ENV_VAR, backend)
            routed = getattr(torch.ops.kamim_fast, name)(*args)
            monkeypatch.delenv(_backend.ENV_VAR)
        assert guard.allocations >= len(_flat(got)), (name, backend, guard.allocations)
        _assert_conforms(name, got, want)
        _assert_conforms(name, routed, want)


def _empty_batch(args: tuple) -> tuple:
    """A sample with B = 0: every tensor of two or more dimensions whose first is the batch cut to none of it."""
    B = next(a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2)
    return tuple(a[:0] if isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[0] == B else a for a in args)


@pytest.mark.parametrize("name, backend", GUARDED, ids=[f"{n}-{b}-cpu" for n, b in GUARDED])
def test_an_empty_batch_writes_nothing(name, backend, rng):
    """B = 0 through every implementation that runs on CPU tensors, on every sample cut to an empty batch: the
    reference's shapes and values, and not one byte written (every output is an empty allocation between
    guard bands)."""
    entry = _backend.TABLE[name]
    for args in sample_inputs(name, "cpu", rng):
        args = _empty_batch(args)
        want = entry.impls["torch"].kernel(*args)
        with guarded():
            got = entry.impls[backend].kernel(*args)
        _assert_conforms(name, got, want)
