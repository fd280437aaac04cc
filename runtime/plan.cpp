#include "dgs/plan.h"

#include <cmath>
#include <string>

#include "dgs/error.h"

namespace dgs {

std::uint32_t encode_ratio(double ratio) {
  if (!(ratio > 0.0 && ratio <= 1.0)) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::encode_ratio: ratio " + std::to_string(ratio) + " is outside (0, 1]");
  }
  // Smallest (code + 1) / 2^32 >= ratio. ratio * 2^32 is exact in double.
  const double scaled = std::ceil(std::ldexp(ratio, 32));
  if (scaled <= 1.0) return 0;
  if (scaled >= 4294967296.0) return 0xFFFFFFFFu;
  return static_cast<std::uint32_t>(scaled) - 1u;
}

double decode_ratio(std::uint32_t code) noexcept {
  return std::ldexp(static_cast<double>(code) + 1.0, -32);
}

std::uint64_t entries_for(std::uint64_t n, std::uint32_t ratio_code) noexcept {
  // floor(n * c / 2^32) with c = code + 1 <= 2^32, split so nothing overflows:
  // n = hi * 2^32 + lo gives hi * c + floor(lo * c / 2^32).
  const std::uint64_t c = static_cast<std::uint64_t>(ratio_code) + 1u;
  const std::uint64_t hi = n >> 32;
  const std::uint64_t lo = n & 0xFFFFFFFFu;
  const std::uint64_t k = hi * c + ((lo * c) >> 32);
  return k == 0 ? 1 : k;
}

std::uint64_t SelectionPlan::total_target() const noexcept {
  std::uint64_t sum = 0;
  for (std::uint64_t k : target) sum += k;
  return sum;
}

Segments selection_segments(const Segments& model, const Config& config) {
  return config.global_selection ? Segments::single(model.total()) : model;
}

SelectionPlan make_plan(const Segments& segments, Compressor compressor, std::uint32_t ratio_code,
                        std::uint64_t dense_below, double threshold_capacity) {
  SelectionPlan plan;
  plan.compressor = compressor;
  plan.ratio_code = ratio_code;
  const std::size_t count = segments.count();
  plan.target.resize(count);
  plan.capacity.resize(count);
  plan.first.resize(count + 1);
  plan.first[0] = 0;
  for (std::size_t l = 0; l < count; ++l) {
    const std::uint64_t n = segments.size(l);
    const bool whole = n < dense_below;
    const std::uint64_t k = whole ? n : entries_for(n, ratio_code);
    std::uint64_t cap = k;
    if (compressor == Compressor::threshold && !whole) {
      const double room = std::ceil(threshold_capacity * static_cast<double>(k));
      cap = room >= static_cast<double>(n) ? n : static_cast<std::uint64_t>(room);
    }
    plan.target[l] = k;
    plan.capacity[l] = cap;
    plan.first[l + 1] = plan.first[l] + cap;
  }
  return plan;
}

SelectionPlan push_plan(const Segments& segments, const Config& config, std::uint32_t ratio_code) {
  return make_plan(segments, config.compressor, ratio_code, config.dense_below,
                   config.threshold_capacity);
}

SelectionPlan reply_plan(const Segments& segments, const Config& config) {
  return make_plan(segments, Compressor::topk, encode_ratio(config.reply_ratio()),
                   config.dense_below, 1.0);
}

}  // namespace dgs
