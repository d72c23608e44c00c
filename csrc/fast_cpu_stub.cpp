// TEMPORARY stand-in for fast_cpu.cpp (branch native-fast), so that the fused loss (mim_loss_cpu.cpp)
// builds and is tested before the native FAST lands. Plain scalar code, written for exactness, not speed.
// Delete this file when native-fast's fast_cpu.cpp is merged (both define the same functions).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "fast_cpu.h"

namespace kamim_fast::cpu {
namespace {

constexpr int kCircle[16][2] = {{0, 3},  {1, 3},   {2, 2},   {3, 1},   {3, 0},  {3, -1}, {2, -2}, {1, -3},
                                {0, -3}, {-1, -3}, {-2, -2}, {-3, -1}, {-3, 0}, {-3, 1}, {-2, 2}, {-1, 3}};
constexpr const char* kRing[9] = {"...###...", "..#####..", ".#######.", "###...###", "###...###",
                                  "###...###", ".#######.", "..#####..", "...###..."};
constexpr int kRingR = 4, kFastR = 3;

float load_float(const ColourImage& img, int64_t off) {
  switch (img.dtype) {
    case ColourDtype::kF32: return static_cast<const float*>(img.data)[off];
    case ColourDtype::kF16: return static_cast<float>(static_cast<const c10::Half*>(img.data)[off]);
    case ColourDtype::kBF16: return static_cast<float>(static_cast<const c10::BFloat16*>(img.data)[off]);
    case ColourDtype::kF64: return static_cast<float>(static_cast<const double*>(img.data)[off]);
    default: return 0.f;
  }
}

int channel_u8(const ColourImage& img, int c, int64_t y, int64_t x) {
  const int64_t off = c * img.stride_c + y * img.stride_h + x * img.stride_w;
  if (img.dtype == ColourDtype::kU8) return static_cast<const uint8_t*>(img.data)[off];
  volatile float s = img.std[c], m = img.mean[c];  // no contraction into an FMA: the reference rounds twice
  float t = load_float(img, off) * s;
  float v = (t + m) * 255.0f;
  v = v > 0.f ? v : 0.f;
  v = std::min(v, 255.0f);
  return static_cast<int>(std::nearbyint(v));
}

}  // namespace

void gray_rows(const ColourImage& img, int64_t y0, int64_t y1, uint8_t* out, int64_t out_stride) {
  const int ci_r = img.bgr ? 2 : 0, ci_b = img.bgr ? 0 : 2;
  for (int64_t y = y0; y < y1; ++y)
    for (int64_t x = 0; x < img.W; ++x) {
      const int r = channel_u8(img, ci_r, y, x), g = channel_u8(img, 1, y, x), b = channel_u8(img, ci_b, y, x);
      out[(y - y0) * out_stride + x] = static_cast<uint8_t>((r * 9798 + g * 19235 + b * 3735 + 16384) >> 15);
    }
}

void cell_cover(const ColourImage& img, int64_t p, int64_t cy0, int64_t cy1, int threshold, bool ring,
                int32_t* cover) {
  const int64_t H = img.H, W = img.W, wc = W / p;
  const int64_t Y0 = cy0 * p, Y1 = cy1 * p;
  std::fill(cover, cover + (cy1 - cy0) * wc, 0);
  if (Y1 <= Y0 || W == 0) return;
  const int64_t kr = ring ? kRingR : 0;               // keypoints that reach the band
  const int64_t ky0 = std::max<int64_t>(Y0 - kr, 0), ky1 = std::min<int64_t>(Y1 + kr, H);
  const int64_t sy0 = std::max<int64_t>(ky0 - 1, 0), sy1 = std::min<int64_t>(ky1 + 1, H);  // scores for NMS
  const int64_t gy0 = std::max<int64_t>(sy0 - kFastR, 0), gy1 = std::min<int64_t>(sy1 + kFastR, H);
  std::vector<uint8_t> gray((gy1 - gy0) * W);
  gray_rows(img, gy0, gy1, gray.data(), W);
  std::vector<int> score((sy1 - sy0) * W, 0);
  for (int64_t y = std::max<int64_t>(sy0, kFastR); y < std::min<int64_t>(sy1, H - kFastR); ++y)
    for (int64_t x = kFastR; x < W - kFastR; ++x) {
      const int v = gray[(y - gy0) * W + x];
      int d[16], above = 0, below = 0;
      for (int k = 0; k < 16; ++k) {
        d[k] = v - gray[(y + kCircle[k][1] - gy0) * W + x + kCircle[k][0]];
        above += d[k] > threshold;
        below += -d[k] > threshold;
      }
      if (above < 9 && below < 9) continue;  // no arc of 9 reaches the threshold: not a corner
      int best = -1000;
      for (int s = 0; s < 16; ++s) {
        int mn = 1000, mx = -1000;
        for (int k = 0; k < 9; ++k) {
          mn = std::min(mn, d[(s + k) & 15]);
          mx = std::max(mx, d[(s + k) & 15]);
        }
        best = std::max(best, std::max(mn, -mx));
      }
      const int sc = best - 1;
      if (sc >= threshold) score[(y - sy0) * W + x] = sc;
    }
  std::vector<uint8_t> covered(ring ? (Y1 - Y0) * W : 0, 0);
  for (int64_t y = ky0; y < ky1; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const int s = score[(y - sy0) * W + x];
      if (s == 0) continue;  // not a corner, or a corner of score 0 (never beats its neighbours, all >= 0)
      bool keep = true;
      for (int dy = -1; dy <= 1 && keep; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          if (!dy && !dx) continue;
          const int64_t yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
          if (score[(yy - sy0) * W + xx] >= s) { keep = false; break; }
        }
      if (!keep) continue;
      if (!ring) {
        cover[(y / p - cy0) * wc + x / p] += 1;
        continue;
      }
      for (int dy = -kRingR; dy <= kRingR; ++dy) {
        const int64_t yy = y + dy;
        if (yy < Y0 || yy >= Y1) continue;
        for (int dx = -kRingR; dx <= kRingR; ++dx) {
          const int64_t xx = x + dx;
          if (xx < 0 || xx >= W || kRing[dy + kRingR][dx + kRingR] != '#') continue;
          covered[(yy - Y0) * W + xx] = 1;
        }
      }
    }
  if (ring)
    for (int64_t y = Y0; y < Y1; ++y)
      for (int64_t x = 0; x < W; ++x) cover[(y / p - cy0) * wc + x / p] += covered[(y - Y0) * W + x];
}

}  // namespace kamim_fast::cpu
