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
