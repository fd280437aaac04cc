#include "dgs/segments.h"

#include <algorithm>
#include <string>

#include "dgs/error.h"

namespace dgs {

Segments::Segments(std::vector<std::uint64_t> sizes) : sizes_(std::move(sizes)) {
  if (sizes_.empty()) {
    throw Error(ErrorCode::invalid_argument, "dgs::Segments: the segment list is empty");
  }
  offsets_.resize(sizes_.size() + 1);
  offsets_[0] = 0;
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    if (sizes_[l] == 0) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs::Segments: segment " + std::to_string(l) + " has size 0");
    }
    if (offsets_[l] + sizes_[l] < offsets_[l]) {
      throw Error(ErrorCode::invalid_argument, "dgs::Segments: total size overflows 64 bits");
    }
    offsets_[l + 1] = offsets_[l] + sizes_[l];
  }
}

Segments Segments::single(std::uint64_t total) {
  return Segments({total});
}

std::size_t Segments::segment_of(std::uint64_t index) const {
  if (index >= total()) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::Segments::segment_of: index " + std::to_string(index) +
                    " is not below the total size " + std::to_string(total()));
  }
  // First offset greater than index, minus one.
  const auto it = std::upper_bound(offsets_.begin(), offsets_.end(), index);
  return static_cast<std::size_t>(it - offsets_.begin()) - 1;
}

}  // namespace dgs
