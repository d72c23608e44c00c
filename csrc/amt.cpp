// The AMT ops' CPU kernels, registered as the CPU implementations of kamim_fast_cpp::<op> (whose schemas are the
// public kamim_fast::<op> ones, defined from Python: kamim_fast/_ext.py). CUDA kernels: amt_cuda.cu. The public
// ops, their fake kernels and autograd are Python, and the implementation table (kamim_fast/_backend.py) calls these.
//
// Layout of one image's sorted order (see amt.h): MAE's random_masking keeps the first K patches
// (keep_first), AMT masks the first num_mask, throws the next num_throw and keeps the rest.

#include <Python.h>  // the limited API (Py_LIMITED_API): the module init below only

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "amt.h"
#include "amt_checks.h"

// `import kamim_fast._C` loads this library (and so registers the kernels); the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "kamim_fast's native kernels (torch.ops.kamim_fast_cpp)",
                                   -1, nullptr};
  return PyModule_Create(&module_def);
}

namespace kamim_fast {

using stable::ScalarType;
using stable::Tensor;

void check_masking_args(const Tensor& noise, const std::optional<Tensor>& weights, int64_t num_mask,
                        int64_t num_throw) {
  KF_CHECK_VALUE(noise.dim() == 2, "noise must be (B, N), got shape ", stable::shape(noise));
  KF_CHECK(noise.scalar_type() == ScalarType::Float || noise.scalar_type() == ScalarType::Double,
           "noise must be float32 or float64, got ", noise.scalar_type());
  const int64_t N = noise.size(1);
  KF_CHECK_VALUE(num_mask >= 0 && num_throw >= 0 && num_mask + num_throw <= N,
                 "num_mask and num_throw must be >= 0 with num_mask + num_throw <= N = ", N, ", got ", num_mask,
                 " and ", num_throw);
  if (weights.has_value()) {
    KF_CHECK_VALUE(stable::shape(*weights) == stable::shape(noise), "weights must have noise's shape ",
                   stable::shape(noise), ", got ", stable::shape(*weights));
    KF_CHECK(weights->scalar_type() == noise.scalar_type(), "weights must have noise's dtype ", noise.scalar_type(),
             ", got ", weights->scalar_type());
    KF_CHECK_VALUE(stable::same_device(*weights, noise), "weights must be on noise's device ",
                   stable::device_str(noise), ", got ", stable::device_str(*weights));
  }
}

namespace {

// Work items per thread of parallel_for so that a parallel region holds at least kParallelBytes of memory
// traffic (or of sort work): smaller calls run on the calling thread, where waking another one costs more than
// the work (and, on a shared machine, may wait for a core another process holds).
constexpr int64_t kParallelBytes = int64_t(1) << 18;

int64_t grain(int64_t bytes_per_item) { return std::max<int64_t>(1, kParallelBytes / std::max<int64_t>(1, bytes_per_item)); }

// One image: sort, write ids_shuffle, ids_restore (scatter of positions) and the mask, copy kept rows.
template <typename T>
void masking_cpu(const Tensor& noise, const std::optional<Tensor>& weights, int64_t num_mask, int64_t num_throw,
                 bool keep_first, const std::optional<Tensor>& x, Tensor& ids_shuffle, Tensor& ids_restore,
                 Tensor& mask, std::optional<Tensor>& x_kept) {
  const int64_t B = noise.size(0), N = noise.size(1);
  const int64_t K = N - num_mask - num_throw;
  const T* q = noise.const_data_ptr<T>();
  const T* w = weights.has_value() ? weights->const_data_ptr<T>() : nullptr;
  int64_t* shuffle = ids_shuffle.mutable_data_ptr<int64_t>();
  int64_t* restore = ids_restore.mutable_data_ptr<int64_t>();
  int8_t* m = mask.mutable_data_ptr<int8_t>();
  const bool gather = x.has_value();
  const int64_t row_bytes = gather ? x->size(2) * static_cast<int64_t>(x->element_size()) : 0;
  const char* xs = gather ? static_cast<const char*>(x->const_data_ptr()) : nullptr;
  char* out = gather ? static_cast<char*>(x_kept->mutable_data_ptr()) : nullptr;
  // per image: a sort of N keys (about 16 log2 N bytes of work per key) and K rows copied
  int64_t log2_n = 1;
  while ((int64_t(1) << log2_n) < N) ++log2_n;
  const int64_t image_bytes = N * 16 * log2_n + K * row_bytes;
  torch::stable::parallel_for(0, B, grain(image_bytes), [&](int64_t b0, int64_t b1) {
    std::vector<T> keys(N);
    std::vector<int64_t> order(N);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t n = 0; n < N; ++n) keys[n] = sort_key<T>(q[b * N + n], w ? w + b * N + n : nullptr);
      std::iota(order.begin(), order.end(), int64_t(0));
      std::sort(order.begin(), order.end(),
                [&](int64_t i, int64_t j) { return keys[i] < keys[j] || (keys[i] == keys[j] && i < j); });
      for (int64_t r = 0; r < N; ++r) {
        const int64_t n = order[r];
        int64_t row;
        shuffle[b * N + r] = n;
        restore[b * N + n] = r;
        m[b * N + n] = segment(r, K, num_mask, num_throw, keep_first, &row);
        if (gather && m[b * N + n] == kVisible && row_bytes)
          std::memcpy(out + (b * K + row) * row_bytes, xs + (b * N + n) * row_bytes, row_bytes);
      }
    }
  });
}

// (x_kept when x is given, ids_shuffle, ids_restore, mask).
std::tuple<std::optional<Tensor>, Tensor, Tensor, Tensor> masking_impl(const Tensor& noise_in,
                                                                       const std::optional<Tensor>& weights_in,
                                                                       int64_t num_mask, int64_t num_throw,
                                                                       bool keep_first,
                                                                       const std::optional<Tensor>& x_in) {
  check_masking_args(noise_in, weights_in, num_mask, num_throw);
  const Tensor noise = torch::stable::contiguous(noise_in);
  std::optional<Tensor> weights;
  if (weights_in.has_value()) weights = torch::stable::contiguous(*weights_in);
  const int64_t B = noise.size(0), N = noise.size(1);
  Tensor ids_shuffle = stable::empty_like_device(noise, {B, N}, ScalarType::Long);
  Tensor ids_restore = stable::empty_like_device(noise, {B, N}, ScalarType::Long);
  Tensor mask = stable::empty_like_device(noise, {B, N}, ScalarType::Char);
  std::optional<Tensor> x, x_kept;
  if (x_in.has_value()) {
    x = torch::stable::contiguous(*x_in);
    x_kept = stable::empty_like_device(*x, {B, N - num_mask - num_throw, x->size(2)}, x->scalar_type());
  }
  if (noise.scalar_type() == ScalarType::Double)
    masking_cpu<double>(noise, weights, num_mask, num_throw, keep_first, x, ids_shuffle, ids_restore, mask, x_kept);
  else
    masking_cpu<float>(noise, weights, num_mask, num_throw, keep_first, x, ids_shuffle, ids_restore, mask, x_kept);
  return {x_kept, ids_shuffle, ids_restore, mask};
}

}  // namespace

void check_x(const Tensor& x, const char* name) {
  KF_CHECK_VALUE(x.dim() == 3, name, " must be (B, N, D), got shape ", stable::shape(x));
  KF_CHECK(stable::is_float(x.scalar_type()), name, " must be a float tensor, got ", x.scalar_type());
}

void check_x_matches_noise(const Tensor& x, const Tensor& noise) {
  check_x(x, "x");
  KF_CHECK_VALUE(x.size(0) == noise.size(0) && x.size(1) == noise.size(1), "x must be (B, N, D) with (B, N) = ",
                 stable::shape(noise), ", got shape ", stable::shape(x));
}

void check_ids(const Tensor& ids, const Tensor& x, const char* name) {
  KF_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == x.size(0), name, " must be (B, K) with B = ", x.size(0),
                 ", got shape ", stable::shape(ids));
  KF_CHECK(ids.scalar_type() == ScalarType::Long, name, " must be int64, got ", ids.scalar_type());
  KF_CHECK_VALUE(stable::same_device(ids, x), name, " must be on ", stable::device_str(x), ", got ",
                 stable::device_str(ids));
}

std::tuple<Tensor, Tensor, Tensor> amt_masking_cpu(const Tensor& noise, const std::optional<Tensor>& weights,
                                                   int64_t num_mask, int64_t num_throw, bool keep_first) {
  auto [x_kept, s, r, m] = masking_impl(noise, weights, num_mask, num_throw, keep_first, std::nullopt);
  return {s, r, m};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> random_masking_cpu(const Tensor& x, const Tensor& noise,
                                                              const std::optional<Tensor>& weights, int64_t num_mask,
                                                              int64_t num_throw, bool keep_first) {
  check_x_matches_noise(x, noise);
  auto [x_kept, s, r, m] = masking_impl(noise, weights, num_mask, num_throw, keep_first, x);
  return {*x_kept, s, r, m};
}

// out[b, k] = x[b, ids[b, k]]: a row copy, whatever the dtype.
Tensor gather_patches_cpu(const Tensor& x_in, const Tensor& ids_in) {
  check_x(x_in, "x");
  check_ids(ids_in, x_in, "ids");
  const Tensor x = torch::stable::contiguous(x_in), ids = torch::stable::contiguous(ids_in);
  const int64_t B = x.size(0), N = x.size(1), K = ids.size(1);
  const int64_t row_bytes = x.size(2) * static_cast<int64_t>(x.element_size());
  Tensor out = stable::empty_like_device(x, {B, K, x.size(2)}, x.scalar_type());
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i)
    KF_CHECK_INDEX(id[i] >= 0 && id[i] < N, "ids must be in [0, ", N, "), got ", id[i]);
  const char* src = static_cast<const char*>(x.const_data_ptr());
  char* dst = static_cast<char*>(out.mutable_data_ptr());
  if (row_bytes == 0) return out;
  torch::stable::parallel_for(0, B * K, grain(2 * row_bytes), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(dst + i * row_bytes, src + ((i / K) * N + id[i]) * row_bytes, row_bytes);
  });
  return out;
}

// out (B, n, D) = 0, then out[b, ids[b, k]] += src[b, k]: the adjoint of gather_patches. Each output row is
// written once: copied from src when one id names it, zeros when none does; rows named several times (repeated
// ids) are summed in ascending k in float (double for float64), as the CUDA kernel does. No atomics anywhere.
Tensor gather_patches_backward_cpu(const Tensor& src_in, const Tensor& ids_in, int64_t n) {
  check_x(src_in, "src");
  check_ids(ids_in, src_in, "ids");
  KF_CHECK_VALUE(ids_in.size(1) == src_in.size(1), "ids must be (B, K) with K = ", src_in.size(1), ", got shape ",
                 stable::shape(ids_in));
  KF_CHECK_VALUE(n >= 0, "n must be >= 0, got ", n);
  const Tensor src = torch::stable::contiguous(src_in), ids = torch::stable::contiguous(ids_in);
  const int64_t B = src.size(0), K = src.size(1), D = src.size(2);
  Tensor out = stable::empty_like_device(src, {B, n, D}, src.scalar_type());
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i)
    KF_CHECK_INDEX(id[i] >= 0 && id[i] < n, "ids must be in [0, ", n, "), got ", id[i]);
  if (B * n * D == 0) return out;
  // per image, for each output row: the k of its only source (>= 0), -1 for none, -2 - (first k) when repeated
  std::vector<int64_t> source(B * n, -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      int64_t& first = source[b * n + id[b * K + k]];
      first = first == -1 ? k : first >= 0 ? -2 - first : first;
    }
  dispatch_float(src.scalar_type(), "gather_patches_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* s = static_cast<const scalar_t*>(src.const_data_ptr());
    scalar_t* o = static_cast<scalar_t*>(out.mutable_data_ptr());
    const int64_t row_bytes = D * static_cast<int64_t>(sizeof(scalar_t));
    torch::stable::parallel_for(0, B * n, grain(2 * row_bytes), [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> acc;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / n, k = source[r];
        scalar_t* dst = o + r * D;
        if (k >= 0) {
          std::memcpy(dst, s + (b * K + k) * D, row_bytes);
        } else if (k == -1) {
          std::memset(dst, 0, row_bytes);  // all-zero bits are +0.0 in every float type
        } else {  // repeated: sum every occurrence in ascending k
          acc.assign(D, acc_t(0));
          for (int64_t k2 = -2 - k; k2 < K; ++k2)
            if (id[b * K + k2] == r - b * n)
              for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<acc_t>(s[(b * K + k2) * D + d]);
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(acc[d]);
        }
      }
    });
  });
  return out;
}

void check_unshuffle_with_mask_token_layout(const Tensor& ids_restore, int64_t num_visible, int64_t num_mask,
                                            int64_t num_throw) {
  KF_CHECK_VALUE(ids_restore.dim() == 2, "ids_restore must be (B, N), got shape ", stable::shape(ids_restore));
  KF_CHECK(ids_restore.scalar_type() == ScalarType::Long, "ids_restore must be int64, got ",
           ids_restore.scalar_type());
  KF_CHECK_VALUE(num_mask >= 0 && num_throw >= 0 && num_visible + num_mask + num_throw == ids_restore.size(1),
                 "the visible, masked and thrown counts must add up to N = ", ids_restore.size(1), ", got ",
                 num_visible, " + ", num_mask, " + ", num_throw);
}

namespace {

// Every row of a (B, N) ids_restore must be a permutation of 0..N-1 (checked before the parallel region: an
// error raised inside one would lose its type).
void check_permutations(const int64_t* restore, int64_t B, int64_t N) {
  std::vector<char> seen(N);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t r = restore[b * N + n];
      KF_CHECK_INDEX(r >= 0 && r < N, "ids_restore must be in [0, ", N, "), got ", r);
      KF_CHECK_VALUE(!seen[r], "ids_restore must hold a permutation of 0..N-1 in every row; ", r, " appears twice");
      seen[r] = 1;
    }
  }
}

// For each image: output row of every original position (-1 when dropped) and its source (visible row,
// or -1 for the mask token). Shared by forward and backward; restore is a permutation (check_permutations).
void unshuffle_with_mask_token_plan(const int64_t* restore, int64_t N, int64_t K, int64_t num_mask,
                                    int64_t num_throw, bool keep_first, bool keep_thrown, int64_t* out_row,
                                    int64_t* src_row) {
  int64_t j = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = restore[n];
    int64_t row;
    const int8_t code = segment(r, K, num_mask, num_throw, keep_first, &row);
    src_row[n] = -1;
    if (code == kThrown && !keep_thrown) {
      out_row[n] = -1;
      continue;
    }
    out_row[n] = j++;
    src_row[n] = code == kVisible ? row : -1;
  }
}

}  // namespace

// The decoder's re-assembly: position n of the output (thrown positions dropped unless keep_thrown)
// holds visible[b, row] when n is visible and mask_token otherwise.
Tensor unshuffle_with_mask_token_cpu(const Tensor& visible_in, const Tensor& mask_token_in,
                                     const Tensor& ids_restore_in, int64_t num_mask, int64_t num_throw,
                                     bool keep_first, bool keep_thrown) {
  check_x(visible_in, "visible");
  check_unshuffle_with_mask_token_layout(ids_restore_in, visible_in.size(1), num_mask, num_throw);
  const Tensor visible = torch::stable::contiguous(visible_in);
  const Tensor ids_restore = torch::stable::contiguous(ids_restore_in);
  const Tensor token = torch::stable::contiguous(mask_token_in);
  const int64_t B = visible.size(0), K = visible.size(1), D = visible.size(2), N = ids_restore.size(1);
  KF_CHECK_VALUE(ids_restore.size(0) == B, "ids_restore must have batch size ", B, ", got ", ids_restore.size(0));
  KF_CHECK_VALUE(token.numel() == D && token.scalar_type() == visible.scalar_type(), "mask_token must hold D = ", D,
                 " values of visible's dtype ", visible.scalar_type(), ", got shape ", stable::shape(token), " ",
                 token.scalar_type());
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  Tensor out = stable::empty_like_device(visible, {B, n_out, D}, visible.scalar_type());
  const int64_t row_bytes = D * static_cast<int64_t>(visible.element_size());
  const char* vis = static_cast<const char*>(visible.const_data_ptr());
  const char* tok = static_cast<const char*>(token.const_data_ptr());
  char* o = static_cast<char*>(out.mutable_data_ptr());
  const int64_t* restore = ids_restore.const_data_ptr<int64_t>();
  check_permutations(restore, B, N);
  torch::stable::parallel_for(0, B, grain(2 * n_out * row_bytes + 32 * N), [&](int64_t b0, int64_t b1) {
    std::vector<int64_t> out_row(N), src_row(N);
    for (int64_t b = b0; b < b1; ++b) {
      unshuffle_with_mask_token_plan(restore + b * N, N, K, num_mask, num_throw, keep_first, keep_thrown,
                                     out_row.data(), src_row.data());
      for (int64_t n = 0; n < N; ++n) {
        if (out_row[n] < 0 || row_bytes == 0) continue;
        const char* from = src_row[n] >= 0 ? vis + (b * K + src_row[n]) * row_bytes : tok;
        std::memcpy(o + (b * n_out + out_row[n]) * row_bytes, from, row_bytes);
      }
    }
  });
  return out;
}

// The adjoint of unshuffle_with_mask_token: grad_visible rows are copied from their output rows; grad_token sums the
// mask-token rows in a fixed order (positions ascending within an image, then images ascending), in float
// (double for float64).
std::tuple<Tensor, Tensor> unshuffle_with_mask_token_backward_cpu(const Tensor& grad_in,
                                                                   const Tensor& ids_restore_in, int64_t num_visible,
                                                                   int64_t num_mask, int64_t num_throw,
                                                                   bool keep_first, bool keep_thrown) {
  check_x(grad_in, "grad");
  check_unshuffle_with_mask_token_layout(ids_restore_in, num_visible, num_mask, num_throw);
  const Tensor grad = torch::stable::contiguous(grad_in), ids_restore = torch::stable::contiguous(ids_restore_in);
  const int64_t B = grad.size(0), D = grad.size(2), N = ids_restore.size(1), K = num_visible;
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  KF_CHECK_VALUE(grad.size(1) == n_out && ids_restore.size(0) == B, "grad must be (B, ", n_out,
                 ", D) for ids_restore of shape ", stable::shape(ids_restore), ", got ", stable::shape(grad));
  // every visible row is copied from exactly one output row (ids_restore is checked to be a permutation)
  Tensor grad_visible = stable::empty_like_device(grad, {B, K, D}, grad.scalar_type());
  Tensor grad_token = stable::empty_like_device(grad, {D}, grad.scalar_type());
  const int64_t* restore = ids_restore.const_data_ptr<int64_t>();
  check_permutations(restore, B, N);
  dispatch_float(grad.scalar_type(), "unshuffle_with_mask_token_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* g = static_cast<const scalar_t*>(grad.const_data_ptr());
    scalar_t* gv = static_cast<scalar_t*>(grad_visible.mutable_data_ptr());
    std::vector<acc_t> partial(B * D, acc_t(0));
    const int64_t image_bytes = 2 * n_out * D * static_cast<int64_t>(sizeof(scalar_t)) + 32 * N;
    torch::stable::parallel_for(0, B, grain(image_bytes), [&](int64_t b0, int64_t b1) {
      std::vector<int64_t> out_row(N), src_row(N);
      for (int64_t b = b0; b < b1; ++b) {
        unshuffle_with_mask_token_plan(restore + b * N, N, K, num_mask, num_throw, keep_first, keep_thrown,
                                       out_row.data(), src_row.data());
        acc_t* p = partial.data() + b * D;
        for (int64_t n = 0; n < N; ++n) {
          if (out_row[n] < 0) continue;
          const scalar_t* row = g + (b * n_out + out_row[n]) * D;
          if (src_row[n] >= 0)
            std::memcpy(gv + (b * K + src_row[n]) * D, row, D * sizeof(scalar_t));
          else
            for (int64_t d = 0; d < D; ++d) p[d] += static_cast<acc_t>(row[d]);
        }
      }
    });
    scalar_t* gt = static_cast<scalar_t*>(grad_token.mutable_data_ptr());
    for (int64_t d = 0; d < D; ++d) {
      acc_t s = 0;
      for (int64_t b = 0; b < B; ++b) s += partial[b * D + d];
      gt[d] = static_cast<scalar_t>(s);
    }
  });
  return {grad_visible, grad_token};
}

STABLE_TORCH_LIBRARY_IMPL(kamim_fast_cpp, CPU, m) {
  m.impl("amt_masking", TORCH_BOX(&amt_masking_cpu));
  m.impl("random_masking", TORCH_BOX(&random_masking_cpu));
  m.impl("gather_patches", TORCH_BOX(&gather_patches_cpu));
  m.impl("gather_patches_backward", TORCH_BOX(&gather_patches_backward_cpu));
  m.impl("unshuffle_with_mask_token", TORCH_BOX(&unshuffle_with_mask_token_cpu));
  m.impl("unshuffle_with_mask_token_backward", TORCH_BOX(&unshuffle_with_mask_token_backward_cpu));
}

}  // namespace kamim_fast
