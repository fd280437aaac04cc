// Walking the entries of a message on the host: one place that knows how the
// three payload layouts map value slots to model coordinates.
#pragma once

#include <cstdint>

#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"

namespace dgs::host {

/// Calls fn(coordinate, value) for each of the message's `count` entries,
/// values as the receiver reads them (widened from the wire type). The blocks
/// layout needs the selection segments and the plan at the message's ratio;
/// the others ignore them.
template <typename Fn>
void for_each_entry(const void* message, const MessageLayout& layout, const Segments* segments,
                    const SelectionPlan* plan, Fn&& fn) {
  const std::uint64_t count = read_header(message).count;
  switch (layout.payload) {
    case PayloadLayout::dense:
      for (std::uint64_t j = 0; j < count; ++j) fn(j, read_value(message, layout, j));
      break;
    case PayloadLayout::sparse:
      for (std::uint64_t j = 0; j < count; ++j) {
        fn(read_index(message, layout, j), read_value(message, layout, j));
      }
      break;
    case PayloadLayout::blocks:
      for (std::size_t l = 0; l < segments->count(); ++l) {
        const std::uint64_t n = segments->size(l);
        const std::uint64_t start = read_index(message, layout, l);
        for (std::uint64_t t = 0; t < plan->target[l]; ++t) {
          const std::uint64_t i = start + t < n ? start + t : start + t - n;
          fn(segments->offset(l) + i, read_value(message, layout, plan->first[l] + t));
        }
      }
      break;
  }
}

}  // namespace dgs::host
