// Fresh random inputs for tests: never zeros, seeded so a failure reproduces.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
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

/// Bell-shaped values for inputs of billions: (the sum of four uniforms on
/// [0, 1) in steps of 2^-24, minus 2) * scale, so on (-2, 2) * scale, none
/// exactly zero. Each value is a hash of (seed, its index), drawn on every
/// hardware thread: the same values whatever the thread count. Far fewer
/// distinct magnitudes than coordinates at that size, so heavy ties too.
inline std::vector<float> random_bell(std::uint64_t seed, std::size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  auto fill = [&v, seed, scale](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      std::uint64_t y = z * 0xD6E8FEB86659FD93ull;
      y ^= y >> 32;
      const std::int64_t sum = static_cast<std::int64_t>((z & 0xFFFFFF) + ((z >> 24) & 0xFFFFFF) +
                                                         (y & 0xFFFFFF) + ((y >> 24) & 0xFFFFFF));
      const std::int64_t centred = sum - (std::int64_t{2} << 24);
      v[i] = centred == 0 ? scale * 0x1p-25f
                          : static_cast<float>(static_cast<double>(centred) * 0x1p-24 * scale);
    }
  };
  const std::size_t threads =
      n < (std::size_t{1} << 22) ? 1 : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < threads; ++t)
    pool.emplace_back(fill, n * t / threads, n * (t + 1) / threads);
  fill(0, n / threads);
  for (auto& th : pool) th.join();
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
