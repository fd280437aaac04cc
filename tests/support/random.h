// Fresh random inputs for tests: never zeros, seeded so a failure reproduces.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "dgs/segments.h"

namespace dgs::test {

/// Normally distributed values, scaled; none is exactly zero.
inline std::vector<float> random_normal(std::mt19937_64& rng, std::size_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    do {
      x = dist(rng);
    } while (x == 0.0f);
  }
  return v;
}

/// Values whose magnitudes span 2^-60 .. 2^60 with random signs.
inline std::vector<float> random_spanning(std::mt19937_64& rng, std::size_t n) {
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-60, 60);
  std::bernoulli_distribution negative(0.5);
  std::vector<float> v(n);
  for (float& x : v) {
    x = std::ldexp(mantissa(rng), exponent(rng));
    if (negative(rng)) x = -x;
  }
  return v;
}

/// Values drawn from a handful of magnitudes: heavy ties, both zeros included.
inline std::vector<float> random_ties(std::mt19937_64& rng, std::size_t n) {
  static constexpr float kChoices[] = {-2.0f, -1.0f, -0.0f, 0.0f, 1.0f, 2.0f, 0.5f, -0.5f};
  std::uniform_int_distribution<int> pick(0, 7);
  std::vector<float> v(n);
  for (float& x : v) x = kChoices[pick(rng)];
  return v;
}

/// count segments of sizes in [1, max_size], with a few of size 1.
inline Segments random_segments(std::mt19937_64& rng, std::size_t count, std::uint64_t max_size) {
  std::uniform_int_distribution<std::uint64_t> size(1, max_size);
  std::vector<std::uint64_t> sizes(count);
  for (std::size_t l = 0; l < count; ++l) sizes[l] = (l % 7 == 3) ? 1 : size(rng);
  return Segments(sizes);
}

}  // namespace dgs::test
