#include "kernels/cuda_check.h"

#include "dgs/error.h"

namespace dgs::detail {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line,
                      const std::string& context) {
  std::string message = std::string(call) + " failed: " + cudaGetErrorName(status) + " (" +
                        cudaGetErrorString(status) + ")";
  if (!context.empty()) message += " [" + context + "]";
  message += " at " + std::string(file) + ":" + std::to_string(line);
  throw Error(ErrorCode::cuda, message);
}

int multiprocessor_count() {
  int device = 0;
  int count = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice", __FILE__, __LINE__);
  cuda_check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute", __FILE__, __LINE__);
  return count;
}

}  // namespace dgs::detail
