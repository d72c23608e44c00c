// Native CPU FAST: the interface the fused loss (mim_loss_cpu.cpp) uses from fast_cpu.cpp.
// Bit-exact with OpenCV and with the PyTorch references in kamim_fast/ops/ (rgb_to_gray_u8.py, fast_corners.py, ...).
// Plain C++ (no torch headers), so it is cheap to include and to test.
#pragma once

#include <cstdint>
#include <string>

namespace kamim_fast::cpu {

// One image of a (B, 3, H, W) colour batch, any strides (elements, not bytes). uint8 values are used
// as they are; float values (float32/float16/bfloat16/float64, `dtype` below) are un-normalised to
// round((x*std + mean)*255) clamped to [0, 255], NaN -> 0, exactly as channels_to_u8_ref.
enum class ColourDtype : int { kU8 = 0, kF32 = 1, kF16 = 2, kBF16 = 3, kF64 = 4 };

struct ColourImage {
  const void* data;  // element (c, y, x) at data + c*stride_c + y*stride_h + x*stride_w
  ColourDtype dtype;
  int64_t stride_c, stride_h, stride_w;
  int64_t H, W;
  float mean[3], std[3];  // ignored for kU8
  bool bgr;               // COLOR_BGR2GRAY's weights (R's weight on channel 2)
};

// The statistics of the normalisation check of a float image, gathered in the gray pass
// (kamim_fast/ops/rgb_to_gray_u8.py's colour_stats_ref): per channel the minimum and maximum of the values as
// float32 (NaN skipped; +inf and -inf when there is none), and the number of values whose un-normalised
// v = (x*std + mean)*255 (float32) lies more than kGridTolerance from the uint8 value the gray takes,
// round(clamp(v, 0, 255)). Order-free: merged in any order, the same values.
constexpr float kGridTolerance = 0.05f;  // colour_stats_ref's GRID_TOLERANCE (the conformance suite compares)

struct ColourStats {
  float lo[3] = {__builtin_inff(), __builtin_inff(), __builtin_inff()};
  float hi[3] = {-__builtin_inff(), -__builtin_inff(), -__builtin_inff()};
  int64_t off = 0;  // values off the 1/255 grid
  void merge(const ColourStats& o) {
    for (int c = 0; c < 3; ++c) {
      lo[c] = o.lo[c] < lo[c] ? o.lo[c] : lo[c];
      hi[c] = o.hi[c] > hi[c] ? o.hi[c] : hi[c];
    }
    off += o.off;
  }
};

// Gray (OpenCV's fixed point) of rows [y0, y1) into out[(y - y0) * out_stride + x], x in [0, W). With `stats`
// (float images), the statistics of rows [sy0, sy1) among them are merged into it.
void gray_rows(const ColourImage& img, int64_t y0, int64_t y1, uint8_t* out, int64_t out_stride,
               ColourStats* stats = nullptr, int64_t sy0 = 0, int64_t sy1 = 0);

// For weight-cell rows [cy0, cy1) of one image (cells of p x p pixels, H % p == 0, W % p == 0):
// cover[(cy - cy0) * (W / p) + cx] = the number of pixels of cell (cy, cx) covered by the union of the
// drawKeypoints rings of the image's FAST keypoints (ring == true), or the number of keypoints in the
// cell (ring == false). Keypoints are FAST-9/16 with non-max suppression at `threshold`, over the
// whole image (the band reads its own halo of gray rows). Thread-safe; allocates its own scratch. With `stats`
// (float images), the statistics of the band's own pixel rows [cy0 * p, cy1 * p) are merged into it.
void cell_cover(const ColourImage& img, int64_t p, int64_t cy0, int64_t cy1, int threshold, bool ring,
                int32_t* cover, ColourStats* stats = nullptr);

// The ops' `density` argument as cell_cover's flag: true for "ring", false for "count" (the values of
// kamim_fast/_constants.py's DENSITY_MODES); anything else raises (ValueError in Python).
bool ring_density(const std::string& density);

// The ops' `channel_order` argument as the gray weights' flag: true for "bgr" (COLOR_BGR2GRAY), false for
// "rgb" (kamim_fast/_constants.py's CHANNEL_ORDERS); anything else raises (ValueError in Python).
bool bgr_order(const std::string& channel_order);

// The guard of the kernels' reads that the fused CPU loss shares: a cell size p >= 1 dividing H and W (`name`=p,
// of the tensor `what`). The op boundary (Python) checks every argument first, values included; the C++ keeps
// only what its kernels need to run safely and to choose a path (see csrc/README.md, "What the C++ checks").
void check_patch(int64_t p, int64_t H, int64_t W, const char* name, const char* what);

// The vector copy the kernels run ("sse2", "avx2", "avx512" or "portable"; KAMIM_FAST_CPU_ISA forces one).
const char* isa_name();

}  // namespace kamim_fast::cpu
