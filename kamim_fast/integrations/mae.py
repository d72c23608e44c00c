"""MAE with AMT's attention-driven masking and throwing, on timm's ViT blocks, without host synchronisation.

:class:`MaskedAutoencoderViT` is MAE's model (facebookresearch/mae ``models_mae.py``) and mae-AMT's
(github.com/guijiejie/AMT), with the same constructor, attribute and parameter names, so their
checkpoints load as they are (``load_state_dict``, no key mapping) and its encoder loads into a timm
``VisionTransformer`` for fine-tuning. The token selection, the gather of visible tokens and the decoder's
re-assembly are kamim_fast's ops (:func:`kamim_fast.random_masking`, :func:`kamim_fast.amt_masking`,
:func:`kamim_fast.gather_patches`, :func:`kamim_fast.unshuffle_with_mask_token`):

- ``model(images)``: MAE's random masking (0.75 by default), the loss over masked patches.
- ``model(images, weights)``: AMT. Per image, patches are drawn without replacement in proportion to
  ``weights`` (the attention map, per patch or per pixel); in that order the first are masked (0.45), the
  next thrown (0.4) and the rest visible. The encoder sees the class token and the visible patches; the
  decoder the masked and visible positions only (thrown ones are dropped with fixed counts, where the
  published decoder uses boolean indexing, a host synchronisation on a GPU); the loss counts masked
  patches. The counts round as mae-AMT does (:func:`kamim_fast.amt.amt_counts`, ``"mae-amt"``).

The published trainer switches from the first to the second at ``epoch > 40``; here that is the caller's
choice of ``weights`` (None before). Given the same parameters and the same ids (``noise``), the loss and
gradients equal the published model's (tests/test_mae.py, against tests/published_amt_model.py).

Every shape in a step is static, so ``torch.compile(model, fullgraph=True)`` traces forward and backward
whole (tested).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import FLOAT_DTYPES, check_bool, check_int, check_tensor
from ..amt import (
    AMT_MASK_RATIO,
    AMT_THROW_RATIO,
    MAE_MASK_RATIO,
    MASKED,
    _check_ratio,
    amt_counts,
    amt_masking,
    gather_patches,
    random_masking,
    unshuffle_with_mask_token,
)


def sincos_pos_embed(width: int, side: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position embedding, float32 (1 + side * side, width) with a class token row.

    The first half of the width encodes the column, the second the row; each half is ``sin`` then ``cos``
    of the coordinate times 1 / 10000^(k / (width / 4)), k < width / 4, computed in float64 like MAE's
    ``get_2d_sincos_pos_embed``; the class token's row is zeros.

    Example:
        >>> sincos_pos_embed(8, 2).shape
        torch.Size([5, 8])
    """
    width, side = check_int("width", width, 4, 1 << 20), check_int("side", side, 1, 1 << 16)
    if width % 4:
        raise ValueError(f"width must be a multiple of 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    col, row = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    halves = []
    for coord in (col.reshape(-1), row.reshape(-1)):
        angle = np.einsum("m,d->md", coord, omega)
        halves += [np.sin(angle), np.cos(angle)]
    table = np.concatenate(halves, axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, width)), table], axis=0)
    return torch.from_numpy(table).float()


class MaskedAutoencoderViT(nn.Module):
    """MAE (and mae-AMT) on timm's ``PatchEmbed`` and ``Block``, with kamim_fast's token selection.

    The arguments are MAE's; the factories :func:`mae_vit_base_patch16`, :func:`mae_vit_large_patch16`,
    :func:`mae_vit_huge_patch14` give its published sizes, and :meth:`from_vit` puts a decoder on a timm
    ``VisionTransformer``.

    Args:
        img_size, patch_size, in_chans: the images, square.
        embed_dim, depth, num_heads: the encoder.
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder.
        mlp_ratio: both MLPs' hidden width over their input width.
        norm_layer: the normalisation of every block and the two final norms.
        norm_pix_loss: the target is each patch normalised by its own mean and (unbiased) variance, as MAE.

    Attributes:
        num_prefix_tokens: 1 (the class token), for :func:`kamim_fast.vit_class_attention`.

    Shape:
        - images: (B, in_chans, img_size, img_size).
        - weights: (B, N) per patch, (B, h, w) per patch, or (B, 1, H, W) per pixel (summed per patch, as
          mae-AMT's ``patchify_map(...).sum(-1)``); N = h * w = (img_size / patch_size)^2.
        - loss: a scalar; pred: (B, N - num_thrown, patch_size^2 * in_chans), the masked and visible patches in
          ascending order (all N without weights); mask: (B, N) float, 1 masked, -1 thrown, 0 visible.

    Example:
        >>> model = MaskedAutoencoderViT(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        ...                              decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
        >>> images, attention = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
        >>> loss, pred, mask = model(images)  # MAE: 0.75 masked
        >>> pred.shape, mask.sum(1).tolist()
        (torch.Size([2, 16, 192]), [12.0, 12.0])
        >>> loss, pred, mask = model(images, attention)  # AMT: 7 masked, 6 thrown, 3 visible
        >>> pred.shape, (mask == 1).sum(1).tolist(), (mask == -1).sum(1).tolist()
        (torch.Size([2, 10, 192]), [7, 7], [6, 6])
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_layer: type[nn.Module] | partial = nn.LayerNorm,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        img_size = check_int("img_size", img_size, 1, 1 << 16)
        patch_size = check_int("patch_size", patch_size, 1, img_size)
        if img_size % patch_size:
            raise ValueError(f"patch_size must divide img_size = {img_size}, got {patch_size}")
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                      for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self._init_decoder(embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, norm_layer,
                           norm_pix_loss)
        self.pos_embed.data.copy_(sincos_pos_embed(embed_dim, self.grid_size)[None])
        self.initialize_weights()

    def _init_decoder(self, embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, norm_layer,
                      norm_pix_loss) -> None:
        from timm.models.vision_transformer import Block

        num_patches = self.patch_embed.num_patches
        p = self.patch_size
        self.in_chans = self.patch_embed.proj.in_channels
        self.num_prefix_tokens = 1
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, p * p * self.in_chans, bias=True)
        self.norm_pix_loss = check_bool("norm_pix_loss", norm_pix_loss)
        self.decoder_pos_embed.data.copy_(sincos_pos_embed(decoder_embed_dim, self.grid_size)[None])

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size[0]

    @property
    def grid_size(self) -> int:
        return self.patch_embed.grid_size[0]

    def initialize_weights(self) -> None:
        """MAE's initialisation of everything but the fixed position embeddings: the patch projection like a
        Linear (Xavier uniform), class and mask tokens normal(0.02), Linear layers Xavier uniform with zero
        bias, LayerNorms 1 and 0."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_weights)

    @classmethod
    def from_vit(
        cls,
        vit: nn.Module,
        *,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_layer: type[nn.Module] | partial = partial(nn.LayerNorm, eps=1e-6),
        norm_pix_loss: bool = False,
        fixed_pos_embed: bool = True,
    ) -> MaskedAutoencoderViT:
        """MAE on a timm ``VisionTransformer``: its patch embedding, class token, position embedding, blocks
        and final norm are the encoder (shared, not copied: pre-training trains ``vit``), with a new decoder.

        Args:
            vit: a timm ``VisionTransformer`` with a class token, its position embedding covering it, no
                register tokens, a fixed image size and no pre-norm (``vit_base_patch16_224`` and kin).
            decoder_*, mlp_ratio, norm_layer, norm_pix_loss: the decoder, as in the constructor.
            fixed_pos_embed: write MAE's fixed sine-cosine table into ``vit.pos_embed`` and freeze it, as
                MAE does (False: keep the ViT's own, trainable).

        Raises:
            TypeError: ``vit`` is not a timm VisionTransformer.
            ValueError: it has no class token, register tokens, ``no_embed_class``, a dynamic image size,
                non-square patches or a pre-norm.

        Example:
            >>> import timm
            >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0)
            >>> mae = MaskedAutoencoderViT.from_vit(vit, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
            >>> mae.blocks is vit.blocks, mae(torch.randn(2, 3, 32, 32))[0].shape
            (True, torch.Size([]))
        """
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"vit must be a timm VisionTransformer, got {type(vit).__name__}")
        if getattr(vit, "cls_token", None) is None:
            raise ValueError("vit must have a class token (MAE's encoder runs with one), got a ViT without "
                             "(class_token=False)")
        problems = {
            "register tokens": getattr(vit, "num_reg_tokens", 0) > 0,
            "no_embed_class=True": getattr(vit, "no_embed_class", False),
            "dynamic_img_size=True": getattr(vit, "dynamic_img_size", False),
            "a pre-norm (pre_norm=True)": not isinstance(getattr(vit, "norm_pre", nn.Identity()), nn.Identity),
            "non-square patches": len(set(vit.patch_embed.patch_size)) != 1,
            "a non-square image size": len(set(vit.patch_embed.img_size)) != 1,
        }
        bad = [k for k, v in problems.items() if v]
        if bad:
            raise ValueError(f"vit must be a plain class-token ViT for MAE, got one with {', '.join(bad)}")
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed
        self.blocks, self.norm = vit.blocks, vit.norm
        embed_dim = vit.embed_dim
        self._init_decoder(embed_dim, decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, norm_layer,
                           norm_pix_loss)
        if fixed_pos_embed:
            self.pos_embed.data.copy_(sincos_pos_embed(embed_dim, self.grid_size)[None])
            self.pos_embed.requires_grad_(False)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(_init_weights)
        return self

    # -- MAE's helpers ----------------------------------------------------------------------------------------

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p * p * C), each patch laid out (p, p, C) as MAE does."""
        p = self.patch_size
        B, C, H, W = imgs.shape
        x = imgs.reshape(B, C, H // p, p, W // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(B, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p * p * C) -> (B, C, H, W), the inverse of :meth:`patchify` (all N patches)."""
        p, C = self.patch_size, self.in_chans
        h = int(x.shape[1] ** 0.5)
        if h * h != x.shape[1]:
            raise ValueError(f"x must hold a square number of patches, got {x.shape[1]}")
        x = torch.einsum("nhwpqc->nchpwq", x.reshape(x.shape[0], h, h, p, p, C))
        return x.reshape(x.shape[0], C, h * p, h * p)

    # -- the pieces of a step ------------------------------------------------------------------------------

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder on every patch, as the attention refresh runs it: (B, 1 + N, D), class token first."""
        x = self.patch_embed(images) + self.pos_embed[:, 1:, :]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        return self.norm(self.blocks(torch.cat([cls, x], dim=1)))

    def _encode(self, visible: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(visible.shape[0], -1, -1)
        return self.norm(self.blocks(torch.cat([cls, visible], dim=1)))

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(tokens)))[:, 1:, :]

    def _linear_patch_embed(self) -> bool:
        """Whether the patch embedding is a plain patch projection (a Conv2d with kernel = stride = p, no
        padding), so that it can run on the kept patches alone as a Linear on their pixels."""
        proj = getattr(self.patch_embed, "proj", None)
        p = self.patch_size
        return (isinstance(proj, nn.Conv2d) and tuple(proj.kernel_size) == (p, p) and tuple(proj.stride) == (p, p)
                and tuple(proj.padding) == (0, 0) and proj.groups == 1 and proj.dilation == (1, 1))

    def _embed(self, patches: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input tokens of the kept patches: the patch projection as a Linear on their pixels
        (``patches`` laid out as :meth:`patchify`'s), plus their position embedding. Equal to embedding every
        patch and keeping some (what MAE does) up to float rounding, at a fraction of the work."""
        w = self.patch_embed.proj.weight  # (D, C, p, p) -> (D, p * p * C), patchify's (p, q, C) order
        tokens = F.linear(patches, w.permute(0, 2, 3, 1).reshape(w.shape[0], -1), self.patch_embed.proj.bias)
        return self.patch_embed.norm(tokens) + F.embedding(ids, self.pos_embed[0, 1:, :])

    def _normalise_target(self, target: torch.Tensor) -> torch.Tensor:
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def weights_per_patch(self, weights: torch.Tensor, batch: int) -> torch.Tensor:
        """``weights`` as (B, N) per patch: (B, N) and (B, h, w) as they are, (B, 1, H, W) summed per patch."""
        check_tensor("weights", weights, dtypes=FLOAT_DTYPES, ndims=(2, 3, 4),
                     shape_doc="(B, N), (B, h, w) or (B, 1, H, W)")
        g, p = self.grid_size, self.patch_size
        H = g * p
        shape = tuple(weights.shape)
        if shape == (batch, g * g):
            return weights
        if shape == (batch, g, g):
            return weights.reshape(batch, g * g)
        if shape == (batch, 1, H, H):
            return weights.reshape(batch, g, p, g, p).transpose(2, 3).reshape(batch, g * g, p * p).sum(-1)
        raise ValueError(f"weights must have shape (B, N) = {(batch, g * g)}, (B, h, w) = {(batch, g, g)} or "
                         f"(B, 1, H, W) = {(batch, 1, H, H)}, got {shape}")

    def forward(
        self,
        images: torch.Tensor,
        weights: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        throw_ratio: float | None = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MAE (``weights`` None) or MAE+AMT step's forward: (loss, pred, mask).

        Args:
            images: the normalised batch (also the target).
            weights: the attention map (AMT), or None for MAE's random masking.
            mask_ratio: share of masked patches; default 0.75 without weights (MAE), 0.45 with (AMT).
            throw_ratio: share of thrown patches with weights; default 0.4. Without weights it must be None
                or 0 (uniform throwing is ``weights=torch.ones(B, N)``).
            noise: the randomness, for reproducible ids: without weights MAE's ``noise`` (B, N) (kept: the
                smallest; default ``torch.rand``), with weights :func:`kamim_fast.amt_masking`'s q ~ Exp(1).
            generator: draws q (with weights, instead of ``noise``).

        Returns:
            ``(loss, pred, mask)`` as mae-AMT's model returns them (see the class's Shape).
        """
        check_tensor("images", images, dtypes=FLOAT_DTYPES, ndims=(4,), shape_doc="(B, C, H, W)")
        B, C, H, W = images.shape
        size = self.grid_size * self.patch_size
        if (C, H, W) != (self.in_chans, size, size):
            raise ValueError(f"images must have shape (B, {self.in_chans}, {size}, {size}), got {tuple(images.shape)}")
        patches = self.patchify(images)  # (B, N, p * p * C): the target, and the embedding's input
        N = patches.shape[1]
        linear = self._linear_patch_embed()
        pos = self.decoder_pos_embed
        if weights is None:
            if throw_ratio not in (None, 0, 0.0):
                raise ValueError(f"throw_ratio needs weights (uniform throwing: weights=torch.ones(B, N)), got "
                                 f"throw_ratio={throw_ratio!r} without weights")
            if generator is not None:
                raise ValueError("generator draws AMT's noise and needs weights; without weights pass noise")
            ratio = MAE_MASK_RATIO if mask_ratio is None else _check_ratio("mask_ratio", mask_ratio)
            if linear:
                kept, mask, ids_restore = random_masking(patches, ratio, noise=noise)
                visible = self._embed(kept, _inverse_permutation(ids_restore)[:, : kept.shape[1]])
            else:
                visible, mask, ids_restore = random_masking(self.patch_embed(images) + self.pos_embed[:, 1:, :], ratio,
                                                            noise=noise)
            latent = self.decoder_embed(self._encode(visible))
            tokens = unshuffle_with_mask_token(latent[:, 1:, :], self.mask_token, ids_restore)
            pred = self._decode(torch.cat([latent[:, :1, :] + pos[:, :1, :], tokens + pos[:, 1:, :]], dim=1))
            per_patch = ((pred - self._normalise_target(patches)) ** 2).mean(dim=-1)
            loss = (per_patch * mask).sum() / mask.sum()
            return loss, pred, mask
        mask_ratio = AMT_MASK_RATIO if mask_ratio is None else mask_ratio
        throw_ratio = AMT_THROW_RATIO if throw_ratio is None else throw_ratio
        num_masked, num_thrown = amt_counts(N, mask_ratio, throw_ratio, rounding="mae-amt")
        m = amt_masking(self.weights_per_patch(weights, B), noise=noise, generator=generator, num_masked=num_masked,
                        num_thrown=num_thrown)
        if linear:
            visible = self._embed(gather_patches(patches, m.ids_keep), m.ids_keep)
        else:
            visible = gather_patches(self.patch_embed(images) + self.pos_embed[:, 1:, :], m.ids_keep)
        latent = self.decoder_embed(self._encode(visible))
        tokens = unshuffle_with_mask_token(latent[:, 1:, :], self.mask_token, m)  # thrown dropped: (B, N - thrown, D)
        rows = m.ids_unthrown
        tokens = tokens + F.embedding(rows, pos[0, 1:])  # the position embeddings of those rows
        pred = self._decode(torch.cat([latent[:, :1, :] + pos[:, :1, :], tokens], dim=1))
        per_patch = ((pred - self._normalise_target(gather_patches(patches, rows))) ** 2).mean(dim=-1)
        masked = (torch.gather(m.mask, 1, rows) == MASKED).to(per_patch.dtype)
        loss = (per_patch * masked).sum() / masked.sum()
        return loss, pred, m.mask.to(torch.get_default_dtype())


def _inverse_permutation(ids: torch.Tensor) -> torch.Tensor:
    """(B, N) permutations -> their inverses (a scatter of positions; no sort)."""
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.empty_like(ids).scatter_(1, ids, positions)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def mae_vit_base_patch16(**kwargs) -> MaskedAutoencoderViT:
    """MAE's ViT-B/16 with its 512-wide, 8-block decoder (``mae_vit_base_patch16_dec512d8b``)."""
    return MaskedAutoencoderViT(patch_size=16, embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512,
                                decoder_depth=8, decoder_num_heads=16, mlp_ratio=4,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


def mae_vit_large_patch16(**kwargs) -> MaskedAutoencoderViT:
    """MAE's ViT-L/16 with its 512-wide, 8-block decoder."""
    return MaskedAutoencoderViT(patch_size=16, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512,
                                decoder_depth=8, decoder_num_heads=16, mlp_ratio=4,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


def mae_vit_huge_patch14(**kwargs) -> MaskedAutoencoderViT:
    """MAE's ViT-H/14 with its 512-wide, 8-block decoder."""
    return MaskedAutoencoderViT(patch_size=14, embed_dim=1280, depth=32, num_heads=16, decoder_embed_dim=512,
                                decoder_depth=8, decoder_num_heads=16, mlp_ratio=4,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


# MAE's and mae-AMT's names for the same factories (``models_mae.__dict__[args.model]``)
mae_vit_base_patch16_dec512d8b = mae_vit_base_patch16
mae_vit_large_patch16_dec512d8b = mae_vit_large_patch16
mae_vit_huge_patch14_dec512d8b = mae_vit_huge_patch14
