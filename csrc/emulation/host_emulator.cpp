// Host emulation of the CUDA kernel in ../inception_kernel.cuh, for CPU-only test machines.
//
// The kernel source is compiled by the host C++ compiler; each thread block runs as 128 fibers
// (ucontext) on one OS thread, switched at every __syncthreads(): a barrier that not all threads
// reach, or reach a different number of times, is reported. The dynamic shared memory is filled
// with 0xFF bytes (NaN in every dtype) before each block; input, weight and output buffers end at
// a protected page, so an overrun faults; WMMA is replaced by a reference implementation that
// checks the pointer alignment and leading dimensions the hardware requires.
// Define EMU_ARCH (e.g. 900 or 600) to pick the tensor-core or the FMA accumulators, as
// __CUDA_ARCH__ does on a GPU. This checks index math, masking, strides, halo handling and barrier
// placement of the real source; it does not check real WMMA fragments or memory-model races (run
// compute-sanitizer on a GPU for those).
//
// Usage: host_emulator DIR DTYPE N H W CIN C1 C3R C3 C5R C5 CP K3 K5 RELU GRID
//                      X_OFF SXN SXC SXH SXW OUT_OFF SON SOC SOH SOW
// DIR holds x.bin and out.bin (raw storages; *_OFF are element offsets into them) and the packed
// weights w_in.bin b_in.bin w3.bin b3.bin w5.bin b5.bin wp.bin bp.bin; out.bin is rewritten.

#ifndef EMU_ARCH
#error "define EMU_ARCH (a __CUDA_ARCH__ value, e.g. 900 or 600)"
#endif

// CUDA's headers as plain host headers: function-space qualifiers expand to nothing.
#define __host__
#define __device__
#define __global__
#define __shared__
#define __DEVICE_LAUNCH_PARAMETERS_H__  // threadIdx & co. are emulated below
#define __CUDA_MMA_H__                  // WMMA is emulated below
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using std::isnan;

[[noreturn]] void emu_fail(const char* what) {
  std::fprintf(stderr, "host emulation: %s\n", what);
  std::abort();
}

uint3 threadIdx;  // of the running fiber
uint3 blockIdx;
dim3 gridDim;
unsigned char* g_smem = nullptr;

struct Fiber {
  ucontext_t ctx;
  bool done = false;
  bool at_barrier = false;
};
ucontext_t g_scheduler;
Fiber* g_fiber = nullptr;  // the running one

// Separate, not inlined: the scheduler's locals then live across a plain call, not a returns-twice one.
[[gnu::noinline]] void resume(Fiber& f) {
  if (swapcontext(&g_scheduler, &f.ctx) != 0) emu_fail("swapcontext failed");
}

inline void __syncthreads() {
  g_fiber->at_barrier = true;
  if (swapcontext(&g_fiber->ctx, &g_scheduler) != 0) emu_fail("swapcontext failed");
}

inline float emu_to_float(float v) { return v; }
inline float emu_to_float(__half v) { return __half2float(v); }
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Lane 0 of each warp holds the whole 16x16 tile and does the work (the hardware spreads it over
// the warp); the other lanes only check their arguments.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation covers 16x16x16 only");
  float v[16][16];
};

template <typename Use, int M, int N, int K, typename T, typename L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, float x) {
  for (auto& row : f.v)
    for (float& e : row) e = x;
}

template <typename T>
void check_ptr(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) emu_fail("WMMA pointer is not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) emu_fail("WMMA ldm is not a multiple of 16 bytes");
  if (p < reinterpret_cast<const T*>(g_smem)) emu_fail("WMMA pointer below shared memory");
}

template <typename Use, int M, int N, int K, typename T>
void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const T* p, unsigned ldm) {
  check_ptr(p, ldm);
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = emu_to_float(p[r * ldm + c]);
}

template <typename TA, typename TB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, row_major>& a,
              const fragment<matrix_b, 16, 16, 16, TB, row_major>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  if (threadIdx.x % 32 != 0) return;
  float out[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = c.v[i][j];
      for (int k = 0; k < 16; ++k) s = std::fma(a.v[i][k], b.v[k][j], s);
      out[i][j] = s;
    }
  std::memcpy(d.v, out, sizeof(out));
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  check_ptr(p, ldm);
  if (layout != mem_row_major) emu_fail("only mem_row_major is emulated");
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[r * ldm + c] = f.v[r][c];
}
}  // namespace wmma
}  // namespace nvcuda

#define __CUDA_ARCH__ EMU_ARCH
#define __launch_bounds__(...)
#define FUSED_INCEPTION_DYNAMIC_SMEM(name) unsigned char* name = g_smem
#define FUSED_INCEPTION_ASSERT_ALIGNED16(ptr) \
  ((reinterpret_cast<uintptr_t>(ptr) % 16 == 0) ? (void)0 : emu_fail("misaligned 16-byte vector access"))
#include "../inception_kernel.cuh"
#undef __CUDA_ARCH__

namespace {

const void* g_args = nullptr;

template <typename T>
void fiber_main() {
  fused_inception::kernel::inception_fwd_kernel<T>(*static_cast<const fused_inception::kernel::Args<T>*>(g_args));
  g_fiber->done = true;  // returning resumes the scheduler (uc_link)
}

[[gnu::noinline]] void init_fiber(Fiber& f, std::vector<char>& stack, void (*entry)()) {
  f.done = f.at_barrier = false;
  if (getcontext(&f.ctx) != 0) emu_fail("getcontext failed");
  f.ctx.uc_stack.ss_sp = stack.data();
  f.ctx.uc_stack.ss_size = stack.size();
  f.ctx.uc_link = &g_scheduler;
  makecontext(&f.ctx, entry, 0);
}

// A buffer that starts 64-byte aligned (like torch's allocations) and ends less than 64 bytes
// before a PROT_NONE page: reading or writing past that faults. The slack in between is filled
// with 0xFF (NaN in every dtype, so reading it shows in the output) and must stay untouched.
class Guarded {
 public:
  explicit Guarded(const std::vector<unsigned char>& data) : size_(data.size()) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (size_ + 64 + page - 1) / page * page;
    len_ = body + page;
    base_ = static_cast<unsigned char*>(mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) emu_fail("mmap failed");
    if (mprotect(base_ + body, page, PROT_NONE) != 0) emu_fail("mprotect failed");
    end_ = base_ + body;
    ptr_ = base_ + ((body - size_) & ~static_cast<size_t>(63));
    std::memcpy(ptr_, data.data(), size_);
    std::memset(ptr_ + size_, 0xFF, static_cast<size_t>(end_ - (ptr_ + size_)));
  }
  ~Guarded() { munmap(base_, len_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  unsigned char* data() const { return ptr_; }
  std::vector<unsigned char> bytes() const {
    for (const unsigned char* p = ptr_ + size_; p < end_; ++p)
      if (*p != 0xFF) emu_fail("a write past the end of a buffer");
    return std::vector<unsigned char>(ptr_, ptr_ + size_);
  }

 private:
  unsigned char* base_ = nullptr;
  unsigned char* ptr_ = nullptr;
  unsigned char* end_ = nullptr;
  size_t len_ = 0, size_ = 0;
};

std::vector<unsigned char> read_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) emu_fail(("cannot open " + path).c_str());
  std::vector<unsigned char> data;
  unsigned char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) data.insert(data.end(), buf, buf + got);
  std::fclose(f);
  return data;
}

void write_file(const std::string& path, const std::vector<unsigned char>& data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size()) emu_fail(("cannot write " + path).c_str());
  std::fclose(f);
}

template <typename T>
int run(const std::string& dir, char** v) {
  using namespace fused_inception::kernel;
  auto i64 = [&](int i) { return static_cast<int64_t>(std::strtoll(v[i], nullptr, 10)); };
  Guarded x(read_file(dir + "/x.bin"));
  Guarded out(read_file(dir + "/out.bin"));
  std::vector<std::unique_ptr<Guarded>> w;
  for (const char* name : {"w_in", "b_in", "w3", "b3", "w5", "b5", "wp", "bp"})
    w.push_back(std::make_unique<Guarded>(read_file(dir + "/" + name + ".bin")));

  Args<T> a;
  a.n = i64(0);
  a.h = static_cast<int>(i64(1));
  a.w = static_cast<int>(i64(2));
  a.cin = static_cast<int>(i64(3));
  a.c1 = static_cast<int>(i64(4));
  a.c3r = static_cast<int>(i64(5));
  a.c3 = static_cast<int>(i64(6));
  a.c5r = static_cast<int>(i64(7));
  a.c5 = static_cast<int>(i64(8));
  a.cp = static_cast<int>(i64(9));
  a.k3 = static_cast<int>(i64(10));
  a.k5 = static_cast<int>(i64(11));
  a.relu = i64(12) != 0;
  const int64_t grid = i64(13);
  a.x = reinterpret_cast<const T*>(x.data()) + i64(14);
  a.sxn = i64(15);
  a.sxc = i64(16);
  a.sxh = i64(17);
  a.sxw = i64(18);
  a.out = reinterpret_cast<T*>(out.data()) + i64(19);
  a.son = i64(20);
  a.soc = i64(21);
  a.soh = i64(22);
  a.sow = i64(23);
  a.w_in = reinterpret_cast<const T*>(w[0]->data());
  a.b_in = reinterpret_cast<const float*>(w[1]->data());
  a.w3 = reinterpret_cast<const T*>(w[2]->data());
  a.b3 = reinterpret_cast<const float*>(w[3]->data());
  a.w5 = reinterpret_cast<const T*>(w[4]->data());
  a.b5 = reinterpret_cast<const float*>(w[5]->data());
  a.wp = reinterpret_cast<const T*>(w[6]->data());
  a.bp = reinterpret_cast<const float*>(w[7]->data());
  set_vector_flags(a);
  if (std::getenv("EMU_NO_VECTOR") != nullptr) a.x_vec = a.out_vec = a.w_vec = false;
  std::fprintf(stderr, "vector paths: x %d, out %d, weights %d\n", a.x_vec, a.out_vec, a.w_vec);

  const size_t smem = Smem<T>::bytes(a.k3 > a.k5 ? a.k3 : a.k5);
  std::unique_ptr<unsigned char, decltype(&std::free)> buf(
      static_cast<unsigned char*>(std::aligned_alloc(128, (smem + 127) / 128 * 128)), &std::free);
  g_smem = buf.get();
  g_args = &a;
  std::vector<Fiber> fibers(kThreads);
  std::vector<std::vector<char>> stacks(kThreads, std::vector<char>(256 * 1024));
  gridDim = dim3(static_cast<unsigned>(grid), 1, 1);
  for (int64_t b = 0; b < grid; ++b) {
    std::memset(g_smem, 0xFF, smem);  // NaN in every dtype: reading unwritten shared memory shows
    blockIdx = make_uint3(static_cast<unsigned>(b), 0, 0);
    for (int t = 0; t < kThreads; ++t) {
      init_fiber(fibers[t], stacks[t], &fiber_main<T>);
    }
    // One round runs every thread up to its next barrier (or its end).
    for (;;) {
      int done = 0, waiting = 0;
      for (int t = 0; t < kThreads; ++t) {
        Fiber& f = fibers[t];
        if (f.done) continue;
        f.at_barrier = false;
        g_fiber = &f;
        threadIdx = make_uint3(static_cast<unsigned>(t), 0, 0);
        resume(f);
      }
      for (const Fiber& f : fibers) {
        done += f.done;
        waiting += f.at_barrier;
      }
      if (done == kThreads) break;
      if (waiting != kThreads) emu_fail("__syncthreads() not reached by every thread of the block");
    }
  }
  write_file(dir + "/out.bin", out.bytes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 27) {
    std::fprintf(stderr, "usage: %s DIR DTYPE N H W CIN C1 C3R C3 C5R C5 CP K3 K5 RELU GRID X_OFF SXN SXC SXH SXW "
                 "OUT_OFF SON SOC SOH SOW\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int dtype = std::atoi(argv[2]);
  char** v = argv + 3;
  if (dtype == 0) return run<float>(dir, v);
  if (dtype == 1) return run<__half>(dir, v);
  if (dtype == 2) return run<__nv_bfloat16>(dir, v);
  std::fprintf(stderr, "unknown dtype code %d\n", dtype);
  return 2;
}
