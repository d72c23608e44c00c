"""An independent transcription of the published AMT data side (github.com/guijiejie/AMT), the oracle for the
attention bank's crop, refresh and schedule.

Written from reading ``mae-AMT/amtdatasets.py`` (the map's crop and flip), ``mae-AMT/util/misc.py``
(``update_mask``: the per-image map), ``mae-AMT/main_pretrain.py`` (when the refresh runs),
``mae-AMT/models_mae.py`` (``forward_encoder_test``, ``patchify_map``, the ``epoch > 40`` switch) and
``SimMIM-AMT/data/amtdatasets.py`` (``maskgenerate``), the way the published code does it: per image, with
torchvision's functional resize and flip on the map tensor. Nothing here is shared with kamim_fast.

Checked once against the published files themselves (guijiejie/AMT at dfe380e9441cee018934ea51a57dbcf3fd659998,
run from a scratch copy, nothing of it kept here): ``maskRandomResizedCrop`` and ``maskRandomHorizontalFlip``
bit-equal to the map crop and flip below on 300 crops of five image sizes (slices 2x2, 2x3, 3x2, 3x3 seen), and
``crop_patch_weights(map_crop="paper")`` within float rounding of them through ``patchify_map``;
``SequentialDistributedSampler``, ``update_mask``'s normalisation, all_gather and truncation (the function's
own source, with its ``forward_encoder_test`` on a 12-head ``MaskedAutoencoderViT``), SimMIM-AMT's
``maskgenerate.patchify_map`` and ``main_pretrain.py``'s refresh condition bit-equal to the functions below.
The published ``Block(..., return_attention=True)`` is not in timm: the softmax it returns is taken as timm's
``Attention`` computes it.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF


def published_map_crop(mask: torch.Tensor, i: int, j: int, h: int, w: int, img_w: int, img_h: int,
                       size: tuple[int, int]) -> torch.Tensor:
    """``maskRandomResizedCrop.forward``'s map branch: (h, w) map -> (1, S_h, S_w) per-pixel map.

    ``img.size`` of a PIL image is (width, height): rows are divided by the height, columns by the width."""
    mask = mask[i // img_h:(i + h) // img_h + 2, j // img_w:(j + w) // img_w + 2]
    return TF.resize(mask.unsqueeze(0), list(size)).clamp(min=0, max=1)


def published_map_flip(mask: torch.Tensor, flip: bool) -> torch.Tensor:
    """``maskRandomHorizontalFlip.forward``'s map branch."""
    return TF.hflip(mask) if flip else mask


def published_patchify_map_sum(pixel_map: torch.Tensor, p: int) -> torch.Tensor:
    """``models_mae.patchify_map(map).sum(-1)``: (B, 1, S, S) -> (B, (S/p)^2) sums per p x p patch, row-major."""
    h = w = pixel_map.shape[2] // p
    m = pixel_map.squeeze(1)
    x = m.reshape(m.shape[0], h, p, w, p)
    x = torch.einsum("bhpwq->bhwpq", x)
    return x.reshape(m.shape[0], h * w, p ** 2).sum(-1)


def published_cell_sum(pixel_map: torch.Tensor, mask_patch: int = 32) -> torch.Tensor:
    """SimMIM-AMT's ``maskgenerate.patchify_map(mask_weights).sum(-1)``: (1, S, S) -> (cells,) per 32 px cell."""
    h = w = pixel_map.shape[1] // mask_patch
    m = pixel_map.squeeze(0)
    x = m.reshape(h, mask_patch, w, mask_patch)
    x = torch.einsum("hpwq->hwpq", x)
    return x.reshape(h * w, mask_patch ** 2).sum(-1)


def published_last_block_attention(vit, images: torch.Tensor) -> torch.Tensor:
    """``models_mae.forward_encoder_test`` on a timm ViT's parts: patch embedding, the position embedding of the
    patches, the class token with its position embedding in front, every block but the last, then the last
    block's softmax attention matrix (B, heads, T, T) as timm's Attention computes it before its dropout."""
    x = vit.patch_embed(images)
    x = x + vit.pos_embed[:, 1:, :]
    cls = vit.cls_token + vit.pos_embed[:, :1, :]
    x = torch.cat((cls.expand(x.shape[0], -1, -1), x), dim=1)
    for blk in vit.blocks[:-1]:
        x = blk(x)
    blk = vit.blocks[-1]
    x = blk.norm1(x)
    B, N, C = x.shape
    heads = blk.attn.num_heads
    qkv = blk.attn.qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    attn = (q @ k.transpose(-2, -1)) * (C // heads) ** -0.5
    return attn.softmax(dim=-1)


def published_update_mask_maps(attn_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``update_mask``'s per-batch map from the last block's attention (B, heads, T, T): the class token's row
    over the patches, minus its minimum, over its maximum, per head, then the sum over heads over their number.
    (The published code hard-codes 12 heads and 14 x 14.)"""
    B, heads = attn_map.shape[:2]
    h, w = grid
    attn_map = attn_map[:, :, 0, 1:]
    attn_map = attn_map.reshape(B, heads, h * w)
    attn_map = attn_map - attn_map.min(-1, keepdim=True)[0]
    attn_map = attn_map / attn_map.max(-1, keepdim=True)[0]
    attn_map = attn_map.reshape(B, heads, h, w)
    return torch.sum(attn_map, 1) / heads


def published_eval_shards(num_images: int, batch_size: int, world: int) -> list[list[int]]:
    """``SequentialDistributedSampler``: each rank's contiguous block, the index list padded with the last index
    up to a multiple of batch_size * world."""
    per_rank = int(math.ceil(num_images * 1.0 / batch_size / world)) * batch_size
    indices = list(range(num_images))
    indices += [indices[-1]] * (per_rank * world - len(indices))
    return [indices[r * per_rank:(r + 1) * per_rank] for r in range(world)]


def published_gather(per_rank_maps: list[torch.Tensor], num_images: int) -> torch.Tensor:
    """``update_mask``'s end: all_gather in rank order, concatenation, truncation to the dataset's length."""
    return torch.cat(per_rank_maps)[:num_images]


def published_refresh_after(epoch: int, epochs: int, warmup_epochs: int, loc_interval: int) -> bool:
    """``main_pretrain.py``'s condition for ``update_mask`` after training ``epoch``."""
    return epoch >= warmup_epochs and epoch + 1 != epochs and epoch % loc_interval == 0


def published_amt_epoch(epoch: int) -> bool:
    """``models_mae.forward_encoder``: AMT's masking and throwing when ``epoch > 40``, else random masking 0.75."""
    return epoch > 40
