// CUDA on the CPU, for testing the kernels' logic where no GPU is present.
//
// The project's own kernel sources (kernels/*.cu) are compiled as C++ with
// this header forced in front (-include dgs_emu/emu.h) after their launches
// `k<<<grid, block, smem, stream>>>(args)` were rewritten into
// `::dgs_emu::launch(grid, block, smem, stream)(<call of k>, args)`
// (rewrite_launches.py). A grid runs on the launching host thread, one block
// at a time by default; a block's threads are fibers that switch only where
// CUDA threads meet: __syncthreads and the warp intrinsics. Shared memory is
// a static, which holds the running block's contents (a block that another
// interrupts keeps a copy). Atomics are plain read-modify-writes (fibers
// never interleave within one). With DGS_EMU_RESIDENT=N, N blocks of a grid
// are resident at once and interleaved: the block with the highest priority
// runs, and one atomic on global memory or __threadfence in eight, drawn,
// stops it at once and sends it below the others (docs/emulation.md).
//
// What this checks: the arithmetic, indexing, barriers and warp exchanges of
// the real kernel code, bit for bit against the host reference, and with
// blocks interleaved the hand-offs between blocks at the granularity of
// those stops. What it does not: speed, the memory model (every store is
// seen at once), or anything a GPU run measures. A kernel that spins waiting
// on another block would hang here; a block whose threads all wait on one
// another is reported, naming the block, and the process aborts.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- CUDA keywords -------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __constant__ static
#define __grid_constant__
#define __launch_bounds__(...)

// ---- built-in types ------------------------------------------------------
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

#define DGS_EMU_VECTOR2(name, T, align) \
  struct alignas(align) name {          \
    T x, y;                             \
  };                                    \
  inline name make_##name(T x, T y) {   \
    return name{x, y};                  \
  }
#define DGS_EMU_VECTOR4(name, T, align)         \
  struct alignas(align) name {                  \
    T x, y, z, w;                               \
  };                                            \
  inline name make_##name(T x, T y, T z, T w) { \
    return name{x, y, z, w};                    \
  }
DGS_EMU_VECTOR2(float2, float, 8)
DGS_EMU_VECTOR4(float4, float, 16)
DGS_EMU_VECTOR2(int2, int, 8)
DGS_EMU_VECTOR4(int4, int, 16)
DGS_EMU_VECTOR2(uint2, unsigned int, 8)
DGS_EMU_VECTOR4(uint4, unsigned int, 16)
DGS_EMU_VECTOR2(ulonglong2, unsigned long long, 16)
DGS_EMU_VECTOR2(longlong2, long long, 16)
#undef DGS_EMU_VECTOR2
#undef DGS_EMU_VECTOR4

// ---- the runtime's types (cuda_runtime_api.h declares the functions) -----
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorUnsupportedPtxVersion = 222,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
};
using cudaError_t = cudaError;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st;
using cudaGraphExec_t = CUgraphExec_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

namespace dgs_emu {

// ---- the thread a fiber runs ---------------------------------------------
struct Block;
struct Thread {
  uint3 thread_idx;
  unsigned int linear;  // x + y * bx + z * bx * by
  Block* block;
};
struct Grid {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

extern Thread* g_thread;  // the fiber running now
extern Grid g_grid;       // the block running now

/// Reports a misuse of the emulated device (a block-wide primitive on the
/// wrong block size, a deadlocked block) and aborts the process.
[[noreturn]] void fatal(const char* what);
[[noreturn]] void fail_block_scan_size(int expected_threads);

/// Suspends the running fiber until the rest of its block has run: the
/// scheduler resumes it on its next round.
void yield();

/// Set while a grid runs with more than one block resident
/// (DGS_EMU_RESIDENT): atomics and fences then call interleave_point.
inline bool g_interleaving = false;
/// After an atomic on `address` (not a __shared__ variable) or a fence
/// (nullptr): one time in eight, drawn, the block stops here, mid-round, and
/// falls below the other resident blocks, which run before it goes on.
void interleave_point(const void* address);
/// Blocks of a grid resident at once: DGS_EMU_RESIDENT (N or N:SEED, N from
/// 1 to 8, default 1), or what the emulation's own tests set.
int resident_blocks();
void set_resident_blocks(int blocks);
/// The running block's flags for __syncthreads_count, one per thread.
unsigned char* block_count_flags();

void sync_block();
/// Warp exchange: every lane named in `mask` deposits `value` and an
/// argument; when all have arrived, `combine` computes each lane's result
/// from all deposits. The calling lane must be in `mask`.
using Combine = std::uint64_t (*)(const std::uint64_t* values, const std::uint64_t* args,
                                  unsigned int mask, unsigned int lane);
std::uint64_t warp_exchange(unsigned int mask, std::uint64_t value, std::uint64_t arg,
                            Combine combine);

std::uint64_t combine_shfl(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                           unsigned int lane);
std::uint64_t combine_shfl_up(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                              unsigned int lane);
std::uint64_t combine_shfl_down(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                                unsigned int lane);
std::uint64_t combine_shfl_xor(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                               unsigned int lane);
std::uint64_t combine_ballot(const std::uint64_t* v, const std::uint64_t* a, unsigned int mask,
                             unsigned int);
std::uint64_t combine_none(const std::uint64_t*, const std::uint64_t*, unsigned int, unsigned int);

template <typename T>
std::uint64_t to_word(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "warp exchange of at most 8 bytes");
  std::uint64_t w = 0;
  std::memcpy(&w, &v, sizeof v);
  return w;
}
template <typename T>
T from_word(std::uint64_t w) {
  T v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

// ---- launches --------------------------------------------------------------
/// Runs (or, on a capturing stream, records) a grid whose every thread calls
/// `body`. Returns the launch's error, also kept as the last error.
cudaError_t run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                     const char* kernel, std::function<void()> body);

/// A test's fault: the `n`th launch from now (1: the next) fails with
/// cudaErrorLaunchOutOfResources without running, as a launch the device
/// cannot hold does, and each later one runs; 0 disarms. Counts the
/// launches of every host thread.
void fail_launch(std::uint64_t n);
/// The kernel whose launch the armed fault failed (its name as launched,
/// without template arguments), or null while it has failed none.
const char* failed_launch();

/// Calls made so far, by every host thread, that allocate, free or may wait
/// for the device: cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost, the
/// synchronous copies and memsets, cudaDeviceSynchronize,
/// cudaStreamSynchronize, cudaEventSynchronize, and an asynchronous copy
/// between the device and host memory that cudaMallocHost did not give (the
/// driver stages pageable memory, and may wait for the stream to do so).
/// What a test counts to show that a step does none of these.
std::uint64_t blocking_calls();

/// What `k<<<grid, block, smem, stream>>>(args...)` becomes: the arguments
/// are evaluated and copied at the launch, as CUDA does, and every thread
/// calls the kernel with its own copy of them.
struct Launch {
  dim3 grid, block;
  std::size_t shared_bytes;
  cudaStream_t stream;
  const char* kernel;
  Launch named(const char* name) const {
    Launch l = *this;
    l.kernel = name;
    return l;
  }
  template <typename Call, typename... Args>
  void operator()(Call call, Args&&... args) const {
    std::tuple<std::decay_t<Args>...> params(std::forward<Args>(args)...);
    run_grid(grid, block, shared_bytes, stream, kernel,
             [call, params]() { std::apply(call, params); });
  }
};
inline Launch launch(dim3 grid, dim3 block, std::size_t shared_bytes = 0,
                     cudaStream_t stream = nullptr) {
  return Launch{grid, block, shared_bytes, stream, "a kernel"};
}

/// Counts the grids run: a SharedVariable notes the last grid that used it.
inline std::uint64_t g_grid_serial = 0;

/// A __shared__ variable, made known to the runtime where it is declared
/// (rewrite_launches.py adds one of these after each declaration, and a call
/// of use() that every thread makes as it passes). The first use in a grid
/// fills it with 0x5A, and so does the start of each later block of the
/// grid: a GPU block's shared memory starts with whatever was there, so a
/// read of shared memory that no thread of the block wrote shows, as a read
/// of device memory nothing wrote does. With blocks interleaved
/// (DGS_EMU_RESIDENT), the variables a grid uses are what a block switch
/// saves and restores.
class SharedVariable {
 public:
  SharedVariable(void* address, std::size_t bytes);
  void use() {
    if (grid_ != g_grid_serial) first_use();
  }

 private:
  void first_use();
  unsigned char* address_;
  std::size_t bytes_;
  std::uint64_t grid_ = ~std::uint64_t{0};
};

/// Enqueues host work on a stream (the device-wide CUB algorithms): runs now,
/// or is recorded when the stream is capturing.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);

}  // namespace dgs_emu

// ---- built-in variables ----------------------------------------------------
#define threadIdx (::dgs_emu::g_thread->thread_idx)
#define blockIdx (::dgs_emu::g_grid.block_idx)
#define blockDim (::dgs_emu::g_grid.block_dim)
#define gridDim (::dgs_emu::g_grid.grid_dim)
constexpr int warpSize = 32;

// ---- synchronisation -------------------------------------------------------
inline void __syncthreads() {
  ::dgs_emu::sync_block();
}
// The block's flags are zero outside a call (a block starts with them
// zero, and a thread clears its own). Every calling thread's predicate is in
// place after the first barrier; the second keeps each thread's clearing,
// and the next call's writes, after every thread has counted.
inline int __syncthreads_count(int predicate) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  unsigned char* flags = ::dgs_emu::block_count_flags();
  flags[t] = predicate != 0;
  ::dgs_emu::sync_block();
  int count = 0;
  for (unsigned i = 0; i < n; ++i) count += flags[i];
  ::dgs_emu::sync_block();
  flags[t] = 0;
  return count;
}
inline void __syncwarp(unsigned int mask = 0xFFFFFFFFu) {
  ::dgs_emu::warp_exchange(mask, 0, 0, ::dgs_emu::combine_none);
}
inline void __threadfence() {
  if (::dgs_emu::g_interleaving) ::dgs_emu::interleave_point(nullptr);
}
inline void __threadfence_block() {}
inline void __threadfence_system() {}

template <typename T>
T __shfl_sync(unsigned int mask, T v, int src, int width = 32) {
  const std::uint64_t arg = (static_cast<std::uint64_t>(width) << 32) | static_cast<unsigned>(src);
  return ::dgs_emu::from_word<T>(
      ::dgs_emu::warp_exchange(mask, ::dgs_emu::to_word(v), arg, ::dgs_emu::combine_shfl));
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const std::uint64_t arg = (static_cast<std::uint64_t>(width) << 32) | delta;
  return ::dgs_emu::from_word<T>(
      ::dgs_emu::warp_exchange(mask, ::dgs_emu::to_word(v), arg, ::dgs_emu::combine_shfl_up));
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
  const std::uint64_t arg = (static_cast<std::uint64_t>(width) << 32) | delta;
  return ::dgs_emu::from_word<T>(
      ::dgs_emu::warp_exchange(mask, ::dgs_emu::to_word(v), arg, ::dgs_emu::combine_shfl_down));
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
  const std::uint64_t arg =
      (static_cast<std::uint64_t>(width) << 32) | static_cast<unsigned>(lane_mask);
  return ::dgs_emu::from_word<T>(
      ::dgs_emu::warp_exchange(mask, ::dgs_emu::to_word(v), arg, ::dgs_emu::combine_shfl_xor));
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  return static_cast<unsigned int>(
      ::dgs_emu::warp_exchange(mask, predicate != 0, 0, ::dgs_emu::combine_ballot));
}
inline int __any_sync(unsigned int mask, int predicate) {
  return __ballot_sync(mask, predicate) != 0;
}
inline int __all_sync(unsigned int mask, int predicate) {
  return __ballot_sync(mask, predicate) == mask;
}
inline unsigned int __activemask() {
  return 0xFFFFFFFFu;
}

// ---- atomics: plain read-modify-writes, returning the old value -------------
namespace dgs_emu {
template <typename T, typename Next>
T read_modify_write(T* p, Next next) {
  const T old = *p;
  *p = next(old);
  if (g_interleaving) interleave_point(p);
  return old;
}
}  // namespace dgs_emu
#define DGS_EMU_ATOMIC(name, expression)                                        \
  template <typename T, typename U>                                             \
  T name(T* p, U value) {                                                       \
    const T v = static_cast<T>(value);                                          \
    return ::dgs_emu::read_modify_write(                                        \
        p, [v]([[maybe_unused]] T old) { return static_cast<T>(expression); }); \
  }
DGS_EMU_ATOMIC(atomicAdd, old + v)
DGS_EMU_ATOMIC(atomicSub, old - v)
DGS_EMU_ATOMIC(atomicOr, old | v)
DGS_EMU_ATOMIC(atomicAnd, old& v)
DGS_EMU_ATOMIC(atomicXor, old ^ v)
DGS_EMU_ATOMIC(atomicMin, v < old ? v : old)
DGS_EMU_ATOMIC(atomicMax, v > old ? v : old)
DGS_EMU_ATOMIC(atomicExch, v)
#undef DGS_EMU_ATOMIC
template <typename T, typename U, typename V>
T atomicCAS(T* p, U compare, V value) {
  const T c = static_cast<T>(compare), v = static_cast<T>(value);
  return ::dgs_emu::read_modify_write(p, [c, v](T old) { return old == c ? v : old; });
}

// ---- integer and float intrinsics --------------------------------------------
inline int __popc(unsigned int x) {
  return __builtin_popcount(x);
}
inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __ffsll(long long x) {
  return __builtin_ffsll(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
  const unsigned long long both = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned int>(both >> (shift & 31u));
}
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
  const unsigned long long both = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned int>((both << (shift & 31u)) >> 32);
}
inline unsigned int __float_as_uint(float x) {
  return ::dgs_emu::from_word<unsigned int>(::dgs_emu::to_word(x));
}
inline float __uint_as_float(unsigned int x) {
  return ::dgs_emu::from_word<float>(::dgs_emu::to_word(x));
}
inline int __float_as_int(float x) {
  return ::dgs_emu::from_word<int>(::dgs_emu::to_word(x));
}
inline float __int_as_float(int x) {
  return ::dgs_emu::from_word<float>(::dgs_emu::to_word(x));
}
// Round-to-nearest arithmetic: the emulated targets build with
// -ffp-contract=off, so these are single IEEE operations, as on the GPU.
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fmaf(a, b, c);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline double __fma_rn(double a, double b, double c) {
  return std::fma(a, b, c);
}
// The device's min and max of two numbers, in their common type.
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(b) < static_cast<T>(a) ? static_cast<T>(b) : static_cast<T>(a);
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(a) < static_cast<T>(b) ? static_cast<T>(b) : static_cast<T>(a);
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
