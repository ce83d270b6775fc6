// Device code of the one-launch Inception block forward: same semantics and packed weights as the
// Triton kernel (fused_inception/kernels/triton_inception.py). Included by inception_fwd.cu (which
// holds the host launcher); no torch headers, no host-only CUDA syntax, so it can also be compiled
// by a host C++ compiler under a thread emulation (csrc/emulation/), which the CPU tests use to check
// the index math.
//
// Each thread block takes work items (branch channel block, 8x8 pixel tile), KxK branches first:
//  * KxK branch: for each chunk of kBR reduce channels, recompute the 1x1 reduce on the tile plus
//    its halo, keep it (post-ReLU, 0 outside the image: the KxK conv zero-pads the post-ReLU map)
//    in shared memory, then accumulate the K*K shifted GEMMs over it. Chunking the reduce channels
//    bounds shared memory for any channel count.
//  * 1x1 branch: GEMM of the input tile with its columns of the packed 1x1 weights.
//  * pool branch: 3x3/stride-1 max over nine shifted loads (padding never wins, NaN propagates as
//    in torch max_pool2d), then a GEMM with the projection weights.
// Every branch adds its fp32 bias, applies the optional ReLU (NaN-preserving) and stores straight
// into its channel slice of the output (the concat).
//
// GEMMs stage [64 x 32] A and [32 x 64] B tiles in shared memory. fp16/bf16 run on tensor cores
// through WMMA (16x16x16, fp32 accumulate; fp16 from sm_70, bf16 from sm_80); fp32 (and the half
// types on older GPUs) use plain fp32 FMA: full fp32 precision, no TF32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

// How the kernel names its dynamic shared memory (the host emulation substitutes its own buffer).
#ifndef FUSED_INCEPTION_DYNAMIC_SMEM
#define FUSED_INCEPTION_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

// Checks a 16-byte vector access is aligned (the host emulation makes this an assertion).
#ifndef FUSED_INCEPTION_ASSERT_ALIGNED16
#define FUSED_INCEPTION_ASSERT_ALIGNED16(ptr) ((void)0)
#endif

namespace fused_inception {
namespace kernel {

constexpr int kTH = 8;               // pixel tile height
constexpr int kTW = 8;               // pixel tile width
constexpr int kBM = kTH * kTW;       // GEMM rows (pixels) per tile
constexpr int kBN = 64;              // output channels per work item
constexpr int kBK = 32;              // input-channel chunk (GEMM K) and reduce-channel chunk (BR)
constexpr int kBR = kBK;             // the phase-2 A tile reuses the A buffer, so BR == BK
constexpr int kThreads = 128;        // 4 warps

static_assert(kBM == 64 && kThreads == 128, "the accumulator layouts below assume 64 rows, 4 warps");

// ---------------------------------------------------------------------------------------------
// Element conversions.
template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T> __device__ __forceinline__ T zero_v() { return from_f<T>(0.0f); }

// 16-byte vector load/store (callers guarantee the alignment).
template <typename T>
__device__ __forceinline__ uint4 ld16(const T* p) {
  FUSED_INCEPTION_ASSERT_ALIGNED16(p);
  return *reinterpret_cast<const uint4*>(p);
}
template <typename T>
__device__ __forceinline__ void st16(T* p, uint4 v) {
  FUSED_INCEPTION_ASSERT_ALIGNED16(p);
  *reinterpret_cast<uint4*>(p) = v;
}

// torch.relu semantics: NaN stays NaN (fmaxf(NaN, 0) would give 0).
__device__ __forceinline__ float relu_nan(float v, bool relu) { return (relu && v < 0.0f) ? 0.0f : v; }

// ---------------------------------------------------------------------------------------------
// Shared memory layout (bytes from the dynamic shared memory base). Row pitches are padded by one
// 16-byte vector; every region starts 128-byte aligned. WMMA needs 32-byte aligned fragment
// pointers and ldm a multiple of 16 bytes: fragments start at rows/columns that are multiples of
// 16, and 16 * pitch * sizeof(T) is a multiple of 32 for every pitch below.
template <typename T>
struct Smem {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector
  static constexpr int lda = kBK + kVec;                          // A tile [kBM][lda]
  static constexpr int ldb = kBN + kVec;                          // B tile [kBK][ldb]
  static constexpr int ldc = kBN + 4;                             // fp32 C tile [kBM][ldc]
  static constexpr int ldh = kBR + kVec;                          // halo [halo_pix][ldh]
  static constexpr size_t align(size_t b) { return (b + 127) / 128 * 128; }
  static constexpr size_t a_off = 0;
  static constexpr size_t b_off = a_off + align(sizeof(T) * kBM * lda);
  static constexpr size_t c_off = b_off + align(sizeof(T) * kBK * ldb);
  static constexpr size_t h_off = c_off + align(sizeof(float) * kBM * ldc);
  static_assert(ldh == lda, "phase-2 copies halo rows into A rows vector by vector");
  static_assert((lda * sizeof(T)) % 16 == 0 && (ldb * sizeof(T)) % 16 == 0 && (ldc * 4) % 16 == 0, "pitch");
  __host__ __device__ static constexpr int halo_pix(int k) { return (kTH + k - 1) * (kTW + k - 1); }
  __host__ __device__ static constexpr size_t bytes(int kmax) {
    return h_off + sizeof(T) * static_cast<size_t>(halo_pix(kmax)) * ldh;
  }
};

// ---------------------------------------------------------------------------------------------
// CTA-wide accumulators of a [64 x NT] fp32 tile: acc += A[64 x 32] * B[32 x NT] from shared memory.

// Plain FMA: thread (tm, tn) owns rows tm + 8*i and columns tn + 16*j.
template <typename T, int NT>
struct FmaAcc {
  static constexpr int MI = kBM / 8, NJ = NT / 16;
  float c[MI][NJ];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j) c[i][j] = 0.0f;
  }
  __device__ __forceinline__ void mma(const T* As, const T* Bs) {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      float a[MI], b[NJ];
#pragma unroll
      for (int i = 0; i < MI; ++i) a[i] = to_f<T>(As[(tm + 8 * i) * Smem<T>::lda + k]);
#pragma unroll
      for (int j = 0; j < NJ; ++j) b[j] = to_f<T>(Bs[k * Smem<T>::ldb + tn + 16 * j]);
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NJ; ++j) c[i][j] = fmaf(a[i], b[j], c[i][j]);
    }
  }
  __device__ __forceinline__ void store(float* Cs) const {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j) Cs[(tm + 8 * i) * Smem<T>::ldc + tn + 16 * j] = c[i][j];
  }
};

// Tensor cores (WMMA 16x16x16): warps form a 2x2 grid, each owning a [32 x NT/2] block.
template <typename T, int NT>
struct TcAcc;

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
namespace wmma = nvcuda::wmma;

template <typename T, int NT>
struct TcAcc {
  static constexpr int FM = 2, FN = NT / 32;
  static_assert(NT % 32 == 0, "NT must be a multiple of 32");
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[FM][FN];
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::fill_fragment(c[i][j], 0.0f);
  }
  __device__ __forceinline__ void mma(const T* As, const T* Bs) {
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i)
        wmma::load_matrix_sync(a[i], As + (wm * 32 + i * 16) * Smem<T>::lda + kk, Smem<T>::lda);
#pragma unroll
      for (int j = 0; j < FN; ++j)
        wmma::load_matrix_sync(b[j], Bs + kk * Smem<T>::ldb + wn * (NT / 2) + j * 16, Smem<T>::ldb);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
  }
  __device__ __forceinline__ void store(float* Cs) const {
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
        wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * Smem<T>::ldc + wn * (NT / 2) + j * 16, c[i][j],
                                Smem<T>::ldc, wmma::mem_row_major);
  }
};
#endif

// Which accumulator a dtype uses on the architecture being compiled. Only the device passes see
// __CUDA_ARCH__; the kernel's template arguments do not depend on it.
template <typename T> struct UseTensorCores : std::false_type {};
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
template <> struct UseTensorCores<__half> : std::true_type {};
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <> struct UseTensorCores<__nv_bfloat16> : std::true_type {};
#endif

template <typename T, int NT>
using Acc = typename std::conditional<UseTensorCores<T>::value, TcAcc<T, NT>, FmaAcc<T, NT>>::type;

// ---------------------------------------------------------------------------------------------
// Kernel arguments, typed.
template <typename T>
struct Args {
  const T* __restrict__ x;
  T* __restrict__ out;
  const T* __restrict__ w_in;
  const float* __restrict__ b_in;
  const T* __restrict__ w3;
  const float* __restrict__ b3;
  const T* __restrict__ w5;
  const float* __restrict__ b5;
  const T* __restrict__ wp;
  const float* __restrict__ bp;
  int64_t n;
  int h, w;
  int cin, c1, c3r, c3, c5r, c5, cp;
  int k3, k5;
  bool relu;
  int64_t sxn, sxc, sxh, sxw;
  int64_t son, soc, soh, sow;
  // 16-byte vector paths (set by set_vector_flags): x / out channels_last with every pixel's
  // channel run 16-byte aligned; the weight base pointers 16-byte aligned.
  bool x_vec, out_vec, w_vec;
};

// Host side: which vector paths the layout of x, out and the weights allows.
template <typename T>
inline void set_vector_flags(Args<T>& a) {
  constexpr int64_t V = 16 / sizeof(T);
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  a.x_vec = a.sxc == 1 && a.sxn % V == 0 && a.sxh % V == 0 && a.sxw % V == 0 && aligned(a.x);
  a.out_vec = a.soc == 1 && a.son % V == 0 && a.soh % V == 0 && a.sow % V == 0 && aligned(a.out);
  a.w_vec = aligned(a.w_in) && aligned(a.w3) && aligned(a.w5) && aligned(a.wp);
}

// A[m][k] = x[k0 + k, pixel m] for one 64-pixel row block, 0 for masked rows / channels >= cin.
// Pixel m of the block is (oh0 + m / row_w, ow0 + m % row_w) for m < rows, masked otherwise;
// the tile uses row_w = kTW, rows = kBM; a halo chunk uses row_w = halo width and starts at hc.
// POOL: A is the 3x3/stride-1 max-pool of x instead (padding never wins, NaN propagates).
template <typename T, bool POOL>
__device__ __forceinline__ void load_x_tile(T* As, const T* __restrict__ x_img, const Args<T>& a, int k0,
                                            int oh0, int ow0, int row_w, int first, int rows) {
  constexpr int kVec = Smem<T>::kVec, kVecs = kBK / kVec;  // vectors per A row
  if (!POOL && a.x_vec) {
    // channels_last, aligned: one 16-byte load per (pixel, kVec channels); k0 is a multiple of kVec.
    for (int e = threadIdx.x; e < kBM * kVecs; e += kThreads) {
      const int m = e / kVecs, v = e % kVecs;
      const int p = first + m;
      const int gh = oh0 + p / row_w, gw = ow0 + p % row_w;
      const int c = k0 + v * kVec;
      const bool pix_ok = p < rows && gh >= 0 && gh < a.h && gw >= 0 && gw < a.w;
      T* dst = As + m * Smem<T>::lda + v * kVec;
      const T* src = x_img + c + gh * a.sxh + gw * a.sxw;
      if (pix_ok && c + kVec <= a.cin) {
        st16(dst, ld16(src));
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) dst[i] = (pix_ok && c + i < a.cin) ? src[i] : zero_v<T>();
      }
    }
    return;
  }
  const bool cfast = a.sxc == 1;  // channels_last: consecutive threads read consecutive channels
  for (int e = threadIdx.x; e < kBM * kBK; e += kThreads) {
    int m, k;
    if (cfast) {
      m = e / kBK;
      k = e % kBK;
    } else {
      k = e / kBM;
      m = e % kBM;
    }
    const int p = first + m;
    const int gh = oh0 + p / row_w, gw = ow0 + p % row_w;
    const int c = k0 + k;
    T v = zero_v<T>();
    if (p < rows && gh >= 0 && gh < a.h && gw >= 0 && gw < a.w && c < a.cin) {
      const T* xc = x_img + c * a.sxc;
      if (POOL) {
        // Start from the centre tap (inside the image); a tap wins if greater or NaN, so NaN
        // propagates like torch's max_pool2d, and taps outside the image are skipped.
        float best = to_f<T>(xc[gh * a.sxh + gw * a.sxw]);
#pragma unroll
        for (int dy = -1; dy <= 1; ++dy) {
#pragma unroll
          for (int dx = -1; dx <= 1; ++dx) {
            const int sh = gh + dy, sw = gw + dx;
            if (sh >= 0 && sh < a.h && sw >= 0 && sw < a.w) {
              const float t = to_f<T>(xc[sh * a.sxh + sw * a.sxw]);
              if (t > best || isnan(t)) best = t;
            }
          }
        }
        v = from_f<T>(best);  // exact: best is one of the inputs
      } else {
        v = xc[gh * a.sxh + gw * a.sxw];
      }
    }
    As[m * Smem<T>::lda + k] = v;
  }
}

// B[k][j] = w[(k0 + k) * ldw + col0 + j] for j < ncols, 0 outside [0, krows) x [0, col_end).
// vec: w is 16-byte aligned (then rows are too when ldw and col0 are multiples of the vector).
template <typename T, int NCOLS>
__device__ __forceinline__ void load_w_tile(T* Bs, const T* __restrict__ w, int ldw, int k0, int krows,
                                            int col0, int col_end, bool vec) {
  constexpr int kVec = Smem<T>::kVec, kVecs = NCOLS / kVec;  // vectors per B row
  if (vec && ldw % kVec == 0 && col0 % kVec == 0) {
    for (int e = threadIdx.x; e < kBK * kVecs; e += kThreads) {
      const int k = e / kVecs, v = e % kVecs;
      const int r = k0 + k, c = col0 + v * kVec;
      T* dst = Bs + k * Smem<T>::ldb + v * kVec;
      const T* src = w + static_cast<int64_t>(r) * ldw + c;
      if (r < krows && c + kVec <= col_end) {
        st16(dst, ld16(src));
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) dst[i] = (r < krows && c + i < col_end) ? src[i] : zero_v<T>();
      }
    }
    return;
  }
  for (int e = threadIdx.x; e < kBK * NCOLS; e += kThreads) {
    const int k = e / NCOLS, j = e % NCOLS;
    const int r = k0 + k, c = col0 + j;
    Bs[k * Smem<T>::ldb + j] = (r < krows && c < col_end) ? w[static_cast<int64_t>(r) * ldw + c] : zero_v<T>();
  }
}

// out[c_off + c0 + j, tile pixel m] = relu(C[m][j] + bias[c0 + j]) for valid pixels and j < cout - c0.
template <typename T>
__device__ __forceinline__ void store_out(const float* Cs, T* __restrict__ out_img, const Args<T>& a,
                                          const float* __restrict__ bias, int c0, int cout, int c_off,
                                          int oh0, int ow0) {
  constexpr int kVec = Smem<T>::kVec, kVecs = kBN / kVec;  // vectors per output row
  if (a.out_vec && (c_off + c0) % kVec == 0) {
    // channels_last, aligned: one 16-byte store per (pixel, kVec channels).
    for (int e = threadIdx.x; e < kBM * kVecs; e += kThreads) {
      const int m = e / kVecs, v = e % kVecs;
      const int gh = oh0 + m / kTW, gw = ow0 + m % kTW, c = c0 + v * kVec;
      if (gh >= a.h || gw >= a.w || c >= cout) continue;
      T* dst = out_img + (c_off + c) + gh * a.soh + gw * a.sow;
      const float* src = Cs + m * Smem<T>::ldc + v * kVec;
      if (c + kVec <= cout) {
        union {
          uint4 u;
          T t[kVec];
        } pack;
#pragma unroll
        for (int i = 0; i < kVec; ++i) pack.t[i] = from_f<T>(relu_nan(src[i] + bias[c + i], a.relu));
        st16(dst, pack.u);
      } else {
        for (int i = 0; c + i < cout; ++i) dst[i] = from_f<T>(relu_nan(src[i] + bias[c + i], a.relu));
      }
    }
    return;
  }
  const bool cfast = a.soc == 1;
  for (int e = threadIdx.x; e < kBM * kBN; e += kThreads) {
    int m, j;
    if (cfast) {
      m = e / kBN;
      j = e % kBN;
    } else {
      j = e / kBM;
      m = e % kBM;
    }
    const int gh = oh0 + m / kTW, gw = ow0 + m % kTW, c = c0 + j;
    if (c < cout && gh < a.h && gw < a.w) {
      const float v = relu_nan(Cs[m * Smem<T>::ldc + j] + bias[c], a.relu);
      out_img[(c_off + c) * a.soc + gh * a.soh + gw * a.sow] = from_f<T>(v);
    }
  }
}

// 1x1 conv of x (or of its 3x3 max-pool when POOL) for output channels [c0, c0 + kBN).
template <typename T, bool POOL>
__device__ void pointwise_item(const Args<T>& a, T* As, T* Bs, float* Cs, const T* __restrict__ x_img,
                               T* __restrict__ out_img, const T* __restrict__ w, int ldw,
                               const float* __restrict__ bias, int cout, int c_off, int c0, int oh0, int ow0) {
  Acc<T, kBN> acc;
  acc.zero();
  for (int k0 = 0; k0 < a.cin; k0 += kBK) {
    __syncthreads();  // everyone is done reading As/Bs (previous chunk or item)
    load_x_tile<T, POOL>(As, x_img, a, k0, oh0, ow0, kTW, 0, kBM);
    load_w_tile<T, kBN>(Bs, w, ldw, k0, a.cin, c0, cout, a.w_vec);
    __syncthreads();
    acc.mma(As, Bs);
  }
  // Cs's last readers (the previous item's epilogue) passed the barriers above.
  acc.store(Cs);
  __syncthreads();
  store_out<T>(Cs, out_img, a, bias, c0, cout, c_off, oh0, ow0);
}

// KxK conv of relu(1x1 reduce of x) for output channels [c0, c0 + kBN); the reduce (columns
// [red_col, red_col + cred) of w_in) is recomputed on the tile's halo, kBR channels at a time.
template <typename T>
__device__ void kxk_item(const Args<T>& a, T* As, T* Bs, float* Cs, T* Hs, const T* __restrict__ x_img,
                         T* __restrict__ out_img, const T* __restrict__ wk, const float* __restrict__ bk,
                         int k, int red_col, int cred, int cout, int c_off, int c0, int oh0, int ow0) {
  constexpr int kVec = Smem<T>::kVec;
  const int w_ld = a.c1 + a.c3r + a.c5r;
  const int pad = k / 2, halo_w = kTW + k - 1, halo_pix = Smem<T>::halo_pix(k);
  Acc<T, kBN> acc;
  acc.zero();
  for (int r0 = 0; r0 < cred; r0 += kBR) {
    // Phase 1: Hs[p][r] = relu(x . w_in[:, red_col + r0 + r] + b) at halo pixel p, 0 outside the
    // image and for channels >= cred (a where, not a product: NaN/Inf inputs must not leak in).
    for (int hc = 0; hc < halo_pix; hc += kBM) {
      Acc<T, kBR> racc;
      racc.zero();
      for (int k0 = 0; k0 < a.cin; k0 += kBK) {
        __syncthreads();  // As/Bs free (previous chunk, tap or item)
        load_x_tile<T, false>(As, x_img, a, k0, oh0 - pad, ow0 - pad, halo_w, hc, halo_pix);
        load_w_tile<T, kBR>(Bs, a.w_in, w_ld, k0, a.cin, red_col + r0, red_col + cred, a.w_vec);
        __syncthreads();
        racc.mma(As, Bs);
      }
      // Cs's previous readers (last halo epilogue / previous item) passed the barriers above.
      racc.store(Cs);
      __syncthreads();
      // Hs's previous readers (phase 2 of the previous chunk) passed the barriers above.
      for (int e = threadIdx.x; e < kBM * kBR; e += kThreads) {
        const int m = e / kBR, r = e % kBR, p = hc + m;
        if (p < halo_pix) {
          const int gh = oh0 - pad + p / halo_w, gw = ow0 - pad + p % halo_w;
          float v = 0.0f;
          if (r0 + r < cred && gh >= 0 && gh < a.h && gw >= 0 && gw < a.w)
            v = relu_nan(Cs[m * Smem<T>::ldc + r] + a.b_in[red_col + r0 + r], a.relu);
          Hs[p * Smem<T>::ldh + r] = from_f<T>(v);
        }
      }
    }
    // Phase 2: acc += sum over taps of Hs[shifted tile pixels] . wk[tap][r0 : r0 + kBR, c0 : c0 + kBN].
    for (int tap = 0; tap < k * k; ++tap) {
      const int dy = tap / k, dx = tap % k;
      __syncthreads();  // Hs complete (first tap); As/Bs free
      // Tile pixel m = (m / kTW, m % kTW) reads halo pixel (m / kTW + dy, m % kTW + dx).
      for (int e = threadIdx.x; e < kBM * (kBR / kVec); e += kThreads) {
        const int m = e / (kBR / kVec), v = e % (kBR / kVec);
        const int p = (m / kTW + dy) * halo_w + (m % kTW + dx);
        st16(As + m * Smem<T>::lda + v * kVec, ld16(Hs + p * Smem<T>::ldh + v * kVec));
      }
      load_w_tile<T, kBN>(Bs, wk + static_cast<int64_t>(tap) * cred * cout, cout, r0, cred, c0, cout, a.w_vec);
      __syncthreads();
      acc.mma(As, Bs);
    }
  }
  acc.store(Cs);  // Cs's last readers (the halo epilogue) passed the barriers above
  __syncthreads();
  store_out<T>(Cs, out_img, a, bk, c0, cout, c_off, oh0, ow0);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) inception_fwd_kernel(const Args<T> a) {
  FUSED_INCEPTION_DYNAMIC_SMEM(smem);
  T* As = reinterpret_cast<T*>(smem + Smem<T>::a_off);
  T* Bs = reinterpret_cast<T*>(smem + Smem<T>::b_off);
  float* Cs = reinterpret_cast<float*>(smem + Smem<T>::c_off);
  T* Hs = reinterpret_cast<T*>(smem + Smem<T>::h_off);

  const int tiles_w = (a.w + kTW - 1) / kTW;
  const int tiles_per_img = ((a.h + kTH - 1) / kTH) * tiles_w;
  const int64_t n_tiles = a.n * tiles_per_img;
  const int n3 = (a.c3 + kBN - 1) / kBN, n5 = (a.c5 + kBN - 1) / kBN;
  const int n1 = (a.c1 + kBN - 1) / kBN, np = (a.cp + kBN - 1) / kBN;
  const int64_t total = static_cast<int64_t>(n3 + n5 + n1 + np) * n_tiles;

  // Items are ordered heaviest first (KxK branches), tiles fastest; the loop is block-uniform, so
  // every __syncthreads below is reached by the whole block.
  for (int64_t work = blockIdx.x; work < total; work += gridDim.x) {
    const int item = static_cast<int>(work / n_tiles);
    const int64_t tile = work % n_tiles;
    const int64_t img = tile / tiles_per_img;
    const int t = static_cast<int>(tile % tiles_per_img);
    const int oh0 = (t / tiles_w) * kTH, ow0 = (t % tiles_w) * kTW;
    const T* x_img = a.x + img * a.sxn;
    T* out_img = a.out + img * a.son;
    if (item < n3) {
      kxk_item<T>(a, As, Bs, Cs, Hs, x_img, out_img, a.w3, a.b3, a.k3, a.c1, a.c3r, a.c3, a.c1, item * kBN,
                  oh0, ow0);
    } else if (item < n3 + n5) {
      kxk_item<T>(a, As, Bs, Cs, Hs, x_img, out_img, a.w5, a.b5, a.k5, a.c1 + a.c3r, a.c5r, a.c5,
                  a.c1 + a.c3, (item - n3) * kBN, oh0, ow0);
    } else if (item < n3 + n5 + n1) {
      pointwise_item<T, false>(a, As, Bs, Cs, x_img, out_img, a.w_in, a.c1 + a.c3r + a.c5r, a.b_in, a.c1, 0,
                               (item - n3 - n5) * kBN, oh0, ow0);
    } else {
      pointwise_item<T, true>(a, As, Bs, Cs, x_img, out_img, a.wp, a.cp, a.bp, a.cp, a.c1 + a.c3 + a.c5,
                              (item - n3 - n5 - n1) * kBN, oh0, ow0);
    }
  }
}

}  // namespace kernel
}  // namespace fused_inception
