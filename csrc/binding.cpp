// Torch binding of the one-launch Inception forward (kernel in inception_fwd.cu, torch-free).
//
// forward(x, w_in, b_in, w3, b3, w5, b5, wp, bp, channels, k3, k5, relu, out=None) -> out
// validates every tensor, allocates the output with PyTorch's conv memory-format rule
// (channels_last in -> channels_last out, otherwise contiguous) unless `out` is given, and launches
// on the current stream of x's device.

#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>

// c10's stream/guard headers (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE headers):
// c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream names.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>
#include <vector>

#include "inception_fwd.h"

namespace {

using fused_inception::DType;

DType dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "fused_inception CUDA backend: x must be float16, bfloat16 or float32, got ", t);
  }
  return DType::kFloat32;  // unreachable
}

void check_param(const at::Tensor& t, const char* name, const at::Tensor& x, at::ScalarType dtype,
                 std::vector<int64_t> shape) {
  TORCH_CHECK(t.device() == x.device(), "fused_inception CUDA backend: ", name, " is on ", t.device(),
              " but x is on ", x.device());
  TORCH_CHECK(t.scalar_type() == dtype, "fused_inception CUDA backend: ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "fused_inception CUDA backend: ", name, " has shape ",
              t.sizes(), ", expected ", at::IntArrayRef(shape));
  TORCH_CHECK(t.is_contiguous(), "fused_inception CUDA backend: ", name, " must be contiguous");
}

int to_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "fused_inception CUDA backend: ", what, " = ", v,
              " does not fit in a 32-bit int");
  return static_cast<int>(v);
}

const char* dtype_name(DType d) {
  return d == DType::kFloat32 ? "float32" : d == DType::kFloat16 ? "float16" : "bfloat16";
}

at::Tensor inception_forward(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& b_in,
                             const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w5, const at::Tensor& b5,
                             const at::Tensor& wp, const at::Tensor& bp, const std::vector<int64_t>& channels,
                             int64_t k3, int64_t k5, bool relu, const c10::optional<at::Tensor>& out_opt) {
  TORCH_CHECK(channels.size() == 7, "fused_inception CUDA backend: channels must hold 7 counts (in, 1x1, "
              "3x3red, 3x3, 5x5red, 5x5, pool_proj), got ", channels.size());
  for (int64_t c : channels)
    TORCH_CHECK(c >= 1, "fused_inception CUDA backend: channel counts must be >= 1, got ", at::IntArrayRef(channels));
  for (int64_t k : {k3, k5})
    TORCH_CHECK(k >= 1 && k % 2 == 1 && k <= 1023, "fused_inception CUDA backend: kernel sizes must be odd and "
                ">= 1, got k3=", k3, ", k5=", k5);
  TORCH_CHECK(x.is_cuda(), "fused_inception CUDA backend: x must be a CUDA tensor, got one on ", x.device());
  TORCH_CHECK(x.dim() == 4, "fused_inception CUDA backend: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  const DType dt = dtype_code(x.scalar_type());
  const int64_t cin = channels[0], c1 = channels[1], c3r = channels[2], c3 = channels[3];
  const int64_t c5r = channels[4], c5 = channels[5], cp = channels[6];
  TORCH_CHECK(x.size(1) == cin, "fused_inception CUDA backend: expected ", cin, " input channels, got x of shape ",
              x.sizes());
  const auto wdt = x.scalar_type();
  check_param(w_in, "w_in", x, wdt, {cin, c1 + c3r + c5r});
  check_param(b_in, "b_in", x, at::kFloat, {c1 + c3r + c5r});
  check_param(w3, "w3", x, wdt, {k3 * k3, c3r, c3});
  check_param(b3, "b3", x, at::kFloat, {c3});
  check_param(w5, "w5", x, wdt, {k5 * k5, c5r, c5});
  check_param(b5, "b5", x, at::kFloat, {c5});
  check_param(wp, "wp", x, wdt, {cin, cp});
  check_param(bp, "bp", x, at::kFloat, {cp});

  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t cout = c1 + c3 + c5 + cp;
  at::Tensor out;
  if (out_opt.has_value()) {
    out = *out_opt;
    TORCH_CHECK(out.device() == x.device() && out.scalar_type() == x.scalar_type(),
                "fused_inception CUDA backend: out must be a ", x.scalar_type(), " tensor on ", x.device(), ", got ",
                out.scalar_type(), " on ", out.device());
    TORCH_CHECK(out.sizes() == at::IntArrayRef({n, cout, h, w}), "fused_inception CUDA backend: out has shape ",
                out.sizes(), ", expected ", at::IntArrayRef({n, cout, h, w}));
    at::assert_no_internal_overlap(out);  // e.g. an expanded (stride 0) tensor
    at::assert_no_overlap(out, x);
  } else {
    // PyTorch's conv rule: channels_last in -> channels_last out; otherwise contiguous.
    const bool cl = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
    out = at::empty({n, cout, h, w}, x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
  }
  if (out.numel() == 0) return out;  // N == 0 (H, W >= 1 is checked by the callers): no launch

  const c10::cuda::CUDAGuard guard(x.device());
  size_t limit = 0;
  const size_t smem = fused_inception::inception_smem_bytes(dt, static_cast<int>(k3), static_cast<int>(k5));
  C10_CUDA_CHECK(fused_inception::inception_smem_limit(x.get_device(), &limit));
  TORCH_CHECK(smem <= limit, "fused_inception CUDA backend: kernel sizes k3=", k3, ", k5=", k5, " in ",
              dtype_name(dt), " need ", smem, " bytes of shared memory per block, but ", x.device(), " allows ",
              limit, "; use backend='triton' for this block");

  fused_inception::InceptionParams p{};
  p.x = x.data_ptr();
  p.out = out.data_ptr();
  p.w_in = w_in.data_ptr();
  p.b_in = b_in.data_ptr<float>();
  p.w3 = w3.data_ptr();
  p.b3 = b3.data_ptr<float>();
  p.w5 = w5.data_ptr();
  p.b5 = b5.data_ptr<float>();
  p.wp = wp.data_ptr();
  p.bp = bp.data_ptr<float>();
  p.n = n;
  p.h = to_int(h, "H");
  p.w = to_int(w, "W");
  p.cin = to_int(cin, "in_channels");
  p.c1 = to_int(c1, "ch1x1");
  p.c3r = to_int(c3r, "ch3x3red");
  p.c3 = to_int(c3, "ch3x3");
  p.c5r = to_int(c5r, "ch5x5red");
  p.c5 = to_int(c5, "ch5x5");
  p.cp = to_int(cp, "pool_proj");
  to_int(c1 + c3r + c5r, "ch1x1 + ch3x3red + ch5x5red");
  to_int(cout, "out_channels");
  p.k3 = static_cast<int>(k3);
  p.k5 = static_cast<int>(k5);
  p.relu = relu;
  for (int i = 0; i < 4; ++i) {
    p.x_stride[i] = x.stride(i);
    p.out_stride[i] = out.stride(i);
  }
  const cudaError_t err = fused_inception::inception_forward_launch(p, dt, c10::cuda::getCurrentCUDAStream(x.get_device()));
  TORCH_CHECK(err == cudaSuccess, "fused_inception CUDA backend: launch failed: ", cudaGetErrorString(err));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

int64_t smem_bytes(at::ScalarType dtype, int64_t k3, int64_t k5) {
  return static_cast<int64_t>(
      fused_inception::inception_smem_bytes(dtype_code(dtype), static_cast<int>(k3), static_cast<int>(k5)));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fused_inception CUDA extension: the Inception block forward in one kernel launch";
  m.def("forward", &inception_forward, "Fused Inception block forward (see csrc/binding.cpp)", py::arg("x"),
        py::arg("w_in"), py::arg("b_in"), py::arg("w3"), py::arg("b3"), py::arg("w5"), py::arg("b5"),
        py::arg("wp"), py::arg("bp"), py::arg("channels"), py::arg("k3"), py::arg("k5"), py::arg("relu"),
        py::arg("out") = py::none());
  m.def("smem_bytes", &smem_bytes, "Dynamic shared memory per block (bytes) for a dtype and kernel sizes",
        py::arg("dtype"), py::arg("k3"), py::arg("k5"));
  m.def("threads_per_block", &fused_inception::inception_threads_per_block);
}
