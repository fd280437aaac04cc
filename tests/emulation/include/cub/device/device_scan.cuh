// cub::DeviceScan::ExclusiveSum for the CPU emulation: stream-ordered host work.
#pragma once

#include <cstddef>
#include <iterator>

#include "cuda_runtime_api.h"

namespace cub {

struct DeviceScan {
  template <typename In, typename Out, typename NumItems>
  static cudaError_t ExclusiveSum(void* temp, std::size_t& temp_bytes, In in, Out out,
                                  NumItems items, cudaStream_t stream = nullptr) {
    if (temp == nullptr) {
      temp_bytes = 16;
      return cudaSuccess;
    }
    if (temp_bytes < 16) return cudaErrorInvalidValue;
    return ::dgs_emu::enqueue(stream, [in, out, items]() {
      using T = typename std::iterator_traits<Out>::value_type;
      T sum = T();
      for (NumItems i = 0; i < items; ++i) {
        const T value = static_cast<T>(in[i]);
        out[i] = sum;
        sum = static_cast<T>(sum + value);
      }
    });
  }
};

}  // namespace cub
