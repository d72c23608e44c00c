"""Independent transcriptions of the published AMT models, the oracles for kamim_fast's MAE+AMT and SimMIM+AMT.

Written from reading the published code (github.com/guijiejie/AMT: ``mae-AMT/models_mae.py``,
``SimMIM-AMT/models/simmim.py``; REFERENCE.md sections 5 and 6), the way it computes, with its boolean
indexing, its index tensors repeated over the width, and its fixed 0.75 before the switch to AMT. Nothing
here is copied: the variable names and the layout are this file's own. The one change is an explicit
sampling order: the published ``torch.multinomial(w, N)`` (AMT) and ``torch.rand`` (MAE) are replaced by
an ``order`` / ``noise`` argument, so that both models can be fed the same ids. Without them the
transcription draws them as the published code does.

``PublishedMAE`` was checked once against the real ``models_mae.py`` (parameters loaded into both, the
same ids, fp32): see docs/REPRODUCE.md, "The published code these tests stand for".
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sincos_pos_embed(width: int, side: int, with_cls: bool = True) -> np.ndarray:
    """MAE's fixed 2-D sine-cosine position embedding (util/pos_embed.py), float64, (1 + side**2, width).

    Half the width encodes the column coordinate, half the row coordinate; each half is sin then cos of
    coordinate x 1/10000^(k / (width/4)); the class token's row is zeros.
    """
    quarter = width // 4
    freqs = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    cols, rows = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    parts = []
    for coord in (cols.reshape(-1), rows.reshape(-1)):  # the first half from the column coordinate
        angles = np.outer(coord, freqs)
        parts += [np.sin(angles), np.cos(angles)]
    table = np.concatenate(parts, axis=1)
    if with_cls:
        table = np.concatenate([np.zeros((1, width)), table], axis=0)
    return table


class PublishedMAE(nn.Module):
    """mae-AMT's ``MaskedAutoencoderViT``: the same parameter names (its state_dict loads here and back)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0,
                 norm_layer=nn.LayerNorm, norm_pix_loss=False):
        super().__init__()
        from timm.models.vision_transformer import Block, PatchEmbed

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                                     for _ in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        side = int(n**0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(embed_dim, side)).float()[None])
        self.decoder_pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(decoder_embed_dim, side)).float()[None])
        for p in self.parameters():  # any values: the tests load one state_dict into both models
            if p.requires_grad:
                nn.init.normal_(p, std=0.02)

    # -- pixels <-> patches, as the published helpers lay them out (p, p, C) per patch --------------------------

    def patchify(self, imgs):
        p = self.patch_embed.patch_size[0]
        B, C, H, W = imgs.shape
        g = imgs.reshape(B, C, H // p, p, W // p, p)
        return torch.einsum("bchpwq->bhwpqc", g).reshape(B, (H // p) * (W // p), p * p * C)

    def per_patch_sum(self, pixel_map):
        """(B, 1, H, W) -> (B, N): the published patchify_map(...).sum(-1)."""
        p = self.patch_embed.patch_size[0]
        B, _, H, W = pixel_map.shape
        g = pixel_map[:, 0].reshape(B, H // p, p, W // p, p)
        return torch.einsum("bhpwq->bhwpq", g).reshape(B, (H // p) * (W // p), p * p).sum(-1)

    # -- the two selections -------------------------------------------------------------------------------

    @staticmethod
    def _mae_select(x, noise):
        B, L, D = x.shape
        n_keep = int(L * (1 - 0.75))  # the published forward_encoder passes 0.75, whatever mask_ratio is
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        idx = shuffle[:, :n_keep].unsqueeze(-1).repeat(1, 1, D)
        codes = torch.ones(B, L, device=x.device)
        codes[:, :n_keep] = 0
        return torch.gather(x, 1, idx), torch.gather(codes, 1, restore), restore

    @staticmethod
    def _amt_select(x, order, mask_ratio, throw_ratio):
        B, L, D = x.shape
        first_thrown = int(L * mask_ratio)
        first_visible = int(L * (mask_ratio + throw_ratio))
        restore = torch.argsort(order, dim=1)
        idx = order[:, first_visible:].unsqueeze(-1).repeat(1, 1, D)
        codes = torch.ones(B, L, device=x.device)
        codes[:, first_visible:] = 0
        codes[:, first_thrown:first_visible] = -1
        return torch.gather(x, 1, idx), torch.gather(codes, 1, restore), restore

    # -- forward -----------------------------------------------------------------------------------------------

    def forward(self, imgs, pixel_map=None, mask_ratio=0.45, throw_ratio=0.4, amt=True, order=None, noise=None):
        """(loss, pred, codes). ``amt`` stands for the published ``epoch > 40``; ``order`` for
        ``torch.multinomial(per-patch map, N)``; ``noise`` for MAE's ``torch.rand(B, N)``."""
        tok = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        B, L, _ = tok.shape
        if amt:
            if order is None:
                order = torch.multinomial(self.per_patch_sum(pixel_map), L)
            tok, codes, restore = self._amt_select(tok, order, mask_ratio, throw_ratio)
        else:
            if noise is None:
                noise = torch.rand(B, L, device=imgs.device)
            tok, codes, restore = self._mae_select(tok, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(B, -1, -1)
        h = torch.cat([cls, tok], dim=1)
        for blk in self.blocks:
            h = blk(h)
        h = self.norm(h)

        # decoder
        h = self.decoder_embed(h)
        Dd = h.shape[2]
        if amt:
            n_masked = int(L * mask_ratio)
            n_thrown = L + 1 - h.shape[1] - n_masked
            seq = torch.cat([self.mask_token.repeat(B, n_masked, 1), self.mask_token.repeat(B, n_thrown, 1), h[:, 1:]],
                            dim=1)
        else:
            seq = torch.cat([h[:, 1:], self.mask_token.repeat(B, int(L * 0.75), 1)], dim=1)
        seq = torch.gather(seq, 1, restore.unsqueeze(-1).repeat(1, 1, Dd))
        h = torch.cat([h[:, :1], seq], dim=1) + self.decoder_pos_embed
        if amt:  # thrown positions leave by boolean indexing
            kept = h[:, 1:][(codes + 1).bool(), :].reshape(B, -1, Dd)
            h = torch.cat([h[:, :1], kept], dim=1)
        for blk in self.decoder_blocks:
            h = blk(h)
        pred = self.decoder_pred(self.decoder_norm(h))[:, 1:]

        # loss
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mu = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mu) / (var + 1.0e-6) ** 0.5
        if amt:
            target = target[(codes + 1).bool(), :].reshape(B, -1, target.shape[2])
            weight = codes[codes != -1].reshape(B, -1)
        else:
            weight = codes
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        loss = (per_patch * weight).sum() / weight.sum()
        return loss, pred, codes


# --- SimMIM-AMT ------------------------------------------------------------------------------------------------


def published_simmim_amt_codes(pixel_map, order, mask_count, throw_count, cell=32, model_patch=16):
    """SimMIM-AMT's ``maskgenerate(amt=True)`` for one batch: the per-pixel map (B, 1, H, W) summed per
    ``cell`` px cell, cells in ``order`` (standing for ``torch.multinomial``), the first ``mask_count``
    masked (1), the next ``throw_count`` thrown (-1), at model-patch resolution (B, H/16, W/16), int64."""
    B, _, H, W = pixel_map.shape
    side = H // cell
    codes = torch.zeros(B, side * side, dtype=torch.int64)
    for b in range(B):
        codes[b, order[b, :mask_count]] = 1
        codes[b, order[b, mask_count:mask_count + throw_count]] = -1
    rep = cell // model_patch
    return codes.reshape(B, side, side).repeat_interleave(rep, 1).repeat_interleave(rep, 2)


def published_simmim_amt_counts(cells: int, mask_ratio: float = 0.44, throw_ratio: float = 0.26) -> tuple[int, int]:
    """maskgenerate's counts: ceil of each ratio times the cells (22 and 13 of 49)."""
    return int(math.ceil(cells * mask_ratio)), int(math.ceil(cells * throw_ratio))


def published_simmim_amt_loss(vit, mask_token, decoder, x, codes, patch_size, in_chans=3):
    """SimMIM-AMT's ``VisionTransformerForSimMIM.forward`` + ``SimMIM.forward`` (``epoch >= 40``) on a timm
    ``VisionTransformer`` (its patch embedding, class token and position embedding, blocks and final norm):
    the mask token mixed in with the codes as weights (so a thrown patch becomes 2 x - token, then leaves),
    the thrown tokens removed by boolean indexing, the survivors laid out as a square image for the decoder,
    the target the survivors' patches unpatchified the same way, SimMIM's L1 over masked pixels.

    One change from the published text: its loss reads ``F.l1_loss(x, x_rec)``, the whole image against the
    survivors' reconstruction (192 px against 224 px at its configuration: a broadcasting error), so the
    target the lines above it compute is used, as evidently meant.
    """
    B = x.shape[0]
    w = codes.flatten(1).unsqueeze(-1).to(x.dtype)
    tokens = vit.patch_embed(x)
    tokens = tokens * (1 - w) + mask_token.expand(B, tokens.shape[1], -1) * w
    tokens = vit._pos_embed(tokens)
    D = tokens.shape[2]
    flat = codes.flatten(1)
    survivors = tokens[:, 1:, :][(flat + 1).bool(), :].reshape(B, -1, D)
    h = vit.norm(vit.blocks(torch.cat([tokens[:, :1, :], survivors], dim=1)))[:, 1:]
    L = h.shape[1]
    side = int(L**0.5)
    rec = decoder(h.permute(0, 2, 1).reshape(B, D, side, side))
    p = patch_size
    Hx = x.shape[2]
    g = x.reshape(B, in_chans, Hx // p, p, Hx // p, p)
    target = torch.einsum("bchpwq->bhwpqc", g).reshape(B, -1, p * p * in_chans)
    target = target[(flat + 1).bool(), :].reshape(B, -1, p * p * in_chans)
    target = torch.einsum("bhwpqc->bchpwq", target.reshape(B, side, side, p, p, in_chans)).reshape(
        B, in_chans, side * p, side * p)
    m = flat[flat != -1].reshape(B, side, -1)
    m = m.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).contiguous()
    l1 = F.l1_loss(target, rec, reduction="none")
    return (l1 * m).sum() / (m.sum() + 1e-5) / in_chans
