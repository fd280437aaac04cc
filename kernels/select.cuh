// The device selection engine: exact segmented top-k (and randk, threshold,
// rbgs) into a sorted index list, without sorting the vector.
//
// Segments are sorted into three classes by the plan:
//   whole  k >= n              every index, written directly;
//   small  n <= kSmallSegment  one block per segment: radix select on the
//                              composite key in shared memory, then an
//                              index-ordered emission;
//   large  the rest            multi-pass radix select over the digits of
//                              the composite key (12 bits, six times 8, 4;
//                              device.cuh): pass 0 histograms the data
//                              (fused into the worker's update pass when it
//                              can be), and each pass keeps only the
//                              candidates in the boundary bucket, so later
//                              passes touch only candidates, a few blocks per
//                              segment. Selected indices are appended to the
//                              segment's message slots.
// Pass 0 over the data would read every coordinate a second time. Instead
// the histogram pass also captures, per large segment, the (index, key) pairs
// whose first digit reaches a guess: the digit at which the previous run's
// histogram held twice the target, one lower for drift. It histograms only
// those (a few percent of the coordinates: the shared-memory atomics of the
// rest are skipped). When at least the target reached the guess, the
// boundary digit lies at or above it and those counts resolve it; if the
// capture also fit its room (a quarter of the segment), pass 0 reads only the
// capture, otherwise that segment's pass 0 reads the data as before. When
// fewer reached the guess (the distribution moved down), the segment is
// histogrammed again in full, a second read of its data, and resolved then.
// Either way the selection is the same; the guesses only decide how many
// bytes it reads.
// topk and randk write every slot in increasing index order, so no sort
// follows: whole segments and the small-segment kernel write theirs
// directly, and the large set's filters mark what they select in a bitmap
// of one bit per coordinate, which two launches turn into each member's
// slots in order (the bits per tile of 32768 coordinates and their prefix
// sum, then each tile's indices), clearing it for the next run. threshold
// appends as it finds and leaves unused slots at all-ones; a radix sort of
// its selected indices (k of them, not P) puts them in order and the
// all-ones at the end.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "kernels/device.cuh"
#include "kernels/select_host.h"

namespace dgs::cuda {

/// Segment l's entry of a plan's device table.
inline SegmentInfo segment_info(const Segments& segments, const SelectionPlan& plan,
                                std::size_t l) {
  return {segments.offset(l), segments.size(l), plan.target[l], plan.capacity[l], plan.first[l]};
}

/// Where the coordinates' selection keys come from.
struct KeySource {
  enum class Kind { values, difference, randk };
  Kind kind = Kind::values;
  const float* x = nullptr;  // values: key of x[i]
  const float* w = nullptr;  // difference: key of w[i] - r[i]
  const float* r = nullptr;
  std::uint64_t seed = 0;  // randk
  std::uint64_t step = 0;  // randk, threshold sampling
};

/// What the worker's fused update pass needs to histogram digit 0 of the
/// large segments while it writes the state (device pointers).
struct FusedHistogram {
  const Tile* tiles = nullptr;  // tiles over every segment (owner = segment)
  u32 tile_count = 0;
  const int* member = nullptr;  // per segment: its index in the large set, or -1
  SetState* states = nullptr;   // per large-set member
  Capture capture;              // the large set's candidate capture
  bool active = false;          // false: the update kernel must not histogram
};

class Stager;  // select.cu: copies a plan's tables through the pinned staging

class Selector {
 public:
  /// `segments`: the selection segments. Workspace is sized for plans of at
  /// most `max_capacity` entries with `compressor` (every plan's; an rbgs
  /// selector holds no candidate lists); nothing is allocated per step. The
  /// first candidate list gets at least `room_bytes` (see room()).
  Selector(const Segments& segments, std::uint64_t max_capacity, IndexType index_type,
           Compressor compressor, std::size_t room_bytes = 0);
  ~Selector();
  Selector(const Selector&) = delete;
  Selector& operator=(const Selector&) = delete;

  /// Makes `plan` current for the runs on `stream`. Every table was
  /// allocated with the selector, at its largest, so no plan allocates: a
  /// plan's tables are copied on `stream` from pinned memory, with no wait
  /// for the device (except the first plan's, which is waited for). When it
  /// sorts the segments as the current plan does (the same ones whole, small,
  /// large or estimated, as two ratios of a schedule mostly do) and samples
  /// as it did, only its targets, capacities and message slots are copied;
  /// otherwise every table is rewritten.
  void set_plan(const SelectionPlan& plan, std::uint32_t threshold_sample,
                cudaStream_t stream = nullptr);
  const SelectionPlan& plan() const noexcept { return plan_; }

  /// Zeroes the histograms the fused update pass accumulates into, and the
  /// capture counters that captures() reports.
  void begin(cudaStream_t stream);
  /// The view for the fused update pass; inactive unless the plan is topk
  /// with large segments.
  FusedHistogram fused_histogram() const;
  /// Tiles over every segment (owner = segment), for elementwise passes.
  const Tile* all_tiles() const noexcept { return all_tiles_; }
  std::uint32_t all_tile_count() const noexcept { return all_tile_count_; }
  const SegmentInfo* segment_table() const noexcept { return segments_dev_; }
  /// The device's multiprocessors (for grids as wide as it holds at once).
  int multiprocessors() const noexcept { return multiprocessors_; }

  /// Selects. `histogram_done`: digit 0 of the large segments was histogrammed
  /// by a fused pass after begin(). Asynchronous on `stream`.
  void run(const KeySource& keys, bool histogram_done, cudaStream_t stream);

  /// The first candidate list's memory, of at least the constructor's
  /// `room_bytes`: it holds nothing from one run to the next, so between runs
  /// a caller may use it (work on the runs' stream, or finished before the
  /// next run is enqueued). Null for a selector without lists (rbgs).
  void* room() const noexcept { return lists_[0]; }
  std::size_t room_bytes() const noexcept { return room_bytes_; }

  /// The selected indices in message order, in device memory (uint32 or
  /// uint64 by the index type), plan().total_capacity() slots.
  const void* indices() const noexcept { return sorted_; }
  /// Number of selected entries (device memory).
  const std::uint64_t* count() const noexcept {
    return reinterpret_cast<const std::uint64_t*>(count_);
  }
  /// Threshold statistics (waits for the stream); fixed-count plans need no wait.
  host::SelectionStats stats(cudaStream_t stream);
  /// How many large segments the last run selected from the histogram pass's
  /// capture instead of a second read of the data, how many were histogrammed
  /// again because too few reached their guess, and how many large segments
  /// there are (waits for the stream). For tests and benchmarks.
  host::CaptureUse captures(cudaStream_t stream);

 private:
  struct Set;  // a selection set: members, their tiles and states
  void release() noexcept;  // frees every device allocation
  /// Allocates every table at its largest (any plan fits) and the pinned
  /// staging they are copied from.
  void allocate_tables();
  void allocate_set(std::unique_ptr<Set>& set, std::size_t members, std::size_t tiles,
                    std::size_t& staged);
  /// Waits until the last plan's copies have read the staging (they ran a
  /// step ago at least: usually no wait).
  void wait_for_staging();
  /// set_plan for a plan that sorts the segments otherwise: every table.
  void rebuild(const SelectionPlan& plan, std::vector<unsigned char> classes,
               std::uint32_t threshold_sample, cudaStream_t stream);
  /// Per segment, how `plan` selects it (rbgs or none, whole, estimated,
  /// small, large): set_plan retargets while these stay the same.
  std::vector<unsigned char> classify(const SelectionPlan& plan) const;
  /// set_plan for a plan that sorts the segments as the current one does.
  void retarget(const SelectionPlan& plan, cudaStream_t stream);
  void build_set(Set& set, const std::vector<std::uint32_t>& members,
                 const std::vector<std::uint64_t>& list_sizes, Stager& stager);
  /// The large set's capture (in the second list buffer), none without one.
  Capture large_capture() const;

  Segments segments_;
  IndexType index_type_;
  Compressor compressor_;
  std::uint64_t max_capacity_;
  SelectionPlan plan_;
  std::uint32_t threshold_sample_ = 1024;

  // Device tables of the current plan.
  SegmentInfo* segments_dev_ = nullptr;
  Tile* all_tiles_ = nullptr;
  std::uint32_t all_tile_count_ = 0;
  std::uint32_t* small_ = nullptr;  // small segment ids
  std::uint32_t small_count_ = 0;
  std::size_t small_room_ = 0;
  Tile* whole_tiles_ = nullptr;  // tiles over whole segments
  std::uint32_t whole_tile_count_ = 0;
  std::size_t whole_tile_room_ = 0;
  int* member_ = nullptr;  // per segment: index in the large set or -1

  // The sets' tables (allocated once, for every segment that may join them),
  // and those the current plan uses (null: none).
  std::unique_ptr<Set> large_store_, sample_store_, clamped_store_;
  Set* large_ = nullptr;    // topk/randk: segments with n > kSmallSegment and k < n
  Set* sample_ = nullptr;   // threshold: each segment's sample
  Set* clamped_ = nullptr;  // threshold: every non-whole segment, for the clamp fallback

  // Workspace, sized once.
  u32* lists_[2] = {nullptr, nullptr};  // candidate lists (local indices)
  void* unsorted_ = nullptr;
  void* sorted_ = nullptr;
  u64* count_ = nullptr;
  u64* threshold_counts_ = nullptr;  // per segment: coordinates at or above tau
  u32* threshold_keys_ = nullptr;    // per segment: tau
  u64* stats_dev_ = nullptr;         // clamped segments, count error
  u64* capture_counts_ = nullptr;    // large segments whose pass 0 read the capture, and missed
  // topk/randk: what the large set selects, one bit per coordinate (P / 8 bytes).
  u32* marks_ = nullptr;
  int multiprocessors_ = 1;
  void* sort_temp_ = nullptr;
  std::size_t sort_temp_bytes_ = 0;
  std::uint64_t list_capacity_ = 0;
  std::size_t room_bytes_ = 0;          // the first list's allocation
  std::vector<void*> owned_;            // every table allocation
  bool planned_ = false;                // set_plan has run
  std::vector<unsigned char> classes_;  // classify() of the current plan
  void* staging_ = nullptr;             // pinned: a plan's tables, copied from here
  std::size_t staging_bytes_ = 0;
  cudaEvent_t staged_ = nullptr;  // recorded after a plan's copies
  bool staged_pending_ = false;
};

}  // namespace dgs::cuda
