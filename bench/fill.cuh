// Benchmark inputs made on the device (bench/fill.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dgs::bench {

/// out[0, n) = standard normal values drawn from (seed, i); synchronous.
cudaError_t fill_normal(float* out, std::uint64_t n, std::uint64_t seed);

}  // namespace dgs::bench
