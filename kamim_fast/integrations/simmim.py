"""Microsoft SimMIM's model class (``models/simmim.py``) with kamim_fast's loss.

SimMIM's model is an encoder that takes ``(x, mask)`` and returns a (B, D, H/s, W/s) feature map, a
decoder made of a 1x1 convolution to ``s*s*3`` channels and a ``PixelShuffle(s)`` (s = the encoder
stride), and a masked L1 loss in ``forward(x, mask)``. :class:`SimMIM` keeps that shape and the
attribute names (``encoder``, ``decoder``, ``encoder_stride``, ``in_chans``, ``patch_size``), so a
SimMIM training script, its checkpoints and its optimiser set-up take it unchanged; only the loss is
:func:`kamim_fast.weighted_mim_loss`: KAMIM's published preset (``weights="fast"``, the default) or
plain SimMIM (``weights=None``, equal to SimMIM's own loss: the same formula, tested to 1e-6 relative).
The weight options default to :data:`kamim_fast.KAMIM_DEFAULTS`, as at every entry point; pass
``**KAMIM_PAPER`` for the published configuration.

:meth:`SimMIM.from_model` wraps an existing SimMIM instance (sharing its modules); the README shows the
two-line edit of SimMIM's own ``models/simmim.py`` instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_int, check_tensor
from ..mim_loss import WeightedMIMLoss
from ..weights import KAMIM_PAPER  # noqa: F401  (the docstrings' examples use it)


def _attr_int(name: str, module: nn.Module, value: int | None, attr: str) -> int:
    if value is None:
        value = getattr(module, attr, None)
        if value is None:
            raise TypeError(f"{name} must be given: the encoder ({type(module).__name__}) has no attribute {attr!r}")
        if isinstance(value, (tuple, list)):  # timm-style (p, p)
            if len(set(value)) != 1:
                raise ValueError(f"encoder.{attr} must be square, got {value!r}")
            value = value[0]
    return check_int(name, value, 1, 1 << 16)


class SimMIM(nn.Module):
    """SimMIM (encoder, 1x1 conv + PixelShuffle decoder) whose loss is kamim_fast's weighted masked L1.

    Args:
        encoder: a module with ``forward(x, mask) -> (B, D, H/s, W/s)`` and ``num_features`` = D, as
            SimMIM's ``VisionTransformerForSimMIM`` / ``SwinTransformerForSimMIM`` (or
            :class:`kamim_fast.integrations.timm.TimmViTForSimMIM`).
        encoder_stride: s, the total downsampling of the encoder (ViT: its patch size; Swin: 32).
        weights: ``"fast"`` for KAMIM's keypoint weights (default) or None for SimMIM's loss.
        in_chans: image channels; default ``encoder.in_chans``.
        patch_size: the mask's patch size in pixels; default ``encoder.patch_size``.
        **loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss` (defaults
            :data:`kamim_fast.KAMIM_DEFAULTS`; ``**KAMIM_PAPER`` for the published configuration).

    Shape:
        - x: (B, in_chans, H, W), the normalised image (also the target).
        - mask: (B, H/patch_size, W/patch_size), 1 where masked (SimMIM's mask generator).
        - output: a float32 scalar loss.

    Example:
        >>> from kamim_fast.integrations.timm import TimmViTForSimMIM
        >>> enc = TimmViTForSimMIM.create(img_size=32, patch_size=16, embed_dim=24, depth=1, num_heads=2)
        >>> model = SimMIM(enc, encoder_stride=16, **KAMIM_PAPER)  # KAMIM's published loss
        >>> loss = model(torch.randn(2, 3, 32, 32), torch.ones(2, 2, 2, dtype=torch.bool))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """

    def __init__(
        self,
        encoder: nn.Module,
        encoder_stride: int,
        *,
        weights: str | None = "fast",
        in_chans: int | None = None,
        patch_size: int | None = None,
        **loss_options,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        stride = check_int("encoder_stride", encoder_stride, 1, 1 << 16)
        num_features = getattr(encoder, "num_features", None)
        if num_features is None:
            raise TypeError(f"encoder must have num_features (its output channels), {type(encoder).__name__} has none")
        self.encoder = encoder
        self.encoder_stride = stride
        self.in_chans = _attr_int("in_chans", encoder, in_chans, "in_chans")
        self.patch_size = _attr_int("patch_size", encoder, patch_size, "patch_size")
        self.decoder = nn.Sequential(
            nn.Conv2d(num_features, stride**2 * self.in_chans, kernel_size=1),
            nn.PixelShuffle(stride),
        )
        self.criterion = _criterion(weights, loss_options)

    @classmethod
    def from_model(cls, model: nn.Module, *, weights: str | None = "fast", **loss_options) -> SimMIM:
        """Wrap an existing SimMIM model (Microsoft's class or any with the same attributes).

        The encoder and decoder modules are shared, not copied: the wrapper trains the same parameters,
        and ``wrapper.state_dict()`` has the original's keys (plus nothing: the loss has no state).

        Args:
            model: a module with ``encoder``, ``decoder``, ``encoder_stride``, ``in_chans`` and ``patch_size``.
            weights: ``"fast"`` (KAMIM, default) or None (SimMIM).
            **loss_options: as in :class:`SimMIM`.

        Returns:
            A :class:`SimMIM` computing the same reconstruction with kamim_fast's loss.
        """
        missing = [a for a in ("encoder", "decoder", "encoder_stride", "in_chans", "patch_size") if not hasattr(model, a)]
        if not isinstance(model, nn.Module) or missing:
            raise TypeError(f"model must be a SimMIM model (an nn.Module with encoder, decoder, encoder_stride, "
                            f"in_chans, patch_size), got {type(model).__name__} without {missing}")
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.encoder_stride = check_int("model.encoder_stride", model.encoder_stride, 1, 1 << 16)
        self.in_chans = check_int("model.in_chans", model.in_chans, 1, 1 << 16)
        self.patch_size = check_int("model.patch_size", model.patch_size, 1, 1 << 16)
        self.criterion = _criterion(weights, loss_options)
        return self

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``decoder(encoder(x, mask))``, (B, in_chans, H, W)."""
        return self.decoder(self.encoder(x, mask))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndims=(4,), shape_doc="(B, C, H, W)")
        check_tensor("mask", mask, ndims=(3,), shape_doc="(B, H/patch_size, W/patch_size)")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"x must have in_chans={self.in_chans} channels, got shape {tuple(x.shape)}")
        if mask.shape[0] != x.shape[0] or mask.shape[1] * self.patch_size != x.shape[2] or \
                mask.shape[2] * self.patch_size != x.shape[3]:
            raise ValueError(f"mask must have shape (B, H/{self.patch_size}, W/{self.patch_size}) = "
                             f"{(x.shape[0], x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)} for x of "
                             f"shape {tuple(x.shape)}, got {tuple(mask.shape)}")
        return self.criterion(self.reconstruct(x, mask), x, mask)


def _criterion(weights: str | None, loss_options: dict) -> WeightedMIMLoss:
    if weights is not None:
        check_choice("weights", weights, ("fast",))
    return WeightedMIMLoss(weights, **loss_options)
