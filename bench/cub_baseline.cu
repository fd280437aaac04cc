#include <cub/device/device_segmented_radix_sort.cuh>

#include <stdexcept>
#include <string>

#include "cub_baseline.cuh"

namespace dgs::bench {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

__global__ void update_kernel(const float* g, float* u, const std::uint32_t* mask, float lr,
                              float m, std::uint64_t n, std::uint32_t* keys, std::uint32_t* ids) {
  for (std::uint64_t i = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    const bool sent = (mask[i >> 5] >> (i & 31)) & 1u;
    const float x = __fmaf_rn(sent ? m : 1.0f, u[i], __fmul_rn(lr, g[i]));
    u[i] = x;
    keys[i] = __float_as_uint(x) & 0x7fffffffu;
    ids[i] = static_cast<std::uint32_t>(i);
  }
}

__global__ void take_kernel(const std::uint32_t* ids, const std::uint64_t* offsets,
                            const std::uint64_t* out_offsets, const std::uint64_t* k, int segments,
                            const float* u, std::uint32_t* mask, std::uint32_t* indices,
                            float* values) {
  for (int l = blockIdx.x; l < segments; l += gridDim.x) {
    for (std::uint64_t t = threadIdx.x; t < k[l]; t += blockDim.x) {
      const std::uint32_t i = ids[offsets[l] + t];
      indices[out_offsets[l] + t] = i;
      values[out_offsets[l] + t] = u[i];
      atomicOr(&mask[i >> 5], 1u << (i & 31));
    }
  }
}

}  // namespace

CubTopk::CubTopk(const std::vector<std::uint64_t>& sizes, const std::vector<std::uint64_t>& k) {
  segments_ = static_cast<int>(sizes.size());
  std::vector<std::uint64_t> offsets(sizes.size() + 1, 0), out(sizes.size() + 1, 0);
  for (std::size_t l = 0; l < sizes.size(); ++l) {
    offsets[l + 1] = offsets[l] + sizes[l];
    out[l + 1] = out[l] + k[l];
  }
  total_ = offsets.back();
  selected_ = out.back();
  if (total_ >= (std::uint64_t{1} << 31))
    throw std::runtime_error("CUB baseline: at most 2^31 elements");
  check(cudaMalloc(&offsets_, offsets.size() * 8), "cudaMalloc");
  check(cudaMalloc(&out_offsets_, out.size() * 8), "cudaMalloc");
  check(cudaMalloc(&k_, k.size() * 8), "cudaMalloc");
  check(cudaMemcpy(offsets_, offsets.data(), offsets.size() * 8, cudaMemcpyHostToDevice),
        "cudaMemcpy");
  check(cudaMemcpy(out_offsets_, out.data(), out.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(k_, k.data(), k.size() * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
  for (std::uint32_t** p : {&keys_in_, &keys_out_, &ids_in_, &ids_out_})
    check(cudaMalloc(p, total_ * 4), "cudaMalloc");
  cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, temp_bytes_, keys_in_, keys_out_,
                                                     ids_in_, ids_out_, static_cast<int>(total_),
                                                     segments_, offsets_, offsets_ + 1);
  check(cudaMalloc(&temp_, temp_bytes_ + 1), "cudaMalloc");
}

CubTopk::~CubTopk() {
  for (void* p :
       {static_cast<void*>(offsets_), static_cast<void*>(out_offsets_), static_cast<void*>(k_),
        static_cast<void*>(keys_in_), static_cast<void*>(keys_out_), static_cast<void*>(ids_in_),
        static_cast<void*>(ids_out_), temp_}) {
    cudaFree(p);
  }
}

void CubTopk::step(const float* grad, float* u, std::uint32_t* mask, float lr, float m,
                   std::uint32_t* indices, float* values, cudaStream_t stream) {
  update_kernel<<<4096, 256, 0, stream>>>(grad, u, mask, lr, m, total_, keys_in_, ids_in_);
  check(cudaGetLastError(), "update_kernel");
  check(cudaMemsetAsync(mask, 0, (total_ + 31) / 32 * 4, stream), "cudaMemsetAsync");
  std::size_t temp = temp_bytes_;
  check(cub::DeviceSegmentedRadixSort::SortPairsDescending(
            temp_, temp, keys_in_, keys_out_, ids_in_, ids_out_, static_cast<int>(total_),
            segments_, offsets_, offsets_ + 1, 0, 31, stream),
        "SortPairsDescending");
  take_kernel<<<std::min(segments_, 65535), 256, 0, stream>>>(ids_out_, offsets_, out_offsets_, k_,
                                                              segments_, u, mask, indices, values);
  check(cudaGetLastError(), "take_kernel");
}

}  // namespace dgs::bench
