// The device selection engine (see select.cuh). The only translation unit
// that includes CUB.
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "dgs/error.h"
#include "kernels/cuda_check.h"
#include "kernels/select.cuh"

namespace dgs::cuda {
namespace {

// ---------------------------------------------------------------------------
// Key functors: the 32-bit selection key of coordinate `local` of segment `l`.

struct ValueKeys {
  const float* x;
  const SegmentInfo* seg;
  __device__ u32 operator()(u32 l, u64 local) const {
    return detail::magnitude_key(x[seg[l].offset + local]);
  }
};

struct DifferenceKeys {
  const float* w;
  const float* r;
  const SegmentInfo* seg;
  __device__ u32 operator()(u32 l, u64 local) const {
    const u64 i = seg[l].offset + local;
    return detail::magnitude_key(__fsub_rn(w[i], r[i]));
  }
};

struct RandkKeys {
  u64 seed;
  u64 step;
  __device__ u32 operator()(u32 l, u64 local) const {
    return detail::randk_key(detail::stream_key(seed, step, l, detail::RandomUse::randk), local);
  }
};

// Sample j of a segment: the whole segment when it is no larger than the
// sample, else positions drawn from (seed, step, l) — as the host twin does.
template <class Keys>
struct SampleKeys {
  Keys keys;
  const SegmentInfo* seg;
  u64 seed;
  u64 step;
  u64 sample;
  __device__ u32 operator()(u32 l, u64 j) const {
    const u64 n = seg[l].size;
    const u64 position =
        n <= sample
            ? j
            : detail::draw(detail::stream_key(seed, step, l, detail::RandomUse::threshold_sample),
                           j) %
                  n;
    return keys(l, position);
  }
};

// A selection set as the kernels see it.
struct SetView {
  const u32* segment;      // member -> segment
  const u64* list_offset;  // member -> start of its region in the list buffers
  SetState* state;
  const u32* tiles_of;  // member -> how many tiles of data it has (pass 0 from the data)
};

template <typename Index>
struct Output {
  Index* slots;  // message-order index array (threshold: unsorted, a sort follows)
  const SegmentInfo* seg;
  // Non-null: a large-set filter marks what it selects here (bit i of word
  // i / 32 for coordinate i) instead of appending it to the member's slots,
  // and emit_marks_kernel writes the slots in index order from the marks.
  u32* marks = nullptr;
};

// Exclusive prefix sum of one u32 per thread over a block of kThreads
// threads; `total` becomes the block's sum. Every thread must call it; it
// ends with a barrier, after which `sh` may be reused.
struct BlockSum {
  u32 warp[kThreads / 32];
  u32 total;
};

__device__ __forceinline__ u32 block_exclusive_sum(BlockSum& sh, u32 v) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const u32 x = warp_inclusive_sum(v);
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

// ---------------------------------------------------------------------------
// Kernels.

// `counts` (null: none): the set's two capture counters (used, missed), zeroed.
__global__ void init_states_kernel(SetState* states, const u64* need, const u32* segment,
                                   const u64* threshold_count, const SegmentInfo* seg, u32 members,
                                   u64* counts) {
  const u32 m = blockIdx.x;
  if (m >= members) return;
  if (counts != nullptr && m == 0 && threadIdx.x < 2) counts[threadIdx.x] = 0;
  SetState& s = states[m];
  for (int d = threadIdx.x; d < kFirstDigitBins; d += blockDim.x) s.first[d] = 0;
  for (int d = threadIdx.x; d < 256; d += blockDim.x) {
    s.hist[0][d] = 0;
    s.hist[1][d] = 0;
  }
  if (threadIdx.x == 0) {
    s.count[0] = s.count[1] = 0;
    s.out = 0;
    s.prefix = 0;
    s.captured = 0;
    s.from_capture = 0;
    s.missed = 0;
    s.units_done = 0;
    s.digit = 0;
    s.need = need[m];
    s.done = 0xFFFFFFFFu;  // not done
    // Clamp fallback: only the segments whose threshold overflowed take part.
    if (threshold_count != nullptr && threshold_count[segment[m]] <= seg[segment[m]].capacity) {
      s.done = 0;  // done before pass 0: skipped entirely
      s.need = 0;
    }
  }
}

// Pass 0 histogram over the members' data (when no fused pass did it), and
// the capture of likely candidates: a member with a guess has only the
// coordinates it captures counted. `again`: only the members whose counts
// missed (resolve_kernel), every coordinate counted, nothing captured.
template <class Keys>
__global__ void histogram_kernel(const Tile* tiles, u32 tile_count, SetView set, Keys keys,
                                 Capture capture, bool again) {
  __shared__ FirstDigitShared shared;
  FirstDigitTile counts(shared);
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    SetState& s = set.state[tile.owner];
    if (again ? s.missed == 0 : s.done == 0) continue;
    const u32 lowest = again ? 0 : capture.lowest(tile.owner);
    counts.start(lowest);
    const u32 l = set.segment[tile.owner];
    u32 key[kItems];
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const u32 i = threadIdx.x + j * kThreads;
      if (i < tile.length) key[j] = keys(l, tile.begin + i);
    }
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (threadIdx.x + j * kThreads < tile.length) counts.count(first_digit(key[j]), j);
    }
    counts.finish(s, capture, lowest != 0, tile.owner, tile.begin, t + gridDim.x < tile_count,
                  [&](int j) { return keys(l, tile.begin + threadIdx.x + j * kThreads); });
  }
}

// The next run's guess for a member whose first-digit histogram `h` holds
// exact counts from digit `lowest` up (zeros below; `counted` in all): the
// digit at which at least twice the target lies at or above (`doubled`, with
// `at_doubled` coordinates there and above; kNoGuess when fewer were
// counted), one lower for drift when that digit's count is known, else that
// digit. When fewer than twice the target were counted at or above a guess
// (`lowest` > 0), the guess one lower (its count unknown: an overflow falls
// back to the data, correctly). Else the boundary digit `boundary`
// (`at_boundary` at or above). Whichever comes first and fits `room`.
// Digit 0 is never a guess (Capture).
__device__ u32 next_guess(const volatile u64* h, u32 lowest, u64 counted, u32 doubled,
                          u64 at_doubled, u32 boundary, u64 at_boundary, u64 room) {
  u32 g = kNoGuess;
  if (doubled != kNoGuess && doubled > lowest && at_doubled + h[doubled - 1] <= room) {
    g = doubled - 1;
  } else if (doubled != kNoGuess && at_doubled <= room) {
    g = doubled;
  } else if (doubled == kNoGuess && lowest > 0 && counted <= room) {
    g = lowest - 1;
  } else if (boundary != kNoGuess && at_boundary <= room) {
    g = boundary;
  }
  return g == 0 ? kNoGuess : g;
}

struct ResolveShared {
  using Scan = cub::BlockScan<u64, 256>;
  typename Scan::TempStorage scan;
  u32 boundary, doubled;
  u64 at_boundary, at_doubled;
};

// Finds the digit of pass `pass` that holds the need-th largest candidate of
// member m, by a whole block of 256 threads (resolve_kernel's, or the block
// of a filter that finished the member's last piece: finish_unit). With more bins
// than threads each thread owns a run of bins, thread 0 the highest. Pass 0
// of a capturing set also decides, per member, whether its histogram pass
// counted enough at and above its guess to resolve the boundary (if not, the
// member is `missed`: its counts are cleared for a full histogram, and
// `again`, a second launch after that histogram, resolves it alone), whether
// pass 0 may read its capture, and the next run's guess. The histogram is
// read through volatile loads: in a filter the other blocks added into it
// during the same launch, and this block's L1 need not have seen that.
__device__ void resolve_member(SetState& s, u32 m, int pass, bool allow_done,
                               const Capture& capture, bool again, ResolveShared& sh) {
  using Scan = ResolveShared::Scan;
  u32& boundary = sh.boundary;
  u32& doubled = sh.doubled;
  u64& at_boundary = sh.at_boundary;
  u64& at_doubled = sh.at_doubled;
  if (again && s.missed == 0) return;  // resolved by the first launch
  const bool capturing = pass == 0 && capture.list != nullptr;
  // What the histogram pass counted: from its guess up, or everything (0).
  const u32 lowest = capturing ? capture.lowest(m) : 0;
  const u64 need = s.need;
  const bool skip = s.done != 0xFFFFFFFFu;
  // A finished member's lists and histograms are never read again; only
  // pass 0 of a capturing set has more to do for it (its guess).
  if (skip && !capturing) return;
  if (capturing && threadIdx.x == 0) boundary = doubled = kNoGuess;
  __syncthreads();  // every thread has read the guess and the state before they change
  if (capturing && !skip && lowest != 0 && s.captured < need) {
    // Fewer than `need` reached the guess: the boundary lies below it,
    // where nothing was counted. Count every coordinate, then resolve.
    for (u32 d = lowest + threadIdx.x; d < kFirstDigitBins; d += blockDim.x) s.first[d] = 0;
    if (threadIdx.x == 0) {
      s.missed = 1;
      capture.guess[m] = kNoGuess;  // what the second histogram does: count everything
      atomicAdd(capture.missed, 1ull);
    }
    return;  // the second launch clears what pass 0's filter fills
  }
  const int bins = 1 << digit_bits(pass);
  const int per = bins > 256 ? bins / 256 : 1;
  const volatile u64* h = pass == 0 ? s.first : s.hist[pass % 2];
  const int high = bins - 1 - per * static_cast<int>(threadIdx.x);  // this thread's highest bin
  u64 mine = 0;
  if (!skip && high >= 0) {
    for (int i = 0; i < per; ++i) mine += h[high - i];
  }
  u64 inclusive = 0;
  Scan(sh.scan).InclusiveSum(mine, inclusive);  // candidates in this thread's bins and above
  __syncthreads();
  const u64 above = inclusive - mine;
  if (!skip && high >= 0 && inclusive >= need && above < need) {
    u64 taken = above;
    int d = high;
    u64 here = h[d];
    while (taken + here < need) {
      taken += here;
      here = h[--d];
    }
    const u64 rest = need - taken;
    s.digit = static_cast<u32>(d);
    s.need = rest;
    s.prefix |= static_cast<u64>(d) << digit_shift(pass);
    if (pass == kPasses - 1 || (allow_done && here == rest)) s.done = static_cast<u32>(pass) + 1;
    if (capturing) {
      // At least `need` reached the guess, so the boundary digit is at or
      // above it, and every coordinate there was captured unless the
      // capture overflowed its room.
      if (lowest != 0 && s.captured <= capture.room[m]) {
        s.from_capture = 1;
        atomicAdd(capture.used, 1ull);
      }
      boundary = static_cast<u32>(d);
      at_boundary = taken + here;
    }
  }
  if (capturing) {
    const u64 twice = 2 * need;
    if (!skip && high >= 0 && inclusive >= twice && above < twice) {
      u64 taken = above;
      int d = high;
      while (taken + h[d] < twice) taken += h[d--];
      doubled = static_cast<u32>(d);
      at_doubled = taken + h[d];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      // s.captured: everything counted at and above a guess (0 without one).
      capture.guess[m] = skip ? kNoGuess
                              : next_guess(h, lowest, s.captured, doubled, at_doubled, boundary,
                                           at_boundary, capture.room[m]);
    }
  }
  // Clear what this pass's filter fills: the next histogram and the list it writes.
  if (pass < kPasses - 1) s.hist[(pass + 1) % 2][threadIdx.x] = 0;
  if (threadIdx.x == 0) s.count[pass % 2] = 0;
}

__global__ void resolve_kernel(SetView set, u32 members, int pass, bool allow_done, Capture capture,
                               bool again) {
  __shared__ ResolveShared sh;
  const u32 m = blockIdx.x;
  if (m >= members) return;
  resolve_member(set.state[m], m, pass, allow_done, capture, again, sh);
}

// Pass `pass`: candidates above the boundary digit are selected, those on it
// become the next pass's candidates (and are histogrammed by the next digit).
// One tile of member m: `length` coordinates from `begin` of its data (pass
// 0) or of the previous pass's list. Called by every thread of the block.
// `next_hist` is zero between tiles: a filter kernel clears it once
// (clear_next_hist) and each tile's flush zeroes what it reads.
struct FilterShared {
  u32 next_hist[256];
  ResolveShared resolve;  // the next pass's resolve of a member this block finishes
  u32 finished;           // this block finished the member's last piece (finish_unit)
};

// Called by every thread of a filter kernel's block before its first tile.
__device__ __forceinline__ void clear_next_hist(FilterShared& sh) {
  for (int d = threadIdx.x; d < 256; d += blockDim.x) sh.next_hist[d] = 0;
  __syncthreads();
}

// Where a tile's coordinates come from: local indices begin.. (data), or
// list_in[list_at + begin..] (list, capture); their keys from `keys`, or for
// a capture from keys_in[list_at + begin..].
enum class TileSource { data, list, capture };

template <TileSource kSource, class Keys, typename Index>
__device__ void filter_tile(FilterShared& sh, SetView set, Keys keys, int pass, u32 m, u64 begin,
                            u32 length, const u32* list_in, const u32* keys_in, u32* list_out,
                            Output<Index> out, bool write_output) {
  SetState& s = set.state[m];
  const u32 l = set.segment[m];
  const u32 digit = s.digit;
  const bool take_bucket = s.done == static_cast<u32>(pass) + 1;
  const bool last = pass == kPasses - 1;
  const u64 list_at = set.list_offset[m];

  // Every load first, so a thread's loads are in flight together.
  u32 locals[kItems];
  u32 key[kItems];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const u32 i = threadIdx.x + j * kThreads;
    if (i < length) {
      locals[j] =
          kSource == TileSource::data ? static_cast<u32>(begin + i) : list_in[list_at + begin + i];
      if constexpr (kSource == TileSource::capture) key[j] = keys_in[list_at + begin + i];
    }
  }
  if constexpr (kSource != TileSource::capture) {
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (threadIdx.x + j * kThreads < length) key[j] = keys(l, locals[j]);
    }
  }
  unsigned char kind[kItems];  // 0 drop, 1 select, 2 keep for the next pass
  u32 n_out = 0, n_next = 0;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    kind[j] = 0;
    if (threadIdx.x + j * kThreads < length) {
      const u32 dg = composite_digit(key[j], locals[j], pass);
      if (dg > digit || (dg == digit && (take_bucket || last))) {
        kind[j] = 1;
        ++n_out;
      } else if (dg == digit) {
        kind[j] = 2;
        ++n_next;
        atomicAdd(&sh.next_hist[composite_digit(key[j], locals[j], pass + 1)], 1u);
      }
    }
  }
  // Each warp takes its room in the member's output and next list with one
  // atomic per counter, issued before the barrier so that its latency passes
  // while the block waits and flushes (the order within them is free: the
  // marks and the next pass's histogram do not depend on it, and threshold
  // sorts what it appends).
  constexpr unsigned kAll = 0xFFFFFFFFu;
  const int lane = threadIdx.x & 31;
  const u64 mine = (static_cast<u64>(n_out) << 32) | n_next;
  const u64 x = warp_inclusive_sum(mine);
  const u64 offset = x - mine;
  const u64 total = __shfl_sync(kAll, x, 31);
  u64 base_out = 0, base_next = 0;
  if (lane == 0) {
    if (total >> 32) base_out = atomicAdd(&s.out, total >> 32);
    if (total & 0xFFFFFFFFu) base_next = atomicAdd(&s.count[pass % 2], total & 0xFFFFFFFFu);
  }
  __syncthreads();  // the tile's next-digit counts are complete
  if (!last) flush_bins(sh.next_hist, 0, 256, s.hist[(pass + 1) % 2]);
  u64 at_out = __shfl_sync(kAll, base_out, 0) + (offset >> 32);
  u64 at_next = __shfl_sync(kAll, base_next, 0) + (offset & 0xFFFFFFFFu);
  const SegmentInfo info = out.seg[l];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    if (kind[j] == 1) {
      if (write_output) {
        const u64 i = info.offset + locals[j];
        if (out.marks != nullptr) {
          atomicOr(&out.marks[i >> 5], 1u << (i & 31));
        } else {
          out.slots[info.first + at_out] = static_cast<Index>(i);
        }
      }
      ++at_out;
    } else if (kind[j] == 2) {
      list_out[list_at + at_next++] = locals[j];
    }
  }
  __syncthreads();  // the flush is done before the next tile counts
}

// Called by one thread of a block, after a barrier that follows the block's
// writes: true for the caller that brings `counter` to `expected`, which then
// sees the writes of every earlier caller's block; it resets the counter for
// the next launch.
__device__ __forceinline__ bool last_to_arrive(u32* counter, u32 expected) {
  __threadfence();
  const bool last = atomicAdd(counter, 1u) + 1 == expected;
  if (last) {
    *counter = 0;
    __threadfence();
  }
  return last;
}

// A filter's blocks each call this (every thread) when they finish one of
// member m's `units` pieces of pass `pass`; the block that finishes the last
// one resolves the member's next pass, so that no resolve launch sits
// between two filters. A counter in the member's state, taken after a fence,
// tells that block that every other piece's lists and histogram counts are
// written.
__device__ void finish_unit(FilterShared& sh, SetView set, u32 m, u32 units, int pass,
                            bool allow_done) {
  __syncthreads();  // every thread's writes for the piece are issued
  if (threadIdx.x == 0) sh.finished = last_to_arrive(&set.state[m].units_done, units);
  __syncthreads();
  if (sh.finished) {
    resolve_member(set.state[m], m, pass + 1, allow_done, Capture{}, false, sh.resolve);
  }
}

// Pass 0, from the data: tiles over the members' coordinates, except those
// of members whose pass 0 reads their capture.
template <class Keys, typename Index>
__global__ void filter_data_kernel(const Tile* tiles, u32 tile_count, SetView set, Keys keys,
                                   u32* list_out, Output<Index> out, bool write_output,
                                   bool resolve_next, bool allow_done) {
  __shared__ FilterShared sh;
  clear_next_hist(sh);
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const SetState& s = set.state[tile.owner];
    if (s.done == 0 || s.from_capture) continue;  // skipped before pass 0, or reads its capture
    filter_tile<TileSource::data>(sh, set, keys, 0, tile.owner, tile.begin, tile.length, nullptr,
                                  nullptr, list_out, out, write_output);
    if (resolve_next) finish_unit(sh, set, tile.owner, set.tiles_of[tile.owner], 0, allow_done);
  }
}

// The work units of the capture and list filters: `stride` per member,
// unit (m, part) taking the member's tiles part, part + stride, ... of the
// `available(m)` items it reads; the blocks of the grid take the units in
// turn, and call `after(m)` (every thread) once a unit is done.
template <class Available, class Visit, class After>
__device__ __forceinline__ void member_tiles(u32 members, u32 stride, Available available,
                                             Visit visit, After after) {
  const u64 units = static_cast<u64>(members) * stride;
  for (u64 w = blockIdx.x; w < units; w += gridDim.x) {
    const u32 m = static_cast<u32>(w / stride);
    const u64 n = available(m);  // 0: nothing to read (the same for the whole block)
    for (u64 begin = (w % stride) * kTile; begin < n; begin += static_cast<u64>(stride) * kTile) {
      visit(m, begin, static_cast<u32>(min(static_cast<u64>(kTile), n - begin)));
    }
    after(m);
  }
}

// Pass 0, from the captures of the members that read theirs.
template <class Keys, typename Index>
__global__ void filter_capture_kernel(SetView set, u32 members, u32 stride, Capture capture,
                                      Keys keys, u32* list_out, Output<Index> out,
                                      bool write_output, bool resolve_next, bool allow_done) {
  __shared__ FilterShared sh;
  clear_next_hist(sh);
  member_tiles(
      members, stride,
      [&](u32 m) { return set.state[m].from_capture ? set.state[m].captured : u64{0}; },
      [&](u32 m, u64 begin, u32 length) {
        filter_tile<TileSource::capture>(sh, set, keys, 0, m, begin, length, capture.list,
                                         capture.list + capture.room[m], list_out, out,
                                         write_output);
      },
      [&](u32 m) {
        if (resolve_next && set.state[m].from_capture)
          finish_unit(sh, set, m, stride, 0, allow_done);
      });
}

// Passes 1..7, from the previous pass's lists; a finished member costs one
// read. `resolve_next` (as in the pass-0 filters): the block that finishes a
// member's last unit resolves its next pass (finish_unit).
template <class Keys, typename Index>
__global__ void filter_list_kernel(SetView set, u32 members, u32 stride, Keys keys, int pass,
                                   const u32* list_in, u32* list_out, Output<Index> out,
                                   bool write_output, bool resolve_next, bool allow_done) {
  __shared__ FilterShared sh;
  clear_next_hist(sh);
  member_tiles(
      members, stride,
      [&](u32 m) {
        const SetState& s = set.state[m];
        const bool finished = s.done != 0xFFFFFFFFu && s.done <= static_cast<u32>(pass);
        return finished ? u64{0} : s.count[(pass + 1) % 2];
      },
      [&](u32 m, u64 begin, u32 length) {
        filter_tile<TileSource::list>(sh, set, keys, pass, m, begin, length, list_in, nullptr,
                                      list_out, out, write_output);
      },
      [&](u32 m) {
        if (resolve_next) finish_unit(sh, set, m, stride, pass, allow_done);
      });
}

// Segments sent whole: every index, in order.
template <typename Index>
__global__ void whole_kernel(const Tile* tiles, u32 tile_count, Output<Index> out) {
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const SegmentInfo info = out.seg[tile.owner];
    for (u32 i = threadIdx.x; i < tile.length; i += blockDim.x) {
      out.slots[info.first + tile.begin + i] = static_cast<Index>(info.offset + tile.begin + i);
    }
  }
}

// The large set's marks, emitted in index order (topk and randk; no sort).
// Mark tiles cover each member's words (Tile: `begin` the first global word,
// `length` words, `owner` the member), kMarkWords each from the member's
// first word; a word shared with a neighbouring segment counts only the
// member's own bits. Two launches: the bits of every tile and their
// exclusive sum over all tiles, then each tile's slots from that sum.
constexpr u32 kMarkWordsPerThread = 4;
constexpr u32 kMarkWords = kThreads * kMarkWordsPerThread;

// The bits of word w that belong to coordinates [offset, offset + size).
__device__ __forceinline__ u32 own_bits(u64 w, u64 offset, u64 size) {
  const u64 low = w << 5;
  const u32 from = offset > low ? static_cast<u32>(offset - low) : 0u;
  const u64 end = offset + size;
  const u32 to = end < low + 32 ? static_cast<u32>(end - low) : 32u;
  const u32 above_from = from == 0 ? 0xFFFFFFFFu : 0xFFFFFFFFu << from;
  const u32 below_to = to == 32 ? 0xFFFFFFFFu : (1u << to) - 1u;
  return above_from & below_to;
}

// The bits of every tile; the block that finishes last (a counter, after a
// fence) then sums them: before[t] = the bits of tiles 0..t-1.
__global__ void count_marks_kernel(const Tile* tiles, u32 tile_count, const u32* segment,
                                   const SegmentInfo* seg, const u32* marks, u32* tile_marks,
                                   u32* blocks_done, u64* before) {
  using Scan = cub::BlockScan<u64, kThreads>;
  __shared__ BlockSum sum;
  __shared__ typename Scan::TempStorage scan;
  __shared__ bool last;
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const SegmentInfo info = seg[segment[tile.owner]];
    u32 mine = 0;
#pragma unroll
    for (u32 j = 0; j < kMarkWordsPerThread; ++j) {
      const u32 i = threadIdx.x * kMarkWordsPerThread + j;
      if (i < tile.length) {
        const u64 w = tile.begin + i;
        mine += __popc(marks[w] & own_bits(w, info.offset, info.size));
      }
    }
    block_exclusive_sum(sum, mine);
    if (threadIdx.x == 0) tile_marks[t] = sum.total;
    __syncthreads();  // sum.total is rewritten by the next tile
  }
  if (threadIdx.x == 0) last = last_to_arrive(blocks_done, gridDim.x);
  __syncthreads();
  if (!last) return;
  // Volatile: the other blocks wrote these during this launch.
  const volatile u32* counts = tile_marks;
  const u32 per_thread = (tile_count + kThreads - 1) / kThreads;
  const u32 first = threadIdx.x * per_thread;
  const u32 end = min(first + per_thread, tile_count);
  u64 mine = 0;
  for (u32 t = first; t < end; ++t) mine += counts[t];
  u64 at = 0;
  Scan(scan).ExclusiveSum(mine, at);
  for (u32 t = first; t < end; ++t) {
    before[t] = at;
    at += counts[t];
  }
}

// Each tile's marked coordinates into its member's slots, in increasing
// order, clearing the marks for the next run (a shared word loses only the
// member's own bits).
template <typename Index>
__global__ void emit_marks_kernel(const Tile* tiles, u32 tile_count, const u32* segment, u32* marks,
                                  const u64* before, Output<Index> out) {
  __shared__ BlockSum sum;
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const SegmentInfo info = out.seg[segment[tile.owner]];
    // The member's tiles are consecutive, kMarkWords apart from its first word.
    const u32 first_tile = t - static_cast<u32>((tile.begin - (info.offset >> 5)) / kMarkWords);
    u32 bits[kMarkWordsPerThread];
    u32 mine = 0;
#pragma unroll
    for (u32 j = 0; j < kMarkWordsPerThread; ++j) {
      const u32 i = threadIdx.x * kMarkWordsPerThread + j;
      bits[j] = 0;
      if (i < tile.length) {
        const u64 w = tile.begin + i;
        const u32 own = own_bits(w, info.offset, info.size);
        bits[j] = marks[w] & own;
        if (bits[j] != 0) {
          if (own == 0xFFFFFFFFu) {
            marks[w] = 0;
          } else {
            atomicAnd(&marks[w], ~own);
          }
        }
        mine += __popc(bits[j]);
      }
    }
    const u32 in_tile = block_exclusive_sum(sum, mine);
    u64 at = info.first + (before[t] - before[first_tile]) + in_tile;
#pragma unroll
    for (u32 j = 0; j < kMarkWordsPerThread; ++j) {
      const u64 base = (tile.begin + threadIdx.x * kMarkWordsPerThread + j) << 5;
      for (u32 b = bits[j]; b != 0; b &= b - 1) {
        out.slots[at++] =
            static_cast<Index>(base + static_cast<u32>(__ffs(static_cast<int>(b)) - 1));
      }
    }
  }
}

// Byte `pass` (0 = most significant) of a composite key: the small-segment
// kernel's own 8 digits of 8 bits.
__device__ __forceinline__ u32 byte_digit(u32 key, u32 local, int pass) {
  const u64 k = (static_cast<u64>(key) << 32) | static_cast<u64>(0xFFFFFFFFu - local);
  return static_cast<u32>((k >> (56 - 8 * pass)) & 0xFFu);
}

// Small segments: one block selects in shared memory and emits in index order.
static_assert(kThreads == 256, "small_kernel: one thread per bin of an 8-bit digit");
template <class Keys, typename Index>
__global__ void small_kernel(const u32* small, u32 count, Keys keys, Output<Index> out) {
  using Scan = cub::BlockScan<u32, kThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ u32 key_of[kSmallSegment];
  __shared__ u32 hist[256];
  __shared__ u64 prefix;
  __shared__ u64 need;
  __shared__ int decided;  // pass after which the selection is decided
  for (u32 b = blockIdx.x; b < count; b += gridDim.x) {
    const u32 l = small[b];
    const SegmentInfo info = out.seg[l];
    const u32 n = static_cast<u32>(info.size);
    for (u32 u = threadIdx.x; u < n; u += blockDim.x) key_of[u] = keys(l, u);
    if (threadIdx.x == 0) {
      prefix = 0;
      need = info.target;
      decided = -1;
    }
    __syncthreads();
    for (int pass = 0; pass < 8 && decided < 0; ++pass) {
      for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
      __syncthreads();
      const int shift = 64 - 8 * pass;  // bits above this pass's digit
      for (u32 u = threadIdx.x; u < n; u += blockDim.x) {
        const u64 k = (static_cast<u64>(key_of[u]) << 32) | (0xFFFFFFFFu - u);
        if (pass == 0 || (k >> shift) == (prefix >> shift))
          atomicAdd(&hist[byte_digit(key_of[u], u, pass)], 1u);
      }
      __syncthreads();
      // The digit holding the need-th largest: thread t owns bin 255 - t and
      // sums the bins from the top (a block scan rather than one thread's
      // walk down up to 256 bins, which each pass waited on). need == 0
      // (a segment with nothing to send) takes nothing: digit 255 of pass 0,
      // which no magnitude key has.
      const u64 want = need;  // read by every thread before the scan's barriers
      const u32 d = 255u - threadIdx.x;
      const u32 here = hist[d];
      u32 inclusive = 0;
      Scan(scan).InclusiveSum(here, inclusive);
      const u64 above = inclusive - here;
      if ((inclusive >= want && above < want) || (want == 0 && threadIdx.x == 0)) {
        const u64 rest = want - above;
        prefix |= static_cast<u64>(d) << (56 - 8 * pass);
        need = rest;
        if (here == rest || pass == 7) decided = pass;
      }
      __syncthreads();
    }
    // Selected: composite keys whose digits up to the deciding pass reach the prefix.
    const int shift = 56 - 8 * decided;
    const u32 per_thread = (n + kThreads - 1) / kThreads;
    const u32 first = threadIdx.x * per_thread;
    u32 mine = 0;
    for (u32 u = first; u < min(first + per_thread, n); ++u) {
      const u64 k = (static_cast<u64>(key_of[u]) << 32) | (0xFFFFFFFFu - u);
      mine += (k >> shift) >= (prefix >> shift) ? 1u : 0u;
    }
    u32 at = 0;
    Scan(scan).ExclusiveSum(mine, at);
    for (u32 u = first; u < min(first + per_thread, n); ++u) {
      const u64 k = (static_cast<u64>(key_of[u]) << 32) | (0xFFFFFFFFu - u);
      if ((k >> shift) >= (prefix >> shift))
        out.slots[info.first + at++] = static_cast<Index>(info.offset + u);
    }
    __syncthreads();
  }
}

// threshold: tau_l = the sampled estimate, at least the smallest positive key.
__global__ void threshold_tau_kernel(SetView set, u32 members, u32* tau) {
  const u32 m = blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= members) return;
  const u32 key = static_cast<u32>(set.state[m].prefix >> 32);
  tau[set.segment[m]] = key > 1u ? key : 1u;
}

// threshold: every coordinate at or above tau, as far as the capacity reaches;
// counts all of them.
template <class Keys, typename Index>
__global__ void threshold_select_kernel(const Tile* tiles, u32 tile_count,
                                        const u32* segment_of_member, Keys keys, const u32* tau,
                                        u64* counts, Output<Index> out) {
  using Scan = cub::BlockScan<u32, kThreads>;
  __shared__ typename Scan::TempStorage scan;
  __shared__ u64 base;
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const u32 l = segment_of_member[tile.owner];
    const SegmentInfo info = out.seg[l];
    const u32 threshold = tau[l];
    bool chosen[kItems];
    u32 mine = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const u32 i = threadIdx.x + j * kThreads;
      chosen[j] = i < tile.length && keys(l, tile.begin + i) >= threshold;
      mine += chosen[j] ? 1u : 0u;
    }
    u32 offset = 0, total = 0;
    Scan(scan).ExclusiveSum(mine, offset, total);
    if (threadIdx.x == 0) base = total ? atomicAdd(&counts[l], static_cast<u64>(total)) : 0;
    __syncthreads();
    u64 at = base + offset;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      if (chosen[j]) {
        if (at < info.capacity) {
          out.slots[info.first + at] =
              static_cast<Index>(info.offset + tile.begin + threadIdx.x + j * kThreads);
        }
        ++at;
      }
    }
    __syncthreads();
  }
}

// threshold: the message count and the estimate's statistics.
__global__ void threshold_total_kernel(const u32* members, u32 member_count, const u64* counts,
                                       const SegmentInfo* seg, u64 whole_entries, u64* count,
                                       u64* stats) {
  __shared__ u64 sum[3];
  if (threadIdx.x < 3) sum[threadIdx.x] = 0;
  __syncthreads();
  for (u32 m = threadIdx.x; m < member_count; m += blockDim.x) {
    const u32 l = members[m];
    const u64 c = counts[l];
    const u64 cap = seg[l].capacity;
    const u64 sent = c > cap ? cap : c;
    const u64 target = seg[l].target;
    atomicAdd(&sum[0], sent);
    atomicAdd(&sum[1], c > cap ? 1ull : 0ull);
    atomicAdd(&sum[2], sent > target ? sent - target : target - sent);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    *count = sum[0] + whole_entries;
    stats[0] = sum[1];
    stats[1] = sum[2];
  }
}

std::uint64_t mark_words(std::uint64_t coordinates) {
  return std::max<std::uint64_t>(1, (coordinates + 31) / 32);
}

unsigned grid_for(std::uint64_t tiles) {
  return static_cast<unsigned>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(tiles, 65535)));
}

// How a plan selects a segment (Selector::classify).
enum SegmentClass : unsigned char { kNoSelection, kWhole, kEstimated, kSmall, kLarge };

// A threshold segment's sample of size min(n, sample): its share of the k
// largest, rank ceil(k * s / n), at least 1.
u64 sample_rank(std::uint64_t n, std::uint64_t k, std::uint32_t sample) {
  const std::uint64_t s = std::min<std::uint64_t>(n, sample);
  return std::clamp<std::uint64_t>((k * s + n - 1) / n, 1, s);
}

template <typename T>
T* device_alloc(std::vector<void*>& owned, std::size_t count) {
  owned.reserve(owned.size() + 1);  // so that push_back cannot throw
  void* p = nullptr;
  detail::device_malloc(&p, std::max<std::size_t>(1, count) * sizeof(T),
                        "a table of the selection plan");
  owned.push_back(p);
  return static_cast<T*>(p);
}

constexpr std::size_t kStagingAlign = 16;

// A table a plan writes through the staging: allocated for `count` entries,
// and its room there counted into `staged`.
template <typename T>
T* staged_alloc(std::vector<void*>& owned, std::size_t count, std::size_t& staged) {
  staged += count * sizeof(T) + kStagingAlign;
  return device_alloc<T>(owned, count);
}

// Tiles of at most kTile elements over each owner's [0, size).
std::vector<Tile> make_tiles(const std::vector<std::uint64_t>& sizes) {
  std::vector<Tile> tiles;
  for (std::size_t o = 0; o < sizes.size(); ++o) {
    for (std::uint64_t b = 0; b < sizes[o]; b += kTile) {
      tiles.push_back(
          {b, static_cast<u32>(std::min<std::uint64_t>(kTile, sizes[o] - b)), static_cast<u32>(o)});
    }
  }
  return tiles;
}

// Tiles over the mark words of each of `members`, segments of `segments`
// (owner = the member).
std::vector<Tile> make_mark_tiles(const Segments& segments, const std::vector<u32>& members) {
  std::vector<Tile> tiles;
  for (std::size_t m = 0; m < members.size(); ++m) {
    const std::uint64_t first = segments.offset(members[m]) >> 5;
    const std::uint64_t end =
        ((segments.offset(members[m]) + segments.size(members[m]) - 1) >> 5) + 1;
    for (std::uint64_t w = first; w < end; w += kMarkWords) {
      tiles.push_back(
          {w, static_cast<u32>(std::min<std::uint64_t>(kMarkWords, end - w)), static_cast<u32>(m)});
    }
  }
  return tiles;
}

}  // namespace

// Lays a plan's host tables out in the pinned staging, one after another,
// and copies each on `stream` into its device table, which was allocated
// for `room` elements.
class Stager {
 public:
  Stager(void* staging, std::size_t bytes, cudaStream_t stream)
      : base_(static_cast<unsigned char*>(staging)), bytes_(bytes), stream_(stream) {}

  template <typename T>
  void put(T* device, const T* host, std::size_t count, std::size_t room, const char* what) {
    if (count > room) {
      throw Error(ErrorCode::internal, std::string("dgs cuda selection: ") + what + " needs " +
                                           std::to_string(count) + " entries, its table holds " +
                                           std::to_string(room));
    }
    if (count == 0) return;
    at_ = (at_ + kStagingAlign - 1) / kStagingAlign * kStagingAlign;
    const std::size_t bytes = count * sizeof(T);
    if (at_ + bytes > bytes_) {
      throw Error(ErrorCode::internal, std::string("dgs cuda selection: ") + what +
                                           " overflows the staging (" + std::to_string(bytes_) +
                                           " bytes)");
    }
    std::memcpy(base_ + at_, host, bytes);
    DGS_CUDA_TRY(cudaMemcpyAsync(device, base_ + at_, bytes, cudaMemcpyHostToDevice, stream_));
    at_ += bytes;
  }
  template <typename T>
  void put(T* device, const std::vector<T>& host, std::size_t room, const char* what) {
    put(device, host.data(), host.size(), room, what);
  }

 private:
  unsigned char* base_;
  std::size_t bytes_;
  cudaStream_t stream_;
  std::size_t at_ = 0;
};

namespace {

// Every slot of a plan with nothing estimated is filled, whatever the data:
// its count is the plan's, set when the plan is made rather than by every
// run (threshold_total_kernel writes it for an estimated plan).
void put_filled_count(Stager& stager, u64* count, const SelectionPlan& plan) {
  const u64 filled = plan.total_capacity();
  stager.put(count, &filled, 1, 1, "the count");
}

}  // namespace

struct Selector::Set {
  u32 members = 0;
  u32* segment = nullptr;
  u64* list_offset = nullptr;
  u64* need = nullptr;
  SetState* states = nullptr;
  Tile* data_tiles = nullptr;
  u32 data_tile_count = 0;
  u32 max_member_tiles = 0;  // tiles of the longest member (its list never outgrows its data)
  u32* tiles_of = nullptr;   // member -> how many of data_tiles are its
  std::vector<std::uint32_t> host_segments;
  // The capture of likely candidates (large set only): per member, room for
  // a quarter of its coordinates as (local, key) pairs in its region of the
  // second list buffer, and the guess the next histogram pass captures from.
  u64* capture_room = nullptr;
  u32* guess = nullptr;
  u32 max_capture_tiles = 0;
  // The emission of the marks (large set only): tiles over each member's
  // words, each tile's bits, and the bits of the tiles before it.
  Tile* mark_tiles = nullptr;
  u32 mark_tile_count = 0;
  u32* tile_marks = nullptr;
  u64* marks_before = nullptr;
  u32* mark_blocks_done = nullptr;  // count_marks_kernel's blocks finished (0 between runs)
  // What the tables were allocated for: members, data tiles, mark tiles.
  std::size_t member_room = 0, tile_room = 0, mark_tile_room = 0;

  SetView view() const { return {segment, list_offset, states, tiles_of}; }
  // `counts`: the two counters of Selector::capture_counts_ (used, missed).
  Capture capture(u32* list, u64* counts) const {
    if (guess == nullptr) return {};
    return {list, list_offset, capture_room, guess, counts, counts + 1};
  }
};

Selector::Selector(const Segments& segments, std::uint64_t max_capacity, IndexType index_type,
                   Compressor compressor, std::size_t room_bytes)
    : segments_(segments),
      index_type_(index_type),
      compressor_(compressor),
      max_capacity_(max_capacity) {
  for (std::size_t l = 0; l < segments.count(); ++l) {
    if (segments.size(l) >= (std::uint64_t{1} << 32)) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs cuda selection: segment " + std::to_string(l) + " has " +
                      std::to_string(segments.size(l)) +
                      " elements; a segment must hold fewer than 2^32 (split the tensor)");
    }
  }
  // threshold sorts its indices with CUB, whose item count is an int.
  if (compressor == Compressor::threshold && max_capacity > std::uint64_t{INT_MAX}) {
    throw Error(ErrorCode::invalid_argument,
                "dgs cuda selection: the threshold compressor sorts its message's indices, "
                "at most " +
                    std::to_string(INT_MAX) + " (2^31 - 1); this message holds " +
                    std::to_string(max_capacity) +
                    " (lower the ratio or threshold_capacity, or use "
                    "topk)");
  }
  const std::size_t index_bytes = index_type == IndexType::u64 ? 8 : 4;
  list_capacity_ = segments.total();
  try {
    using detail::device_malloc;
    // rbgs selects nothing: its selector never holds the candidate lists.
    if (compressor != Compressor::rbgs) {
      const std::uint64_t lists = std::max<std::uint64_t>(1, list_capacity_) * sizeof(u32);
      room_bytes_ = std::max<std::size_t>(lists, room_bytes);
      device_malloc(&lists_[0], room_bytes_,
                    room_bytes > lists
                        ? "the selection's first candidate list (4 B per parameter; between "
                          "steps, a dense reply)"
                        : "the selection's first candidate list (4 B per parameter)");
      device_malloc(&lists_[1], lists, "the selection's second candidate list (4 B per parameter)");
    }
    // The selected indices in message order (one per message slot); threshold
    // finds them out of order first, and sorts them into place.
    const std::uint64_t slots = std::max<std::uint64_t>(1, max_capacity) * index_bytes;
    if (compressor != Compressor::rbgs) {
      device_malloc(&sorted_, slots, "the selected indices (one per message slot)");
    }
    if (compressor == Compressor::threshold) {
      device_malloc(&unsorted_, slots, "the threshold's unsorted indices (one per message slot)");
    }
    device_malloc(&count_, sizeof(u64), "the selection's count");
    const std::size_t count = std::max<std::size_t>(1, segments.count());
    device_malloc(&threshold_counts_, count * sizeof(u64), "the threshold counts (per segment)");
    device_malloc(&threshold_keys_, count * sizeof(u32), "the threshold keys (per segment)");
    device_malloc(&stats_dev_, 2 * sizeof(u64), "the selection's statistics");
    device_malloc(&capture_counts_, 2 * sizeof(u64), "the capture counters");
    DGS_CUDA_TRY(cudaMemset(capture_counts_, 0, 2 * sizeof(u64)));
    multiprocessors_ = detail::multiprocessor_count();
    if (compressor == Compressor::threshold) {  // the only one whose indices are sorted
      const int items = static_cast<int>(max_capacity);  // at most INT_MAX (above)
      if (index_type == IndexType::u64) {
        cub::DeviceRadixSort::SortKeys(nullptr, sort_temp_bytes_, static_cast<const u64*>(nullptr),
                                       static_cast<u64*>(nullptr), items);
      } else {
        cub::DeviceRadixSort::SortKeys(nullptr, sort_temp_bytes_, static_cast<const u32*>(nullptr),
                                       static_cast<u32*>(nullptr), items);
      }
      device_malloc(&sort_temp_, sort_temp_bytes_, "the radix sort's temporary storage");
    }
    allocate_tables();
  } catch (...) {
    release();  // the destructor does not run for a constructor that throws
    throw;
  }
}

Selector::~Selector() {
  release();
}

void Selector::release() noexcept {
  if (staged_ != nullptr) cudaEventDestroy(staged_);
  if (staging_ != nullptr) cudaFreeHost(staging_);
  for (void* p : owned_) cudaFree(p);
  owned_.clear();
  for (void* p : {static_cast<void*>(lists_[0]), static_cast<void*>(lists_[1]), unsorted_, sorted_,
                  static_cast<void*>(count_), static_cast<void*>(threshold_counts_),
                  static_cast<void*>(threshold_keys_), static_cast<void*>(stats_dev_),
                  static_cast<void*>(capture_counts_), sort_temp_, static_cast<void*>(marks_)}) {
    cudaFree(p);
  }
}

void Selector::allocate_set(std::unique_ptr<Set>& set, std::size_t members, std::size_t tiles,
                            std::size_t& staged) {
  set = std::make_unique<Set>();
  set->member_room = members;
  set->tile_room = tiles;
  set->segment = staged_alloc<u32>(owned_, members, staged);
  set->list_offset = staged_alloc<u64>(owned_, members, staged);
  set->states = device_alloc<SetState>(owned_, members);
  set->data_tiles = staged_alloc<Tile>(owned_, tiles, staged);
  set->tiles_of = staged_alloc<u32>(owned_, members, staged);
  set->need = staged_alloc<u64>(owned_, members, staged);
}

void Selector::allocate_tables() {
  const std::size_t count = segments_.count();
  std::vector<std::uint64_t> sizes(count);
  for (std::size_t l = 0; l < count; ++l) sizes[l] = segments_.size(l);
  const std::vector<Tile> all = make_tiles(sizes);
  // What the staging must hold at most: every table a plan uploads, each
  // at its largest (staged_alloc counts them), and the count and the
  // statistics, allocated with the selector.
  std::size_t staged = 3 * sizeof(u64) + 2 * kStagingAlign;
  segments_dev_ = staged_alloc<SegmentInfo>(owned_, count, staged);
  all_tiles_ = device_alloc<Tile>(owned_, all.size());
  all_tile_count_ = static_cast<std::uint32_t>(all.size());
  if (!all.empty()) {
    DGS_CUDA_TRY(
        cudaMemcpy(all_tiles_, all.data(), all.size() * sizeof(Tile), cudaMemcpyHostToDevice));
  }
  if (compressor_ != Compressor::rbgs) {
    // Any segment may be taken whole.
    whole_tile_room_ = all.size();
    whole_tiles_ = staged_alloc<Tile>(owned_, whole_tile_room_, staged);
    member_ = staged_alloc<int>(owned_, count, staged);
  }
  if (compressor_ == Compressor::topk || compressor_ == Compressor::randk) {
    // Small segments are those of at most kSmallSegment coordinates; the
    // large set may take every larger one.
    std::vector<u32> large;
    std::size_t large_tiles = 0;
    for (std::size_t l = 0; l < count; ++l) {
      if (sizes[l] > kSmallSegment) {
        large.push_back(static_cast<u32>(l));
        large_tiles += (sizes[l] + kTile - 1) / kTile;
      } else {
        ++small_room_;
      }
    }
    small_ = staged_alloc<u32>(owned_, small_room_, staged);
    if (!large.empty()) {
      allocate_set(large_store_, large.size(), large_tiles, staged);
      Set& set = *large_store_;
      set.capture_room = staged_alloc<u64>(owned_, large.size(), staged);
      set.guess = device_alloc<u32>(owned_, large.size());
      set.mark_tile_room = make_mark_tiles(segments_, large).size();
      set.mark_tiles = staged_alloc<Tile>(owned_, set.mark_tile_room, staged);
      set.tile_marks = device_alloc<u32>(owned_, set.mark_tile_room);
      set.marks_before = device_alloc<u64>(owned_, set.mark_tile_room);
      set.mark_blocks_done = device_alloc<u32>(owned_, 1);
      detail::device_malloc(&marks_, mark_words(segments_.total()) * sizeof(u32),
                            "the selection's marks (1 bit per parameter)");
    }
  }
  if (compressor_ == Compressor::threshold) {
    // Every segment of two or more coordinates may be estimated (one of one
    // is always whole); its sample is no larger than the segment.
    std::size_t estimable = 0, tiles = 0;
    for (std::size_t l = 0; l < count; ++l) {
      if (sizes[l] >= 2) {
        ++estimable;
        tiles += (sizes[l] + kTile - 1) / kTile;
      }
    }
    if (estimable > 0) {
      allocate_set(sample_store_, estimable, tiles, staged);
      allocate_set(clamped_store_, estimable, tiles, staged);
    }
  }
  DGS_CUDA_TRY(cudaMallocHost(&staging_, staged));
  staging_bytes_ = staged;
  DGS_CUDA_TRY(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
}

void Selector::build_set(Set& set, const std::vector<std::uint32_t>& members,
                         const std::vector<std::uint64_t>& list_sizes, Stager& stager) {
  set.members = static_cast<u32>(members.size());
  set.host_segments = members;
  std::vector<u64> offsets(members.size());
  std::uint64_t at = 0;
  for (std::size_t m = 0; m < members.size(); ++m) {
    offsets[m] = at;
    at += list_sizes[m];
  }
  if (at > list_capacity_) {
    throw Error(ErrorCode::internal, "dgs cuda selection: candidate lists exceed their workspace");
  }
  stager.put(set.segment, members, set.member_room, "a set's members");
  stager.put(set.list_offset, offsets, set.member_room, "a set's list offsets");
  const std::vector<Tile> tiles = make_tiles(list_sizes);
  stager.put(set.data_tiles, tiles, set.tile_room, "a set's data tiles");
  set.data_tile_count = static_cast<u32>(tiles.size());
  std::vector<u32> tiles_of(members.size());
  for (std::size_t m = 0; m < members.size(); ++m) {
    tiles_of[m] = static_cast<u32>((list_sizes[m] + kTile - 1) / kTile);
  }
  stager.put(set.tiles_of, tiles_of, set.member_room, "a set's tile counts");
  set.max_member_tiles = tiles_of.empty() ? 0 : *std::max_element(tiles_of.begin(), tiles_of.end());
}

void Selector::wait_for_staging() {
  // The last change's copies read the staging. They ran a step ago at
  // least, so the query finds them done and nothing waits; were they not,
  // this waits for them.
  if (!staged_pending_) return;
  const cudaError_t done = cudaEventQuery(staged_);
  if (done == cudaErrorNotReady) {
    DGS_CUDA_TRY(cudaEventSynchronize(staged_));
  } else {
    DGS_CUDA_TRY(done);
  }
  staged_pending_ = false;
}

void Selector::set_plan(const SelectionPlan& plan, std::uint32_t threshold_sample,
                        cudaStream_t stream) {
  if (plan.target.size() != segments_.count() || plan.total_capacity() > max_capacity_ ||
      plan.compressor != compressor_) {
    throw Error(ErrorCode::invalid_argument,
                "dgs cuda selection: the plan does not fit the selector (segments " +
                    std::to_string(plan.target.size()) + " vs " +
                    std::to_string(segments_.count()) + ", capacity " +
                    std::to_string(plan.total_capacity()) + " vs " + std::to_string(max_capacity_) +
                    ", compressor " + to_string(plan.compressor) + " vs " + to_string(compressor_) +
                    ")");
  }
  const bool first = !planned_;
  planned_ = true;
  std::vector<unsigned char> classes = classify(plan);
  wait_for_staging();
  if (!first && threshold_sample == threshold_sample_ && classes == classes_) {
    retarget(plan, stream);
  } else {
    rebuild(plan, std::move(classes), threshold_sample, stream);
  }
  DGS_CUDA_TRY(cudaEventRecord(staged_, stream));
  staged_pending_ = true;
  // The tables are made for the runs on `stream`; the first plan's (made
  // with the selector, whose runs may be on any stream) are waited for.
  if (first) wait_for_staging();
}

void Selector::rebuild(const SelectionPlan& plan, std::vector<unsigned char> classes,
                       std::uint32_t threshold_sample, cudaStream_t stream) {
  plan_ = plan;
  threshold_sample_ = threshold_sample;
  const std::size_t count = segments_.count();
  std::vector<SegmentInfo> info(count);
  std::vector<std::uint32_t> small, large, sampled;
  std::vector<std::uint64_t> whole_sizes(count, 0), large_sizes, sample_sizes, clamped_sizes;
  std::vector<u64> large_need, sample_need, clamped_need;
  std::vector<int> member(count, -1);
  for (std::size_t l = 0; l < count; ++l) {
    const std::uint64_t n = segments_.size(l);
    const std::uint64_t k = plan.target[l];
    info[l] = segment_info(segments_, plan, l);
    switch (classes[l]) {
      case kNoSelection:
        break;
      case kWhole:
        whole_sizes[l] = n;
        break;
      case kEstimated:
        sampled.push_back(static_cast<u32>(l));
        sample_sizes.push_back(std::min<std::uint64_t>(n, threshold_sample));
        sample_need.push_back(sample_rank(n, k, threshold_sample));
        clamped_sizes.push_back(n);
        clamped_need.push_back(plan.capacity[l]);
        break;
      case kSmall:
        small.push_back(static_cast<u32>(l));
        break;
      case kLarge:
        member[l] = static_cast<int>(large.size());
        large.push_back(static_cast<u32>(l));
        large_sizes.push_back(n);
        large_need.push_back(k);
        break;
    }
  }
  classes_ = std::move(classes);
  Stager stager(staging_, staging_bytes_, stream);
  stager.put(segments_dev_, info, count, "the segment table");
  whole_tile_count_ = 0;
  small_count_ = 0;
  large_ = sample_ = clamped_ = nullptr;
  if (sampled.empty()) {
    put_filled_count(stager, count_, plan);
    // Only threshold_total_kernel writes the statistics, and it runs only
    // for an estimated plan: after one, they must not stay as it left them.
    const u64 none[2] = {0, 0};
    stager.put(stats_dev_, none, 2, 2, "the statistics");
  }
  if (compressor_ == Compressor::rbgs) return;  // nothing selects
  const std::vector<Tile> whole = make_tiles(whole_sizes);
  stager.put(whole_tiles_, whole, whole_tile_room_, "the whole segments' tiles");
  whole_tile_count_ = static_cast<std::uint32_t>(whole.size());
  stager.put(small_, small, small_room_, "the small segments");
  small_count_ = static_cast<std::uint32_t>(small.size());
  stager.put(member_, member, count, "the large set's members");
  if (!large.empty()) {
    Set& set = *large_store_;
    build_set(set, large, large_sizes, stager);
    stager.put(set.need, large_need, set.member_room, "the large set's needs");
    // A capture needs a region of its own in the second list buffer: the
    // large set's regions there are free until pass 1 writes them.
    std::vector<u64> room(large.size());
    set.max_capture_tiles = 0;
    for (std::size_t m = 0; m < large.size(); ++m) {
      room[m] = large_sizes[m] / 4;
      set.max_capture_tiles =
          std::max<u32>(set.max_capture_tiles, static_cast<u32>((room[m] + kTile - 1) / kTile));
    }
    stager.put(set.capture_room, room, set.member_room, "the capture rooms");
    const std::vector<Tile> mark_tiles = make_mark_tiles(segments_, large);
    stager.put(set.mark_tiles, mark_tiles, set.mark_tile_room, "the mark tiles");
    set.mark_tile_count = static_cast<u32>(mark_tiles.size());
    DGS_CUDA_TRY(cudaMemsetAsync(set.guess, 0xFF, large.size() * sizeof(u32), stream));  // kNoGuess
    DGS_CUDA_TRY(cudaMemsetAsync(set.mark_blocks_done, 0, sizeof(u32), stream));
    // Emission clears what each run marks; this covers a run cut short.
    DGS_CUDA_TRY(cudaMemsetAsync(marks_, 0, mark_words(segments_.total()) * sizeof(u32), stream));
    large_ = &set;
  }
  if (!sampled.empty()) {
    build_set(*sample_store_, sampled, sample_sizes, stager);
    stager.put(sample_store_->need, sample_need, sample_store_->member_room, "the samples' needs");
    build_set(*clamped_store_, sampled, clamped_sizes, stager);
    stager.put(clamped_store_->need, clamped_need, clamped_store_->member_room,
               "the clamped needs");
    sample_ = sample_store_.get();
    clamped_ = clamped_store_.get();
  }
}

std::vector<unsigned char> Selector::classify(const SelectionPlan& plan) const {
  std::vector<unsigned char> classes(segments_.count(), kNoSelection);
  for (std::size_t l = 0; l < segments_.count(); ++l) {
    const std::uint64_t n = segments_.size(l);
    if (plan.compressor == Compressor::rbgs) continue;
    if (plan.target[l] >= n) {
      classes[l] = kWhole;
    } else if (plan.compressor == Compressor::threshold) {
      classes[l] = kEstimated;
    } else {
      classes[l] = n <= kSmallSegment ? kSmall : kLarge;
    }
  }
  return classes;  // (a segment's sample size depends on its size alone)
}

void Selector::retarget(const SelectionPlan& plan, cudaStream_t stream) {
  plan_ = plan;
  const std::size_t count = segments_.count();
  std::vector<SegmentInfo> info(count);
  for (std::size_t l = 0; l < count; ++l) info[l] = segment_info(segments_, plan, l);
  Stager stager(staging_, staging_bytes_, stream);
  stager.put(segments_dev_, info, count, "the retargeted segment table");
  // Each set's need per member, as a rebuild computes it.
  auto needs = [&](Set* set, auto need_of) {
    if (set == nullptr) return;
    std::vector<u64> need(set->members);
    for (u32 m = 0; m < set->members; ++m) need[m] = need_of(set->host_segments[m]);
    stager.put(set->need, need, set->member_room, "a set's needs");
  };
  needs(large_, [&](u32 l) -> u64 { return plan.target[l]; });
  needs(sample_, [&](u32 l) -> u64 {
    return sample_rank(segments_.size(l), plan.target[l], threshold_sample_);
  });
  needs(clamped_, [&](u32 l) -> u64 { return plan.capacity[l]; });
  if (sample_ == nullptr) put_filled_count(stager, count_, plan);  // nothing estimated
}

void Selector::begin(cudaStream_t stream) {
  if (large_) {
    init_states_kernel<<<large_->members, kThreads, 0, stream>>>(
        large_->states, large_->need, large_->segment, nullptr, segments_dev_, large_->members,
        capture_counts_);
    DGS_CUDA_LAUNCHED("init_states_kernel", "members " + std::to_string(large_->members));
  }
}

Capture Selector::large_capture() const {
  return large_ ? large_->capture(lists_[1], capture_counts_) : Capture{};
}

FusedHistogram Selector::fused_histogram() const {
  FusedHistogram f;
  f.tiles = all_tiles_;
  f.tile_count = all_tile_count_;
  f.member = member_;
  f.states = large_ ? large_->states : nullptr;
  f.capture = large_capture();
  f.active = large_ != nullptr && plan_.compressor == Compressor::topk;
  return f;
}

namespace {

// The `members` times `stride` work units of the capture and list filters,
// checked against the grid limit.
unsigned member_blocks(u32 members, u32 stride, const std::string& sizes) {
  const std::uint64_t blocks = static_cast<std::uint64_t>(members) * stride;
  if (blocks > 0x7FFFFFFFull) {
    throw Error(ErrorCode::internal, "dgs cuda selection: too many list blocks (" + sizes + ")");
  }
  return static_cast<unsigned>(blocks);
}

// Enough blocks per member to fill the GPU when lists are long, never more
// than a member's list can have tiles.
u32 list_stride(u32 members, u32 max_member_tiles) {
  return std::max<u32>(1, std::min<u32>(max_member_tiles, (2048 + members - 1) / members));
}

// The passes of a selection set. `capture` (list null: none) is the set's
// capture, filled by the histogram pass (this one's or a fused one) when the
// set has one; `max_capture_tiles` the tiles of the largest capture room;
// `multiprocessors` the device's.
template <typename Index, class Keys>
void launch_set_passes(const Tile* data_tiles, u32 data_tile_count, u32 max_member_tiles,
                       SetView view, u32 members, Keys keys, bool histogram_done, bool allow_done,
                       int passes, u32* lists[2], const Capture& capture, u32 max_capture_tiles,
                       int multiprocessors, Output<Index> out, bool write_output,
                       cudaStream_t stream) {
  const std::string sizes =
      "members " + std::to_string(members) + ", tiles " + std::to_string(data_tile_count);
  if (!histogram_done) {
    // As wide as the GPU holds at once: each block counts every grid-th tile,
    // so it clears its bins once (FirstDigitTile).
    const unsigned grid =
        resident_grid<histogram_kernel<Keys>>(grid_for(data_tile_count), multiprocessors);
    histogram_kernel<<<grid, kThreads, 0, stream>>>(data_tiles, data_tile_count, view, keys,
                                                    capture, false);
    DGS_CUDA_LAUNCHED("histogram_kernel", sizes);
  }
  const u32 stride = list_stride(members, max_member_tiles);
  for (int pass = 0; pass < passes; ++pass) {
    // From pass 1 on, the previous filter resolved each member as it finished it.
    if (pass == 0) {
      resolve_kernel<<<members, 256, 0, stream>>>(view, members, 0, allow_done, capture, false);
      DGS_CUDA_LAUNCHED("resolve_kernel", sizes + ", pass 0");
      if (capture.list != nullptr) {
        // Members whose counts at and above their guess could not resolve
        // the boundary: every coordinate counted, then resolved. Usually
        // none (resident_grid).
        const unsigned again_grid =
            resident_grid<histogram_kernel<Keys>>(grid_for(data_tile_count), multiprocessors);
        histogram_kernel<<<again_grid, kThreads, 0, stream>>>(data_tiles, data_tile_count, view,
                                                              keys, Capture{}, true);
        DGS_CUDA_LAUNCHED("histogram_kernel", sizes + ", again");
        resolve_kernel<<<members, 256, 0, stream>>>(view, members, 0, allow_done, capture, true);
        DGS_CUDA_LAUNCHED("resolve_kernel", sizes + ", pass 0 again");
        const u32 capture_stride = list_stride(members, max_capture_tiles);
        const unsigned capture_grid = resident_grid<filter_capture_kernel<Keys, Index>>(
            member_blocks(members, capture_stride, sizes), multiprocessors);
        filter_capture_kernel<<<capture_grid, kThreads, 0, stream>>>(
            view, members, capture_stride, capture, keys, lists[0], out, write_output, passes > 1,
            allow_done);
        DGS_CUDA_LAUNCHED("filter_capture_kernel",
                          sizes + ", stride " + std::to_string(capture_stride));
      }
      // With a capture, most members usually read it instead of their data.
      const unsigned data_grid = capture.list != nullptr
                                     ? resident_grid<filter_data_kernel<Keys, Index>>(
                                           grid_for(data_tile_count), multiprocessors)
                                     : grid_for(data_tile_count);
      filter_data_kernel<<<data_grid, kThreads, 0, stream>>>(data_tiles, data_tile_count, view,
                                                             keys, lists[0], out, write_output,
                                                             passes > 1, allow_done);
      DGS_CUDA_LAUNCHED("filter_data_kernel", sizes);
    } else {
      // The list filters' blocks take the (member, part) units in turn.
      const unsigned blocks = resident_grid<filter_list_kernel<Keys, Index>>(
          member_blocks(members, stride, sizes), multiprocessors);
      filter_list_kernel<<<blocks, kThreads, 0, stream>>>(
          view, members, stride, keys, pass, lists[(pass + 1) % 2], lists[pass % 2], out,
          write_output, pass + 1 < passes, allow_done);
      DGS_CUDA_LAUNCHED("filter_list_kernel", sizes + ", pass " + std::to_string(pass) +
                                                  ", stride " + std::to_string(stride));
    }
  }
}

}  // namespace

void Selector::run(const KeySource& source, bool histogram_done, cudaStream_t stream) {
  const Compressor compressor = plan_.compressor;
  const bool wide = index_type_ == IndexType::u64;
  const std::uint64_t capacity = plan_.total_capacity();
  const std::size_t index_bytes = wide ? 8 : 4;
  if (compressor == Compressor::rbgs) {
    throw Error(ErrorCode::internal, "dgs cuda selection: rbgs needs no selection");
  }
  if (compressor == Compressor::threshold) {
    DGS_CUDA_TRY(cudaMemsetAsync(unsorted_, 0xFF, capacity * index_bytes, stream));
    DGS_CUDA_TRY(cudaMemsetAsync(threshold_counts_, 0, segments_.count() * sizeof(u64), stream));
  }

  auto run_all = [&](auto index_tag, auto keys) {
    using Index = decltype(index_tag);
    // topk and randk write every slot in order (whole and small segments
    // directly, the large set through its marks); threshold's slots are
    // sorted afterwards.
    const bool in_order = compressor != Compressor::threshold;
    Output<Index> out{static_cast<Index*>(in_order ? sorted_ : unsorted_), segments_dev_};
    u32* lists[2] = {lists_[0], lists_[1]};
    if (whole_tile_count_ > 0) {
      whole_kernel<<<grid_for(whole_tile_count_), kThreads, 0, stream>>>(whole_tiles_,
                                                                         whole_tile_count_, out);
      DGS_CUDA_LAUNCHED("whole_kernel", "tiles " + std::to_string(whole_tile_count_));
    }
    if (compressor != Compressor::threshold) {
      if (small_count_ > 0) {
        small_kernel<<<grid_for(small_count_), kThreads, 0, stream>>>(small_, small_count_, keys,
                                                                      out);
        DGS_CUDA_LAUNCHED("small_kernel", "segments " + std::to_string(small_count_));
      }
      if (large_) {
        if (!histogram_done) begin(stream);
        Output<Index> marked = out;
        marked.marks = marks_;
        launch_set_passes<Index>(large_->data_tiles, large_->data_tile_count,
                                 large_->max_member_tiles, large_->view(), large_->members, keys,
                                 histogram_done, true, kPasses, lists, large_capture(),
                                 large_->max_capture_tiles, multiprocessors_, marked, true, stream);
        const Set& set = *large_;
        const std::string tiles = "mark tiles " + std::to_string(set.mark_tile_count);
        count_marks_kernel<<<grid_for(set.mark_tile_count), kThreads, 0, stream>>>(
            set.mark_tiles, set.mark_tile_count, set.segment, segments_dev_, marks_, set.tile_marks,
            set.mark_blocks_done, set.marks_before);
        DGS_CUDA_LAUNCHED("count_marks_kernel", tiles);
        emit_marks_kernel<<<grid_for(set.mark_tile_count), kThreads, 0, stream>>>(
            set.mark_tiles, set.mark_tile_count, set.segment, marks_, set.marks_before, out);
        DGS_CUDA_LAUNCHED("emit_marks_kernel", tiles);
      }
    } else if (sample_) {
      // 1. tau from the sample: its r-th largest key (four key digits, no early stop).
      SampleKeys<decltype(keys)> sampled{keys, segments_dev_, source.seed, source.step,
                                         threshold_sample_};
      init_states_kernel<<<sample_->members, kThreads, 0, stream>>>(
          sample_->states, sample_->need, sample_->segment, nullptr, segments_dev_,
          sample_->members, nullptr);
      DGS_CUDA_LAUNCHED("init_states_kernel",
                        "sample, members " + std::to_string(sample_->members));
      launch_set_passes<Index>(sample_->data_tiles, sample_->data_tile_count,
                               sample_->max_member_tiles, sample_->view(), sample_->members,
                               sampled, false, false, 4, lists, Capture{}, 0, multiprocessors_, out,
                               false, stream);
      threshold_tau_kernel<<<(sample_->members + 255) / 256, 256, 0, stream>>>(
          sample_->view(), sample_->members, threshold_keys_);
      DGS_CUDA_LAUNCHED("threshold_tau_kernel", "members " + std::to_string(sample_->members));
      // 2. Everything at or above tau, up to capacity.
      threshold_select_kernel<<<grid_for(clamped_->data_tile_count), kThreads, 0, stream>>>(
          clamped_->data_tiles, clamped_->data_tile_count, clamped_->segment, keys, threshold_keys_,
          threshold_counts_, out);
      DGS_CUDA_LAUNCHED("threshold_select_kernel",
                        "tiles " + std::to_string(clamped_->data_tile_count));
      // 3. Segments over capacity: exact topk at their capacity instead.
      init_states_kernel<<<clamped_->members, kThreads, 0, stream>>>(
          clamped_->states, clamped_->need, clamped_->segment, threshold_counts_, segments_dev_,
          clamped_->members, nullptr);
      DGS_CUDA_LAUNCHED("init_states_kernel",
                        "clamped, members " + std::to_string(clamped_->members));
      launch_set_passes<Index>(clamped_->data_tiles, clamped_->data_tile_count,
                               clamped_->max_member_tiles, clamped_->view(), clamped_->members,
                               keys, false, true, kPasses, lists, Capture{}, 0, multiprocessors_,
                               out, true, stream);
      std::uint64_t whole_entries = 0;
      for (std::size_t l = 0; l < segments_.count(); ++l) {
        if (plan_.target[l] >= segments_.size(l)) whole_entries += segments_.size(l);
      }
      threshold_total_kernel<<<1, 256, 0, stream>>>(clamped_->segment, clamped_->members,
                                                    threshold_counts_, segments_dev_, whole_entries,
                                                    count_, stats_dev_);
      DGS_CUDA_LAUNCHED("threshold_total_kernel", "members " + std::to_string(clamped_->members));
    }
    if (in_order) return;
    // Message order: increasing index, which is also segment order.
    const int items = static_cast<int>(capacity);
    int end_bit = 1;
    while (end_bit < 64 && (std::uint64_t{1} << end_bit) < segments_.total()) ++end_bit;
    if (compressor == Compressor::threshold) end_bit = wide ? 64 : 32;  // sentinels sort last
    std::size_t temp = sort_temp_bytes_;
    DGS_CUDA_TRY(
        cub::DeviceRadixSort::SortKeys(sort_temp_, temp, static_cast<const Index*>(unsorted_),
                                       static_cast<Index*>(sorted_), items, 0, end_bit, stream));
  };

  auto dispatch_keys = [&](auto index_tag) {
    switch (source.kind) {
      case KeySource::Kind::values:
        run_all(index_tag, ValueKeys{source.x, segments_dev_});
        break;
      case KeySource::Kind::difference:
        run_all(index_tag, DifferenceKeys{source.w, source.r, segments_dev_});
        break;
      case KeySource::Kind::randk:
        run_all(index_tag, RandkKeys{source.seed, source.step});
        break;
    }
  };
  if (wide) {
    dispatch_keys(u64{});
  } else {
    dispatch_keys(u32{});
  }
}

host::CaptureUse Selector::captures(cudaStream_t stream) {
  host::CaptureUse c;
  if (!large_) return c;
  c.segments = large_->members;
  u64 counts[2];
  DGS_CUDA_TRY(
      cudaMemcpyAsync(counts, capture_counts_, sizeof counts, cudaMemcpyDeviceToHost, stream));
  DGS_CUDA_TRY(cudaStreamSynchronize(stream));
  c.used = counts[0];
  c.missed = counts[1];
  return c;
}

host::SelectionStats Selector::stats(cudaStream_t stream) {
  host::SelectionStats s;
  s.target = plan_.total_target();
  if (plan_.compressor != Compressor::threshold) {
    s.selected = plan_.total_capacity();
    return s;
  }
  u64 values[3];
  DGS_CUDA_TRY(cudaMemcpyAsync(values, count_, sizeof(u64), cudaMemcpyDeviceToHost, stream));
  DGS_CUDA_TRY(
      cudaMemcpyAsync(values + 1, stats_dev_, 2 * sizeof(u64), cudaMemcpyDeviceToHost, stream));
  DGS_CUDA_TRY(cudaStreamSynchronize(stream));
  s.selected = values[0];
  s.clamped_segments = values[1];
  s.count_error = values[2];
  return s;
}

}  // namespace dgs::cuda
