// dgs::SelectionPlan: how many entries each segment contributes to a message
// at a given keep ratio, and where they sit in it.
#pragma once

#include <cstdint>
#include <vector>

#include "dgs/config.h"
#include "dgs/segments.h"

namespace dgs {

/// The keep ratio as it travels in a message header: rho = (code + 1) / 2^32.
/// encode_ratio picks the smallest such rho that is >= the requested one, so
/// k_l = max(1, floor(rho * n_l)) is computed in exact integer arithmetic and
/// agrees on every rank (a ratio of 1 encodes as 0xFFFFFFFF).
std::uint32_t encode_ratio(double ratio);
double decode_ratio(std::uint32_t code) noexcept;

/// k = max(1, floor(n * rho)) for rho = decode_ratio(code), exactly.
std::uint64_t entries_for(std::uint64_t n, std::uint32_t ratio_code) noexcept;

struct SelectionPlan {
  Compressor compressor = Compressor::topk;
  std::uint32_t ratio_code = 0;
  /// Per segment: k_l, the entries it should carry (n_l for segments below
  /// Config::dense_below).
  std::vector<std::uint64_t> target;
  /// Per segment: the most entries it may carry. Equal to target except for
  /// the threshold compressor, where it is min(n_l, ceil(threshold_capacity * k_l)).
  std::vector<std::uint64_t> capacity;
  /// count() + 1 prefix sums of capacity. For the fixed-count compressors
  /// (topk, randk, rbgs) segment l's entries occupy message slots
  /// [first[l], first[l + 1]); threshold messages are compacted instead.
  std::vector<std::uint64_t> first;

  std::uint64_t total_capacity() const noexcept { return first.empty() ? 0 : first.back(); }
  std::uint64_t total_target() const noexcept;
  /// True when every message of this plan holds exactly total_capacity() entries.
  bool fixed_count() const noexcept { return compressor != Compressor::threshold; }
};

/// The segments selection works on: the model's own, or one segment covering
/// the whole model when Config::global_selection is set.
Segments selection_segments(const Segments& model, const Config& config);

/// Plan for `segments` (already the selection segments) at `ratio_code`.
SelectionPlan make_plan(const Segments& segments, Compressor compressor, std::uint32_t ratio_code,
                        std::uint64_t dense_below, double threshold_capacity);

/// The plan of a worker push at the given ratio code (config's compressor,
/// dense_below and threshold capacity).
SelectionPlan push_plan(const Segments& segments, const Config& config, std::uint32_t ratio_code);
/// The plan of a sparse server reply: exact topk at the reply ratio.
SelectionPlan reply_plan(const Segments& segments, const Config& config);

}  // namespace dgs
