// CUDA kernels of the AMT ops, registered as the CUDA implementations of kamim_fast_cpp::<op> (CPU kernels:
// amt.cpp; the schemas are the public ops', defined from Python: kamim_fast/_ext.py).
//
// - amt_masking / random_masking (masking_kernel): one block per image sorts (key, index) pairs in shared
//   memory (bitonic sort, padded to a power of two, N <= kMaxSortN), writes ids_shuffle, ids_restore (a
//   scatter of positions, no second sort) and the int8 mask, and (random_masking) copies the kept rows.
//   One launch.
// - gather_patches / gather_patches_backward / unshuffle_with_mask_token / unshuffle_with_mask_token_backward:
//   a block owns up to 32 output rows; the first warp plans them (source and destination row), then the
//   whole block copies the bytes with the widest load the row size and pointers allow (16, 8, 4, 2 or 1
//   bytes: chosen at launch, branched on inside the kernel). Every output element is written by exactly
//   one thread: no atomics on data, so results are deterministic. Repeated ids in gather_patches_backward
//   (the backward of a gather with repeats) take a slower path that sums in ascending k.
// - No host synchronisation anywhere; an out-of-range id trips a device-side assertion, as torch's own
//   index kernels do.

#ifndef USE_CUDA
#define USE_CUDA  // declares the stable C shim's CUDA functions (the current stream)
#endif

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "amt.h"
#include "amt_checks.h"
#include "torch_stable.h"

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>  // STD_CUDA_KERNEL_LAUNCH_CHECK

namespace kamim_fast {

using stable::ScalarType;
using stable::Tensor;

namespace {

// The current CUDA stream of the tensor's device (torch's, so the kernels order with the caller's work).
cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  KF_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) == TORCH_SUCCESS,
           "kamim_fast: no current CUDA stream for device ", stable::device_str(t));
  return static_cast<cudaStream_t>(stream);
}

constexpr int kThreads = 256;
constexpr int kTileRows = 32;  // rows one block owns in the row kernels (one warp plans them)
// The row kernels take images on grid y, capped at 65,535: each block loops over b = blockIdx.y,
// blockIdx.y + gridDim.y, ... so any batch size launches.
constexpr int64_t kMaxGridY = 65535;
inline unsigned grid_y(int64_t B) { return static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY); }

template <typename T>
using acc_type_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The widest power-of-two width (<= 16 bytes) dividing the row size and every base address.
int vector_width(int64_t row_bytes, std::initializer_list<const void*> ptrs) {
  for (int width : {16, 8, 4, 2}) {
    bool ok = row_bytes % width == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % width == 0;
    if (ok) return width;
  }
  return 1;
}

// Copies `rows` rows of row_bytes each, with Vec-wide loads spread over the block. row(r, &dst, &src)
// names the rows: false skips the row, src == nullptr writes zeros.
template <typename Vec, typename RowFn>
__device__ __forceinline__ void copy_rows_vec(int rows, int64_t row_bytes, const RowFn& row) {
  const uint32_t per_row = static_cast<uint32_t>(row_bytes / sizeof(Vec));
  const uint32_t total = static_cast<uint32_t>(rows) * per_row;
  for (uint32_t i = threadIdx.x; i < total; i += blockDim.x) {
    const uint32_t r = i / per_row, c = i - r * per_row;
    char* dst;
    const char* src;
    if (!row(static_cast<int>(r), &dst, &src)) continue;
    const Vec v = src != nullptr ? reinterpret_cast<const Vec*>(src)[c] : Vec{};
    reinterpret_cast<Vec*>(dst)[c] = v;
  }
}

template <typename RowFn>
__device__ __forceinline__ void copy_rows(int width, int rows, int64_t row_bytes, const RowFn& row) {
  switch (width) {
    case 16: copy_rows_vec<uint4>(rows, row_bytes, row); break;
    case 8: copy_rows_vec<uint2>(rows, row_bytes, row); break;
    case 4: copy_rows_vec<uint32_t>(rows, row_bytes, row); break;
    case 2: copy_rows_vec<uint16_t>(rows, row_bytes, row); break;
    default: copy_rows_vec<uint8_t>(rows, row_bytes, row); break;
  }
}

// ---------------------------------------------------------------------------------------------------
// amt_masking and random_masking (the same sort, plus the gather of kept rows): one block per image.

template <typename T>
__global__ void __launch_bounds__(kThreads) masking_kernel(
    const T* __restrict__ noise, const T* __restrict__ weights, int64_t N, int P, int64_t num_mask,
    int64_t num_throw, bool keep_first, int64_t* __restrict__ ids_shuffle, int64_t* __restrict__ ids_restore,
    int8_t* __restrict__ mask, const char* __restrict__ x, char* __restrict__ x_kept, int64_t row_bytes, int width) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* keys = reinterpret_cast<T*>(smem);
  int* idx = reinterpret_cast<int*>(keys + P);
  const int64_t b = blockIdx.x;
  const T* q = noise + b * N;
  const T* w = weights != nullptr ? weights + b * N : nullptr;
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    keys[i] = i < N ? sort_key<T>(q[i], w != nullptr ? w + i : nullptr) : T(INFINITY);
    idx[i] = i;  // padding sorts last: key +inf and an index above every real one
  }
  __syncthreads();
  // Bitonic sort of (key, index) ascending; each thread compares P/2 / blockDim pairs per stage.
  for (int k = 2; k <= P; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int p = threadIdx.x; p < P / 2; p += blockDim.x) {
        const int i = 2 * j * (p / j) + (p % j), l = i + j;
        const T ki = keys[i], kl = keys[l];
        const int ii = idx[i], il = idx[l];
        const bool i_after_l = kl < ki || (kl == ki && il < ii);
        const bool ascending = (i & k) == 0;
        if (i_after_l == ascending) {
          keys[i] = kl, keys[l] = ki;
          idx[i] = il, idx[l] = ii;
        }
      }
      __syncthreads();
    }
  }
  const int64_t K = N - num_mask - num_throw;
  for (int r = threadIdx.x; r < N; r += blockDim.x) {
    const int n = idx[r];
    int64_t row;
    const int8_t code = segment(r, K, num_mask, num_throw, keep_first, &row);
    ids_shuffle[b * N + r] = n;
    ids_restore[b * N + n] = r;  // the inverse permutation, by scatter
    mask[b * N + n] = code;
  }
  if (x == nullptr) return;
  const int64_t start = keep_first ? 0 : num_mask + num_throw;
  copy_rows(width, static_cast<int>(K), row_bytes, [&](int k, char** dst, const char** src) {
    *dst = x_kept + (b * K + k) * row_bytes;
    *src = x + (b * N + idx[start + k]) * row_bytes;
    return true;
  });
}

template <typename T>
void launch_masking(const Tensor& noise, const std::optional<Tensor>& weights, int64_t B, int64_t N, int P,
                    int64_t num_mask, int64_t num_throw, bool keep_first, Tensor& ids_shuffle, Tensor& ids_restore,
                    Tensor& mask, const std::optional<Tensor>& x, std::optional<Tensor>& x_kept, int64_t row_bytes,
                    int width) {
  const size_t shared = static_cast<size_t>(P) * (sizeof(T) + sizeof(int));
  masking_kernel<T><<<static_cast<unsigned>(B), kThreads, shared, current_stream(noise)>>>(
      noise.const_data_ptr<T>(), weights.has_value() ? weights->const_data_ptr<T>() : nullptr, N, P, num_mask,
      num_throw, keep_first, ids_shuffle.mutable_data_ptr<int64_t>(), ids_restore.mutable_data_ptr<int64_t>(),
      mask.mutable_data_ptr<int8_t>(), x.has_value() ? static_cast<const char*>(x->const_data_ptr()) : nullptr,
      x.has_value() ? static_cast<char*>(x_kept->mutable_data_ptr()) : nullptr, row_bytes, width);
  STD_CUDA_KERNEL_LAUNCH_CHECK();
}

// (x_kept when x is given, ids_shuffle, ids_restore, mask).
std::tuple<std::optional<Tensor>, Tensor, Tensor, Tensor> masking_cuda_impl(
    const Tensor& noise_in, const std::optional<Tensor>& weights_in, int64_t num_mask, int64_t num_throw,
    bool keep_first, const std::optional<Tensor>& x_in) {
  check_masking_args(noise_in, weights_in, num_mask, num_throw);
  const torch::stable::accelerator::DeviceGuard guard(noise_in.get_device_index());
  const Tensor noise = torch::stable::contiguous(noise_in);
  std::optional<Tensor> weights;
  if (weights_in.has_value()) weights = torch::stable::contiguous(*weights_in);
  const int64_t B = noise.size(0), N = noise.size(1), K = N - num_mask - num_throw;
  KF_CHECK_VALUE(N <= kMaxSortN, "the CUDA kernel sorts up to N = ", kMaxSortN,
                 " patches per image in shared memory, got N = ", N);
  Tensor ids_shuffle = stable::empty_like_device(noise, {B, N}, ScalarType::Long);
  Tensor ids_restore = stable::empty_like_device(noise, {B, N}, ScalarType::Long);
  Tensor mask = stable::empty_like_device(noise, {B, N}, ScalarType::Char);
  std::optional<Tensor> x, x_kept;
  int64_t row_bytes = 0;
  int width = 1;
  if (x_in.has_value()) {
    KF_CHECK_VALUE(stable::same_device(*x_in, noise), "x must be on noise's device ", stable::device_str(noise),
                   ", got ", stable::device_str(*x_in));
    x = torch::stable::contiguous(*x_in);
    x_kept = stable::empty_like_device(*x, {B, K, x->size(2)}, x->scalar_type());
    row_bytes = x->size(2) * static_cast<int64_t>(x->element_size());
    width = vector_width(row_bytes, {x->const_data_ptr(), x_kept->const_data_ptr()});
    KF_CHECK_VALUE(K * (row_bytes / width) < (int64_t(1) << 31), "random_masking: K * D too large for one block");
  }
  if (B == 0 || N == 0) return {x_kept, ids_shuffle, ids_restore, mask};
  int P = 1;
  while (P < N) P <<= 1;
  if (noise.scalar_type() == ScalarType::Double)
    launch_masking<double>(noise, weights, B, N, P, num_mask, num_throw, keep_first, ids_shuffle, ids_restore, mask,
                           x, x_kept, row_bytes, width);
  else
    launch_masking<float>(noise, weights, B, N, P, num_mask, num_throw, keep_first, ids_shuffle, ids_restore, mask,
                          x, x_kept, row_bytes, width);
  return {x_kept, ids_shuffle, ids_restore, mask};
}

// ---------------------------------------------------------------------------------------------------
// gather_patches: out[b, k] = x[b, ids[b, k]]. grid (ceil(K / 32), min(B, 65535)).

__global__ void __launch_bounds__(kThreads) gather_patches_kernel(const char* __restrict__ x,
                                                                  const int64_t* __restrict__ ids,
                                                                  char* __restrict__ out, int64_t B, int64_t N,
                                                                  int64_t K, int64_t row_bytes, int width) {
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  __shared__ int64_t src_row[kTileRows];
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    __syncthreads();  // the previous image's copies are done with src_row
    if (threadIdx.x < kTileRows && k0 + threadIdx.x < K) {
      const int64_t n = ids[b * K + k0 + threadIdx.x];
      CUDA_KERNEL_ASSERT(n >= 0 && n < N && "gather_patches: id out of range");
      src_row[threadIdx.x] = n;
    }
    __syncthreads();
    const int rows = static_cast<int>(K - k0 < kTileRows ? K - k0 : kTileRows);
    copy_rows(width, rows, row_bytes, [&](int t, char** dst, const char** src) {
      *dst = out + (b * K + k0 + t) * row_bytes;
      *src = x + (b * N + src_row[t]) * row_bytes;
      return true;
    });
  }
}

Tensor gather_patches_cuda(const Tensor& x_in, const Tensor& ids_in) {
  check_x(x_in, "x");
  check_ids(ids_in, x_in, "ids");
  const torch::stable::accelerator::DeviceGuard guard(x_in.get_device_index());
  const Tensor x = torch::stable::contiguous(x_in), ids = torch::stable::contiguous(ids_in);
  const int64_t B = x.size(0), N = x.size(1), K = ids.size(1);
  const int64_t row_bytes = x.size(2) * static_cast<int64_t>(x.element_size());
  Tensor out = stable::empty_like_device(x, {B, K, x.size(2)}, x.scalar_type());
  if (B == 0 || K == 0 || row_bytes == 0) return out;
  const int width = vector_width(row_bytes, {x.const_data_ptr(), out.const_data_ptr()});
  const dim3 grid(static_cast<unsigned>((K + kTileRows - 1) / kTileRows), grid_y(B));
  gather_patches_kernel<<<grid, kThreads, 0, current_stream(x)>>>(
      static_cast<const char*>(x.const_data_ptr()), ids.const_data_ptr<int64_t>(),
      static_cast<char*>(out.mutable_data_ptr()), B, N, K, row_bytes, width);
  STD_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// ---------------------------------------------------------------------------------------------------
// gather_patches_backward: out (B, n, D) = 0; out[b, ids[b, k]] += src[b, k]. grid (ceil(n / 32), min(B, 65535)).
// Each block finds, for its 32 output rows, the k that names each (plain stores; a second pass detects
// repeats). Without repeats every row is one copy or zeros; with repeats the block sums in ascending k.

template <typename T>
__device__ __forceinline__ void gather_patches_backward_image(const T* __restrict__ src,
                                                              const int64_t* __restrict__ ids, T* __restrict__ out,
                                                              int64_t b, int64_t r0, int64_t n, int64_t K, int64_t D,
                                                              int width, int64_t* slot, int& repeated) {
  if (threadIdx.x < kTileRows) slot[threadIdx.x] = -1;
  if (threadIdx.x == 0) repeated = 0;
  __syncthreads();
  const int64_t* id = ids + b * K;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t r = id[k];
    CUDA_KERNEL_ASSERT(r >= 0 && r < n && "gather_patches_backward: id out of range");
    if (r >= r0 && r < r0 + kTileRows) slot[r - r0] = k;
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const int64_t r = id[k];
    if (r >= r0 && r < r0 + kTileRows && slot[r - r0] != k) repeated = 1;  // every writer stores 1
  }
  __syncthreads();
  const int rows = static_cast<int>(n - r0 < kTileRows ? n - r0 : kTileRows);
  if (!repeated) {
    const int64_t row_bytes = D * static_cast<int64_t>(sizeof(T));
    copy_rows(width, rows, row_bytes, [&](int t, char** dst, const char** from) {
      *dst = reinterpret_cast<char*>(out + (b * n + r0 + t) * D);
      *from = slot[t] >= 0 ? reinterpret_cast<const char*>(src + (b * K + slot[t]) * D) : nullptr;
      return true;
    });
    return;
  }
  using acc_t = acc_type_t<T>;
  for (int64_t i = threadIdx.x; i < rows * D; i += blockDim.x) {
    const int64_t t = i / D, d = i - t * D;
    acc_t acc = 0;
    for (int64_t k = 0; k < K; ++k)
      if (id[k] == r0 + t) acc += static_cast<acc_t>(src[(b * K + k) * D + d]);
    out[(b * n + r0 + t) * D + d] = static_cast<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) gather_patches_backward_kernel(
    const T* __restrict__ src, const int64_t* __restrict__ ids, T* __restrict__ out, int64_t B, int64_t n, int64_t K,
    int64_t D, int width) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  __shared__ int64_t slot[kTileRows];
  __shared__ int repeated;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    __syncthreads();  // the previous image is done with slot and repeated
    gather_patches_backward_image(src, ids, out, b, r0, n, K, D, width, slot, repeated);
  }
}

Tensor gather_patches_backward_cuda(const Tensor& src_in, const Tensor& ids_in, int64_t n) {
  check_x(src_in, "src");
  check_ids(ids_in, src_in, "ids");
  KF_CHECK_VALUE(ids_in.size(1) == src_in.size(1), "ids must be (B, K) with K = ", src_in.size(1), ", got shape ",
                 stable::shape(ids_in));
  KF_CHECK_VALUE(n >= 0, "n must be >= 0, got ", n);
  const torch::stable::accelerator::DeviceGuard guard(src_in.get_device_index());
  const Tensor src = torch::stable::contiguous(src_in), ids = torch::stable::contiguous(ids_in);
  const int64_t B = src.size(0), K = src.size(1), D = src.size(2);
  Tensor out = stable::empty_like_device(src, {B, n, D}, src.scalar_type());
  if (B == 0 || n == 0 || D == 0) return out;
  const int width = vector_width(D * static_cast<int64_t>(src.element_size()), {src.const_data_ptr(), out.const_data_ptr()});
  const dim3 grid(static_cast<unsigned>((n + kTileRows - 1) / kTileRows), grid_y(B));
  dispatch_float(src.scalar_type(), "gather_patches_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    gather_patches_backward_kernel<scalar_t><<<grid, kThreads, 0, current_stream(src)>>>(
        static_cast<const scalar_t*>(src.const_data_ptr()), ids.const_data_ptr<int64_t>(),
        static_cast<scalar_t*>(out.mutable_data_ptr()), B, n, K, D, width);
    STD_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// unshuffle_with_mask_token and its adjoint. grid (ceil(N / 32), min(B, 65535)); a block owns 32 original
// positions. Output row of position n: n minus the thrown positions before it (when they are dropped),
// counted by the block.

struct Plan {
  int64_t out_row[kTileRows];  // -1: no output row (dropped, or past N)
  int64_t src_row[kTileRows];  // visible row, or -1 for the mask token
};

__device__ void plan_tile(Plan& plan, const int64_t* __restrict__ restore, int64_t N, int64_t K, int64_t num_mask,
                          int64_t num_throw, bool keep_first, bool keep_thrown) {
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  int64_t before = n0;  // output rows before n0
  if (!keep_thrown) {
    for (int64_t base = 0; base < n0; base += blockDim.x) {
      const int64_t n = base + threadIdx.x;
      int64_t row;
      const bool thrown = n < n0 && segment(restore[n], K, num_mask, num_throw, keep_first, &row) == kThrown;
      before -= __syncthreads_count(thrown);
    }
  }
  if (threadIdx.x < kTileRows) {
    const int64_t n = n0 + threadIdx.x;
    int64_t row = -1;
    int8_t code = kThrown;
    if (n < N) {
      const int64_t r = restore[n];
      CUDA_KERNEL_ASSERT(r >= 0 && r < N && "unshuffle_with_mask_token: ids_restore out of range");
      code = segment(r, K, num_mask, num_throw, keep_first, &row);
    }
    const bool emit = n < N && (keep_thrown || code != kThrown);
    const unsigned ballot = __ballot_sync(0xffffffffu, emit);
    plan.out_row[threadIdx.x] = emit ? before + __popc(ballot & ((1u << threadIdx.x) - 1u)) : -1;
    plan.src_row[threadIdx.x] = code == kVisible ? row : -1;
  }
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) unshuffle_with_mask_token_kernel(
    const char* __restrict__ visible, const char* __restrict__ token, const int64_t* __restrict__ ids_restore,
    char* __restrict__ out, int64_t B, int64_t N, int64_t K, int64_t num_mask, int64_t num_throw, bool keep_first,
    bool keep_thrown, int64_t n_out, int64_t row_bytes, int width) {
  __shared__ Plan plan;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    __syncthreads();  // the previous image's copies are done with the plan
    plan_tile(plan, ids_restore + b * N, N, K, num_mask, num_throw, keep_first, keep_thrown);
    copy_rows(width, kTileRows, row_bytes, [&](int t, char** dst, const char** src) {
      if (plan.out_row[t] < 0) return false;
      *dst = out + (b * n_out + plan.out_row[t]) * row_bytes;
      *src = plan.src_row[t] >= 0 ? visible + (b * K + plan.src_row[t]) * row_bytes : token;
      return true;
    });
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) unshuffle_with_mask_token_backward_kernel(
    const T* __restrict__ grad, const int64_t* __restrict__ ids_restore, T* __restrict__ grad_visible,
    acc_type_t<T>* __restrict__ partial, int64_t B, int64_t N, int64_t K, int64_t num_mask, int64_t num_throw,
    bool keep_first, bool keep_thrown, int64_t n_out, int64_t D, int width) {
  __shared__ Plan plan;
  const int64_t row_bytes = D * static_cast<int64_t>(sizeof(T));
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    __syncthreads();  // the previous image is done with the plan
    plan_tile(plan, ids_restore + b * N, N, K, num_mask, num_throw, keep_first, keep_thrown);
    copy_rows(width, kTileRows, row_bytes, [&](int t, char** dst, const char** src) {
      if (plan.out_row[t] < 0 || plan.src_row[t] < 0) return false;
      *dst = reinterpret_cast<char*>(grad_visible + (b * K + plan.src_row[t]) * D);
      *src = reinterpret_cast<const char*>(grad + (b * n_out + plan.out_row[t]) * D);
      return true;
    });
    // The mask token's partial sum over this block's positions, in ascending position.
    acc_type_t<T>* p = partial + (b * gridDim.x + blockIdx.x) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      acc_type_t<T> acc = 0;
      for (int t = 0; t < kTileRows; ++t)
        if (plan.out_row[t] >= 0 && plan.src_row[t] < 0)
          acc += static_cast<acc_type_t<T>>(grad[(b * n_out + plan.out_row[t]) * D + d]);
      p[d] = acc;
    }
  }
}

Tensor unshuffle_with_mask_token_cuda(const Tensor& visible_in, const Tensor& mask_token_in,
                                      const Tensor& ids_restore_in, int64_t num_mask, int64_t num_throw,
                                      bool keep_first, bool keep_thrown) {
  check_x(visible_in, "visible");
  check_unshuffle_with_mask_token_layout(ids_restore_in, visible_in.size(1), num_mask, num_throw);
  const torch::stable::accelerator::DeviceGuard guard(visible_in.get_device_index());
  const Tensor visible = torch::stable::contiguous(visible_in);
  const Tensor ids_restore = torch::stable::contiguous(ids_restore_in);
  const Tensor token = torch::stable::contiguous(mask_token_in);
  const int64_t B = visible.size(0), K = visible.size(1), D = visible.size(2), N = ids_restore.size(1);
  KF_CHECK_VALUE(ids_restore.size(0) == B, "ids_restore must have batch size ", B, ", got ", ids_restore.size(0));
  KF_CHECK_VALUE(token.numel() == D && token.scalar_type() == visible.scalar_type(), "mask_token must hold D = ", D,
                 " values of visible's dtype ", visible.scalar_type(), ", got shape ", stable::shape(token), " ",
                 token.scalar_type());
  KF_CHECK_VALUE(stable::same_device(ids_restore, visible) && stable::same_device(token, visible),
                 "ids_restore and mask_token must be on visible's device ", stable::device_str(visible));
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  Tensor out = stable::empty_like_device(visible, {B, n_out, D}, visible.scalar_type());
  const int64_t row_bytes = D * static_cast<int64_t>(visible.element_size());
  if (B == 0 || N == 0 || D == 0) return out;
  const int width = vector_width(row_bytes, {visible.const_data_ptr(), token.const_data_ptr(), out.const_data_ptr()});
  const dim3 grid(static_cast<unsigned>((N + kTileRows - 1) / kTileRows), grid_y(B));
  unshuffle_with_mask_token_kernel<<<grid, kThreads, 0, current_stream(visible)>>>(
      static_cast<const char*>(visible.const_data_ptr()), static_cast<const char*>(token.const_data_ptr()),
      ids_restore.const_data_ptr<int64_t>(), static_cast<char*>(out.mutable_data_ptr()), B, N, K, num_mask, num_throw,
      keep_first, keep_thrown, n_out, row_bytes, width);
  STD_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<Tensor, Tensor> unshuffle_with_mask_token_backward_cuda(const Tensor& grad_in,
                                                                    const Tensor& ids_restore_in, int64_t num_visible,
                                                                    int64_t num_mask, int64_t num_throw,
                                                                    bool keep_first, bool keep_thrown) {
  check_x(grad_in, "grad");
  check_unshuffle_with_mask_token_layout(ids_restore_in, num_visible, num_mask, num_throw);
  const torch::stable::accelerator::DeviceGuard guard(grad_in.get_device_index());
  const Tensor grad = torch::stable::contiguous(grad_in), ids_restore = torch::stable::contiguous(ids_restore_in);
  const int64_t B = grad.size(0), D = grad.size(2), N = ids_restore.size(1), K = num_visible;
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  KF_CHECK_VALUE(grad.size(1) == n_out && ids_restore.size(0) == B, "grad must be (B, ", n_out,
                 ", D) for ids_restore of shape ", stable::shape(ids_restore), ", got ", stable::shape(grad));
  KF_CHECK_VALUE(stable::same_device(ids_restore, grad), "ids_restore must be on grad's device ",
                 stable::device_str(grad), ", got ", stable::device_str(ids_restore));
  Tensor grad_visible = stable::zeros_like_device(grad, {B, K, D}, grad.scalar_type());
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const ScalarType acc_dtype = grad.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  Tensor partial = stable::zeros_like_device(grad, {B * tiles, D}, acc_dtype);
  if (B > 0 && N > 0 && D > 0) {
    const int width = vector_width(D * static_cast<int64_t>(grad.element_size()),
                                   {grad.const_data_ptr(), grad_visible.const_data_ptr()});
    const dim3 grid(static_cast<unsigned>(tiles), grid_y(B));
    dispatch_float(grad.scalar_type(), "unshuffle_with_mask_token_backward", [&](auto tag) {
      using scalar_t = decltype(tag);
      unshuffle_with_mask_token_backward_kernel<scalar_t><<<grid, kThreads, 0, current_stream(grad)>>>(
          static_cast<const scalar_t*>(grad.const_data_ptr()), ids_restore.const_data_ptr<int64_t>(),
          static_cast<scalar_t*>(grad_visible.mutable_data_ptr()),
          static_cast<acc_type_t<scalar_t>*>(partial.mutable_data_ptr()), B, N, K, num_mask, num_throw, keep_first,
          keep_thrown, n_out, D, width);
      STD_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // torch's reductions are deterministic: a fixed-order sum of the per-block partials.
  const Tensor token = torch::stable::sum(partial, std::vector<int64_t>{0});
  return {grad_visible, torch::stable::to(token, grad.scalar_type())};
}

std::tuple<Tensor, Tensor, Tensor> amt_masking_cuda(const Tensor& noise, const std::optional<Tensor>& weights,
                                                    int64_t num_mask, int64_t num_throw, bool keep_first) {
  auto [x_kept, s, r, m] = masking_cuda_impl(noise, weights, num_mask, num_throw, keep_first, std::nullopt);
  return {s, r, m};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> random_masking_cuda(const Tensor& x, const Tensor& noise,
                                                               const std::optional<Tensor>& weights, int64_t num_mask,
                                                               int64_t num_throw, bool keep_first) {
  check_x_matches_noise(x, noise);
  auto [x_kept, s, r, m] = masking_cuda_impl(noise, weights, num_mask, num_throw, keep_first, x);
  return {*x_kept, s, r, m};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(kamim_fast_cpp, CUDA, m) {
  m.impl("amt_masking", TORCH_BOX(&amt_masking_cuda));
  m.impl("random_masking", TORCH_BOX(&random_masking_cuda));
  m.impl("gather_patches", TORCH_BOX(&gather_patches_cuda));
  m.impl("gather_patches_backward", TORCH_BOX(&gather_patches_backward_cuda));
  m.impl("unshuffle_with_mask_token", TORCH_BOX(&unshuffle_with_mask_token_cuda));
  m.impl("unshuffle_with_mask_token_backward", TORCH_BOX(&unshuffle_with_mask_token_backward_cuda));
}

}  // namespace kamim_fast
