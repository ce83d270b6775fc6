// Host launcher of the one-launch Inception block forward (device code: inception_kernel.cuh).
// No torch headers here: see binding.cpp.

#include "inception_fwd.h"
#include "inception_kernel.cuh"

#include <atomic>

namespace fused_inception {
namespace {

using kernel::Args;
using kernel::inception_fwd_kernel;
using kernel::kBN;
using kernel::kTH;
using kernel::kThreads;
using kernel::kTW;
using kernel::Smem;

constexpr size_t kNoSmemOptIn = 48 * 1024;  // dynamic shared memory a block gets without opting in

template <typename T>
size_t smem_bytes_t(int k3, int k5) {
  return Smem<T>::bytes(k3 > k5 ? k3 : k5);
}

bool valid_params(const InceptionParams& p) {
  const int counts[] = {p.cin, p.c1, p.c3r, p.c3, p.c5r, p.c5, p.cp};
  for (int c : counts)
    if (c < 1) return false;
  if (p.k3 < 1 || p.k3 % 2 == 0 || p.k5 < 1 || p.k5 % 2 == 0) return false;
  if (p.n < 0 || p.h < 0 || p.w < 0) return false;
  return p.x != nullptr && p.out != nullptr && p.w_in != nullptr && p.b_in != nullptr && p.w3 != nullptr &&
         p.b3 != nullptr && p.w5 != nullptr && p.b5 != nullptr && p.wp != nullptr && p.bp != nullptr;
}

// The opt-in attribute is set once per (device, dtype) to the device limit.
constexpr int kMaxDevices = 64;
std::atomic<bool> g_smem_opted_in[kMaxDevices][3];

template <typename T>
cudaError_t launch_t(const InceptionParams& p, int dtype_index, cudaStream_t stream) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const size_t smem = smem_bytes_t<T>(p.k3, p.k5);
  size_t limit = 0;
  if ((err = inception_smem_limit(device, &limit)) != cudaSuccess) return err;
  if (smem > limit) return cudaErrorInvalidValue;
  if (smem > kNoSmemOptIn) {
    const bool cached = device < kMaxDevices && g_smem_opted_in[device][dtype_index].load();
    if (!cached) {
      err = cudaFuncSetAttribute(inception_fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(limit));
      if (err != cudaSuccess) return err;
      if (device < kMaxDevices) g_smem_opted_in[device][dtype_index].store(true);
    }
  }

  Args<T> a;
  a.x = static_cast<const T*>(p.x);
  a.out = static_cast<T*>(p.out);
  a.w_in = static_cast<const T*>(p.w_in);
  a.b_in = p.b_in;
  a.w3 = static_cast<const T*>(p.w3);
  a.b3 = p.b3;
  a.w5 = static_cast<const T*>(p.w5);
  a.b5 = p.b5;
  a.wp = static_cast<const T*>(p.wp);
  a.bp = p.bp;
  a.n = p.n;
  a.h = p.h;
  a.w = p.w;
  a.cin = p.cin;
  a.c1 = p.c1;
  a.c3r = p.c3r;
  a.c3 = p.c3;
  a.c5r = p.c5r;
  a.c5 = p.c5;
  a.cp = p.cp;
  a.k3 = p.k3;
  a.k5 = p.k5;
  a.relu = p.relu;
  a.sxn = p.x_stride[0];
  a.sxc = p.x_stride[1];
  a.sxh = p.x_stride[2];
  a.sxw = p.x_stride[3];
  a.son = p.out_stride[0];
  a.soc = p.out_stride[1];
  a.soh = p.out_stride[2];
  a.sow = p.out_stride[3];
  kernel::set_vector_flags(a);

  const int64_t tiles = static_cast<int64_t>((p.h + kTH - 1) / kTH) * ((p.w + kTW - 1) / kTW);
  auto blocks = [](int c) { return static_cast<int64_t>((c + kBN - 1) / kBN); };
  const int64_t total = (blocks(p.c3) + blocks(p.c5) + blocks(p.c1) + blocks(p.cp)) * tiles * p.n;
  // The kernel loops over work items, so capping the grid (gridDim.x < 2^31) is always correct.
  const int64_t max_grid = 0x7fffffff;
  const unsigned grid = static_cast<unsigned>(total < max_grid ? total : max_grid);
  inception_fwd_kernel<T><<<grid, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

size_t inception_smem_bytes(DType dtype, int k3, int k5) {
  switch (dtype) {
    case DType::kFloat32: return smem_bytes_t<float>(k3, k5);
    case DType::kFloat16: return smem_bytes_t<__half>(k3, k5);
    case DType::kBFloat16: return smem_bytes_t<__nv_bfloat16>(k3, k5);
  }
  return 0;
}

cudaError_t inception_smem_limit(int device, size_t* bytes) {
  int v = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess) *bytes = static_cast<size_t>(v);
  return err;
}

int inception_threads_per_block() { return kThreads; }

cudaError_t inception_forward_launch(const InceptionParams& p, DType dtype, cudaStream_t stream) {
  if (!valid_params(p)) return cudaErrorInvalidValue;
  if (p.n == 0 || p.h == 0 || p.w == 0) return cudaSuccess;  // empty output: nothing to launch
  switch (dtype) {
    case DType::kFloat32: return launch_t<float>(p, 0, stream);
    case DType::kFloat16: return launch_t<__half>(p, 1, stream);
    case DType::kBFloat16: return launch_t<__nv_bfloat16>(p, 2, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fused_inception
