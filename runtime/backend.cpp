#include <cuda_runtime_api.h>

#include "dgs/error.h"
#include "runtime/backend.h"

namespace dgs {

const char* to_string(BackendKind kind) noexcept {
  return kind == BackendKind::cuda ? "cuda" : "host";
}

std::shared_ptr<Backend> make_backend(BackendKind kind, int device) {
  if (kind == BackendKind::host) return detail::make_host_backend();
  return detail::make_cuda_backend(device);
}

BackendKind kind_of(const Backend& backend) noexcept {
  return backend.kind();
}
MemoryKind memory_of(const Backend& backend) noexcept {
  return backend.memory();
}

bool cuda_available() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  // A GPU this build has no kernels for (built for sm_90, run on an A100)
  // cannot run the cuda backend: GPU tests skip there, and a program falls
  // back to the host backend as it would without a GPU. The current device
  // is asked (a process of a multi-GPU job selects its own first).
  return count > 0 && detail::cuda_kernels_run();
}

}  // namespace dgs
