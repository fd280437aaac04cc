// Every CUDA call goes through DGS_CUDA_TRY; every launch is followed by
// DGS_CUDA_LAUNCHED, which names the kernel and its sizes in the error.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace dgs::detail {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line,
                                   const std::string& context);

inline void cuda_check(cudaError_t status, const char* call, const char* file, int line,
                       const std::string& context = {}) {
  if (status != cudaSuccess) throw_cuda_error(status, call, file, line, context);
}

/// cudaMalloc of `bytes` (1 when 0) into *pointer, for `what` (the buffer
/// it is, with its size per parameter where it has one). On failure
/// *pointer is null and the dgs::Error names `what`, the bytes asked for and
/// the device's free and total memory.
void device_malloc(void** pointer, std::size_t bytes, const std::string& what);
template <typename T>
void device_malloc(T** pointer, std::size_t bytes, const std::string& what) {
  void* p = nullptr;
  device_malloc(&p, bytes, what);
  *pointer = static_cast<T*>(p);
}

/// The current device's multiprocessors (the resident grids' width).
int multiprocessor_count();

/// DGS_RESIDENT_GRID_CAP, read once: at most that many blocks in a grid
/// sized to what the device holds at once (resident_grid), so that a
/// sanitizer run on a small test still sees each block take many tiles; 0
/// (unset) for no cap. Throws dgs::Error when it is set to anything but a
/// positive integer.
unsigned resident_grid_cap();

}  // namespace dgs::detail

#define DGS_CUDA_TRY(call) ::dgs::detail::cuda_check((call), #call, __FILE__, __LINE__)
#define DGS_CUDA_LAUNCHED(kernel, context) \
  ::dgs::detail::cuda_check(cudaGetLastError(), kernel, __FILE__, __LINE__, (context))
