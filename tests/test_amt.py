"""AMT ops (kamim_fast.amt, csrc/): MAE's and AMT's published token selection as oracles, the extension
against the references, distribution tests, gradients, torch.compile, errors and the build (opcheck of
every op: tests/test_conformance.py)."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import AMT_OPS, assert_raises_naming
from halfsum import HALF_DTYPES, LARGE, assert_bitwise, dyadic, rounded

import kamim_fast
from kamim_fast import (
    AMTMask,
    amt_cell_weights,
    amt_cell_weights_ref,
    amt_counts,
    amt_masking,
    amt_masking_ref,
    gather_patches,
    gather_patches_ref,
    random_masking,
    scatter_patches,
    unshuffle_with_mask_token,
    vit_class_attention,
    vit_class_attention_ref,
    weighted_mim_loss,
)
from kamim_fast import _backend, _ext
from kamim_fast.ops.amt_masking import amt_masking_op_ref

ROOT = Path(__file__).resolve().parents[1]
EXT_OK, EXT_REASON = _ext.status()
needs_ext = pytest.mark.skipif(not EXT_OK, reason=f"AMT extension not loaded: {EXT_REASON}")

# conftest's `target` runs each test on the extension ("cpp") and the reference ("torch") per device: the
# AMT ops have no Triton kernels.
TARGET_OPS = AMT_OPS
ALL_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def test_the_extension_loads():
    """The cpp targets exist where the extension loads: CI must have it."""
    assert EXT_OK, f"the AMT extension must load in CI: {EXT_REASON}"


def _gen(rng, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(rng.integers(1 << 62)))


# --- the published code, written out as MAE and AMT do it -------------------------------------------------


def mae_random_masking(x, mask_ratio, noise):
    """MAE's models_mae.MaskedAutoencoderViT.random_masking (REFERENCE.md section 6)."""
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


def mae_unshuffle(x, mask_token, ids_restore):
    """MAE's forward_decoder re-assembly, without the class token."""
    mask_tokens = mask_token.repeat(x.shape[0], ids_restore.shape[1] - x.shape[1], 1)
    x_ = torch.cat([x, mask_tokens], dim=1)
    return torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))


def amt_published(weights, q, mask_ratio, throw_ratio):
    """AMT's partition with multinomial's order written as w / q descending (REFERENCE.md section 5)."""
    B, N = weights.shape
    ids_shuffle = torch.argsort(weights / q, dim=1, descending=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    nm, nt = int(N * mask_ratio), int(N * throw_ratio)
    mask = torch.zeros(B, N, device=weights.device)
    mask[:, :nm] = 1
    mask[:, nm:nm + nt] = -1
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return ids_shuffle, ids_restore, ids_shuffle[:, nm + nt:], mask


# --- MAE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_random_masking_equals_mae(target, rng, dtype):
    device, _ = target
    for _ in range(4):
        B, N, D = (int(v) * 2 + 1 for v in rng.integers(1, 40, 3))
        mask_ratio = float(rng.choice([0.0, 0.75, rng.uniform(), 1.0]))
        x = torch.from_numpy(rng.standard_normal((B, N, D))).to(device, dtype).requires_grad_()
        x_mae = x.detach().clone().requires_grad_()
        # distinct values: float32 draws tie often enough at this size (p ~ 0.3 per run) and MAE's
        # torch.argsort orders ties arbitrarily, so only tie-free noise has one right answer
        noise = ((torch.argsort(torch.rand(B, N, generator=_gen(rng)), dim=1) + 0.5) / N).to(device)
        got = random_masking(x, mask_ratio, noise=noise)
        want = mae_random_masking(x_mae, mask_ratio, noise)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and torch.equal(g, w)
        up = torch.from_numpy(rng.standard_normal(got[0].shape)).to(device, dtype)
        (got[0] * up).sum().backward()
        (want[0] * up).sum().backward()
        assert torch.equal(x.grad, x_mae.grad)
        # the decoder: visible tokens and MAE's (1, 1, D) mask token back in order
        token = torch.randn(1, 1, D, device=device, dtype=dtype, requires_grad=True)
        token_mae = token.detach().clone().requires_grad_()
        vis = got[0].detach().clone().requires_grad_()
        vis_mae = vis.detach().clone().requires_grad_()
        out, out_mae = unshuffle_with_mask_token(vis, token, got[2]), mae_unshuffle(vis_mae, token_mae, want[2])
        assert torch.equal(out, out_mae)
        up = torch.from_numpy(rng.standard_normal(out.shape)).to(device, torch.float64)
        (out.double() * up).sum().backward()
        (out_mae.double() * up).sum().backward()
        assert torch.equal(vis.grad, vis_mae.grad)
        tol = dict(rtol=1e-2, atol=5e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(token.grad, token_mae.grad, **tol)  # summation order differs


def test_random_masking_draws_noise_like_mae(target):
    device, _ = target
    x = torch.randn(5, 49, 8, device=device)
    torch.manual_seed(3)
    got = random_masking(x, 0.75)
    torch.manual_seed(3)
    want = mae_random_masking(x, 0.75, torch.rand(5, 49, device=device))
    for g, w in zip(got, want):
        assert torch.equal(g, w)


# --- AMT ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
def test_amt_masking_equals_published_partition(target, rng, wdtype):
    device, _ = target
    for mask_ratio, throw_ratio in [(0.45, 0.4), (0.44, 0.26), (0.75, 0.0), (0.0, 1.0), (rng.uniform(0, 0.5), rng.uniform(0, 0.5))]:
        B, N = int(rng.integers(1, 9)), int(rng.choice([1, 2, 49, 144, 196, int(rng.integers(3, 300))]))
        w = torch.from_numpy(rng.uniform(0.01, 1, (B, N))).to(device, wdtype)
        q = torch.empty(B, N, dtype=wdtype).exponential_(generator=_gen(rng)).to(device)
        got = amt_masking(w, mask_ratio=mask_ratio, throw_ratio=throw_ratio, noise=q)
        ids_shuffle, ids_restore, ids_keep, mask = amt_published(w, q, mask_ratio, throw_ratio)
        assert torch.equal(got.ids_shuffle, ids_shuffle) and torch.equal(got.ids_restore, ids_restore)
        assert torch.equal(got.ids_keep, ids_keep)
        assert got.mask.dtype == torch.int8 and torch.equal(got.mask.to(mask.dtype), mask)
        assert (got.num_masked, got.num_thrown) == (int(N * mask_ratio), int(N * throw_ratio))
        assert torch.equal(got.masked, mask == 1) and torch.equal(got.thrown, mask == -1)
        assert torch.equal(got.visible, mask == 0)


def test_amt_masking_half_weights_are_sorted_in_float32(target, rng):
    device, _ = target
    w = torch.from_numpy(rng.uniform(0.01, 1, (3, 50))).to(device, torch.float16)
    q = torch.empty(3, 50).exponential_(generator=_gen(rng)).to(device)
    got = amt_masking(w, noise=q)
    want = amt_published(w.float(), q, 0.45, 0.4)
    assert torch.equal(got.ids_shuffle, want[0]) and torch.equal(got.mask.float(), want[3])


def test_exact_counts_and_permutations(target, rng):
    device, _ = target
    for N in (1, 2, 3, 17, 196, 1024, 1500):
        B = 3
        w = torch.from_numpy(rng.uniform(0, 1, (B, N))).float().to(device)
        w[:, 0] = 1.0  # at least one positive entry per row
        mr, tr = float(rng.uniform(0, 0.6)), float(rng.uniform(0, 0.4))
        m = amt_masking(w, mask_ratio=mr, throw_ratio=tr, generator=_gen(rng, device))
        nm, nt = int(N * mr), int(N * tr)
        assert (m.mask == 1).sum(1).tolist() == [nm] * B and (m.mask == -1).sum(1).tolist() == [nt] * B
        assert m.ids_keep.shape == (B, N - nm - nt)
        arange = torch.arange(N, device=device).expand(B, N)
        assert torch.equal(m.ids_shuffle.sort(1).values, arange)
        assert torch.equal(torch.gather(m.ids_restore, 1, m.ids_shuffle), arange)
        assert bool((torch.gather(m.mask, 1, m.ids_keep) == 0).all())


def _successive_sampling_probabilities(w):
    """Exact probability of each permutation under torch.multinomial(w, N) without replacement."""
    probs = {}
    for perm in itertools.permutations(range(len(w))):
        p, left = 1.0, float(sum(w))
        for i in perm:
            p *= w[i] / left
            left -= w[i]
        probs[perm] = p
    return probs


def test_amt_masking_is_multinomial_in_distribution(target):
    """Seeded chi-square tests: the whole permutation against the exact probabilities of sampling without
    replacement, and each patch's chance of being masked against torch.multinomial's."""
    from scipy.stats import chi2_contingency, chisquare

    device, _ = target
    w = [0.1, 0.5, 1.0, 2.0, 4.0]
    T = 60000
    gen = torch.Generator(device=device).manual_seed(1234)
    weights = torch.tensor(w, device=device).expand(T, -1)
    m = amt_masking(weights, mask_ratio=0.4, throw_ratio=0.2, generator=gen)
    exact = _successive_sampling_probabilities(w)
    perms = list(exact)
    code = {p: i for i, p in enumerate(perms)}
    seen = torch.bincount(torch.tensor([code[tuple(r)] for r in m.ids_shuffle.tolist()]), minlength=len(perms))
    expected = torch.tensor([exact[p] for p in perms], dtype=torch.float64) * T
    assert chisquare(seen.double().numpy(), expected.numpy()).pvalue > 1e-4
    # the test has power: a uniform permutation fails it
    uniform = torch.stack([torch.randperm(5, generator=torch.Generator().manual_seed(i)) for i in range(3000)])
    seen_u = torch.bincount(torch.tensor([code[tuple(r)] for r in uniform.tolist()]), minlength=len(perms))
    assert chisquare(seen_u.double().numpy(), (expected / T * 3000).numpy()).pvalue < 1e-6

    # per-patch masked frequency against torch.multinomial's, N = 12
    w12 = torch.linspace(0.05, 1.0, 12, dtype=torch.float64) ** 2
    m12 = amt_masking(w12.to(device).expand(T, -1), mask_ratio=0.5, throw_ratio=0.25, generator=gen)
    ours = m12.masked.sum(0).cpu()
    draws = torch.multinomial(w12.expand(T, -1), 12, replacement=False, generator=torch.Generator().manual_seed(99))
    theirs = torch.zeros(12, dtype=torch.long).scatter_add_(0, draws[:, :6].flatten(), torch.ones(T * 6, dtype=torch.long))
    assert chi2_contingency(torch.stack([ours, theirs]).numpy()).pvalue > 1e-4
    thrown = m12.thrown.sum(0).cpu()
    theirs_thrown = torch.zeros(12, dtype=torch.long).scatter_add_(0, draws[:, 6:9].flatten(), torch.ones(T * 3, dtype=torch.long))
    assert chi2_contingency(torch.stack([thrown, theirs_thrown]).numpy()).pvalue > 1e-4


def test_zero_weights_come_last_in_random_order(target, rng):
    device, _ = target
    N, T = 10, 4000
    w = torch.zeros(T, N, device=device)
    w[:, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0], device=device)  # patches 4..9 have weight 0
    m = amt_masking(w, mask_ratio=0.3, throw_ratio=0.3, generator=_gen(rng, device))
    assert bool((m.ids_shuffle[:, :4] < 4).all()) and bool((m.ids_shuffle[:, 4:] >= 4).all())
    assert not bool(m.masked[:, 4:].any())  # only positive weights are masked
    # among the zero weights the order is uniform: each leads about 1/6 of the time
    lead = torch.bincount(m.ids_shuffle[:, 4].cpu() - 4, minlength=6).double()
    from scipy.stats import chisquare

    assert chisquare(lead.numpy()).pvalue > 1e-4


def test_ties_break_by_index(target):
    device, _ = target
    w = torch.ones(2, 7, device=device)
    m = amt_masking(w, mask_ratio=3 / 7, throw_ratio=2 / 7, noise=torch.ones(2, 7, device=device))
    assert m.ids_shuffle.tolist() == [list(range(7))] * 2
    assert m.mask.tolist() == [[1, 1, 1, -1, -1, 0, 0]] * 2
    x = torch.arange(14.0, device=device).reshape(1, 7, 2)
    _, mask, ids_restore = random_masking(x, 0.5, noise=torch.zeros(1, 7, device=device))
    assert ids_restore.tolist() == [list(range(7))] and mask.tolist() == [[0, 0, 0, 1, 1, 1, 1]]


@needs_ext
def test_extension_equals_reference_with_heavy_ties(monkeypatch, rng):
    """Quantised weights and noise (many equal keys, zeros, infinities) give identical results."""
    for _ in range(5):
        B, N = int(rng.integers(1, 6)), int(rng.integers(1, 600))
        w = torch.from_numpy(rng.integers(0, 3, (B, N))).float()
        w[:, 0] = 1.0
        q = torch.from_numpy(rng.choice([0.5, 1.0, 2.0, math.inf], (B, N))).float()
        kw = dict(mask_ratio=float(rng.uniform(0, 0.5)), throw_ratio=float(rng.uniform(0, 0.5)), noise=q)
        monkeypatch.setenv("KAMIM_FAST_BACKEND", "cpp")
        got = amt_masking(w, **kw)
        monkeypatch.setenv("KAMIM_FAST_BACKEND", "torch")
        want = amt_masking(w, **kw)
        ref = amt_masking_ref(w, q, kw["mask_ratio"], kw["throw_ratio"])
        for g, r, f in zip(got, want, ref):
            assert torch.equal(torch.as_tensor(g), torch.as_tensor(r)) and torch.equal(torch.as_tensor(g), torch.as_tensor(f))


@pytest.mark.parametrize(
    "bad, words",
    [
        ("nan", ["weights", "NaN", "row 1"]),
        ("inf", ["weights", "inf", "row 1"]),
        ("negative", ["weights", ">= 0", "row 1"]),
        ("zero", ["weights", "positive", "row 1", "all zero"]),
    ],
)
def test_bad_weight_rows_raise(target, bad, words):
    device, _ = target
    if device == "cuda":
        pytest.skip("CUDA weights are not checked (no host synchronisation); documented")
    w = torch.rand(3, 9) + 0.1
    w[1, 4] = {"nan": math.nan, "inf": math.inf, "negative": -0.5, "zero": 0.0}[bad]
    if bad == "zero":
        w[1] = 0.0
    assert_raises_naming(lambda: amt_masking(w), ValueError, words)


@needs_ext
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.1, -0.0, 0.0])
def test_cpu_kernel_orders_bad_weights_as_the_reference(value, rng):
    """The weights' values are the op boundary's to check (the test above); the C++ kernel, called directly,
    looks at none of them and orders NaN, inf, negative and zero weights by the key of csrc/amt.h, as the CUDA
    kernel does: bit for bit the PyTorch reference's order."""
    dtype = torch.float64 if rng.integers(2) else torch.float32
    B, N = 5, int(rng.integers(8, 40))
    w = torch.from_numpy(rng.random((B, N)) + 0.1).to(dtype)
    q = torch.empty(B, N, dtype=dtype).exponential_(generator=_gen(rng))
    for b in range(B):  # a few bad entries per row, and row 4 all bad
        w[b, torch.from_numpy(rng.choice(N, size=int(rng.integers(1, 4)), replace=False))] = value
    w[4] = value
    num_mask = int(rng.integers(0, N // 2))
    num_throw = int(rng.integers(0, N - num_mask + 1))
    for keep_first in (False, True):
        got = torch.ops.kamim_fast_cpp.amt_masking(q, w, num_mask, num_throw, keep_first)
        want = amt_masking_op_ref(q, w, num_mask, num_throw, keep_first)
        for g, r in zip(got, want):
            assert torch.equal(g, r), (value, keep_first)


# --- gather, scatter, unshuffle --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_gather_patches_any_dtype_and_width(target, rng, dtype):
    device, _ = target
    for D in (1, 2, 3, 5, 7, 8, 13, 16, 768, 771):
        B, N = int(rng.integers(1, 5)), int(rng.integers(1, 70))
        K = int(rng.integers(0, N + 1))
        x = torch.from_numpy(rng.standard_normal((B, N, D))).to(device, dtype)
        ids = torch.stack([torch.randperm(N, generator=_gen(rng))[:K] for _ in range(B)]).to(device)
        out = gather_patches(x, ids)
        assert out.dtype == dtype and torch.equal(out, gather_patches_ref(x, ids))
        # misaligned rows (a view starting one element in) and int32 ids
        xs = x.reshape(-1)[1:].reshape(-1)[: B * N * D - 1] if D > 1 else None
        if xs is not None and xs.numel() >= B * (N - 1) * D:
            xv = xs[: B * (N - 1) * D].reshape(B, N - 1, D)
            ids_v = ids.clamp(max=N - 2) if N > 1 else None
            if ids_v is not None:
                assert torch.equal(gather_patches(xv, ids_v.int()), gather_patches_ref(xv, ids_v))


def test_gather_backward_writes_rows_and_sums_repeats(target, rng):
    device, _ = target
    for dtype in ALL_FLOATS:
        B, N, D, K = 3, 11, 6, 8
        x = torch.from_numpy(rng.standard_normal((B, N, D))).to(device, dtype).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        ids = torch.from_numpy(rng.integers(0, N, (B, K))).to(device)  # repeats likely
        ids[0] = torch.arange(K)  # one distinct row
        up = torch.from_numpy(rng.standard_normal((B, K, D))).to(device, dtype)
        (gather_patches(x, ids) * up).sum().backward()
        (gather_patches_ref(x_ref, ids) * up).sum().backward()
        tol = dict(rtol=1e-2, atol=2e-2) if dtype in (torch.float16, torch.bfloat16) else {}
        torch.testing.assert_close(x.grad, x_ref.grad, **tol)
        assert torch.equal(x.grad[0], x_ref.grad[0])  # distinct ids: exact copies and zeros


def _repeated_ids(rng, B: int, n: int, K: int, dtype: torch.dtype, D: int):
    """(src (B, K, D) float64, ids (B, K)) where row 0 of every image is named 60 times with a large value at
    its first occurrence, row 1 40 times with the large value last, the rest at random; small positive
    addends (swallowed by the large value in the storage dtype) at the other occurrences of rows 0 and 1."""
    ids = np.stack([rng.permutation(np.concatenate([np.zeros(60), np.ones(40), rng.integers(0, n, K - 100)]))
                    for _ in range(B)]).astype(np.int64)
    src = dyadic(rng, (B, K, D))
    for b in range(B):
        for row, large_at in ((0, 0), (1, -1)):
            at = np.flatnonzero(ids[b] == row)
            src[b, at] = dyadic(rng, (len(at), D), positive=True)
            src[b, at[large_at]] = LARGE[dtype]
    return src, ids


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_gather_backward_sums_repeated_ids_in_float32(target, rng, dtype):
    """gather_patches takes any ids, repeats included; its backward adds the rows of repeated ids. In bfloat16 and
    float16 the sum is accumulated in float32 and rounded once: equal bit for bit to the float64 sum rounded to
    the dtype (the inputs make every float32 partial sum exact, halfsum.py), on the op and through autograd."""
    device, _ = target
    for B, n, D, K in ((3, 7, 5, 150), (2, 40, 64, 130), (1, 2, 1, 101)):
        src, ids = _repeated_ids(rng, B, n, K, dtype, D)
        exact = np.zeros((B, n, D))
        np.add.at(exact, (np.arange(B)[:, None], ids), src)
        want = rounded(exact, dtype)
        src_t, ids_t = torch.from_numpy(src).to(device, dtype), torch.from_numpy(ids).to(device)
        assert_bitwise(torch.ops.kamim_fast.gather_patches_backward(src_t, ids_t, n), want,
                       f"gather_patches_backward {dtype} B={B} n={n} D={D}")
        x = torch.zeros(B, n, D, dtype=dtype, device=device, requires_grad=True)
        gather_patches(x, ids_t).backward(src_t)
        assert_bitwise(x.grad, want, f"gather_patches' gradient {dtype} B={B} n={n} D={D}")


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_mask_token_gradient_sums_in_float32(target, rng, dtype):
    """The mask token's gradient sums the gradient of every position it fills (masked, and thrown ones kept), over
    the batch: in float32, rounded once, in bfloat16 and float16 (bit for bit against the float64 sum)."""
    device, _ = target
    B, N, D = 4, 64, 6
    w = torch.from_numpy(rng.uniform(0.1, 1, (B, N))).float().to(device)
    m = amt_masking(w, mask_ratio=0.6, throw_ratio=0.2, generator=_gen(rng, device))
    K = N - m.num_masked - m.num_thrown
    visible = torch.zeros(B, K, D, dtype=dtype, device=device, requires_grad=True)
    token = torch.zeros(D, dtype=dtype, device=device, requires_grad=True)
    for keep_thrown in (False, True):
        rows = (m.masked | (m.thrown if keep_thrown else torch.zeros_like(m.thrown))).cpu()
        kept = torch.ones_like(rows) if keep_thrown else ~m.thrown.cpu()
        full = dyadic(rng, (B, N, D))
        full[rows.numpy()] = dyadic(rng, (int(rows.sum()), D), positive=True)
        first = int(rows[0].nonzero()[0])  # the first token position of the first image holds the large value
        full[0, first] = LARGE[dtype]
        up = torch.from_numpy(full)[kept].reshape(B, -1, D)
        out = unshuffle_with_mask_token(visible, token, m, keep_thrown=keep_thrown)
        gv, gt = torch.autograd.grad(out, (visible, token), up.to(device, dtype))
        assert_bitwise(gt, rounded(full[rows.numpy()].sum(0), dtype), f"mask token gradient {dtype} "
                       f"keep_thrown={keep_thrown}")
        assert_bitwise(gv, rounded(gather_patches_ref(torch.from_numpy(full), m.ids_keep.cpu()), dtype),
                       "visible gradient")


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_cell_weights_sum_in_float32(rng, dtype):
    """amt_cell_weights of half-precision attention: each cell's sum in float32, rounded once."""
    B, h, w, cell = 2, 8, 12, 4
    attn = dyadic(rng, (B, h, w), positive=True)
    attn[:, ::cell, ::cell] = LARGE[dtype]  # the first value of every cell
    got = amt_cell_weights(torch.from_numpy(attn).to(dtype), cell)
    want = rounded(attn.reshape(B, h // cell, cell, w // cell, cell).sum(axis=(2, 4)), dtype)
    assert_bitwise(got, want, f"amt_cell_weights {dtype}")


def test_unshuffle_amt_layout(target, rng):
    device, _ = target
    for dtype in ALL_FLOATS:
        B, N, D = 4, 37, 5
        w = torch.from_numpy(rng.uniform(0.1, 1, (B, N))).float().to(device)
        m = amt_masking(w, generator=_gen(rng, device))
        K = N - m.num_masked - m.num_thrown
        tokens = torch.from_numpy(rng.standard_normal((B, N, D))).to(device, dtype)
        visible = gather_patches(tokens, m.ids_keep).requires_grad_()
        token = torch.randn(D, device=device, dtype=torch.float64).to(dtype).requires_grad_()
        for keep_thrown in (False, True):
            out = unshuffle_with_mask_token(visible, token, m, keep_thrown=keep_thrown)
            want = torch.where(m.visible[..., None], tokens, token.detach())
            if not keep_thrown:
                want = want[~m.thrown].reshape(B, N - m.num_thrown, D)
            assert out.shape == want.shape and torch.equal(out, want)
            up = torch.from_numpy(rng.standard_normal(out.shape)).to(device, dtype)
            gv, gt = torch.autograd.grad((out * up).sum(), (visible, token))
            full = torch.zeros(B, N, D, device=device, dtype=dtype)
            full[~m.thrown if not keep_thrown else torch.ones_like(m.thrown)] = up.reshape(-1, D)
            assert torch.equal(gv, gather_patches_ref(full, m.ids_keep))
            token_rows = m.masked | (m.thrown if keep_thrown else torch.zeros_like(m.thrown))
            tol = dict(rtol=2e-2, atol=5e-2) if dtype in (torch.float16, torch.bfloat16) else {}
            torch.testing.assert_close(gt, full.double()[token_rows].sum(0).to(dtype), **tol)
        assert visible.shape[1] == K


def test_unshuffle_token_gradient_is_deterministic(target):
    device, _ = target
    w = torch.rand(8, 196, device=device) + 0.01
    m = amt_masking(w, generator=torch.Generator(device=device).manual_seed(0))
    visible = torch.randn(8, m.ids_keep.shape[1], 64, device=device, requires_grad=True)
    token = torch.zeros(64, device=device, requires_grad=True)
    up = torch.randn(8, 196 - m.num_thrown, 64, device=device)
    grads = [torch.autograd.grad((unshuffle_with_mask_token(visible, token, m) * up).sum(), token)[0] for _ in range(3)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_gradcheck(target, rng):
    device, _ = target
    x = torch.randn(2, 7, 3, device=device, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[6, 0, 3], [2, 2, 5]], device=device)
    torch.autograd.gradcheck(lambda t: gather_patches(t, ids), (x,))
    torch.autograd.gradgradcheck(lambda t: gather_patches(t, ids), (x,))
    m = amt_masking(torch.rand(2, 7, device=device) + 0.1, mask_ratio=0.3, throw_ratio=0.3, generator=_gen(rng, device))
    vis = torch.randn(2, 3, 3, device=device, dtype=torch.float64, requires_grad=True)
    tok = torch.randn(1, 1, 3, device=device, dtype=torch.float64, requires_grad=True)
    for keep_thrown in (False, True):
        f = lambda v, t: unshuffle_with_mask_token(v, t, m, keep_thrown)  # noqa: E731
        torch.autograd.gradcheck(f, (vis, tok))
        torch.autograd.gradgradcheck(f, (vis, tok))
    noise = torch.rand(2, 7, device=device)
    torch.autograd.gradcheck(lambda t: random_masking(t, 0.5, noise=noise)[0], (x,))


def test_mim_loss_ignores_thrown_patches(rng):
    B, h = 2, 4
    m = amt_masking(torch.rand(B, h * h) + 0.1, generator=_gen(rng))
    pred, target = torch.randn(B, 3, 32, 32), torch.randn(B, 3, 32, 32)
    got = weighted_mim_loss(pred, target, m.mask.reshape(B, h, h))
    assert torch.equal(got, weighted_mim_loss(pred, target, m.masked.reshape(B, h, h)))


def test_amt_cell_weights(rng):
    attn = torch.from_numpy(rng.uniform(0, 1, (3, 14, 14)))
    got = amt_cell_weights(attn, 2)
    assert got.shape == (3, 7, 7)
    torch.testing.assert_close(got, amt_cell_weights_ref(attn, 2))
    for cell in (1, 2, 7):  # the sum over each cell, cell by cell
        got = amt_cell_weights(attn, cell)
        n = 14 // cell
        want = torch.tensor([[[float(attn[b, i * cell : (i + 1) * cell, j * cell : (j + 1) * cell].sum()) for j in range(n)]
                              for i in range(n)] for b in range(3)], dtype=attn.dtype)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got = amt_cell_weights(attn, 2)
    assert math.isclose(float(got.sum()), float(attn.sum()), rel_tol=1e-12)
    assert_raises_naming(lambda: amt_cell_weights(attn, 3), ValueError, ["cell", "14", "3"])
    assert_raises_naming(lambda: amt_cell_weights(attn[0], 2), ValueError, ["attn", "(B, h, w)"])


# --- vit_class_attention ---------------------------------------------------------------------------------------


def _class_attention_from_qkv(vit, images) -> torch.Tensor:
    """REFERENCE.md section 5 from the ViT's weights, sharing no code with kamim_fast: the last block's input,
    its norm1 and qkv Linear by hand, softmax(q_cls . k^T / sqrt(d)) over all tokens, the patches' columns,
    each head scaled to min 0 and max 1 over the patches, the mean over heads."""
    block = vit.blocks[-1]
    seen = []
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        vit.forward_features(images)
    handle.remove()
    x = block.norm1(seen[-1]).double()
    B, T, D = x.shape
    heads = block.attn.num_heads
    d = D // heads
    qkv = x @ block.attn.qkv.weight.double().T + block.attn.qkv.bias.double()
    q = qkv[..., :D].reshape(B, T, heads, d)[:, 0]  # (B, heads, d): the class token's query
    k = qkv[..., D : 2 * D].reshape(B, T, heads, d)  # (B, T, heads, d)
    logits = torch.einsum("bhd,bthd->bht", q, k) / math.sqrt(d)
    row = torch.softmax(logits, dim=-1)[:, :, 1:]  # (B, heads, N): class token excluded
    lo, hi = row.min(-1, keepdim=True).values, row.max(-1, keepdim=True).values
    return ((row - lo) / (hi - lo)).mean(1).float()


def test_vit_class_attention_matches_the_full_attention_matrix():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval()
    images = torch.randn(3, 3, 64, 64)
    fused = [blk.attn.fused_attn for blk in vit.blocks]
    forwards = []
    handle = vit.patch_embed.register_forward_hook(lambda *a: forwards.append(1))
    got = vit_class_attention(vit, images)
    handle.remove()
    assert len(forwards) == 1  # one forward
    assert [blk.attn.fused_attn for blk in vit.blocks] == fused
    want = vit_class_attention_ref(vit, images)
    assert got.shape == (3, 16) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, _class_attention_from_qkv(vit, images), rtol=1e-5, atol=1e-6)
    assert bool((got <= 1).all()) and bool((got >= 0).all())
    assert [blk.attn.fused_attn for blk in vit.blocks] == fused
    # the map feeds amt_masking directly
    m = amt_masking(got + 1e-6, generator=torch.Generator().manual_seed(0))
    assert m.mask.shape == (3, 16)
    assert_raises_naming(lambda: vit_class_attention(torch.nn.Linear(2, 2), images), TypeError,
                         ["model", "VisionTransformer", "Linear"])


# --- argument checks --------------------------------------------------------------------------------------------


def test_argument_errors():
    w, x = torch.rand(2, 10), torch.randn(2, 10, 4)
    meta = torch.device("meta")
    cases = [
        (lambda: amt_masking([[1.0]]), TypeError, ["weights", "torch.Tensor", "list"]),
        (lambda: amt_masking(w.long()), TypeError, ["weights", "float", "int64"]),
        (lambda: amt_masking(w[0]), ValueError, ["weights", "(B, N)", "(10,)"]),
        (lambda: amt_masking(w, mask_ratio=1.5), ValueError, ["mask_ratio", "[0, 1]", "1.5"]),
        (lambda: amt_masking(w, throw_ratio="0.4"), TypeError, ["throw_ratio", "float", "str"]),
        (lambda: amt_masking(w, mask_ratio=0.7, throw_ratio=0.4), ValueError, ["mask_ratio + throw_ratio", "0.7", "0.4"]),
        (lambda: amt_masking(w, noise=torch.rand(2, 9)), ValueError, ["noise", "(2, 10)", "(2, 9)"]),
        (lambda: amt_masking(w, noise=torch.rand(2, 10, device=meta)), ValueError, ["noise", "cpu", "meta"]),
        (lambda: amt_masking(w, noise=torch.rand(2, 10), generator=torch.Generator()), ValueError, ["noise", "generator"]),
        (lambda: amt_masking(w, generator=3), TypeError, ["generator", "int"]),
        (lambda: gather_patches(x, torch.zeros(2, 3)), TypeError, ["ids", "int64", "float32"]),
        (lambda: gather_patches(x, torch.zeros(3, 3, dtype=torch.long)), ValueError, ["ids", "batch size 2", "(3, 3)"]),
        (lambda: gather_patches(x[0], torch.zeros(2, 3, dtype=torch.long)), ValueError, ["x", "(B, N, D)", "(10, 4)"]),
        (lambda: gather_patches(x, torch.zeros(2, 3, dtype=torch.long, device=meta)), ValueError, ["ids", "cpu", "meta"]),
        (lambda: gather_patches(x.int(), torch.zeros(2, 3, dtype=torch.long)), TypeError, ["x", "float", "int32"]),
        (lambda: random_masking(x, -0.1), ValueError, ["mask_ratio", "-0.1"]),
        (lambda: random_masking(x, 0.5, noise=torch.rand(2, 11)), ValueError, ["noise", "(2, 10)", "(2, 11)"]),
        (lambda: unshuffle_with_mask_token(x[:, :3], torch.zeros(5), torch.zeros(2, 10, dtype=torch.long)), ValueError,
         ["mask_token", "D = 4", "(5,)"]),
        (lambda: unshuffle_with_mask_token(x[:, :3], torch.zeros(4), torch.zeros(2, 10)), TypeError,
         ["ids_restore", "int64", "float32"]),
        (lambda: unshuffle_with_mask_token(x[:, :3], torch.zeros(4), torch.zeros(2, 2, dtype=torch.long)), ValueError,
         ["ids_restore", "N >= K = 3", "(2, 2)"]),
        (lambda: unshuffle_with_mask_token(x[:, :3], torch.zeros(4), amt_masking(w)), ValueError,
         ["visible", "2 visible", "(2, 3, 4)"]),
        (lambda: unshuffle_with_mask_token(x[:, :3], torch.zeros(4), torch.zeros(2, 10, dtype=torch.long), 1), TypeError,
         ["keep_thrown", "bool", "int"]),
    ]
    for make, exc, words in cases:
        assert_raises_naming(make, exc, words)


@needs_ext
def test_extension_checks_direct_calls(monkeypatch):
    """The C++ ops check their arguments too: a direct caller gets an error, never a crash."""
    ops = torch.ops.kamim_fast
    x = torch.randn(2, 5, 3)
    # ValueError / IndexError through the stable ABI on torch 2.11-2.14; torch >= 2.15 carries them as RuntimeError
    with pytest.raises((IndexError, RuntimeError), match="ids must be in"):
        ops.gather_patches(x, torch.tensor([[0, 5], [1, 1]]))
    with pytest.raises((IndexError, RuntimeError), match="ids must be in"):
        ops.gather_patches_backward(x, torch.tensor([[0, 1, 2, 3, -1], [0] * 5]), 5)
    with pytest.raises((ValueError, RuntimeError), match="num_mask"):
        ops.amt_masking(torch.rand(2, 5), None, 4, 2, False)
    with pytest.raises((ValueError, RuntimeError), match="permutation"):
        ops.unshuffle_with_mask_token(x[:, :2], torch.zeros(3), torch.tensor([[0, 0, 1, 2, 3]] * 2), 3, 0, True, False)
    # a wrong dtype: TypeError where the op boundary checks it first, else the C++ invariant's RuntimeError (the
    # stable ABI carries no TypeError)
    with pytest.raises((TypeError, RuntimeError), match="noise must be float32 or float64"):
        ops.amt_masking(torch.rand(2, 5).half(), None, 1, 1, False)


# --- torch.library, torch.compile, the build --------------------------------------------------------------------


def test_compile_fullgraph_matches_eager(target, rng):
    device, _ = target
    B, N, D = 3, 49, 8
    w = torch.rand(B, N, device=device) + 0.05
    q = torch.empty(B, N, device=device).exponential_()
    x = torch.randn(B, N, D, device=device)
    token = torch.randn(D, device=device)

    def step(w, q, x, token):
        m = amt_masking(w, noise=q)
        visible = gather_patches(x, m.ids_keep)
        out = unshuffle_with_mask_token(visible * 2, token, m)
        kept, mask, restore = random_masking(x, 0.75, noise=q)
        return out, m.mask, kept, mask, restore

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xs = [t.clone().requires_grad_(t.is_floating_point()) for t in (w, q, x, token)]
    got = compiled(*xs)
    want = step(w, q, x, token)
    for g, v in zip(got, want):
        assert torch.equal(g, v)
    got[0].sum().backward()
    # d sum(out) / dx: 2 at each image's kept rows, 0 elsewhere; / d token: one per masked (not thrown) patch
    m = amt_masking(w, noise=q)
    want_x = torch.zeros(B, N, D, device=device)
    want_x.scatter_(1, m.ids_keep.unsqueeze(-1).expand(-1, -1, D), 2.0)
    assert torch.equal(xs[2].grad, want_x)
    assert torch.equal(xs[3].grad, torch.full((D,), float((m.mask == 1).sum()), device=device))
    # without noise too (drawn inside the graph)
    torch._dynamo.reset()
    m = torch.compile(lambda w: amt_masking(w).mask, fullgraph=True, backend="aot_eager")(w)
    assert (m == 1).sum(1).tolist() == [int(N * 0.45)] * B


def _nvcc() -> Path | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for folder in filter(None, [home, "/usr/local/cuda"]):
        if (Path(folder) / "bin" / "nvcc").exists():
            return Path(folder) / "bin" / "nvcc"
    found = shutil.which("nvcc")
    return Path(found) if found else None


def test_installed_extension_holds_the_cuda_kernels():
    """Where nvcc and a CUDA build of torch are present, `pip install` must have compiled amt_cuda.cu into
    kamim_fast._C: every op has a CUDA kernel (a real compile of the .cu, no GPU needed)."""
    if torch.version.cuda is None or _nvcc() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have nvcc and a CUDA build of torch to compile csrc/amt_cuda.cu")
        pytest.skip("no nvcc or a CPU-only torch: the extension is a CppExtension")
    import importlib

    module = importlib.import_module("kamim_fast._C")  # the installed module, not a JIT build
    assert Path(module.__file__).name.startswith("_C")
    cuda_ops = [name for name, entry in _backend.TABLE.items() if "cuda" in getattr(entry.impls.get("cpp"), "devices", ())]
    assert cuda_ops, "the registry names the ops the extension serves on CUDA"
    for op in cuda_ops:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kamim_fast_cpp::{op}", "CUDA"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"kamim_fast_cpp::{op}", "CPU"), op
    assert _ext.has_cuda()


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=600, cwd=ROOT)


HIDE_C = "import sys; sys.modules['kamim_fast._C'] = None\n"  # makes `import kamim_fast._C` fail


def test_fallback_warns_once_and_forced_extension_raises():
    code = HIDE_C + (
        "import warnings, torch, kamim_fast\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    m = kamim_fast.amt_masking(torch.rand(2, 9) + 0.1, noise=torch.ones(2, 9))\n"
        "    x = kamim_fast.gather_patches(torch.randn(2, 9, 3), m.ids_keep)\n"
        "ours = [w for w in caught if 'PyTorch references' in str(w.message)]\n"
        "print('WARNINGS', len(ours), ours[0].message if ours else '')\n"
        "import os; os.environ['KAMIM_FAST_BACKEND'] = 'cpp'\n"
        "try:\n"
        "    kamim_fast.gather_patches(torch.randn(2, 9, 3), m.ids_keep)\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    out = _run(code, KAMIM_FAST_JIT="0", KAMIM_FAST_BACKEND="auto")
    assert "WARNINGS 1 " in out.stdout and "KAMIM_FAST_JIT=0" in out.stdout, out.stdout + out.stderr
    assert "RAISED KAMIM_FAST_BACKEND=cpp cannot run kamim_fast::gather_patches" in out.stdout, out.stdout + out.stderr


def test_jit_build_of_the_cpu_sources(tmp_path):
    """Without the compiled module, csrc/ is built with ninja at first use (CPU kernels only: KAMIM_FAST_JIT=cpu),
    and CUDA tensors are refused clearly by an extension without CUDA kernels."""
    code = HIDE_C + (
        "import torch, kamim_fast\n"
        "from kamim_fast import _ext, _backend\n"
        "print('STATUS', _ext.status())\n"
        "print('CUDA', _ext.has_cuda())\n"
        "m = kamim_fast.amt_masking(torch.tensor([[1.0, 3.0, 2.0, 0.5]]), mask_ratio=0.5, throw_ratio=0.25, noise=torch.ones(1, 4))\n"
        "print('IDS', m.ids_shuffle.tolist(), m.mask.tolist())\n"
        "try:\n"
        "    _backend.resolve('gather_patches', 'cuda')\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), KAMIM_FAST_BACKEND="cpp", KAMIM_FAST_JIT="cpu",
               MAX_JOBS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    text = out.stdout + out.stderr
    assert "STATUS (True, '')" in out.stdout, text
    assert "CUDA False" in out.stdout and "IDS [[1, 2, 0, 3]] [[-1, 1, 1, 0]]" in out.stdout, text
    assert "RAISED KAMIM_FAST_BACKEND=cpp cannot run kamim_fast::gather_patches on cuda tensors" in out.stdout, text
    assert "built without CUDA" in out.stdout, text
    # announced before it compiled, into a folder of its own (the sources' hash, this torch, this Python)
    (folder,) = tmp_path.glob("kamim_fast/cpu-*")
    assert folder.name.endswith(f"-torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"), folder
    assert list(folder.glob("kamim_fast_cpu*.so")), list(tmp_path.rglob("*"))
    assert f"kamim_fast: compiling the native kernels (CPU kernels only: KAMIM_FAST_JIT=cpu) into {folder}: about" in \
        out.stderr, text
    # a second process loads that build without compiling or announcing anything
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert "STATUS (True, '')" in again.stdout and "compiling" not in again.stderr, again.stdout + again.stderr


def test_public_amt_names():
    for name in ("AMTMask", "amt_masking", "gather_patches", "random_masking", "unshuffle_with_mask_token",
                 "vit_class_attention", "amt_cell_weights"):
        assert name in kamim_fast.__all__ and getattr(kamim_fast, name) is not None
    assert issubclass(AMTMask, tuple) and AMTMask._fields[:4] == ("ids_shuffle", "ids_restore", "ids_keep", "mask")


def test_constants_equal_the_cpp_header():
    """The values that cross languages: the CUDA sort limit and the mask codes, Python's against csrc/amt.h."""
    import re

    from kamim_fast import amt

    header = (ROOT / "csrc" / "amt.h").read_text()
    cpp = {name: int(value) for name, value in re.findall(r"constexpr \w+ (k\w+) = (-?\d+);", header)}
    assert cpp["kMaxSortN"] == amt.MAX_CUDA_N
    assert (cpp["kVisible"], cpp["kMasked"], cpp["kThrown"]) == (amt.VISIBLE, amt.MASKED, amt.THROWN)


# --- counts, ids_unthrown, scatter_patches -------------------------------------------------------------------


def test_amt_counts_round_as_each_published_trainer(rng):
    for _ in range(200):
        n = int(rng.integers(1, 500))
        mr = float(rng.uniform(0, 0.6))
        tr = float(rng.uniform(0, 1 - mr - 1e-9))
        assert amt_counts(n, mr, tr) == (int(n * mr), int(n * tr))
        mae_amt = amt_counts(n, mr, tr, rounding="mae-amt")
        assert mae_amt == (int(n * mr), int(n * (mr + tr)) - int(n * mr))  # mae-AMT's amt_masking_throwing
        if math.ceil(n * mr) + math.ceil(n * tr) <= n:
            assert amt_counts(n, mr, tr, rounding="ceil") == (math.ceil(n * mr), math.ceil(n * tr))  # maskgenerate
    assert amt_counts(196, 0.45, 0.4) == amt_counts(196, 0.45, 0.4, rounding="mae-amt") == (88, 78)
    assert amt_counts(49, 0.44, 0.26, rounding="ceil") == (22, 13) and amt_counts(49, 0.44, 0.26) == (21, 12)
    assert amt_counts(4, 0.45, 0.4, rounding="mae-amt") == (1, 2) != amt_counts(4, 0.45, 0.4)


def test_amt_masking_with_counts(target, rng):
    device, _ = target
    w = torch.rand(3, 49, device=device) + 0.01
    q = torch.empty(3, 49).exponential_(generator=_gen(rng)).to(device)
    by_ratio = amt_masking(w, mask_ratio=0.44, throw_ratio=0.26, noise=q)
    by_count = amt_masking(w, noise=q, num_masked=21, num_thrown=12)
    for a, b in zip(by_ratio, by_count):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    m = amt_masking(w, noise=q, num_masked=22, num_thrown=13)
    assert torch.equal(m.ids_shuffle, by_ratio.ids_shuffle)  # the order does not depend on the counts
    assert (m.mask == 1).sum(1).tolist() == [22] * 3 and (m.mask == -1).sum(1).tolist() == [13] * 3


def test_ids_unthrown_are_the_rows_of_the_unshuffle(target, rng):
    device, _ = target
    B, N, D = 4, 37, 3
    m = amt_masking(torch.rand(B, N, device=device) + 0.1, generator=_gen(rng, device))
    want = torch.stack([torch.nonzero(row != -1).flatten() for row in m.mask])
    assert torch.equal(m.ids_unthrown, want)
    tokens = torch.randn(B, N, D, device=device)
    out = unshuffle_with_mask_token(gather_patches(tokens, m.ids_keep), torch.zeros(D, device=device), m)
    assert torch.equal(out, gather_patches_ref(torch.where(m.visible[..., None], tokens, 0.0), m.ids_unthrown))


@pytest.mark.parametrize("dtype", ALL_FLOATS)
def test_scatter_patches_is_the_adjoint_of_gather(target, rng, dtype):
    device, _ = target
    B, K, D, n = 3, 6, 5, 9
    src = torch.from_numpy(rng.standard_normal((B, K, D))).to(device, dtype).requires_grad_()
    ids = torch.stack([torch.randperm(n, generator=_gen(rng))[:K] for _ in range(B)]).to(device)
    ids[2, 1] = ids[2, 0]  # a repeated id: summed
    out = scatter_patches(src, ids, n)
    want = torch.zeros(B, n, D, device=device, dtype=torch.float64).index_put_(
        (torch.arange(B, device=device)[:, None], ids), src.detach().double(), accumulate=True)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.double(), want, **tol)
    assert torch.equal(out[0], scatter_patches(src[:1], ids[:1], n)[0])  # distinct ids: exact copies and zeros
    up = torch.from_numpy(rng.standard_normal((B, n, D))).to(device, dtype)
    (grad,) = torch.autograd.grad((out * up).sum(), src)
    assert torch.equal(grad, gather_patches_ref(up, ids))
    assert_raises_naming(lambda: scatter_patches(src, ids[:, :2], n), ValueError, ["ids", "(3, 6)", "(3, 2)"])
    assert_raises_naming(lambda: scatter_patches(src, ids, -1), ValueError, ["n", "-1"])
