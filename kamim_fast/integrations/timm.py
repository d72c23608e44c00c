"""A SimMIM model from a timm ``VisionTransformer``: the mask token enters at the patch embedding.

:class:`TimmViTForSimMIM` is SimMIM's ``VisionTransformerForSimMIM`` on top of any timm ViT: after the
patch embedding, masked patches are replaced by a learnt mask token (``x * (1 - m) + token * m``), the
class token and position embedding are added, the blocks and final norm run, and the patch tokens come
back as a (B, D, H/p, W/p) map for SimMIM's 1x1 conv + PixelShuffle decoder.
:func:`simmim_vit` builds the whole model (:class:`kamim_fast.integrations.simmim.SimMIM`).
Everything is built from configs (``pretrained=False``): nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_tensor
from ..amt import AMTMask, gather_patches
from .simmim import SimMIM


class TimmViTForSimMIM(nn.Module):
    """SimMIM's ViT encoder around a timm ``VisionTransformer``.

    Args:
        vit: a ``timm.models.vision_transformer.VisionTransformer`` (any size, with or without class or
            register tokens). Its classifier head is not used.

    Attributes:
        num_features: D, the token width. in_chans, patch_size: the patch embedding's.
        mask_token: the (1, 1, D) learnt token of masked patches (truncated normal, std 0.02, as SimMIM).

    Shape:
        - x: (B, in_chans, H, W), H and W the ViT's image size (or any, with ``dynamic_img_size=True``).
        - mask: (B, H/p, W/p), 1 (or True) where masked.
        - output: (B, D, H/p, W/p).

    Example:
        >>> enc = TimmViTForSimMIM.create(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> enc(torch.randn(2, 3, 32, 32), torch.zeros(2, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"vit must be a timm VisionTransformer, got {type(vit).__name__}")
        self.vit = vit
        self.num_features = vit.embed_dim
        self.in_chans = vit.patch_embed.proj.in_channels
        ph, pw = vit.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f"vit must have square patches, got patch_size {(ph, pw)}")
        self.patch_size = ph
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @classmethod
    def create(cls, model_name: str | None = None, **kwargs) -> TimmViTForSimMIM:
        """Build the timm ViT (never pretrained, no classifier) and wrap it.

        Args:
            model_name: a timm model name such as ``"vit_tiny_patch16_224"``; None builds
                ``VisionTransformer(**kwargs)`` directly.
            **kwargs: timm's ViT arguments (``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ...).
        """
        if model_name is None:
            from timm.models.vision_transformer import VisionTransformer

            vit = VisionTransformer(num_classes=0, **kwargs)
        else:
            import timm

            vit = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        return cls(vit)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | AMTMask) -> torch.Tensor:
        """The encoded patches: (B, D, H/p, W/p) for a (B, H/p, W/p) mask; for an :class:`kamim_fast.AMTMask`
        (B, D, N - num_thrown, 1), the masked and visible patches in ascending order (``ids_unthrown``), the
        thrown ones removed before the blocks by a gather with fixed counts (no host synchronisation)."""
        check_tensor("x", x, ndims=(4,), shape_doc="(B, C, H, W)")
        if isinstance(mask, AMTMask):
            return self._forward_amt(x, mask)
        check_tensor("mask", mask, ndims=(3,), shape_doc="(B, H/p, W/p)")
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        if tuple(mask.shape) != (B, h, w):
            raise ValueError(f"mask must have shape (B, H/p, W/p) = {(B, h, w)} for x of shape {tuple(x.shape)}, "
                             f"got {tuple(mask.shape)}")
        vit = self.vit
        tokens = vit.patch_embed(x)  # (B, N, D), or (B, h, w, D) with dynamic_img_size
        m = mask.to(tokens.dtype).reshape(*tokens.shape[:-1], 1)
        tokens = tokens * (1 - m) + self.mask_token.to(tokens.dtype) * m
        tokens = vit._pos_embed(tokens)
        tokens = vit.patch_drop(tokens)
        tokens = vit.norm_pre(tokens)
        tokens = vit.blocks(tokens)
        tokens = vit.norm(tokens)
        tokens = tokens[:, vit.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(B, tokens.shape[-1], h, w)  # D named: B = 0 leaves -1 ambiguous

    def _forward_amt(self, x: torch.Tensor, mask: AMTMask) -> torch.Tensor:
        vit = self.vit
        tokens = vit.patch_embed(x)
        B = tokens.shape[0]
        tokens = tokens.reshape(B, -1, tokens.shape[-1])  # (B, N, D), also with dynamic_img_size
        if tuple(mask.mask.shape) != tuple(tokens.shape[:2]):
            raise ValueError(f"mask must be an AMTMask over the (B, N) = {tuple(tokens.shape[:2])} patches of x, got "
                             f"mask codes of shape {tuple(mask.mask.shape)}")
        m = mask.masked.to(tokens.dtype).unsqueeze(-1)
        tokens = tokens * (1 - m) + self.mask_token.to(tokens.dtype) * m
        if getattr(vit, "dynamic_img_size", False):  # timm's _pos_embed takes the (B, h, w, D) grid then
            tokens = tokens.reshape(B, x.shape[2] // self.patch_size, x.shape[3] // self.patch_size, -1)
        tokens = vit._pos_embed(tokens)
        prefix = vit.num_prefix_tokens
        tokens = torch.cat([tokens[:, :prefix], gather_patches(tokens[:, prefix:], mask.ids_unthrown)], dim=1)
        tokens = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(tokens))))
        return tokens[:, prefix:].transpose(1, 2).unsqueeze(-1)


def simmim_vit(
    model_name: str | None = None,
    *,
    weights: str | None = "fast",
    loss_options: dict | None = None,
    **vit_kwargs,
) -> SimMIM:
    """A SimMIM model (encoder stride = patch size) on a timm ViT, with kamim_fast's loss.

    Args:
        model_name: a timm ViT name (``"vit_tiny_patch16_224"``) or None for ``VisionTransformer(**vit_kwargs)``.
        weights: ``"fast"`` for KAMIM's loss (default) or None for SimMIM's.
        loss_options: keyword arguments of :func:`kamim_fast.weighted_mim_loss` (see :class:`SimMIM`);
            defaults :data:`kamim_fast.KAMIM_DEFAULTS`, ``loss_options=KAMIM_PAPER`` for the published ones.
        **vit_kwargs: timm's ViT arguments, e.g. ``img_size=96, patch_size=16, embed_dim=96, depth=4``.

    Returns:
        :class:`kamim_fast.integrations.simmim.SimMIM`: ``model(x, mask)`` is the loss,
        ``model.reconstruct(x, mask)`` the reconstruction.

    Example:
        >>> model = simmim_vit(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> model.reconstruct(x, torch.zeros(2, 4, 4)).shape
        torch.Size([2, 3, 64, 64])
    """
    encoder = TimmViTForSimMIM.create(model_name, **vit_kwargs)
    return SimMIM(encoder, encoder.patch_size, weights=weights, **(loss_options or {}))
