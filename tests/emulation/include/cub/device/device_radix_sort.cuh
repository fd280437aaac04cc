// cub::DeviceRadixSort::SortKeys for the CPU emulation: a stable sort of
// unsigned keys on their bits [begin_bit, end_bit), stream-ordered.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "cuda_runtime_api.h"

namespace cub {

struct DeviceRadixSort {
  template <typename Key, typename NumItems>
  static cudaError_t SortKeys(void* temp, std::size_t& temp_bytes, const Key* in, Key* out,
                              NumItems items, int begin_bit = 0,
                              int end_bit = static_cast<int>(sizeof(Key) * 8),
                              cudaStream_t stream = nullptr) {
    static_assert(std::is_unsigned_v<Key>, "the emulation sorts unsigned keys only");
    if (temp == nullptr) {
      temp_bytes = 16;
      return cudaSuccess;
    }
    if (temp_bytes < 16 || begin_bit < 0 || end_bit > static_cast<int>(sizeof(Key) * 8) ||
        begin_bit >= end_bit)
      return cudaErrorInvalidValue;
    return ::dgs_emu::enqueue(stream, [in, out, items, begin_bit, end_bit]() {
      const int width = end_bit - begin_bit;
      const Key field = width >= static_cast<int>(sizeof(Key) * 8)
                            ? static_cast<Key>(~Key(0))
                            : static_cast<Key>((Key(1) << width) - 1);
      std::copy(in, in + items, out);
      std::stable_sort(out, out + items, [&](Key a, Key b) {
        return ((a >> begin_bit) & field) < ((b >> begin_bit) & field);
      });
    });
  }
};

}  // namespace cub
