"""CPU-sized benchmark cases under pytest-benchmark: ``pytest benchmarks/ --benchmark-only``.

The same cases as ``python -m benchmarks`` (built by the ``cases_*`` modules for the CPU), one test per
implementation, grouped per case so pytest-benchmark's table compares them. No timing is asserted.
"""

from __future__ import annotations

import functools
import importlib

import pytest

from .__main__ import GROUPS

MODULES = {group: importlib.import_module(f"{__package__}.cases_{group}") for group in GROUPS}


@functools.cache
def cpu_cases(group: str):
    return MODULES[group].cases("cpu", quick=True)


PARAMS = [(group, i, impl.name) for group in MODULES for i, case in enumerate(cpu_cases(group)) for impl in case.impls]


@pytest.mark.parametrize("group, index, impl", PARAMS, ids=[f"{g}[{cpu_cases(g)[i].name}]-{n}" for g, i, n in PARAMS])
def test_cpu_case(group, index, impl, benchmark):
    case = cpu_cases(group)[index]
    benchmark.group = f"{group} {case.name}"
    step = next(x.step for x in case.impls if x.name == impl)
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
