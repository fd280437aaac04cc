#include "kernels/cuda_check.h"

#include <cstdio>
#include <cstdlib>
#include <string>

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

namespace {
std::string gib(std::size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1u << 30));
  return text;
}
}  // namespace

void device_malloc(void** pointer, std::size_t bytes, const std::string& what) {
  const cudaError_t status = cudaMalloc(pointer, bytes == 0 ? 1 : bytes);
  if (status == cudaSuccess) return;
  *pointer = nullptr;
  cudaGetLastError();  // an allocation's failure is not sticky: clear it
  std::string memory;
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
    memory = "; the device has " + gib(free) + " free of " + gib(total);
  }
  throw Error(ErrorCode::cuda, "dgs cuda: cudaMalloc of " + std::to_string(bytes) + " bytes (" +
                                   gib(bytes) + ") for " + what +
                                   " failed: " + cudaGetErrorName(status) + " (" +
                                   cudaGetErrorString(status) + ")" + memory);
}

int multiprocessor_count() {
  int device = 0;
  int count = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice", __FILE__, __LINE__);
  cuda_check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
             "cudaDeviceGetAttribute", __FILE__, __LINE__);
  return count;
}

unsigned resident_grid_cap() {
  static const unsigned cap = [] {
    const char* text = std::getenv("DGS_RESIDENT_GRID_CAP");
    if (text == nullptr || *text == '\0') return 0u;
    char* end = nullptr;
    const unsigned long value = std::strtoul(text, &end, 10);
    if (*end != '\0' || value == 0 || value > 65535 || text[0] == '-') {
      throw Error(ErrorCode::invalid_argument, std::string("DGS_RESIDENT_GRID_CAP=") + text +
                                                   ": expected a block count from 1 to 65535");
    }
    return static_cast<unsigned>(value);
  }();
  return cap;
}

}  // namespace dgs::detail
