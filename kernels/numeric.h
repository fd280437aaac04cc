// Bit-exact scalar helpers shared by the host reference and the CUDA kernels.
//
// Everything here is integer or exactly-rounded arithmetic, written once and
// compiled for both sides, so a host twin and its kernel agree bit for bit:
// selection keys, the counter-based random generator, and the narrow wire
// value conversions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dgs/config.h"

#if defined(__CUDACC__)
#define DGS_HD __host__ __device__ __forceinline__
#else
#define DGS_HD inline
#endif

namespace dgs::detail {

DGS_HD std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

DGS_HD float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// Selection key of a value: orders exactly like |x| for every non-NaN x,
/// puts NaN above +inf, and makes -0 and +0 equal (a tie, broken by index).
DGS_HD std::uint32_t magnitude_key(float x) {
  return float_bits(x) & 0x7fffffffu;
}

DGS_HD bool is_finite(float x) {
  return (float_bits(x) & 0x7f800000u) != 0x7f800000u;
}

// ---------------------------------------------------------------------------
// Local gradient clipping (Config::clip_norm). The squared norm is summed in
// double (each square is exact) in one fixed order on both sides, so that
// both get the same scale: chunks of kNormChunk values; in a chunk, part t
// of kNormThreads sums values t, t + kNormThreads, ... in turn; the parts
// are added by halves (part t += part t + h for h = kNormThreads / 2, ..., 1);
// the chunk sums are then added the same way, part t summing chunks t,
// t + kNormThreads, ...

inline constexpr unsigned kNormThreads = 256;
inline constexpr std::uint64_t kNormChunk = 4096;

/// Chunks of kNormChunk values that cover p values.
DGS_HD std::uint64_t norm_chunks(std::uint64_t p) {
  return (p + kNormChunk - 1) / kNormChunk;
}

/// What the gradient is multiplied by: clip_norm / ||g|| where that is
/// below 1, else 1 (also for a NaN norm, which the push then carries).
DGS_HD float clip_scale(double squared_norm, float clip_norm) {
  const double norm = sqrt(squared_norm);
  const double c = clip_norm;
  return norm > c ? static_cast<float>(c / norm) : 1.0f;
}

// ---------------------------------------------------------------------------
// Counter-based random numbers (DESIGN.md section 9): every draw is a pure
// function of (seed, step, segment, purpose, i), never of global state.

inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

/// SplitMix64's finaliser: a bijection on 64-bit words with full avalanche.
DGS_HD std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// What a stream of draws is used for; part of its key so uses never collide.
enum class RandomUse : std::uint64_t { randk = 1, rbgs = 2, threshold_sample = 3 };

/// Key of the stream for (seed, step, segment, use).
DGS_HD std::uint64_t stream_key(std::uint64_t seed, std::uint64_t step, std::uint64_t segment,
                                RandomUse use) {
  std::uint64_t h = mix64(seed + static_cast<std::uint64_t>(use) * kGolden);
  h = mix64(h ^ step);
  return mix64(h ^ segment);
}

/// Draw i of a stream: SplitMix64's i-th output from state `stream`.
DGS_HD std::uint64_t draw(std::uint64_t stream, std::uint64_t i) {
  return mix64(stream + (i + 1) * kGolden);
}

/// randk's key of coordinate i (relative to its segment): randk keeps the
/// k_l coordinates with the largest keys, which is a uniform random subset.
DGS_HD std::uint32_t randk_key(std::uint64_t stream, std::uint64_t i) {
  return static_cast<std::uint32_t>(draw(stream, i) >> 32);
}

/// rbgs's block start in a segment of n elements carrying k of them, in
/// [0, n); a segment sent whole (k >= n) starts at 0.
DGS_HD std::uint64_t rbgs_block_start(std::uint64_t seed, std::uint64_t step, std::uint64_t segment,
                                      std::uint64_t n, std::uint64_t k) {
  if (k >= n) return 0;
  return draw(stream_key(seed, step, segment, RandomUse::rbgs), 0) % n;
}

// ---------------------------------------------------------------------------
// Narrow wire values. Round to nearest, ties to even; finite values beyond the
// largest finite narrow value saturate to it (so a finite update never turns
// into an infinity the server must reject); inf and NaN stay inf and NaN.

DGS_HD std::uint16_t float_to_bf16(float x) {
  const std::uint32_t u = float_bits(x);
  const std::uint32_t sign = u & 0x80000000u;
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>((sign >> 16) | 0x7fc0u);   // NaN
  if (a == 0x7f800000u) return static_cast<std::uint16_t>((sign >> 16) | 0x7f80u);  // inf
  if (a >= 0x7f7f8000u) return static_cast<std::uint16_t>((sign >> 16) | 0x7f7fu);  // saturate
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

DGS_HD float bf16_to_float(std::uint16_t h) {
  return bits_float(static_cast<std::uint32_t>(h) << 16);
}

DGS_HD std::uint16_t float_to_f16(float x) {
  const std::uint32_t u = float_bits(x);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (a == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // inf
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7bffu);  // >= 65520: saturate
  if (a >= 0x38800000u) {
    // Normal half: rebias the exponent (127 -> 15) and round 23 -> 10 mantissa bits.
    const std::uint32_t r = a - 0x38000000u;
    return static_cast<std::uint16_t>(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
  }
  // Below 2^-14: a subnormal half, q * 2^-24 with q = round(|x| * 2^24).
  const std::uint32_t e = a >> 23;
  if (e < 102) return static_cast<std::uint16_t>(sign);  // |x| < 2^-25 rounds to zero
  const std::uint32_t m = (a & 0x007fffffu) | 0x00800000u;
  const std::uint32_t shift = 126u - e;  // in [14, 24]
  std::uint32_t q = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

DGS_HD float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t e = (h >> 10) & 0x1fu;
  std::uint32_t m = h & 0x3ffu;
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return bits_float(sign);
    // Subnormal: normalise m * 2^-24.
    std::int32_t exp = 1;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      --exp;
    }
    m &= 0x3ffu;
    return bits_float(sign | (static_cast<std::uint32_t>(exp + 112) << 23) | (m << 13));
  }
  return bits_float(sign | ((e + 112) << 23) | (m << 13));
}

/// x as the receiver will see it after a trip through the wire type.
DGS_HD float round_to_wire(float x, WireValue type) {
  switch (type) {
    case WireValue::bf16:
      return bf16_to_float(float_to_bf16(x));
    case WireValue::f16:
      return f16_to_float(float_to_f16(x));
    case WireValue::f32:
      break;
  }
  return x;
}

}  // namespace dgs::detail
