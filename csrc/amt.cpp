// The AMT ops' native implementations: schemas in the namespace kamim_fast_cpp (TORCH_LIBRARY_FRAGMENT,
// because the native KAMIM kernels in the other csrc/*.cpp files add to it) and their CPU kernels. CUDA
// kernels: amt_cuda.cu. The public ops kamim_fast::<op>, their fake kernels and autograd are Python
// (kamim_fast/_amt_ops.py), and the implementation table (kamim_fast/_backend.py) calls these.
//
// Layout of one image's sorted order (see amt.h): MAE's random_masking keeps the first K patches
// (keep_first), AMT masks the first num_mask, throws the next num_throw and keeps the rest.

#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "amt.h"
#include "amt_checks.h"

// `import kamim_fast._C` loads this library (and so registers the ops); the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "kamim_fast's AMT ops (torch.ops.kamim_fast)", -1,
                                   nullptr};
  return PyModule_Create(&module_def);
}

namespace kamim_fast {

using at::Tensor;

void check_masking_args(const Tensor& noise, const std::optional<Tensor>& weights, int64_t num_mask,
                        int64_t num_throw) {
  TORCH_CHECK_VALUE(noise.dim() == 2, "noise must be (B, N), got shape ", noise.sizes());
  TORCH_CHECK_TYPE(noise.scalar_type() == at::kFloat || noise.scalar_type() == at::kDouble,
                   "noise must be float32 or float64, got ", noise.scalar_type());
  const int64_t N = noise.size(1);
  TORCH_CHECK_VALUE(num_mask >= 0 && num_throw >= 0 && num_mask + num_throw <= N,
                    "num_mask and num_throw must be >= 0 with num_mask + num_throw <= N = ", N, ", got ", num_mask,
                    " and ", num_throw);
  if (weights.has_value()) {
    TORCH_CHECK_VALUE(weights->sizes() == noise.sizes(), "weights must have noise's shape ", noise.sizes(), ", got ",
                      weights->sizes());
    TORCH_CHECK_TYPE(weights->scalar_type() == noise.scalar_type(), "weights must have noise's dtype ",
                     noise.scalar_type(), ", got ", weights->scalar_type());
    TORCH_CHECK_VALUE(weights->device() == noise.device(), "weights must be on noise's device ", noise.device(),
                      ", got ", weights->device());
  }
}

namespace {

// Work items per thread of at::parallel_for so that a parallel region holds at least kParallelBytes of memory
// traffic (or of sort work): smaller calls run on the calling thread, where waking another one costs more than
// the work (and, on a shared machine, may wait for a core another process holds).
constexpr int64_t kParallelBytes = int64_t(1) << 18;

int64_t grain(int64_t bytes_per_item) { return std::max<int64_t>(1, kParallelBytes / std::max<int64_t>(1, bytes_per_item)); }

// NaN, negative, infinite or all-zero rows raise (ValueError in Python). Free on the CPU; the CUDA
// kernels cannot raise without a host synchronisation, so they treat such weights as documented in amt.h.
template <typename T>
void check_weights_cpu(const T* w, int64_t B, int64_t N) {
  for (int64_t b = 0; b < B; ++b) {
    const T* row = w + b * N;
    bool positive = false;
    for (int64_t n = 0; n < N; ++n) {
      const T v = row[n];
      TORCH_CHECK_VALUE(!std::isnan(v), "weights must not hold NaN; row ", b, " does (column ", n, ")");
      TORCH_CHECK_VALUE(std::isfinite(v), "weights must be finite; row ", b, " holds ", v, " (column ", n, ")");
      TORCH_CHECK_VALUE(v >= T(0), "weights must be >= 0; row ", b, " holds ", v, " (column ", n, ")");
      positive |= v > T(0);
    }
    TORCH_CHECK_VALUE(positive || N == 0, "weights must have a positive entry in every row; row ", b, " is all zero");
  }
}

// One image: sort, write ids_shuffle, ids_restore (scatter of positions) and the mask, copy kept rows.
template <typename T>
void masking_cpu(const Tensor& noise, const std::optional<Tensor>& weights, int64_t num_mask, int64_t num_throw,
                 bool keep_first, const Tensor& x, Tensor& ids_shuffle, Tensor& ids_restore, Tensor& mask,
                 Tensor& x_kept) {
  const int64_t B = noise.size(0), N = noise.size(1);
  const int64_t K = N - num_mask - num_throw;
  const T* q = noise.const_data_ptr<T>();
  const T* w = weights.has_value() ? weights->const_data_ptr<T>() : nullptr;
  if (w != nullptr) check_weights_cpu(w, B, N);
  int64_t* shuffle = ids_shuffle.mutable_data_ptr<int64_t>();
  int64_t* restore = ids_restore.mutable_data_ptr<int64_t>();
  int8_t* m = mask.mutable_data_ptr<int8_t>();
  const bool gather = x.defined();
  const int64_t row_bytes = gather ? x.size(2) * x.element_size() : 0;
  const char* xs = gather ? static_cast<const char*>(x.const_data_ptr()) : nullptr;
  char* out = gather ? static_cast<char*>(x_kept.mutable_data_ptr()) : nullptr;
  // per image: a sort of N keys (about 16 log2 N bytes of work per key) and K rows copied
  int64_t log2_n = 1;
  while ((int64_t(1) << log2_n) < N) ++log2_n;
  const int64_t image_bytes = N * 16 * log2_n + K * row_bytes;
  at::parallel_for(0, B, grain(image_bytes), [&](int64_t b0, int64_t b1) {
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

std::tuple<Tensor, Tensor, Tensor, Tensor> masking_impl(const Tensor& noise_in,
                                                        const std::optional<Tensor>& weights_in, int64_t num_mask,
                                                        int64_t num_throw, bool keep_first, const Tensor& x_in) {
  check_masking_args(noise_in, weights_in, num_mask, num_throw);
  const Tensor noise = noise_in.contiguous();
  std::optional<Tensor> weights;
  if (weights_in.has_value()) weights = weights_in->contiguous();
  const int64_t B = noise.size(0), N = noise.size(1);
  auto opts = noise.options().dtype(at::kLong);
  Tensor ids_shuffle = at::empty({B, N}, opts), ids_restore = at::empty({B, N}, opts);
  Tensor mask = at::empty({B, N}, opts.dtype(at::kChar));
  Tensor x, x_kept;
  if (x_in.defined()) {
    x = x_in.contiguous();
    x_kept = at::empty({B, N - num_mask - num_throw, x.size(2)}, x.options());
  }
  AT_DISPATCH_FLOATING_TYPES(noise.scalar_type(), "amt_masking_cpu", [&] {
    masking_cpu<scalar_t>(noise, weights, num_mask, num_throw, keep_first, x, ids_shuffle, ids_restore, mask, x_kept);
  });
  return {x_kept, ids_shuffle, ids_restore, mask};
}

}  // namespace

void check_x(const Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.dim() == 3, name, " must be (B, N, D), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), name, " must be a float tensor, got ", x.scalar_type());
}

void check_x_matches_noise(const Tensor& x, const Tensor& noise) {
  check_x(x, "x");
  TORCH_CHECK_VALUE(x.size(0) == noise.size(0) && x.size(1) == noise.size(1), "x must be (B, N, D) with (B, N) = ",
                    noise.sizes(), ", got shape ", x.sizes());
}

void check_ids(const Tensor& ids, const Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == x.size(0), name, " must be (B, K) with B = ", x.size(0),
                    ", got shape ", ids.sizes());
  TORCH_CHECK_TYPE(ids.scalar_type() == at::kLong, name, " must be int64, got ", ids.scalar_type());
  TORCH_CHECK_VALUE(ids.device() == x.device(), name, " must be on ", x.device(), ", got ", ids.device());
}

std::tuple<Tensor, Tensor, Tensor> amt_masking_cpu(const Tensor& noise, const std::optional<Tensor>& weights,
                                                   int64_t num_mask, int64_t num_throw, bool keep_first) {
  auto [x_kept, s, r, m] = masking_impl(noise, weights, num_mask, num_throw, keep_first, Tensor());
  return {s, r, m};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> random_masking_cpu(const Tensor& x, const Tensor& noise,
                                                              const std::optional<Tensor>& weights, int64_t num_mask,
                                                              int64_t num_throw, bool keep_first) {
  check_x_matches_noise(x, noise);
  return masking_impl(noise, weights, num_mask, num_throw, keep_first, x);
}

// out[b, k] = x[b, ids[b, k]]: a row copy, whatever the dtype.
Tensor gather_patches_cpu(const Tensor& x_in, const Tensor& ids_in) {
  check_x(x_in, "x");
  check_ids(ids_in, x_in, "ids");
  const Tensor x = x_in.contiguous(), ids = ids_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), K = ids.size(1), row_bytes = x.size(2) * x.element_size();
  Tensor out = at::empty({B, K, x.size(2)}, x.options());
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i)
    TORCH_CHECK_INDEX(id[i] >= 0 && id[i] < N, "ids must be in [0, ", N, "), got ", id[i]);
  const char* src = static_cast<const char*>(x.const_data_ptr());
  char* dst = static_cast<char*>(out.mutable_data_ptr());
  if (row_bytes == 0) return out;
  at::parallel_for(0, B * K, grain(2 * row_bytes), [&](int64_t i0, int64_t i1) {
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
  TORCH_CHECK_VALUE(ids_in.size(1) == src_in.size(1), "ids must be (B, K) with K = ", src_in.size(1), ", got shape ",
                    ids_in.sizes());
  TORCH_CHECK_VALUE(n >= 0, "n must be >= 0, got ", n);
  const Tensor src = src_in.contiguous(), ids = ids_in.contiguous();
  const int64_t B = src.size(0), K = src.size(1), D = src.size(2);
  Tensor out = at::empty({B, n, D}, src.options());
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i)
    TORCH_CHECK_INDEX(id[i] >= 0 && id[i] < n, "ids must be in [0, ", n, "), got ", id[i]);
  if (B * n * D == 0) return out;
  // per image, for each output row: the k of its only source (>= 0), -1 for none, -2 - (first k) when repeated
  std::vector<int64_t> source(B * n, -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      int64_t& s = source[b * n + id[b * K + k]];
      s = s == -1 ? k : s >= 0 ? -2 - s : s;
    }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "gather_patches_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* s = src.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t row_bytes = D * int64_t(sizeof(scalar_t));
    at::parallel_for(0, B * n, grain(2 * row_bytes), [&](int64_t r0, int64_t r1) {
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
  TORCH_CHECK_VALUE(ids_restore.dim() == 2, "ids_restore must be (B, N), got shape ", ids_restore.sizes());
  TORCH_CHECK_TYPE(ids_restore.scalar_type() == at::kLong, "ids_restore must be int64, got ",
                   ids_restore.scalar_type());
  TORCH_CHECK_VALUE(num_mask >= 0 && num_throw >= 0 && num_visible + num_mask + num_throw == ids_restore.size(1),
                    "the visible, masked and thrown counts must add up to N = ", ids_restore.size(1), ", got ",
                    num_visible, " + ", num_mask, " + ", num_throw);
}

namespace {

// For each image: output row of every original position (-1 when dropped) and its source (visible row,
// or -1 for the mask token). Shared by forward and backward.
void unshuffle_with_mask_token_plan(const int64_t* restore, int64_t N, int64_t K, int64_t num_mask,
                                    int64_t num_throw, bool keep_first, bool keep_thrown, int64_t* out_row,
                                    int64_t* src_row) {
  int64_t j = 0;
  std::fill(src_row, src_row + N, int64_t(-2));  // -2: position not seen yet (as a sorted position r)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = restore[n];
    TORCH_CHECK_INDEX(r >= 0 && r < N, "ids_restore must be in [0, ", N, "), got ", r);
    TORCH_CHECK_VALUE(src_row[r] != -3, "ids_restore must hold a permutation of 0..N-1 in every row; ", r,
                      " appears twice");
    src_row[r] = -3;
  }
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = restore[n];
    int64_t row;
    const int8_t code = segment(r, K, num_mask, num_throw, keep_first, &row);
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
  const Tensor visible = visible_in.contiguous(), ids_restore = ids_restore_in.contiguous();
  const Tensor token = mask_token_in.contiguous();
  const int64_t B = visible.size(0), K = visible.size(1), D = visible.size(2), N = ids_restore.size(1);
  TORCH_CHECK_VALUE(ids_restore.size(0) == B, "ids_restore must have batch size ", B, ", got ", ids_restore.size(0));
  TORCH_CHECK_VALUE(token.numel() == D && token.scalar_type() == visible.scalar_type(), "mask_token must hold D = ", D,
                    " values of visible's dtype ", visible.scalar_type(), ", got shape ", token.sizes(), " ",
                    token.scalar_type());
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  Tensor out = at::empty({B, n_out, D}, visible.options());
  const int64_t row_bytes = D * visible.element_size();
  const char* vis = static_cast<const char*>(visible.const_data_ptr());
  const char* tok = static_cast<const char*>(token.const_data_ptr());
  char* o = static_cast<char*>(out.mutable_data_ptr());
  const int64_t* restore = ids_restore.const_data_ptr<int64_t>();
  at::parallel_for(0, B, grain(2 * n_out * row_bytes + 32 * N), [&](int64_t b0, int64_t b1) {
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
  const Tensor grad = grad_in.contiguous(), ids_restore = ids_restore_in.contiguous();
  const int64_t B = grad.size(0), D = grad.size(2), N = ids_restore.size(1), K = num_visible;
  const int64_t n_out = keep_thrown ? N : N - num_throw;
  TORCH_CHECK_VALUE(grad.size(1) == n_out && ids_restore.size(0) == B, "grad must be (B, ", n_out,
                    ", D) for ids_restore of shape ", ids_restore.sizes(), ", got ", grad.sizes());
  // every visible row is copied from exactly one output row (ids_restore is checked to be a permutation)
  Tensor grad_visible = at::empty({B, K, D}, grad.options());
  Tensor grad_token = at::empty({D}, grad.options());
  const int64_t* restore = ids_restore.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "unshuffle_with_mask_token_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gv = grad_visible.mutable_data_ptr<scalar_t>();
    std::vector<acc_t> partial(B * D, acc_t(0));
    at::parallel_for(0, B, grain(2 * n_out * D * int64_t(sizeof(scalar_t)) + 32 * N), [&](int64_t b0, int64_t b1) {
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
    scalar_t* gt = grad_token.mutable_data_ptr<scalar_t>();
    for (int64_t d = 0; d < D; ++d) {
      acc_t s = 0;
      for (int64_t b = 0; b < B; ++b) s += partial[b * D + d];
      gt[d] = static_cast<scalar_t>(s);
    }
  });
  return {grad_visible, grad_token};
}

TORCH_LIBRARY_FRAGMENT(kamim_fast_cpp, m) {
  m.def("amt_masking(Tensor noise, Tensor? weights, int num_mask, int num_throw, bool keep_first) -> "
        "(Tensor ids_shuffle, Tensor ids_restore, Tensor mask)");
  m.def("random_masking(Tensor x, Tensor noise, Tensor? weights, int num_mask, int num_throw, bool keep_first) -> "
        "(Tensor x_kept, Tensor ids_shuffle, Tensor ids_restore, Tensor mask)");
  m.def("gather_patches(Tensor x, Tensor ids) -> Tensor");
  m.def("gather_patches_backward(Tensor src, Tensor ids, int n) -> Tensor");
  m.def("unshuffle_with_mask_token(Tensor visible, Tensor mask_token, Tensor ids_restore, int num_mask, "
        "int num_throw, bool keep_first, bool keep_thrown) -> Tensor");
  m.def("unshuffle_with_mask_token_backward(Tensor grad, Tensor ids_restore, int num_visible, int num_mask, "
        "int num_throw, bool keep_first, bool keep_thrown) -> (Tensor grad_visible, Tensor grad_token)");
}

TORCH_LIBRARY_IMPL(kamim_fast_cpp, CPU, m) {
  m.impl("amt_masking", &amt_masking_cpu);
  m.impl("random_masking", &random_masking_cpu);
  m.impl("gather_patches", &gather_patches_cpu);
  m.impl("gather_patches_backward", &gather_patches_backward_cpu);
  m.impl("unshuffle_with_mask_token", &unshuffle_with_mask_token_cpu);
  m.impl("unshuffle_with_mask_token_backward", &unshuffle_with_mask_token_backward_cpu);
}

}  // namespace kamim_fast
