// Argument checks shared by the CPU (amt.cpp) and CUDA (amt_cuda.cu) kernels. They guard direct callers
// of torch.ops.kamim_fast.*; the public Python functions check first, with friendlier messages.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace kamim_fast {

void check_masking_args(const at::Tensor& noise, const std::optional<at::Tensor>& weights, int64_t num_mask,
                        int64_t num_throw);
void check_x(const at::Tensor& x, const char* name);
// x (B, N, D) of random_masking: its (B, N) must be the noise's.
void check_x_matches_noise(const at::Tensor& x, const at::Tensor& noise);
void check_ids(const at::Tensor& ids, const at::Tensor& x, const char* name);
void check_unshuffle_with_mask_token_layout(const at::Tensor& ids_restore, int64_t num_visible, int64_t num_mask,
                                            int64_t num_throw);

}  // namespace kamim_fast
