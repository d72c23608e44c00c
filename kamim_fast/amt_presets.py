"""AMT's option defaults and presets (REFERENCE.md section 5): the one place where they live.

:data:`AMT_DEFAULTS` and :data:`AMT_PAPER` are read-only mappings of AMT's options, like
:data:`kamim_fast.KAMIM_DEFAULTS` and :data:`kamim_fast.KAMIM_PAPER` for KAMIM. Each AMT entry point takes
the options it uses by name and accepts the whole preset with ``**``:

- ``mask_ratio``, ``throw_ratio``: the shares of masked and thrown patches (:func:`kamim_fast.amt_masking`
  and the models built on it);
- ``map_crop``: how the attention map follows the image's random resized crop and flip
  (:func:`kamim_fast.integrations.amt_data.crop_patch_weights`, ``AttentionBank.patch_weights``);
- ``warmup_epochs``, ``refresh_interval``, ``refresh_on_resume``: when the attention bank is refreshed and
  AMT switched on (:class:`kamim_fast.integrations.amt_data.AMTSchedule`).
"""

from __future__ import annotations

from types import MappingProxyType

MASK_RATIO = 0.45  # published mae-AMT: --mask_ratio 0.45 --throw_ratio 0.4 (the SimMIM variant: 0.44 and 0.26)
THROW_RATIO = 0.4
WARMUP_EPOCHS = 40  # the first refresh: after epoch 40 (0-based), AMT from epoch 41
REFRESH_INTERVAL = 40  # published --loc_interval
MAP_CROPS = ("box", "paper")

AMT_DEFAULTS = MappingProxyType(dict(
    mask_ratio=MASK_RATIO, throw_ratio=THROW_RATIO, map_crop="box", warmup_epochs=WARMUP_EPOCHS,
    refresh_interval=REFRESH_INTERVAL, refresh_on_resume=False,
))
"""The defaults of AMT's options: the published values (mask 0.45, throw 0.4, a refresh of the attention
bank after epoch 40 and every 40 epochs after it, never after the last epoch), with the published quirks
corrected:

- ``map_crop="box"``: the attention map is cropped where the image is cropped (the same box, resize and
  flip), so the masking follows the attention of what the crop shows.
- ``refresh_on_resume=False``: the bank is part of the checkpoint (``AttentionBank.state_dict``), so a
  resumed run has the bank an uninterrupted run would have had.

A read-only mapping; ``{**AMT_DEFAULTS, ...}`` makes a dict."""

AMT_PAPER: dict = {**AMT_DEFAULTS, "map_crop": "paper", "refresh_on_resume": True}
"""The published configuration (github.com/guijiejie/AMT, ``mae-AMT``), its quirks included:

- ``map_crop="paper"``: ``maskRandomResizedCrop`` slices the 14x14 map as
  ``mask[i//H : (i+h)//H + 2, j//W : (j+w)//W + 2]`` for the crop box (i, j, h, w) of the H x W image.
  Since i < H and j < W this is always the top-left 2x2, 2x3, 3x2 or 3x3 cells, wherever the crop is; they
  are resized to the crop's output size and clamped to [0, 1]. The masking then follows the attention of
  the image's top-left corner, not of the crop.
- ``refresh_on_resume=True``: the published trainer does not save the bank and recomputes it with the
  resumed model whenever it resumes, so a resumed run's bank differs from an uninterrupted run's.

It differs from :data:`AMT_DEFAULTS` in those two options."""


def check_amt_options(where: str, options: dict) -> None:
    """Raises TypeError for a keyword that is not one of AMT's options (:data:`AMT_DEFAULTS`): an entry point
    takes a whole preset with ``**`` and ignores the options it does not use, but no unknown name."""
    unknown = sorted(set(options) - set(AMT_DEFAULTS))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; AMT's options "
                        f"are {', '.join(AMT_DEFAULTS)}")
