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

from .._checks import FLOAT_DTYPES, check_choice, check_int, check_tensor
from ..amt import (
    SIMMIM_AMT_MASK_RATIO,
    SIMMIM_AMT_THROW_RATIO,
    AMTMask,
    amt_cell_weights,
    amt_counts,
    amt_masking,
    scatter_patches,
)
from ..mim_loss import WeightedMIMLoss
from ..weights import KAMIM_PAPER  # noqa: F401  (the docstrings' examples use it)

MASK_CELL = 2  # SimMIM's 32 px mask cells in 16 px ViT patches


def amt_mask(
    weights: torch.Tensor,
    *,
    cell: int = MASK_CELL,
    mask_ratio: float = SIMMIM_AMT_MASK_RATIO,
    throw_ratio: float = SIMMIM_AMT_THROW_RATIO,
    rounding: str = "ceil",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> AMTMask:
    """SimMIM-AMT's masking and throwing: cells of ``cell`` x ``cell`` patches drawn by their summed attention,
    returned at patch resolution for :class:`SimMIM`.

    Per image the per-patch map is summed per cell (:func:`kamim_fast.amt_cell_weights`), the cells are ordered
    as :func:`kamim_fast.amt_masking` draws them, the first ``num_masked`` cells masked, the next ``num_thrown``
    thrown, the rest visible; every patch takes its cell's code. The counts round as SimMIM-AMT's mask
    generator does (``rounding="ceil"``: 22 masked and 13 thrown of 7 x 7 cells at 0.44 / 0.26;
    :func:`kamim_fast.amt.amt_counts`). The same for every image, so shapes are static.

    Args:
        weights: per-patch attention (B, h, w), e.g. a bank's map cropped with the image, >= 0.
        cell: the mask cell's side in patches (SimMIM: 32 px cells of 16 px patches, 2); it divides h and w.
        mask_ratio, throw_ratio: shares of cells (SimMIM-AMT: 0.44 and 0.26).
        rounding: ``"ceil"`` (SimMIM-AMT's), ``"floor"`` or ``"mae-amt"`` (see ``amt_counts``).
        noise: :func:`kamim_fast.amt_masking`'s q ~ Exp(1) per cell, (B, h * w / cell^2), for reproducible masks.
        generator: draws q instead.

    Returns:
        An :class:`kamim_fast.AMTMask` over the (B, h * w) patches: ``ids_shuffle`` lists each cell's patches
        together (in cell order), ``num_masked`` and ``num_thrown`` count patches, ``mask.reshape(B, h, w)`` is
        the published dataset's code map (1 masked, -1 thrown, 0 visible).

    Example:
        >>> m = amt_mask(torch.rand(2, 14, 14), noise=torch.ones(2, 49))
        >>> m.mask.shape, m.num_masked, m.num_thrown, m.ids_keep.shape  # 22 and 13 cells of 4 patches
        (torch.Size([2, 196]), 88, 52, torch.Size([2, 56]))
    """
    check_tensor("weights", weights, dtypes=FLOAT_DTYPES, ndims=(3,), shape_doc="(B, h, w)")
    B, h, w = weights.shape
    cell = check_int("cell", cell, 1, max(1, min(h, w)))
    cells = amt_cell_weights(weights, cell)  # checks that cell divides h and w
    hc, wc = cells.shape[1:]
    num_masked, num_thrown = amt_counts(hc * wc, mask_ratio, throw_ratio, rounding=rounding)
    mc = amt_masking(cells.reshape(B, hc * wc), noise=noise, generator=generator, num_masked=num_masked,
                     num_thrown=num_thrown)
    # patch ids of each cell (row-major within the cell), listed in the cells' order
    device = weights.device
    base = (torch.arange(hc, device=device)[:, None] * (cell * w) + torch.arange(wc, device=device) * cell).reshape(-1)
    offsets = (torch.arange(cell, device=device)[:, None] * w + torch.arange(cell, device=device)).reshape(-1)
    ids_shuffle = (base[mc.ids_shuffle].unsqueeze(-1) + offsets).reshape(B, h * w)
    positions = torch.arange(h * w, device=device).expand(B, h * w)
    ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, positions)
    codes = mc.mask.reshape(B, hc, wc).repeat_interleave(cell, 1).repeat_interleave(cell, 2).reshape(B, h * w)
    per_cell = cell * cell
    start = (num_masked + num_thrown) * per_cell
    return AMTMask(ids_shuffle, ids_restore, ids_shuffle[:, start:], codes, num_masked * per_cell,
                   num_thrown * per_cell)


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

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor | AMTMask) -> torch.Tensor:
        """The reconstruction ``decoder(encoder(x, mask))``, (B, in_chans, H, W).

        With an :class:`kamim_fast.AMTMask` the encoder runs on the masked and visible patches only
        (``AMTMask.ids_unthrown``: a gather with fixed counts), the decoder reconstructs those, and thrown
        patches are zeros in the image (the loss does not count them).
        """
        if not isinstance(mask, AMTMask):
            return self.decoder(self.encoder(x, mask))
        B, _, H, W = x.shape
        s = self.encoder_stride
        if s != self.patch_size:
            raise ValueError(f"an AMTMask needs one token per mask patch: encoder_stride ({s}) must equal "
                             f"patch_size ({self.patch_size})")
        h, w = H // s, W // s
        if tuple(mask.mask.shape) != (B, h * w):
            raise ValueError(f"mask must be an AMTMask over the (B, N) = {(B, h * w)} patches of x, got mask codes of "
                             f"shape {tuple(mask.mask.shape)}")
        z = self.encoder(x, mask)  # (B, D, N - thrown, 1): the survivors as a column
        rows = self.decoder(z)  # (B, C, (N - thrown) * s, s)
        C, L = rows.shape[1], z.shape[2]
        rows = rows.reshape(B, C, L, s, s).permute(0, 2, 1, 3, 4).reshape(B, L, C * s * s)
        full = scatter_patches(rows, mask.ids_unthrown, h * w)  # thrown patches: zeros
        return full.reshape(B, h, w, C, s, s).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | AMTMask) -> torch.Tensor:
        """The loss of a batch.

        Args:
            x: (B, C, H, W), the normalised image (also the target).
            mask: SimMIM's (B, H/patch_size, W/patch_size) mask, 1 where masked; or an :class:`kamim_fast.AMTMask`
                (:func:`amt_mask`): masked patches as SimMIM masks them, thrown ones removed from the encoder and
                the loss, the loss over masked patches (weighted by KAMIM with ``weights="fast"``).
        """
        check_tensor("x", x, ndims=(4,), shape_doc="(B, C, H, W)")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"x must have in_chans={self.in_chans} channels, got shape {tuple(x.shape)}")
        if isinstance(mask, AMTMask):
            rec = self.reconstruct(x, mask)
            B, _, H, W = x.shape
            return self.criterion(rec, x, mask.mask.reshape(B, H // self.patch_size, W // self.patch_size))
        check_tensor("mask", mask, ndims=(3,), shape_doc="(B, H/patch_size, W/patch_size) or an AMTMask")
        if mask.shape[0] != x.shape[0] or mask.shape[1] * self.patch_size != x.shape[2] or \
                mask.shape[2] * self.patch_size != x.shape[3]:
            raise ValueError(f"mask must have shape (B, H/{self.patch_size}, W/{self.patch_size}) = "
                             f"{(x.shape[0], x.shape[2] // self.patch_size, x.shape[3] // self.patch_size)} for x of "
                             f"shape {tuple(x.shape)}, got {tuple(mask.shape)}")
        return self.criterion(self.reconstruct(x, mask), x, mask)


    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """The encoder's parameters SimMIM's optimiser set-up exempts from weight decay, named from here (as
        Microsoft SimMIM's model names them: ``encoder.pos_embed``, ...)."""
        names = getattr(self.encoder, "no_weight_decay", None)
        return {"encoder." + n for n in names()} if callable(names) else set()

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """The encoder's keywords of parameters exempt from weight decay (SimMIM's optimiser set-up)."""
        names = getattr(self.encoder, "no_weight_decay_keywords", None)
        return {"encoder." + n for n in names()} if callable(names) else set()


def _criterion(weights: str | None, loss_options: dict) -> WeightedMIMLoss:
    if weights is not None:
        check_choice("weights", weights, ("fast",))
    return WeightedMIMLoss(weights, **loss_options)
