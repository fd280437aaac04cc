// Device-side building blocks shared by the kernels: launch shapes, tiles,
// the per-segment selection state, and helpers to read and write messages.
#pragma once

#include <cstdint>

#include <algorithm>

#include "dgs/config.h"
#include "dgs/message.h"
#include "kernels/cuda_check.h"
#include "kernels/numeric.h"

namespace dgs::cuda {

constexpr int kThreads = 256;                  // threads of every tiled kernel
constexpr int kItems = 16;                     // elements per thread and tile
constexpr int kTile = kThreads * kItems;       // 4096 elements per tile
constexpr std::uint64_t kSmallSegment = 4096;  // selected by one block in shared memory

using u32 = unsigned int;
using u64 = unsigned long long;

/// A contiguous piece of work: `length` (<= kTile) elements from `begin`, all
/// in one segment (or one member of a selection set). `owner` is the segment
/// id or the set member, whichever the kernel iterates over.
struct Tile {
  u64 begin;
  u32 length;
  u32 owner;
};

/// One model segment, as the kernels see it.
struct SegmentInfo {
  u64 offset;    // o_l
  u64 size;      // n_l
  u64 target;    // k_l
  u64 capacity;  // room in the message (threshold: >= target)
  u64 first;     // first message slot of the segment
};

/// Digits of the composite keys, most significant first. The first digit is
/// 12 bits wide (the always-zero sign bit of a magnitude key, its 8 exponent
/// bits and 3 mantissa bits), so the bucket that holds the k-th largest value
/// covers an eighth of an octave and few coordinates become candidates; then
/// six 8-bit digits and a last 4-bit one: 12 + 6 * 8 + 4 = 64 bits, 8 passes.
constexpr int kPasses = 8;
constexpr int kFirstDigitBits = 12;
constexpr int kFirstDigitBins = 1 << kFirstDigitBits;

__host__ __device__ constexpr int digit_bits(int pass) {
  return pass == 0 ? kFirstDigitBits : (pass == kPasses - 1 ? 4 : 8);
}
__host__ __device__ constexpr int digit_shift(int pass) {
  return pass == kPasses - 1 ? 0 : 64 - kFirstDigitBits - 8 * pass;
}
static_assert(digit_shift(1) == 44 && digit_shift(6) == 4 && digit_shift(7) == 0,
              "the digits must tile the 64-bit composite key");

/// Radix selection state of one segment of a selection set. The selection
/// works on 64-bit composite keys K = (key << 32) | (0xFFFFFFFF - local index):
/// unique, ordered like the key, and ties broken toward the lower index, so
/// taking the `target` largest K is exactly the specified top-k.
struct SetState {
  u64 first[kFirstDigitBins];  // digit 0 of every coordinate
  u64 hist[2][256];            // hist[p % 2]: digit p >= 1 of the current candidates
  u64 count[2];                // candidate list sizes, ping-pong
  u64 out;                     // entries appended to the output region so far
  u64 need;                    // entries still to take from the current candidates
  u64 prefix;                  // composite-key digits resolved so far
  u64 captured;                // coordinates the histogram pass captured (may exceed the room)
  u32 digit;                   // digit resolved in the current pass
  u32 done;                    // every remaining candidate is taken (or nothing to do)
  u32 from_capture;            // pass 0 reads the captured candidates, not the data
  u32 missed;                  // fewer than `need` reached the guess: histogrammed again in full
  u32 units_done;              // a filter's pieces of this member finished so far (the
                               // block finishing the last one resolves the next pass)
};

/// Digit 0 of a key alone (it lies entirely in the key's bits).
__device__ __forceinline__ u32 first_digit(u32 key) {
  return key >> (32 - kFirstDigitBits);
}

/// The histogram pass's capture of likely candidates (see select.cuh): each
/// member with a guess copies every coordinate whose first digit is at least
/// the guess, (local index, key) pairs, into its region of `list` (locals
/// first, then keys, `room` pairs each), and histograms only those: the
/// member's `first` then holds exact counts at and above the guess and zeros
/// below. When at least `need` coordinates reached the guess, the boundary
/// digit lies at or above it and those counts resolve it; when, besides,
/// nothing overflowed, pass 0 reads these pairs instead of the data. A member
/// without a guess (kNoGuess) histograms every coordinate and captures nothing.
constexpr u32 kNoGuess = 0xFFFFFFFFu;  // a guess that captures nothing

/// A guess is never digit 0 (it would capture every coordinate, more than any
/// room holds), so the lowest digit a histogram pass counts tells whether the
/// member has one: 0 means no guess, every coordinate counted.
struct Capture {
  u32* list = nullptr;               // null: the set captures nothing
  const u64* list_offset = nullptr;  // member -> start of its region
  const u64* room = nullptr;         // member -> pairs its region holds
  u32* guess = nullptr;              // member -> lowest first digit captured, or kNoGuess
  u64* used = nullptr;               // members whose pass 0 read their capture (last run)
  u64* missed = nullptr;             // members histogrammed again in full (last run)

  /// The lowest first digit member m's histogram pass counts: its guess, or
  /// 0 (everything) when it has none or the set captures nothing.
  __device__ u32 lowest(u32 m) const {
    if (list == nullptr) return 0;
    const u32 g = guess[m];
    return g == kNoGuess ? 0u : g;
  }
};

/// Inclusive prefix sum of `v` over the lanes of a warp (all 32 must call it).
template <typename T>
__device__ __forceinline__ T warp_inclusive_sum(T v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const T y = __shfl_up_sync(0xFFFFFFFFu, v, d);
    if (lane >= d) v += y;
  }
  return v;
}

/// Adds the shared bins [from, to) into `into` and zeroes them, by the threads
/// of a block (a histogram's per-tile flush: the bins are zero again after).
__device__ __forceinline__ void flush_bins(u32* bins, u32 from, u32 to, u64* into) {
  for (u32 d = from + threadIdx.x; d < to; d += blockDim.x) {
    const u32 v = bins[d];
    if (v != 0) {
      atomicAdd(&into[d], static_cast<u64>(v));
      bins[d] = 0;
    }
  }
}

/// A histogram pass's first-digit counts of one tile, for a block that counts
/// its tiles one after the other (the worker's update pass, the server's
/// histogram of |W - R|). The bins live in shared memory (FirstDigitShared)
/// and are zero between tiles from the lowest digit the block has counted
/// so far up: a tile's flush zeroes the bins it read, so a block clears them
/// once, not per tile, and flushes only up to the highest digit the tile
/// counted (with a guess, a few bins instead of every bin above it). The
/// capture of a tile's counted items takes one atomic per warp, issued before
/// the tile's barrier so that its latency passes while the block waits and
/// flushes. A tile costs one barrier, one more when the block has a later
/// tile, and one more when start() has bins to clear. Every thread of the
/// block calls, per tile, in order:
///   start(lowest)            (a barrier when it has to clear bins)
///   count(digit, j)          for each of its items
///   finish(...)
struct FirstDigitShared {
  u32 bins[kFirstDigitBins];
  u32 top[kThreads / 32];  // per warp: one above the highest digit it counted in the tile
};

class FirstDigitTile {
 public:
  __device__ explicit FirstDigitTile(FirstDigitShared& sh) : sh_(sh) {}

  /// Begins a tile whose counted digits are `lowest` and up (uniform across
  /// the block).
  __device__ __forceinline__ void start(u32 lowest) {
    lowest_ = lowest;
    bits_ = 0;
    top_ = 0;
    if (lowest < clean_) {
      for (u32 d = lowest + threadIdx.x; d < clean_; d += kThreads) sh_.bins[d] = 0;
      clean_ = lowest;
      __syncthreads();
    }
  }

  /// Counts this thread's item j, whose first digit is `digit`, when the
  /// digit is the tile's lowest or above.
  __device__ __forceinline__ void count(u32 digit, int j) {
    if (digit < lowest_) return;
    atomicAdd(&sh_.bins[digit], 1u);
    bits_ |= 1u << j;
    top_ = top_ > digit + 1 ? top_ : digit + 1;
  }

  /// Ends the tile: adds its counts into `s.first` (zeroing the bins) and,
  /// when `capturing`, appends the counted items of member `m` as
  /// (local index begin + threadIdx.x + j * kThreads, key key_of(j)) pairs to
  /// its region, as many as the room holds (s.captured counts them all).
  /// key_of may read the key back from memory, once per captured item.
  /// `more`: the block counts another tile after this one.
  template <typename KeyOf>
  __device__ __forceinline__ void finish(SetState& s, const Capture& capture, bool capturing, u32 m,
                                         u64 begin, bool more, KeyOf key_of) {
    constexpr unsigned kAll = 0xFFFFFFFFu;
    const int lane = threadIdx.x & 31;
    u32 top = top_;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const u32 other = __shfl_xor_sync(kAll, top, o);
      top = other > top ? other : top;
    }
    if (lane == 0) sh_.top[threadIdx.x >> 5] = top;
    u32 before = 0;
    u64 base = 0;
    if (capturing) {
      const u32 mine = static_cast<u32>(__popc(bits_));
      const u32 x = warp_inclusive_sum(mine);
      before = x - mine;
      const u32 total = __shfl_sync(kAll, x, 31);
      if (lane == 0 && total != 0) base = atomicAdd(&s.captured, static_cast<u64>(total));
    }
    __syncthreads();  // the tile's counts and the warps' tops are complete
    u32 block_top = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w)
      block_top = sh_.top[w] > block_top ? sh_.top[w] : block_top;
    flush_bins(sh_.bins, lowest_, block_top, s.first);
    if (more) __syncthreads();  // the bins and tops are read before the next tile counts
    if (capturing) {
      base = __shfl_sync(kAll, base, 0);
      const u64 room = capture.room[m];
      u64 at = base + before;
      u32 bits = bits_;
      if (bits != 0 && at < room) {
        u32* locals = capture.list + capture.list_offset[m];
        u32* keys = locals + room;
        for (; bits != 0 && at < room; bits &= bits - 1, ++at) {
          const int j = __ffs(static_cast<int>(bits)) - 1;
          locals[at] = static_cast<u32>(begin + threadIdx.x + j * kThreads);
          keys[at] = key_of(j);
        }
      }
    }
  }

 private:
  FirstDigitShared& sh_;
  u32 clean_ = kFirstDigitBins;  // bins from here up are zero
  u32 lowest_ = 0;
  u32 bits_ = 0;  // bit j: item j was counted
  u32 top_ = 0;   // one above the highest digit this thread counted
};

/// Digit `pass` of a composite key.
__device__ __forceinline__ u32 composite_digit(u32 key, u32 local, int pass) {
  const u64 k = (static_cast<u64>(key) << 32) | static_cast<u64>(0xFFFFFFFFu - local);
  return static_cast<u32>((k >> digit_shift(pass)) & ((1u << digit_bits(pass)) - 1u));
}

// --- Message access on the device ------------------------------------------

/// Writes `header` (its count read from `count` when given) at the start of
/// `message`, by the threads of one block.
__device__ __forceinline__ void write_header_bytes(MessageHeader header, unsigned char* message,
                                                   const u64* count) {
  if (count != nullptr) header.count = *count;
  const unsigned char* from = reinterpret_cast<const unsigned char*>(&header);
  for (int b = threadIdx.x; b < static_cast<int>(sizeof header); b += blockDim.x)
    message[b] = from[b];
}

__device__ __forceinline__ void store_index(unsigned char* message, IndexType type, u64 slot,
                                            u64 index) {
  unsigned char* base = message + kHeaderBytes;
  if (type == IndexType::u64) {
    reinterpret_cast<u64*>(base)[slot] = index;
  } else {
    reinterpret_cast<u32*>(base)[slot] = static_cast<u32>(index);
  }
}

__device__ __forceinline__ u64 load_index(const unsigned char* message, IndexType type, u64 slot) {
  const unsigned char* base = message + kHeaderBytes;
  return type == IndexType::u64 ? reinterpret_cast<const u64*>(base)[slot]
                                : reinterpret_cast<const u32*>(base)[slot];
}

/// Stores x in the wire type; returns the value as the receiver reads it.
__device__ __forceinline__ float store_value(unsigned char* values, WireValue type, u64 slot,
                                             float x) {
  switch (type) {
    case WireValue::bf16: {
      const unsigned short h = detail::float_to_bf16(x);
      reinterpret_cast<unsigned short*>(values)[slot] = h;
      return detail::bf16_to_float(h);
    }
    case WireValue::f16: {
      const unsigned short h = detail::float_to_f16(x);
      reinterpret_cast<unsigned short*>(values)[slot] = h;
      return detail::f16_to_float(h);
    }
    case WireValue::f32:
      break;
  }
  reinterpret_cast<float*>(values)[slot] = x;
  return x;
}

__device__ __forceinline__ float load_value(const unsigned char* values, WireValue type, u64 slot) {
  switch (type) {
    case WireValue::bf16:
      return detail::bf16_to_float(reinterpret_cast<const unsigned short*>(values)[slot]);
    case WireValue::f16:
      return detail::f16_to_float(reinterpret_cast<const unsigned short*>(values)[slot]);
    case WireValue::f32:
      break;
  }
  return reinterpret_cast<const float*>(values)[slot];
}

/// Segment of message slot `slot` for fixed-count layouts: the last l with
/// first[l] <= slot (binary search over the segment table).
__device__ __forceinline__ u32 segment_of_slot(const SegmentInfo* segments, u32 count, u64 slot) {
  u32 lo = 0, hi = count;  // invariant: segments[lo].first <= slot < segments[hi].first
  while (hi - lo > 1) {
    const u32 mid = (lo + hi) / 2;
    if (segments[mid].first <= slot) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// A grid-stride loop over entries [0, n) that takes kScatterBatch entries per
/// thread at a time: load(j) for each of them, then store(j, loaded) for each.
/// A scatter's stores could alias the next entry's loads for all the compiler
/// knows (message bytes alias everything), so a plain loop waits out each
/// gather's latency one entry at a time; here the loads of a batch are in
/// flight together. The entries must touch distinct coordinates.
constexpr int kScatterBatch = 4;

template <typename Load, typename Store>
__device__ __forceinline__ void scatter_batched(u64 n, Load load, Store store) {
  using Loaded = decltype(load(u64{0}));
  const u64 stride = static_cast<u64>(gridDim.x) * blockDim.x;
  for (u64 j0 = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; j0 < n;
       j0 += stride * kScatterBatch) {
    Loaded v[kScatterBatch] = {};
#pragma unroll
    for (int b = 0; b < kScatterBatch; ++b) {
      if (j0 + b * stride < n) v[b] = load(j0 + b * stride);
    }
#pragma unroll
    for (int b = 0; b < kScatterBatch; ++b) {
      if (j0 + b * stride < n) store(j0 + b * stride, v[b]);
    }
  }
}

// --- Launch sizes (host) -----------------------------------------------------

/// A grid of `wanted` blocks of `Kernel` (kThreads each), but no more than
/// the device holds at once; the kernel's occupancy is asked once. For
/// kernels whose blocks loop over their work (the selection's usually idle
/// filters: skipping then costs a few waves of blocks, not one per tile; the
/// sync round, whose blocks keep cursors from tile to tile; the histogram
/// passes, whose blocks clear their bins once). DGS_RESIDENT_GRID_CAP caps it
/// (detail::resident_grid_cap).
template <auto Kernel>
unsigned resident_grid(unsigned wanted, int multiprocessors) {
  static const int per_multiprocessor = [] {
    int blocks = 0;
    DGS_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kThreads, 0));
    return std::max(1, blocks);
  }();
  const unsigned resident =
      std::min(wanted, static_cast<unsigned>(per_multiprocessor * std::max(1, multiprocessors)));
  const unsigned cap = detail::resident_grid_cap();
  return cap != 0 ? std::min(resident, cap) : resident;
}

}  // namespace dgs::cuda
