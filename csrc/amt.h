// Shared by amt.cpp (schemas, CPU kernels) and amt_cuda.cu (CUDA kernels): the sort key and the
// partition of the sorted order. Plain C++ usable from host and device code; no torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KAMIM_HD __host__ __device__ __forceinline__
#else
#define KAMIM_HD inline
#endif

namespace kamim_fast {

// Segment codes of the int8 mask (the published AMT encoding).
constexpr int8_t kVisible = 0;
constexpr int8_t kMasked = 1;
constexpr int8_t kThrown = -1;

// Largest N one CUDA block sorts in shared memory (keys + int32 indices, padded to a power of two).
constexpr int64_t kMaxSortN = 4096;

// The ascending sort key of a patch. Without weights it is the noise itself (MAE: argsort(noise)).
// With weights w and noise q it is -w/q for w > 0, so ascending order is w/q descending (AMT: equal in
// distribution to torch.multinomial(w, N) when q ~ Exp(1)); patches with w <= 0 (or NaN) get key q > 0,
// after every positive weight, in random order among themselves. NaN keys become +inf and -0 becomes
// +0, so the order (key, then index) is a strict total order. The PyTorch reference computes the same
// key with the same IEEE operations.
template <typename T>
KAMIM_HD T sort_key(T q, const T* w) {
  T key = q;
  if (w != nullptr && *w > T(0)) key = -(*w / q);
  if (key != key) key = T(INFINITY);
  if (key == T(0)) key = T(0);
  return key;
}

// Segment of sorted position r: keep_first (MAE) lays out [visible | masked | thrown], otherwise (AMT)
// [masked | thrown | visible]. Returns the code; *row is the visible row (r minus the segment start).
KAMIM_HD int8_t segment(int64_t r, int64_t num_visible, int64_t num_mask, int64_t num_throw, bool keep_first,
                        int64_t* row) {
  if (keep_first) {
    *row = r;
    if (r < num_visible) return kVisible;
    return r < num_visible + num_mask ? kMasked : kThrown;
  }
  *row = r - num_mask - num_throw;
  if (r < num_mask) return kMasked;
  return r < num_mask + num_throw ? kThrown : kVisible;
}

}  // namespace kamim_fast
