// KAMIM's weights from a keypoint density, with torch's own kernels (fast_cpu.cpp): shared by patch_weights and
// the fused CPU loss (mim_loss_cpu.cpp), so both give kamim_fast/ops/patch_weights.py's density_to_weights to the bit.
#pragma once

#include "torch_stable.h"

namespace kamim_fast {

// (B, h, w) float32 density -> exp(clip(d / temperature, -20, 20)) / its per-image minimum, (B, h, w) float32.
stable::Tensor density_to_weights(const stable::Tensor& density, double temperature);

}  // namespace kamim_fast
