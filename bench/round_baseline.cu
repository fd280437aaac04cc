#include "round_baseline.cuh"

#include "kernels/cuda_check.h"
#include "kernels/kernels.cuh"

namespace dgs::bench {

void accumulator_round(const void* const* pushes, std::uint32_t count, const MessageLayout& layout,
                       float* accumulator, float* model, cudaStream_t stream) {
  const std::uint64_t p = layout.model_size;
  DGS_CUDA_TRY(cudaMemsetAsync(accumulator, 0, p * sizeof(float), stream));
  for (std::uint32_t k = 0; k < count; ++k) {
    cuda::launch_apply_push(static_cast<const unsigned char*>(pushes[k]), layout, nullptr, 0,
                            accumulator, true, stream);
  }
  cuda::launch_average(accumulator, 1.0f / static_cast<float>(count), model, p, stream);
}

}  // namespace dgs::bench
