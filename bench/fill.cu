// Benchmark inputs made on the device: normal random values from a counter-
// based generator (SplitMix64 draws, Box-Muller), so a 1.5e9-element input
// costs milliseconds rather than host-side drawing and a 6 GB upload.
#include <cuda_runtime.h>

#include "fill.cuh"
#include "kernels/numeric.h"

namespace dgs::bench {
namespace {

__global__ void fill_normal_kernel(float* out, std::uint64_t n, std::uint64_t seed) {
  const std::uint64_t stream = detail::mix64(seed + detail::kGolden);
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t bits = detail::draw(stream, i);
    // Two 24-bit uniforms in (0, 1) and (0, 1]; one normal per element.
    const float u1 = (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
    const float u2 = (static_cast<float>((bits >> 16) & 0xFFFFFFu) + 0.5f) * (1.0f / 16777216.0f);
    out[i] = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

}  // namespace

cudaError_t fill_normal(float* out, std::uint64_t n, std::uint64_t seed) {
  fill_normal_kernel<<<1024, 256>>>(out, n, seed);
  const cudaError_t launch = cudaGetLastError();
  return launch != cudaSuccess ? launch : cudaDeviceSynchronize();
}

}  // namespace dgs::bench
