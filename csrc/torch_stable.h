// The part of the LibTorch stable ABI (torch/csrc/stable, torch/headeronly) that the native kernels use, and the
// checks of their internal invariants. Every csrc/*.cpp and *.cu includes torch only through this header, so the
// extension holds no C++ symbol of libtorch: one build runs on every torch from the floor named at build time
// (TORCH_TARGET_VERSION, set by kamim_fast/_build.py) to the newest.
//
// The extension registers implementations only (STABLE_TORCH_LIBRARY_IMPL) of ops in the namespace
// kamim_fast_cpp; their schemas are the public kamim_fast::<op> schemas, defined from Python
// (kamim_fast/_ext.py) when the library loads.
//
// Errors. The ops' arguments are checked once, in Python, before dispatch; what is checked here are the kernels'
// own invariants, for direct callers of torch.ops.kamim_fast_cpp.*. The stable ABI carries C++ exceptions as they
// are thrown: std::invalid_argument reaches Python as ValueError and std::out_of_range as IndexError (pybind11's
// translation), any other std::exception as RuntimeError. No throw may leave a parallel_for body: torch's C shim
// turns it into an error code, and the type and message are lost.
#pragma once

// TORCH_TARGET_VERSION: the oldest torch the extension runs with (kamim_fast/_build.py's TORCH_FLOOR, passed by
// every build). Under it torch's headers expose that release's stable API only, and any other torch header fails
// to compile.
#ifndef TORCH_TARGET_VERSION
#error "build csrc/ through kamim_fast/_build.py's compiler_flags(): it sets TORCH_TARGET_VERSION, the torch floor"
#endif

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kamim_fast::stable {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using Half = torch::headeronly::Half;
using BFloat16 = torch::headeronly::BFloat16;

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  return out.str();
}

// "[2, 3, 16, 16]", as torch prints sizes.
inline std::string shape(const Tensor& t) {
  std::ostringstream out;
  out << '[';
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << ']';
  return out.str();
}

// "cpu", "cuda:0", "meta", as torch prints devices.
inline std::string device_str(const Tensor& t) {
  const auto device = t.device();
  using torch::headeronly::DeviceType;
  switch (device.type()) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::CUDA: return cat("cuda:", static_cast<int>(device.index()));
    case DeviceType::Meta: return "meta";
    default: return cat("device type ", static_cast<int>(device.type()));
  }
}

inline bool same_device(const Tensor& a, const Tensor& b) { return a.device() == b.device(); }

inline bool is_float(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

inline bool is_cpu(const Tensor& t) { return t.is_cpu(); }

// A new uninitialised tensor on t's device.
inline Tensor empty_like_device(const Tensor& t, std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::new_empty(t, sizes, dtype);
}

inline Tensor zeros_like_device(const Tensor& t, std::vector<int64_t> sizes, ScalarType dtype) {
  return torch::stable::new_zeros(t, sizes, dtype);
}

inline void check_error(int32_t err, const char* name) {
  if (err != TORCH_SUCCESS) throw std::runtime_error(cat("kamim_fast: the ATen op ", name, " failed"));
}

// An ATen op called through the dispatcher (the stable ABI's boxed call): torch's own kernel, so its results are
// torch's to the bit. Arguments by schema position; Scalar arguments are not carried by the stable ABI: pass a
// 0-dim tensor (scalar()) to the op's Tensor overload.
template <class... Args>
Tensor aten(const char* name, const char* overload, Args... args) {
  std::array<StableIValue, sizeof...(Args) < 1 ? 1 : sizeof...(Args)> stack{torch::stable::detail::from(args)...};
  check_error(torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION), name);
  return torch::stable::detail::to<Tensor>(stack[0]);
}

// A Python number's place in an ATen call: a 0-dim float64 CPU tensor (a dimensionless operand takes the other
// operand's float dtype, as a Python float does).
inline Tensor scalar(double value) {
  Tensor t = torch::stable::empty({}, ScalarType::Double);
  *t.mutable_data_ptr<double>() = value;
  return t;
}

}  // namespace kamim_fast::stable

// Internal invariants (see above): ValueError, IndexError, RuntimeError in Python.
#define KF_CHECK_VALUE(cond, ...) \
  do {                            \
    if (!(cond)) throw std::invalid_argument(::kamim_fast::stable::cat(__VA_ARGS__)); \
  } while (0)
#define KF_CHECK_INDEX(cond, ...) \
  do {                            \
    if (!(cond)) throw std::out_of_range(::kamim_fast::stable::cat(__VA_ARGS__)); \
  } while (0)
#define KF_CHECK(cond, ...) \
  do {                      \
    if (!(cond)) throw std::runtime_error(::kamim_fast::stable::cat(__VA_ARGS__)); \
  } while (0)
