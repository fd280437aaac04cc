// Backends: where the kernels run and where buffers live.
#pragma once

#include <memory>

// cudaStream_t without the CUDA headers (the same typedef as the runtime's).
struct CUstream_st;

namespace dgs {

/// A CUDA stream (cudaStream_t); nullptr is the default stream. The host
/// backend ignores it.
using Stream = CUstream_st*;

enum class BackendKind {
  host,  ///< plain C++ reference of every kernel; buffers in host memory
  cuda,  ///< the CUDA kernels; buffers in device memory
};

/// Where the buffers a Worker, Server or Transport works on live.
enum class MemoryKind { host, device };

const char* to_string(BackendKind kind) noexcept;

/// Opaque handle: the runtime calls its kernels through it.
class Backend;

/// Creates a backend. `device` selects the GPU for BackendKind::cuda. Throws
/// dgs::Error when the kind is not available (no GPU, or built without it).
std::shared_ptr<Backend> make_backend(BackendKind kind, int device = 0);

/// The kind and memory of a backend.
BackendKind kind_of(const Backend& backend) noexcept;
MemoryKind memory_of(const Backend& backend) noexcept;

/// True when a CUDA device is present and this build holds kernels for its
/// architecture (the current device, 0 unless cudaSetDevice chose another; a
/// GPU the build has no image for counts as none). Creates the current
/// device's CUDA context, as any CUDA work would.
bool cuda_available() noexcept;

}  // namespace dgs
