"""AMT and MAE token selection + gather of the kept tokens, forward and backward; gather alone.

- ``select+gather``: per-image weighted permutation, partition, kept-token gather and its backward.
  kamim_fast: ``amt_masking`` + ``gather_patches`` (MAE's ratios: ``random_masking``). The published
  PyTorch sequence: ``torch.multinomial`` (AMT) or ``argsort`` of noise (MAE), ``argsort`` again for
  ids_restore, ``torch.gather`` with an index expanded over D, and for AMT the boolean-index removal of
  thrown tokens (which synchronises with the host).
- ``gather``: ``gather_patches`` vs ``torch.gather`` with an expanded index, forward and backward.
- ``unshuffle``: ``unshuffle_with_mask_token`` of an AMT mask (thrown positions dropped) vs the published decoder's
  concatenation of mask tokens, ``torch.gather`` and boolean removal of the thrown rows, forward and backward.
- ``amt ops``: select + gather + unshuffle, forward and backward, as the MAE+AMT model runs them
  (:func:`kamim_fast_amt_ops`) against the published model's sequence (:func:`published_amt_ops`).

Minimal bytes of a gather step: read and write the kept rows forward, read their gradient and write the
full-size (B, N, D) input gradient backward.
"""

from __future__ import annotations

import torch

from .harness import Case, Impl, rotating

GPU_SHAPES = [(256, 196, 768, torch.bfloat16), (256, 144, 768, torch.bfloat16), (64, 196, 1024, torch.float32)]
QUICK_GPU_SHAPES = [(32, 196, 768, torch.bfloat16)]
CPU_SHAPES = [(8, 196, 192, torch.float32)]
RATIOS = {"MAE 0.75": (0.75, 0.0), "AMT 0.45/0.4": (0.45, 0.4)}
ROTATE = 3


def published_amt(x, weights, mask_ratio, throw_ratio):
    """AMT's published sequence: multinomial order, argsort, partition, shuffle-gather, boolean removal."""
    B, N, D = x.shape
    num_mask, num_throw = int(N * mask_ratio), int(N * throw_ratio)
    ids_shuffle = torch.multinomial(weights, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.zeros(B, N, device=x.device)
    mask[:, :num_mask] = 1
    mask[:, num_mask:num_mask + num_throw] = -1
    mask = torch.gather(mask, 1, ids_restore)
    kept = x[mask == 0].reshape(B, -1, D)  # thrown and masked tokens removed: a host sync
    return kept, mask, ids_restore


def published_amt_ops(x, weights, mask_token, mask_ratio, throw_ratio):
    """The published mae-AMT model's token handling, encoder and decoder side (models_mae.py), on one (B, N, D)
    tensor standing for both: ``torch.multinomial`` order, ``argsort`` for ids_restore, the visible tokens
    gathered with an index repeated over D, the mask codes, mask and throw tokens concatenated before the
    visible ones and gathered back to patch order (an index repeated over D again), the thrown positions
    dropped by boolean indexing (a host synchronisation on a GPU). Returns the decoder's tokens
    (B, N - thrown, D)."""
    B, N, D = x.shape
    first_thrown, first_visible = int(N * mask_ratio), int(N * (mask_ratio + throw_ratio))
    ids_shuffle = torch.multinomial(weights, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    visible = torch.gather(x, 1, ids_shuffle[:, first_visible:].unsqueeze(-1).repeat(1, 1, D))
    codes = torch.ones(B, N, device=x.device)
    codes[:, first_visible:] = 0
    codes[:, first_thrown:first_visible] = -1
    codes = torch.gather(codes, 1, ids_restore)
    thrown_tokens = mask_token.repeat(B, N - visible.shape[1] - first_thrown, 1)
    tokens = torch.cat([mask_token.repeat(B, first_thrown, 1), thrown_tokens, visible], dim=1)
    tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).repeat(1, 1, D))
    return tokens[(codes + 1).bool(), :].reshape(B, -1, D)


def kamim_fast_amt_ops(x, weights, mask_token, mask_ratio, throw_ratio):
    """The same with kamim_fast's ops: ``amt_masking``, ``gather_patches``, ``unshuffle_with_mask_token``."""
    from kamim_fast import amt_masking, gather_patches, unshuffle_with_mask_token
    from kamim_fast.amt import amt_counts

    num_masked, num_thrown = amt_counts(x.shape[1], mask_ratio, throw_ratio, rounding="mae-amt")
    m = amt_masking(weights, num_masked=num_masked, num_thrown=num_thrown)
    return unshuffle_with_mask_token(gather_patches(x, m.ids_keep), mask_token, m)


def mae_random_masking(x, mask_ratio):
    """MAE's random_masking (models_mae.py)."""
    B, N, D = x.shape
    keep = int(N * (1 - mask_ratio))
    noise = torch.rand(B, N, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


OPS_SHAPES = [(64, 196, 768, torch.float32)]  # the published ViT-B/16 sizes at MAE's batch per GPU
QUICK_OPS_SHAPES = [(8, 196, 192, torch.float32)]


def cases(device: str, quick: bool) -> list[Case]:
    shapes = CPU_SHAPES if device == "cpu" else QUICK_GPU_SHAPES if quick else GPU_SHAPES
    out = []
    for shape in shapes:
        out += [_select_case(*shape, name, ratios, device) for name, ratios in RATIOS.items()]
        out.append(_gather_case(*shape, device))
        out.append(_unshuffle_case(*shape, device))
    for shape in QUICK_OPS_SHAPES if quick else OPS_SHAPES + ([] if device == "cpu" else GPU_SHAPES[:1]):
        out.append(_ops_case(*shape, device))
    return out


def _ops_case(B, N, D, dtype, device) -> Case:
    """select + gather + unshuffle, forward and backward (the gradient of the decoder's tokens back to x and
    to the mask token): kamim_fast's ops against the published model's sequence."""
    inputs = _inputs(B, N, D, dtype, device)
    token = torch.zeros(1, 1, D, dtype=dtype, device=device, requires_grad=True)

    def step(fn):
        def run():
            x, weights = inputs()
            x.grad = token.grad = None
            _backward(fn(x, weights, token, 0.45, 0.4))

        return run

    thrown = int(N * 0.85) - int(N * 0.45)
    size = torch.tensor([], dtype=dtype).element_size()
    K = N - int(N * 0.85)
    return Case("amt ops", f"B={B} N={N} D={D} {str(dtype).removeprefix('torch.')}", B * N * D, "kamim_fast",
                [Impl("kamim_fast", step(kamim_fast_amt_ops), device),
                 Impl("published PyTorch", step(published_amt_ops), device)],
                # forward: K rows read and written, N - thrown written; backward: those read, K written, N written
                min_bytes=(4 * B * K * D + 2 * B * (N - thrown) * D + B * N * D) * size)


def _inputs(B, N, D, dtype, device):
    def make(i):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(B, N, D, generator=g).to(dtype).to(device).requires_grad_()
        weights = torch.rand(B, N, generator=g).to(device) + 1e-3  # attention-like, all positive
        return x, weights

    return rotating(make, ROTATE)


def _backward(out: torch.Tensor) -> None:
    out.backward(torch.ones_like(out))


def _select_case(B, N, D, dtype, ratios_name, ratios, device) -> Case:
    from kamim_fast import amt_masking, gather_patches, random_masking

    inputs = _inputs(B, N, D, dtype, device)
    mask_ratio, throw_ratio = ratios
    mae = throw_ratio == 0.0

    def ours():
        x, weights = inputs()
        x.grad = None
        if mae:
            kept, _, _ = random_masking(x, mask_ratio)
        else:
            kept = gather_patches(x, amt_masking(weights, mask_ratio=mask_ratio, throw_ratio=throw_ratio).ids_keep)
        _backward(kept)

    def published():
        x, weights = inputs()
        x.grad = None
        kept = mae_random_masking(x, mask_ratio)[0] if mae else published_amt(x, weights, mask_ratio, throw_ratio)[0]
        _backward(kept)

    K = N - int(N * mask_ratio) - int(N * throw_ratio)
    if mae:
        K = int(N * (1 - mask_ratio))
    size = torch.tensor([], dtype=dtype).element_size()
    name = f"{ratios_name} B={B} N={N} D={D} {str(dtype).removeprefix('torch.')}"
    return Case("amt select+gather", name, B * N * D, "kamim_fast",
                [Impl("kamim_fast", ours, device), Impl("published PyTorch", published, device)],
                min_bytes=(3 * B * K * D + B * N * D) * size)


def _gather_case(B, N, D, dtype, device) -> Case:
    from kamim_fast import gather_patches

    inputs = _inputs(B, N, D, dtype, device)
    K = N // 4
    ids = torch.argsort(torch.rand(B, N), dim=1)[:, :K].to(device)

    def ours():
        x, _ = inputs()
        x.grad = None
        _backward(gather_patches(x, ids))

    def torch_gather():
        x, _ = inputs()
        x.grad = None
        _backward(torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, D)))

    size = torch.tensor([], dtype=dtype).element_size()
    return Case("gather", f"B={B} N={N} K={K} D={D} {str(dtype).removeprefix('torch.')}", B * N * D, "kamim_fast",
                [Impl("kamim_fast", ours, device), Impl("torch.gather", torch_gather, device)],
                min_bytes=(3 * B * K * D + B * N * D) * size)


def published_unshuffle(visible, token, m):
    """The published decoder's re-assembly: mask tokens appended, gather by ids_restore, thrown positions dropped
    by boolean indexing."""
    B, K, D = visible.shape
    N = m.ids_restore.shape[1]
    tokens = token.reshape(1, 1, D).expand(B, N - K, D)
    x = torch.cat([tokens, visible], dim=1)
    x = torch.gather(x, 1, m.ids_restore.unsqueeze(-1).expand(-1, -1, D))
    return x[~m.thrown].reshape(B, N - m.num_thrown, D)


def _unshuffle_case(B, N, D, dtype, device) -> Case:
    from kamim_fast import amt_masking, unshuffle_with_mask_token

    mask_ratio, throw_ratio = RATIOS["AMT 0.45/0.4"]
    m = amt_masking(torch.rand(B, N, device=device) + 1e-3, mask_ratio=mask_ratio, throw_ratio=throw_ratio)
    K = N - m.num_masked - m.num_thrown

    def make(i):
        g = torch.Generator().manual_seed(i)
        visible = torch.randn(B, K, D, generator=g).to(dtype).to(device).requires_grad_()
        token = torch.randn(D, generator=g).to(dtype).to(device).requires_grad_()
        return visible, token

    inputs = rotating(make, ROTATE)

    def run(fn):
        def step():
            visible, token = inputs()
            visible.grad = token.grad = None
            _backward(fn(visible, token))
        return step

    size = torch.tensor([], dtype=dtype).element_size()
    n_out = N - m.num_thrown
    return Case("unshuffle", f"AMT B={B} N={N} D={D} {str(dtype).removeprefix('torch.')}", B * N * D, "kamim_fast",
                [Impl("kamim_fast", run(lambda v, t: unshuffle_with_mask_token(v, t, m)), device),
                 Impl("published PyTorch", run(lambda v, t: published_unshuffle(v, t, m)), device)],
                min_bytes=(2 * B * K * D + 2 * B * n_out * D) * size)
