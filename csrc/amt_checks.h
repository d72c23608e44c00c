// Checks of the kernels' invariants shared by the CPU (amt.cpp) and CUDA (amt_cuda.cu) kernels. They guard direct
// callers of torch.ops.kamim_fast_cpp.*; the ops' arguments are checked first, in Python, with friendlier messages.
#pragma once

#include <optional>

#include "torch_stable.h"

namespace kamim_fast {

void check_masking_args(const stable::Tensor& noise, const std::optional<stable::Tensor>& weights, int64_t num_mask,
                        int64_t num_throw);
void check_x(const stable::Tensor& x, const char* name);
// x (B, N, D) of random_masking: its (B, N) must be the noise's.
void check_x_matches_noise(const stable::Tensor& x, const stable::Tensor& noise);
void check_ids(const stable::Tensor& ids, const stable::Tensor& x, const char* name);
void check_unshuffle_with_mask_token_layout(const stable::Tensor& ids_restore, int64_t num_visible, int64_t num_mask,
                                            int64_t num_throw);

// Calls f(T{}) with T the C++ type of a float dtype (float, double, Half, BFloat16); other dtypes raise.
template <class F>
void dispatch_float(stable::ScalarType t, const char* what, F&& f) {
  switch (t) {
    case stable::ScalarType::Float: return f(float{});
    case stable::ScalarType::Double: return f(double{});
    case stable::ScalarType::Half: return f(stable::Half{});
    case stable::ScalarType::BFloat16: return f(stable::BFloat16{});
    default: KF_CHECK(false, what, ": unsupported dtype ", t);
  }
}

}  // namespace kamim_fast
