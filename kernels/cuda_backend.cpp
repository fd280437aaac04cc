// Placeholder until the CUDA kernels land: the cuda backend is not built yet.
#include "dgs/error.h"
#include "runtime/backend.h"

namespace dgs::detail {

std::shared_ptr<Backend> make_cuda_backend(int) {
  throw Error(ErrorCode::invalid_argument,
              "dgs: this build has no cuda backend yet; use BackendKind::host");
}

}  // namespace dgs::detail
