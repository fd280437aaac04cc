// dgs::Segments: how the flat parameter vector is split into tensors.
// Selection is per segment, so each tensor gets its own share of a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dgs {

class Segments {
 public:
  /// No segments (total() == 0).
  Segments() = default;
  /// Consecutive segments of the given sizes (tensor numels, in model order).
  /// Throws dgs::Error (invalid_argument) when empty or a size is 0.
  explicit Segments(std::vector<std::uint64_t> sizes);
  /// One segment covering `total` elements: the global (unsegmented) mode.
  static Segments single(std::uint64_t total);

  std::size_t count() const noexcept { return sizes_.size(); }
  std::uint64_t total() const noexcept { return offsets_.empty() ? 0 : offsets_.back(); }
  std::uint64_t size(std::size_t l) const { return sizes_.at(l); }
  /// Element offset o_l of segment l in the flat vector.
  std::uint64_t offset(std::size_t l) const { return offsets_.at(l); }

  const std::vector<std::uint64_t>& sizes() const noexcept { return sizes_; }
  /// count() + 1 offsets; offsets()[count()] == total().
  const std::vector<std::uint64_t>& offsets() const noexcept { return offsets_; }

  /// Segment holding element `index` (< total()), by binary search.
  std::size_t segment_of(std::uint64_t index) const;

  bool operator==(const Segments& other) const noexcept { return sizes_ == other.sizes_; }
  bool operator!=(const Segments& other) const noexcept { return !(*this == other); }

 private:
  std::vector<std::uint64_t> sizes_;
  std::vector<std::uint64_t> offsets_;
};

}  // namespace dgs
