#include "kernels/select_host.h"

#include <algorithm>
#include <string>

#include "dgs/error.h"
#include "kernels/numeric.h"

namespace dgs::host {
namespace {

using detail::magnitude_key;

// The k-th largest of n keys (1 <= k <= n) and how many keys equal to it
// belong to the top k. MSB-first radix selection over 8-bit digits: four
// counting passes, each restricted to the keys that match the digits fixed
// so far. The GPU selects the same set another way: a radix selection over a
// composite key (key, then complemented index) in wider digits (select.cuh).
struct Cut {
  std::uint32_t key;
  std::uint64_t ties;  // keys equal to `key` that are taken, lowest index first
};

template <typename KeyOf>
Cut kth_largest(const KeyOf& key_of, std::uint64_t n, std::uint64_t k) {
  std::uint32_t prefix = 0;
  std::uint32_t mask = 0;
  std::uint64_t rank = k;  // rank of the wanted key among the keys matching prefix
  for (int shift = 24; shift >= 0; shift -= 8) {
    std::uint64_t histogram[256] = {};
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint32_t key = key_of(i);
      if ((key & mask) == prefix) ++histogram[(key >> shift) & 0xffu];
    }
    unsigned digit = 255;
    for (; digit > 0 && rank > histogram[digit]; --digit) rank -= histogram[digit];
    prefix |= digit << shift;
    mask |= 0xffu << shift;
  }
  return {prefix, rank};
}

// Writes base + i for the k largest keys, in increasing i; ties to lower i.
template <typename KeyOf>
std::uint64_t emit_top(const KeyOf& key_of, std::uint64_t n, std::uint64_t k, std::uint64_t base,
                       std::uint64_t* out) {
  if (k >= n) {
    for (std::uint64_t i = 0; i < n; ++i) out[i] = base + i;
    return n;
  }
  const Cut cut = kth_largest(key_of, n, k);
  std::uint64_t ties = cut.ties;
  std::uint64_t written = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint32_t key = key_of(i);
    if (key > cut.key) {
      out[written++] = base + i;
    } else if (key == cut.key && ties > 0) {
      --ties;
      out[written++] = base + i;
    }
  }
  return written;
}

}  // namespace

std::uint64_t select_topk_segment(const float* x, std::uint64_t n, std::uint64_t k,
                                  std::uint64_t base, std::uint64_t* out) {
  return emit_top([x](std::uint64_t i) { return magnitude_key(x[i]); }, n, k, base, out);
}

std::uint32_t estimate_threshold_key(const float* x, std::uint64_t n, std::uint64_t k,
                                     std::uint64_t seed, std::uint64_t step, std::uint64_t segment,
                                     std::uint32_t sample) {
  std::vector<std::uint32_t> keys;
  if (n <= sample) {
    keys.resize(n);
    for (std::uint64_t i = 0; i < n; ++i) keys[i] = magnitude_key(x[i]);
  } else {
    const std::uint64_t stream =
        detail::stream_key(seed, step, segment, detail::RandomUse::threshold_sample);
    keys.resize(sample);
    for (std::uint64_t j = 0; j < sample; ++j)
      keys[j] = magnitude_key(x[detail::draw(stream, j) % n]);
  }
  const std::uint64_t s = keys.size();
  // The sample's share of the k largest: rank ceil(k * s / n), at least 1.
  std::uint64_t rank = (k * s + n - 1) / n;
  rank = std::clamp<std::uint64_t>(rank, 1, s);
  std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank - 1), keys.end(),
                   [](std::uint32_t a, std::uint32_t b) { return a > b; });
  // Sending an exact zero carries nothing: the threshold is at least the
  // smallest positive magnitude.
  return std::max<std::uint32_t>(keys[rank - 1], 1u);
}

std::uint64_t select(const float* x, const Segments& segments, const SelectionPlan& plan,
                     std::uint64_t seed, std::uint64_t step, std::uint32_t threshold_sample,
                     std::uint64_t* out, SelectionStats* stats) {
  if (plan.target.size() != segments.count()) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::host::select: plan has " + std::to_string(plan.target.size()) +
                    " segments, the model " + std::to_string(segments.count()));
  }
  SelectionStats local;
  std::uint64_t written = 0;
  for (std::size_t l = 0; l < segments.count(); ++l) {
    const std::uint64_t n = segments.size(l);
    const std::uint64_t base = segments.offset(l);
    const std::uint64_t k = plan.target[l];
    const float* xs = x + base;
    std::uint64_t* dst = out + written;
    std::uint64_t taken = 0;
    if (k >= n) {
      for (std::uint64_t i = 0; i < n; ++i) dst[i] = base + i;
      taken = n;
    } else {
      switch (plan.compressor) {
        case Compressor::topk:
          taken = select_topk_segment(xs, n, k, base, dst);
          break;
        case Compressor::randk: {
          const std::uint64_t stream = detail::stream_key(seed, step, l, detail::RandomUse::randk);
          taken = emit_top([stream](std::uint64_t i) { return detail::randk_key(stream, i); }, n, k,
                           base, dst);
          break;
        }
        case Compressor::rbgs: {
          const std::uint64_t start = detail::rbgs_block_start(seed, step, l, n, k);
          for (std::uint64_t j = 0; j < k; ++j) {
            const std::uint64_t i = start + j;
            dst[j] = base + (i < n ? i : i - n);
          }
          taken = k;
          break;
        }
        case Compressor::threshold: {
          const std::uint32_t tau =
              estimate_threshold_key(xs, n, k, seed, step, l, threshold_sample);
          std::uint64_t above = 0;
          for (std::uint64_t i = 0; i < n; ++i) above += magnitude_key(xs[i]) >= tau ? 1 : 0;
          const std::uint64_t cap = plan.capacity[l];
          if (above > cap) {
            ++local.clamped_segments;
            taken = select_topk_segment(xs, n, cap, base, dst);
          } else {
            for (std::uint64_t i = 0; i < n; ++i) {
              if (magnitude_key(xs[i]) >= tau) dst[taken++] = base + i;
            }
          }
          local.count_error += taken > k ? taken - k : k - taken;
          break;
        }
      }
    }
    written += taken;
    local.target += k;
  }
  local.selected = written;
  if (stats != nullptr) *stats = local;
  return written;
}

}  // namespace dgs::host
