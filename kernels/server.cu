// Server kernels: entry validation, applying a push, the sync average, and
// the sparse reply's compaction. Rounding matches kernels/server_host.cpp.
#include <algorithm>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/kernels.cuh"

namespace dgs::cuda {
namespace {

unsigned grid_for(std::uint64_t work) {
  const std::uint64_t blocks = (work + kThreads * 4 - 1) / (kThreads * 4);
  return static_cast<unsigned>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(blocks, 65535)));
}

__device__ __forceinline__ u64 header_count(const unsigned char* message) {
  return reinterpret_cast<const MessageHeader*>(message)->count;
}

// Lowest failing index slot (slot << 8 | reason) and lowest non-finite value slot.
// It may run before the host has read the header: whatever count the header
// claims, it reads at most the layout's capacity of entries.
__global__ void check_entries_kernel(const unsigned char* m, MessageLayout layout,
                                     const SegmentInfo* seg, u32 segments, bool fixed,
                                     EntryCheck* result) {
  const u64 claimed = header_count(m);
  const u64 n = claimed < layout.capacity ? claimed : layout.capacity;
  const unsigned char* values = m + layout.values_offset;
  const u64 stride = static_cast<u64>(gridDim.x) * blockDim.x;
  const u64 first = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x;
  if (layout.payload == PayloadLayout::sparse) {
    for (u64 j = first; j < n; j += stride) {
      const u64 i = load_index(m, layout.index_type, j);
      unsigned reason = 0;
      if (i >= layout.model_size) {
        reason = static_cast<unsigned>(RejectReason::index_range);
      } else if (j > 0 && i <= load_index(m, layout.index_type, j - 1)) {
        reason = static_cast<unsigned>(RejectReason::index_order);
      } else if (fixed) {
        const SegmentInfo s = seg[segment_of_slot(seg, segments, j)];
        if (i < s.offset || i >= s.offset + s.size)
          reason = static_cast<unsigned>(RejectReason::index_segment);
      }
      if (reason != 0) atomicMin(&result->index_failure, (j << 8) | reason);
    }
  } else if (layout.payload == PayloadLayout::blocks) {
    for (u64 l = first; l < segments; l += stride) {
      if (load_index(m, layout.index_type, l) >= seg[l].size) {
        atomicMin(&result->index_failure,
                  (l << 8) | static_cast<unsigned>(RejectReason::block_start));
      }
    }
  }
  for (u64 j = first; j < n; j += stride) {
    if (!detail::is_finite(load_value(values, layout.value_type, j)))
      atomicMin(&result->value_failure, j);
  }
}

__device__ __forceinline__ u64 entry_index(const unsigned char* m, const MessageLayout& layout,
                                           const SegmentInfo* seg, u32 segments, u64 j) {
  if (layout.payload == PayloadLayout::dense) return j;
  if (layout.payload == PayloadLayout::sparse) return load_index(m, layout.index_type, j);
  const u32 l = segment_of_slot(seg, segments, j);
  const SegmentInfo s = seg[l];
  const u64 t = load_index(m, layout.index_type, l) + (j - s.first);
  return s.offset + (t < s.size ? t : t - s.size);
}

// Every entry's coordinate is distinct (strictly increasing sparse indices,
// blocks no longer than their segment), so the batches never race.
__global__ void apply_push_kernel(const unsigned char* __restrict__ m, MessageLayout layout,
                                  const SegmentInfo* __restrict__ seg, u32 segments,
                                  float* __restrict__ target, bool accumulate) {
  struct Entry {
    u64 i;
    float s, t;
  };
  const unsigned char* values = m + layout.values_offset;
  scatter_batched(
      header_count(m),
      [&](u64 j) {
        const u64 i = entry_index(m, layout, seg, segments, j);
        return Entry{i, load_value(values, layout.value_type, j), target[i]};
      },
      [&](u64, const Entry& e) {
        target[e.i] = accumulate ? __fadd_rn(e.t, e.s) : __fsub_rn(e.t, e.s);
      });
}

__global__ void average_kernel(const float* acc, float inverse, float* w, u64 p) {
  for (u64 i = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; i < p;
       i += static_cast<u64>(gridDim.x) * blockDim.x) {
    w[i] = __fsub_rn(w[i], __fmul_rn(acc[i], inverse));
  }
}

// The first slot of a push (sorted indices, n of them) whose index is at
// least `bound`.
__device__ u64 first_slot_from(const unsigned char* m, IndexType type, u64 n, u64 bound) {
  u64 lo = 0, hi = n;
  while (lo < hi) {
    const u64 mid = lo + (hi - lo) / 2;
    if (load_index(m, type, mid) < bound) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// One batch of a push's entries, from slot `at`: this thread's is slot
// at + threadIdx.x, taken when its index lies below `end` (the tile's entries
// are a prefix of the batch, the indices being sorted). Its index and value
// are loaded together, the value whether or not it is taken, so a batch
// costs one memory latency.
struct RoundEntry {
  u64 i;
  float v;
  bool in;
};

__device__ __forceinline__ RoundEntry round_entry(const unsigned char* m,
                                                  const MessageLayout& layout, u64 at, u64 end) {
  RoundEntry e{0, 0.0f, false};
  const u64 j = at + threadIdx.x;
  if (j < header_count(m)) {
    e.i = load_index(m, layout.index_type, j);
    e.v = load_value(m + layout.values_offset, layout.value_type, j);
    e.in = e.i < end;
  }
  return e;
}

// A sync round of index-list pushes: W_i -= (sum over the pushes of s_i,
// in their order, from 0) * inverse, without an accumulator of P floats.
// Each block takes a run of consecutive tiles of kRoundTile coordinates,
// sums the pushes' entries of a tile in shared memory (one push after the
// other: a push's indices are distinct, so its adds never race, and the
// barrier between pushes keeps each coordinate's sum in push order), then
// subtracts the sums that are not zero (a coordinate no push names, or whose
// sum is +0 - a sum from +0 is never -0 - would become W - 0 * inverse = W:
// left as it is). The entries of
// a tile are a run of slots in each push, found once per block by a binary
// search and then followed by a cursor per push (`cursors`, gridDim.x * count
// slots of scratch). The next push's first batch is loaded before this
// push's entries are added, so its latency overlaps theirs (about one
// memory latency per push).
__global__ void __launch_bounds__(kThreads)
    sparse_round_kernel(const unsigned char* const* pushes, u32 count, MessageLayout layout,
                        float inverse, float* __restrict__ w, u64* cursors, u64 tiles_per_block) {
  __shared__ float sum[kRoundTile];
  const u64 p = layout.model_size;
  const u64 tiles = (p + kRoundTile - 1) / kRoundTile;
  const u64 first_tile = blockIdx.x * tiles_per_block;
  const u64 end_tile = min(tiles, first_tile + tiles_per_block);
  if (first_tile >= end_tile) return;
  u64* cursor = cursors + static_cast<u64>(blockIdx.x) * count;
  for (u32 k = threadIdx.x; k < count; k += blockDim.x) {
    cursor[k] = first_slot_from(pushes[k], layout.index_type, header_count(pushes[k]),
                                first_tile * kRoundTile);
  }
  for (u64 t = first_tile; t < end_tile; ++t) {
    const u64 a = t * kRoundTile;
    const u32 length = static_cast<u32>(min(static_cast<u64>(kRoundTile), p - a));
    for (u32 c = threadIdx.x; c < kRoundTile; c += blockDim.x) sum[c] = 0.0f;
    __syncthreads();  // the sums are zero and every cursor is written
    const u64 end = a + length;
    RoundEntry e = round_entry(pushes[0], layout, cursor[0], end);
    for (u32 k = 0; k < count; ++k) {
      u64 at = cursor[k];  // the same for every thread
      // cursor[k + 1] is rewritten only once push k + 1 is added, below.
      const RoundEntry next =
          k + 1 < count ? round_entry(pushes[k + 1], layout, cursor[k + 1], end) : RoundEntry{};
      for (;;) {
        if (e.in) sum[e.i - a] = __fadd_rn(sum[e.i - a], e.v);
        const int taken = __syncthreads_count(e.in);  // also orders this push's adds first
        at += static_cast<u64>(taken);
        if (taken < static_cast<int>(blockDim.x)) break;
        e = round_entry(pushes[k], layout, at, end);  // a full batch: there may be more
      }
      if (threadIdx.x == 0) cursor[k] = at;
      e = next;
    }
    for (u32 c = threadIdx.x; c < length; c += blockDim.x) {
      const float s = sum[c];
      if (s != 0.0f) w[a + c] = __fsub_rn(w[a + c], __fmul_rn(s, inverse));
    }
    __syncthreads();  // every sum is read (and cursor[k] written) before the next tile
  }
}

// A sync round of dense pushes: the same sums, one pass over W and the
// pushes, no accumulator.
__global__ void dense_round_kernel(const unsigned char* const* pushes, u32 count,
                                   MessageLayout layout, float inverse, float* __restrict__ w) {
  const u64 p = layout.model_size;
  for (u64 i = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; i < p;
       i += static_cast<u64>(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (u32 k = 0; k < count; ++k) {
      s = __fadd_rn(s, load_value(pushes[k] + layout.values_offset, layout.value_type, i));
    }
    w[i] = __fsub_rn(w[i], __fmul_rn(s, inverse));
  }
}

// The selected indices are distinct, so the batches never race. Block 0
// also writes the header (a region of its own).
template <typename Index>
__global__ void emit_reply_kernel(const float* __restrict__ w, float* __restrict__ r,
                                  const Index* __restrict__ indices, u64 count,
                                  unsigned char* __restrict__ reply, MessageLayout layout,
                                  MessageHeader header) {
  if (blockIdx.x == 0) write_header_bytes(header, reply, nullptr);
  struct Entry {
    u64 i;
    float w, r;
  };
  unsigned char* values = reply + layout.values_offset;
  scatter_batched(
      count,
      [&](u64 j) {
        const u64 i = indices[j];
        return Entry{i, w[i], r[i]};
      },
      [&](u64 j, const Entry& e) {
        store_index(reply, layout.index_type, j, e.i);
        const float d = store_value(values, layout.value_type, j, __fsub_rn(e.w, e.r));
        r[e.i] = __fadd_rn(e.r, d);
      });
}

}  // namespace

void launch_check_entries(const unsigned char* message, const MessageLayout& layout,
                          const SegmentInfo* segments, std::uint32_t segment_count,
                          bool fixed_count, EntryCheck* result, cudaStream_t stream) {
  DGS_CUDA_TRY(cudaMemsetAsync(result, 0xFF, sizeof(EntryCheck), stream));
  check_entries_kernel<<<grid_for(std::max<std::uint64_t>(layout.capacity, segment_count)),
                         kThreads, 0, stream>>>(message, layout, segments, segment_count,
                                                fixed_count, result);
  DGS_CUDA_LAUNCHED("check_entries_kernel", "capacity " + std::to_string(layout.capacity));
}

void launch_apply_push(const unsigned char* message, const MessageLayout& layout,
                       const SegmentInfo* segments, std::uint32_t segment_count, float* target,
                       bool accumulate, cudaStream_t stream) {
  apply_push_kernel<<<grid_for(layout.capacity), kThreads, 0, stream>>>(
      message, layout, segments, segment_count, target, accumulate);
  DGS_CUDA_LAUNCHED("apply_push_kernel", "capacity " + std::to_string(layout.capacity));
}

void launch_average(const float* accumulator, float inverse, float* model, std::uint64_t p,
                    cudaStream_t stream) {
  average_kernel<<<grid_for(p), kThreads, 0, stream>>>(accumulator, inverse, model, p);
  DGS_CUDA_LAUNCHED("average_kernel", "elements " + std::to_string(p));
}

unsigned sparse_round_grid(int multiprocessors) {
  return resident_grid<sparse_round_kernel>(0xFFFFFFFFu, multiprocessors);
}

void launch_sparse_round(const unsigned char* const* pushes, std::uint32_t count,
                         const MessageLayout& layout, float inverse, float* model,
                         std::uint64_t* cursors, unsigned blocks, cudaStream_t stream) {
  const std::uint64_t tiles = (layout.model_size + kRoundTile - 1) / kRoundTile;
  const std::uint64_t per_block = std::max<std::uint64_t>(1, (tiles + blocks - 1) / blocks);
  sparse_round_kernel<<<blocks, kThreads, 0, stream>>>(pushes, count, layout, inverse, model,
                                                       reinterpret_cast<u64*>(cursors), per_block);
  DGS_CUDA_LAUNCHED("sparse_round_kernel", "pushes " + std::to_string(count) + ", model " +
                                               std::to_string(layout.model_size));
}

void launch_dense_round(const unsigned char* const* pushes, std::uint32_t count,
                        const MessageLayout& layout, float inverse, float* model,
                        cudaStream_t stream) {
  dense_round_kernel<<<grid_for(layout.model_size), kThreads, 0, stream>>>(pushes, count, layout,
                                                                           inverse, model);
  DGS_CUDA_LAUNCHED("dense_round_kernel", "pushes " + std::to_string(count) + ", model " +
                                              std::to_string(layout.model_size));
}

void launch_emit_reply(const float* model, float* replica, const void* indices, std::uint64_t count,
                       unsigned char* reply, const MessageLayout& layout,
                       const MessageHeader& header, cudaStream_t stream) {
  if (layout.index_type == IndexType::u64) {
    emit_reply_kernel<u64><<<grid_for(count), kThreads, 0, stream>>>(
        model, replica, static_cast<const u64*>(indices), count, reply, layout, header);
  } else {
    emit_reply_kernel<u32><<<grid_for(count), kThreads, 0, stream>>>(
        model, replica, static_cast<const u32*>(indices), count, reply, layout, header);
  }
  DGS_CUDA_LAUNCHED("emit_reply_kernel", "count " + std::to_string(count));
}

}  // namespace dgs::cuda
