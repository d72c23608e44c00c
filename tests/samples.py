"""sample_inputs(op, device, rng): the argument tuples of every op of the registry, after pytorch/extension-cpp's
pattern. Each op's module says which inputs (``samples``, ``kamim_fast/ops/<op>.py``); this module is the source
they draw from: real photo crops (scikit-image) and adversarial patterns, small enough for Triton's
interpreter, fresh on every run. The conformance suite (test_conformance.py) runs each implementation the
registry lists on them.
"""

from __future__ import annotations

import numpy as np
import torch
from images import COLOUR_NAMES, crop, real_image, synthetic

from kamim_fast import _backend


class Source:
    """kamim_fast.ops._common.SampleSource on ``device``, drawing from ``rng``."""

    def __init__(self, device: str, rng: np.random.Generator) -> None:
        self.device, self.rng = device, rng

    def photo(self, B: int, H: int, W: int) -> torch.Tensor:
        names = self.rng.choice(COLOUR_NAMES, B)
        return torch.from_numpy(np.stack([crop(real_image(n), H, W, self.rng) for n in names])).permute(0, 3, 1, 2) \
            .contiguous()

    def gray(self, B: int, H: int, W: int) -> torch.Tensor:
        kinds = ("noise", "plateaus", "dots")
        return torch.from_numpy(np.stack([synthetic(kinds[b % 3], H, W, self.rng) for b in range(B)]))

    def to(self, *items) -> list:
        return [t.to(self.device) if isinstance(t, torch.Tensor) else t for t in items]


def sample_inputs(name: str, device: str, rng: np.random.Generator) -> list[tuple]:
    """Argument tuples for ``torch.ops.kamim_fast.<name>`` on ``device``."""
    samples = _backend.TABLE[name].samples
    if samples is None:
        raise KeyError(f"kamim_fast::{name} has no samples: add them to its module in kamim_fast/ops/")
    return samples(Source(device, rng))
