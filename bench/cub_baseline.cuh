// The CUB-only baseline of the benchmarks: the same samomentum update, then
// selection by a segmented radix sort of |x| with indices, taking the first
// k of each segment. What one writes without a selection engine.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace dgs::bench {

class CubTopk {
 public:
  /// Segments of the given sizes, k[l] entries taken from each.
  CubTopk(const std::vector<std::uint64_t>& sizes, const std::vector<std::uint64_t>& k);
  ~CubTopk();
  CubTopk(const CubTopk&) = delete;
  CubTopk& operator=(const CubTopk&) = delete;

  /// u = fmaf(c, u, lr * g) (c = m on the previous selection), sort every
  /// segment by |u| descending with indices, write the first k indices and
  /// values of each segment to `indices`/`values` and mark them in `mask`.
  void step(const float* grad, float* u, std::uint32_t* mask, float lr, float m,
            std::uint32_t* indices, float* values, cudaStream_t stream);

  std::uint64_t total() const { return total_; }
  std::uint64_t selected() const { return selected_; }

 private:
  std::uint64_t total_ = 0, selected_ = 0;
  int segments_ = 0;
  std::uint64_t* offsets_ = nullptr;  // device, segments + 1
  std::uint64_t* out_offsets_ = nullptr;
  std::uint64_t* k_ = nullptr;
  std::uint32_t *keys_in_ = nullptr, *keys_out_ = nullptr, *ids_in_ = nullptr, *ids_out_ = nullptr;
  void* temp_ = nullptr;
  std::size_t temp_bytes_ = 0;
};

}  // namespace dgs::bench
