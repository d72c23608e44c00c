"""Hugging Face ``ViTForMaskedImageModeling`` / ``SwinForMaskedImageModeling`` with kamim_fast's loss.

Both models return ``reconstruction`` (B, C, H, W) and compute SimMIM's masked L1 from ``pixel_values``
and ``bool_masked_pos`` (B, N). :func:`hf_mim_loss` computes kamim_fast's loss from the same three
tensors; :class:`HFMaskedImageModeling` wraps a model so that ``outputs.loss`` is that loss, which is
what ``transformers.Trainer`` and hand-written loops read.

Normalisation: KAMIM's weights recover the uint8 gray image from ``pixel_values``, so the loss must know
the image processor's ``image_mean``/``image_std``. ``ViTImageProcessor`` defaults to 0.5/0.5, not
ImageNet's statistics (the loss's default): pass ``mean=processor.image_mean, std=processor.image_std``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from ..loss import KAMIM_PAPER, WeightedMIMLoss, weighted_mim_loss
from .simmim import _criterion


def hf_mim_loss(
    reconstruction: torch.Tensor,
    pixel_values: torch.Tensor,
    bool_masked_pos: torch.Tensor,
    weights: str | None = "fast",
    *,
    patch_size: int | None = None,
    **loss_options,
) -> torch.Tensor:
    """kamim_fast's loss from a Hugging Face masked-image-modelling model's tensors.

    With ``weights=None`` this is the model's own ``loss``; with ``"fast"`` it is KAMIM's published loss
    (:data:`kamim_fast.KAMIM_PAPER`, updated by ``loss_options``).

    Args:
        reconstruction: ``outputs.reconstruction``.
        pixel_values: the model's input, normalised (the target).
        bool_masked_pos: the model's (B, N) mask, True where masked, row-major patches.
        weights: ``"fast"`` (KAMIM, default) or None (SimMIM, as the model's own loss).
        patch_size: ``model.config.patch_size``; inferred from N when omitted (square patches).
        **loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss` (``mean``, ``std``, ...).

    Returns:
        A float32 scalar.

    Shape:
        - reconstruction, pixel_values: (B, C, H, W).
        - bool_masked_pos: (B, N), N = (H/p) * (W/p).

    Example:
        >>> rec, pix = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
        >>> pos = torch.tensor([[True, False, False, False]])
        >>> float(hf_mim_loss(rec, pix, pos, None, patch_size=16))
        1.0
    """
    if weights is not None:
        loss_options = {**KAMIM_PAPER, **loss_options}
    return weighted_mim_loss(reconstruction, pixel_values, bool_masked_pos, weights, patch_size=patch_size,
                             **loss_options)


class HFMaskedImageModeling(nn.Module):
    """A Hugging Face masked-image-modelling model whose ``outputs.loss`` is kamim_fast's loss.

    The model runs unchanged (it still computes its own loss, a cheap extra L1 pass, since Hugging Face
    computes it whenever ``bool_masked_pos`` is given); the returned output's ``loss`` is replaced by
    :func:`hf_mim_loss` on its ``reconstruction``. Parameters, ``state_dict`` and ``save_pretrained``
    stay the wrapped model's (``wrapper.model``).

    Args:
        model: ``ViTForMaskedImageModeling``, ``SwinForMaskedImageModeling`` or any model with a
            ``config.patch_size`` that returns ``reconstruction``.
        weights: ``"fast"`` (KAMIM's published preset, default) or None (the model's own loss).
        **loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss`; pass the image
            processor's ``mean``/``std``.

    Example:
        >>> import transformers
        >>> cfg = transformers.ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=16,
        ...                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        >>> model = HFMaskedImageModeling(transformers.ViTForMaskedImageModeling(cfg), mean=0.5, std=0.5)
        >>> out = model(torch.randn(2, 3, 32, 32), torch.rand(2, 16) < 0.5)
        >>> out.loss.shape, out.reconstruction.shape
        (torch.Size([]), torch.Size([2, 3, 32, 32]))
    """

    def __init__(self, model: nn.Module, *, weights: str | None = "fast", **loss_options) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if not isinstance(model, nn.Module) or getattr(config, "patch_size", None) is None:
            raise TypeError(f"model must be a Hugging Face model with config.patch_size (ViTForMaskedImageModeling, "
                            f"SwinForMaskedImageModeling), got {type(model).__name__}")
        self.model = model
        self.patch_size = check_int("model.config.patch_size", config.patch_size, 1, 1 << 16)
        self.criterion: WeightedMIMLoss = _criterion(weights, {"patch_size": self.patch_size, **loss_options})

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor, **kwargs):
        if not isinstance(bool_masked_pos, torch.Tensor):
            raise TypeError(f"bool_masked_pos must be a (B, N) torch.Tensor, got {type(bool_masked_pos).__name__}")
        outputs = self.model(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos, **kwargs)
        outputs["loss"] = self.criterion(outputs.reconstruction, pixel_values, bool_masked_pos)
        return outputs
