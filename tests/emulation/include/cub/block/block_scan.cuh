// cub::BlockScan for the CPU emulation: the sums dgs uses, over one value
// per thread, with CUB's results (exclusive, inclusive, block aggregate).
#pragma once

#include "dgs_emu/emu.h"

namespace cub {

enum BlockScanAlgorithm { BLOCK_SCAN_RAKING, BLOCK_SCAN_RAKING_MEMOIZE, BLOCK_SCAN_WARP_SCANS };

template <typename T, int BLOCK_DIM_X, BlockScanAlgorithm ALGORITHM = BLOCK_SCAN_RAKING,
          int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1>
class BlockScan {
  static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;

 public:
  struct TempStorage {
    T input[kThreads];
    T exclusive[kThreads];
    T aggregate;
  };

  explicit BlockScan(TempStorage& storage) : storage_(storage) {}

  void ExclusiveSum(T input, T& output) {
    T aggregate;
    scan(input, output, aggregate, false);
  }
  void ExclusiveSum(T input, T& output, T& block_aggregate) {
    scan(input, output, block_aggregate, false);
  }
  void InclusiveSum(T input, T& output) {
    T aggregate;
    scan(input, output, aggregate, true);
  }
  void InclusiveSum(T input, T& output, T& block_aggregate) {
    scan(input, output, block_aggregate, true);
  }

 private:
  // Each thread deposits its value; thread 0 sums in thread order; all read.
  void scan(T input, T& output, T& aggregate, bool inclusive) {
    const unsigned int me = ::dgs_emu::g_thread->linear;
    if (blockDim.x * blockDim.y * blockDim.z != kThreads) ::dgs_emu::fail_block_scan_size(kThreads);
    storage_.input[me] = input;
    __syncthreads();
    if (me == 0) {
      T sum = T();
      for (int t = 0; t < kThreads; ++t) {
        storage_.exclusive[t] = sum;
        sum = static_cast<T>(sum + storage_.input[t]);
      }
      storage_.aggregate = sum;
    }
    __syncthreads();
    output = inclusive ? static_cast<T>(storage_.exclusive[me] + input) : storage_.exclusive[me];
    aggregate = storage_.aggregate;
  }

  TempStorage& storage_;
};

}  // namespace cub
