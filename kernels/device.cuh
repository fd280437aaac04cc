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

/// A histogram pass's shared first-digit bins from `lowest` up: cleared before
/// a tile, added into the member's `first` after it (bins below `lowest` are
/// neither, so a block may leave stale counts there).
__device__ __forceinline__ void clear_first_bins(u32* hist, u32 lowest) {
  for (u32 d = lowest + threadIdx.x; d < kFirstDigitBins; d += blockDim.x) hist[d] = 0;
}
__device__ __forceinline__ void add_first_bins(const u32* hist, u32 lowest, u64* first) {
  for (u32 d = lowest + threadIdx.x; d < kFirstDigitBins; d += blockDim.x) {
    if (hist[d] != 0) atomicAdd(&first[d], static_cast<u64>(hist[d]));
  }
}

/// Exclusive prefix sum of one u32 per thread over a block of kThreads
/// threads; `total` becomes the block's sum. Every thread must call it; it
/// ends with a barrier, after which `sh` may be reused. Written here rather
/// than taken from cub::BlockScan so that worker.cu, which captures too, need
/// not include CUB (select.cu stays the only translation unit that does).
struct BlockSum {
  u32 warp[kThreads / 32];
  u32 total;
};

__device__ __forceinline__ u32 block_exclusive_sum(BlockSum& sh, u32 v) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  u32 x = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u32 y = __shfl_up_sync(0xFFFFFFFFu, x, d);
    if (lane >= d) x += y;
  }
  if (lane == 31) sh.warp[warp] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    u32 sum = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      const u32 c = sh.warp[w];
      sh.warp[w] = sum;
      sum += c;
    }
    sh.total = sum;
  }
  __syncthreads();
  const u32 before = sh.warp[warp] + x - v;
  __syncthreads();
  return before;
}

/// Captures the coordinates of one tile of member `m` whose first digit
/// reaches the member's guess. Bit j of `bits` marks the thread's item j (local
/// index begin + threadIdx.x + j * kThreads) as one of them, and key_of(j)
/// gives its key. Every thread of the block calls it with the same tile.
/// Keeping a mask rather than the keys costs the caller one register, not
/// kItems; key_of may read the key back from memory, once per captured item.
template <typename KeyOf>
__device__ __forceinline__ void capture_tile(BlockSum& sh, u64& base, const Capture& c, SetState& s,
                                             u32 m, u64 begin, u32 bits, KeyOf key_of) {
  const u32 before = block_exclusive_sum(sh, static_cast<u32>(__popc(bits)));
  if (threadIdx.x == 0)
    base = sh.total != 0 ? atomicAdd(&s.captured, static_cast<u64>(sh.total)) : 0;
  __syncthreads();
  const u64 room = c.room[m];
  u64 at = base + before;
  if (bits != 0 && at < room) {
    u32* locals = c.list + c.list_offset[m];
    u32* keys = locals + room;
    for (; bits != 0 && at < room; bits &= bits - 1, ++at) {
      const int j = __ffs(static_cast<int>(bits)) - 1;
      locals[at] = static_cast<u32>(begin + threadIdx.x + j * kThreads);
      keys[at] = key_of(j);
    }
  }
  __syncthreads();  // `base` is reused by the next tile
}

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
/// sync round, whose blocks keep cursors from tile to tile).
template <auto Kernel>
unsigned resident_grid(unsigned wanted, int multiprocessors) {
  static const int per_multiprocessor = [] {
    int blocks = 0;
    DGS_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kThreads, 0));
    return std::max(1, blocks);
  }();
  return std::min(wanted, static_cast<unsigned>(per_multiprocessor * std::max(1, multiprocessors)));
}

}  // namespace dgs::cuda
