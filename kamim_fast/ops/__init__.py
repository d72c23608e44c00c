"""The op registry: one module per op (an adjoint shares its forward's module).

Each module holds the op's schema (its ``torch.library.custom_op`` signature, written once), fake kernel,
autograd, PyTorch reference, the one check of its arguments (run before dispatch, the same for every backend),
its implementations with what each supports and why not where it does not, and the samples and tolerances the
conformance suite runs. Importing a module adds its ops to ``kamim_fast._backend.TABLE``, which every list of
ops is read from (tests, benchmarks, the compile tooling, the sanitizer target, the README's backend table).

Adding an op is one module here (and its entry below); adding a backend to an op is its kernel and one
implementation in the op's module.
"""

from . import (  # noqa: F401  (each registers its ops, in this order)
    rgb_to_gray_u8,
    fast_corners,
    keypoint_density,
    patch_weights,
    weighted_mim_loss,
    fast_weighted_mim_loss,
    amt_masking,
    gather_patches,
    random_masking,
    unshuffle_with_mask_token,
)
