// Host reference of the selection compressors (DESIGN.md section 2).
//
// The specification in code that the GPU selection is tested against, bit for
// bit: same keys, same random draws, same tie-break, same output order.
#pragma once

#include <cstdint>
#include <vector>

#include "dgs/plan.h"
#include "dgs/segments.h"

namespace dgs::host {

struct SelectionStats {
  std::uint64_t selected = 0;          ///< entries selected over all segments
  std::uint64_t target = 0;            ///< sum of k_l
  std::uint64_t clamped_segments = 0;  ///< threshold: segments whose estimate overflowed capacity
  std::uint64_t count_error = 0;       ///< threshold: sum over segments of |selected_l - k_l|
};

/// How the cuda selection's last run read the data (kernels/select.cuh): of
/// its `segments` large segments, `used` selected from the candidates their
/// histogram pass captured instead of reading the data a second time, and
/// `missed` had fewer than their target at or above their guess, so their
/// data was histogrammed a second time. The host selects in one pass and
/// reports zeros.
struct CaptureUse {
  std::uint64_t used = 0;      // pass 0 read the capture instead of the data
  std::uint64_t missed = 0;    // fewer than the target reached the guess: histogrammed again
  std::uint64_t segments = 0;  // large segments
};

/// Selects coordinates of x (segments.total() values) as `plan` says and
/// writes their absolute indices to `out` (room for plan.total_capacity()),
/// segment after segment, in message order: increasing within a segment for
/// topk, threshold and randk; block order (start, start + 1, ... wrapping at
/// the segment end) for rbgs. Returns the number written.
///
/// topk: the k_l largest |x| (NaN above inf), ties to the lower index.
/// threshold: |x| >= tau_l with tau_l estimated from a sample of
///   `threshold_sample` coordinates drawn from (seed, step, l); zeros are never
///   selected; a segment that would exceed its capacity falls back to exact
///   topk at its capacity (and counts as clamped).
/// randk: the k_l coordinates with the largest randk_key(seed, step, l, i).
/// rbgs: k_l consecutive coordinates from rbgs_block_start(seed, step, l, n_l).
std::uint64_t select(const float* x, const Segments& segments, const SelectionPlan& plan,
                     std::uint64_t seed, std::uint64_t step, std::uint32_t threshold_sample,
                     std::uint64_t* out, SelectionStats* stats);

/// Exact topk of one segment of n values: the k largest magnitude keys, ties
/// to the lower index, written as base + i in increasing i. Exposed for tests.
std::uint64_t select_topk_segment(const float* x, std::uint64_t n, std::uint64_t k,
                                  std::uint64_t base, std::uint64_t* out);

/// The threshold the threshold compressor estimates for one segment: a key
/// (magnitude_key scale); the segment sends every coordinate whose key is at
/// least this. Exposed for tests.
std::uint32_t estimate_threshold_key(const float* x, std::uint64_t n, std::uint64_t k,
                                     std::uint64_t seed, std::uint64_t step, std::uint64_t segment,
                                     std::uint32_t sample);

}  // namespace dgs::host
