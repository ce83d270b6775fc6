// Host interface of the one-launch Inception block forward (csrc/inception_fwd.cu).
//
// Plain C++ and the CUDA runtime only (no torch headers) so the kernel file compiles fast and can
// be checked alone; the torch binding (binding.cpp) validates tensors and fills InceptionParams.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace fused_inception {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// One forward call. Weights use the packed layout of fused_inception.packing.PackedWeights:
//   w_in [cin][c1 + c3r + c5r], w3 [k3*k3][c3r][c3], w5 [k5*k5][c5r][c5], wp [cin][cp]
// (row-major, contiguous, in the compute dtype); biases are fp32.
// x and out are (N, C, H, W) with explicit element strides (any layout; no copies).
struct InceptionParams {
  const void* x;
  void* out;
  const void* w_in;
  const float* b_in;
  const void* w3;
  const float* b3;
  const void* w5;
  const float* b5;
  const void* wp;
  const float* bp;
  int64_t n;
  int h, w;
  int cin, c1, c3r, c3, c5r, c5, cp;
  int k3, k5;
  bool relu;
  int64_t x_stride[4];    // N, C, H, W
  int64_t out_stride[4];  // N, C, H, W
};

// Dynamic shared memory (bytes) one thread block needs for this dtype and these kernel sizes.
size_t inception_smem_bytes(DType dtype, int k3, int k5);

// The most dynamic shared memory one block may use on `device` (the opt-in limit).
cudaError_t inception_smem_limit(int device, size_t* bytes);

// Threads per block of the kernel (for documentation and tests).
int inception_threads_per_block();

// Launches the kernel on `stream` for the current device (no launch when the output is empty).
// Returns the first CUDA error from configuring or launching; does not synchronise. Returns
// cudaErrorInvalidValue for invalid parameters (the binding checks them first, with messages).
cudaError_t inception_forward_launch(const InceptionParams& p, DType dtype, cudaStream_t stream);

}  // namespace fused_inception
