// Worker kernels: the fused update pass, compaction into the push, and the
// reply-side updates. Every floating-point operation is an explicit
// round-to-nearest intrinsic, matching the host twin (docs/methods.md).
#include <algorithm>
#include <string>

#include "dgs/error.h"
#include "kernels/cuda_check.h"
#include "kernels/kernels.cuh"

namespace dgs::cuda {
namespace {

unsigned grid_for(std::uint64_t work, std::uint64_t per_block) {
  const std::uint64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(blocks, 65535)));
}

__device__ __forceinline__ float decayed(const UpdateArgs& a, u64 i) {
  const float g = a.clip_scale != nullptr ? __fmul_rn(*a.clip_scale, a.grad[i]) : a.grad[i];
  return a.weight_decay != 0.0f ? __fmaf_rn(a.weight_decay, a.weights[i], g) : g;
}

// The parts of a block, added by halves (numeric.h); thread 0 gets the sum.
__device__ __forceinline__ double add_by_halves(double* part) {
  __syncthreads();
  for (unsigned h = detail::kNormThreads / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) part[threadIdx.x] = __dadd_rn(part[threadIdx.x], part[threadIdx.x + h]);
    __syncthreads();
  }
  return part[0];
}

// Block c: the squared norm of chunk c of g.
__global__ void __launch_bounds__(detail::kNormThreads)
    norm_chunks_kernel(const float* g, u64 p, double* chunk_sums) {
  __shared__ double part[detail::kNormThreads];
  const u64 begin = static_cast<u64>(blockIdx.x) * detail::kNormChunk;
  const u64 end = min(p, begin + detail::kNormChunk);
  double s = 0.0;
  for (u64 i = begin + threadIdx.x; i < end; i += detail::kNormThreads) {
    const double x = g[i];
    s = __dadd_rn(s, __dmul_rn(x, x));
  }
  part[threadIdx.x] = s;
  const double sum = add_by_halves(part);
  if (threadIdx.x == 0) chunk_sums[blockIdx.x] = sum;
}

// One block: the chunk sums added, then the scale.
__global__ void __launch_bounds__(detail::kNormThreads)
    clip_scale_kernel(const double* chunk_sums, u64 chunks, float clip_norm, float* scale) {
  __shared__ double part[detail::kNormThreads];
  double s = 0.0;
  for (u64 c = threadIdx.x; c < chunks; c += detail::kNormThreads) s = __dadd_rn(s, chunk_sums[c]);
  part[threadIdx.x] = s;
  const double sum = add_by_halves(part);
  if (threadIdx.x == 0) *scale = detail::clip_scale(sum, clip_norm);
}

// A block takes tiles t, t + gridDim.x, ...; bytes per coordinate: 4 (g)
// [+ 4 (w)] + 4|8 read + 4|8 write of the state; digit-0 histogram of large segments in shared
// memory: of every coordinate for a segment without a guess, else only of the coordinates it
// captures as likely candidates (select.cuh), a few percent. Each thread loads all of its kItems
// coordinates before it computes or stores any, so the loads of a tile are in flight together.
template <Method M>
__device__ __forceinline__ void update_tiles(const UpdateArgs& a, const Tile* tiles, u32 tile_count,
                                             const SegmentInfo* seg, const FusedHistogram& h) {
  __shared__ FirstDigitShared shared;
  FirstDigitTile counts(shared);
  for (u32 t = blockIdx.x; t < tile_count; t += gridDim.x) {
    const Tile tile = tiles[t];
    const int member = h.active ? h.member[tile.owner] : -1;
    // With a guess only the captured are counted.
    const u32 lowest = member >= 0 ? h.capture.lowest(static_cast<u32>(member)) : 0;
    if (member >= 0) counts.start(lowest);
    const u64 base = seg[tile.owner].offset + tile.begin;
    float g[kItems], first[kItems], second[kItems];
    u32 word[kItems];
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      const u32 j = threadIdx.x + r * kThreads;
      if (j < tile.length) {
        const u64 i = base + j;
        g[r] = decayed(a, i);
        if constexpr (M == Method::gd || M == Method::gmc || M == Method::gmc_plus) {
          first[r] = a.residual[i];
        } else if constexpr (M == Method::dgc) {
          first[r] = a.momentum_buffer[i];
          second[r] = a.accumulator[i];
        } else {
          first[r] = a.momentum_buffer[i];
          word[r] = a.mask[i >> 5];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      const u32 j = threadIdx.x + r * kThreads;
      if (j < tile.length) {
        const u64 i = base + j;
        float x;
        if constexpr (M == Method::gd || M == Method::gmc || M == Method::gmc_plus) {
          x = __fadd_rn(first[r], __fmul_rn(a.lr, g[r]));
          a.residual[i] = x;
        } else if constexpr (M == Method::dgc) {
          const float u = __fmaf_rn(a.momentum, first[r], g[r]);
          a.momentum_buffer[i] = u;
          x = __fadd_rn(second[r], u);
          a.accumulator[i] = x;
        } else {  // samomentum: m on the previous selection, 1 elsewhere
          const bool sent = (word[r] >> (i & 31)) & 1u;
          x = __fmaf_rn(sent ? a.momentum : 1.0f, first[r], __fmul_rn(a.lr, g[r]));
          a.momentum_buffer[i] = x;
        }
        if (member >= 0) counts.count(first_digit(detail::magnitude_key(x)), r);
      }
    }
    if (member >= 0) {
      // The captured keys are read back from the state this thread just wrote.
      counts.finish(h.states[member], h.capture, lowest != 0, static_cast<u32>(member), tile.begin,
                    t + gridDim.x < tile_count, [&](int r) {
                      return detail::magnitude_key(a.selected[base + threadIdx.x + r * kThreads]);
                    });
    }
  }
}

// samomentum and dgc: ptxas's own register choice (100 and 94: 2 blocks per
// SM); bounding them to 3 blocks per SM (80) spills 8 bytes in samomentum,
// which is to be timed (bench/README.md) before it is chosen.
template <Method M>
__global__ void update_kernel(UpdateArgs a, const Tile* tiles, u32 tile_count,
                              const SegmentInfo* seg, FusedHistogram h) {
  update_tiles<M>(a, tiles, tile_count, seg, h);
}

// gd and gmc: held to 64 registers, 4 blocks per SM as before the capture
// (77 and 3 without the bound), with no spills.
template <Method M>
__global__ void __launch_bounds__(kThreads, 4)
    update_kernel_4(UpdateArgs a, const Tile* tiles, u32 tile_count, const SegmentInfo* seg,
                    FusedHistogram h) {
  update_tiles<M>(a, tiles, tile_count, seg, h);
}

__global__ void dense_push_kernel(UpdateArgs a, u64 p, unsigned char* values, WireValue wire) {
  for (u64 i = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; i < p;
       i += static_cast<u64>(gridDim.x) * blockDim.x) {
    store_value(values, wire, i, __fmul_rn(a.lr, decayed(a, i)));
  }
}

// Writes entry `slot` (coordinate i, its state value x) and updates the state.
__device__ __forceinline__ void emit_one(const EmitArgs& a, unsigned char* values, u64 slot, u64 i,
                                         float x) {
  switch (a.method) {
    case Method::gd:
    case Method::gmc:
    case Method::gmc_plus:
      a.residual[i] = __fsub_rn(x, store_value(values, a.layout.value_type, slot, x));
      break;
    case Method::dgc:
      store_value(values, a.layout.value_type, slot, __fmul_rn(a.lr, x));
      a.accumulator[i] = 0.0f;
      if (a.factor_masking) a.momentum_buffer[i] = 0.0f;
      break;
    case Method::samomentum:
      store_value(values, a.layout.value_type, slot, x);
      atomicOr(&a.mask[i >> 5], 1u << (i & 31));
      break;
    case Method::dense:
      break;
  }
}

struct Picked {
  u64 i;
  float x;
};

// The selected indices are distinct, so the batches never race.
// Block 0 also writes the header (a region of its own).
template <typename Index>
__global__ void emit_kernel(EmitArgs a, const Index* __restrict__ indices, const u64* count,
                            MessageHeader header) {
  if (blockIdx.x == 0) write_header_bytes(header, a.message, count);
  unsigned char* values = a.message + a.layout.values_offset;
  const float* state = a.sent;
  scatter_batched(
      *count,
      [&](u64 j) {
        const u64 i = indices[j];
        return Picked{i, state != nullptr ? state[i] : 0.0f};
      },
      [&](u64 j, const Picked& e) {
        store_index(a.message, a.layout.index_type, j, e.i);
        emit_one(a, values, j, e.i, e.x);
      });
}

__global__ void emit_blocks_kernel(EmitArgs a, const SegmentInfo* __restrict__ seg, u32 segments,
                                   u64 capacity, u64 seed, u64 step) {
  struct Entry {
    u64 i, start;
    u64 first;
    u32 l;
    float x;
  };
  unsigned char* values = a.message + a.layout.values_offset;
  const float* state = a.sent;
  scatter_batched(
      capacity,
      [&](u64 j) {
        const u32 l = segment_of_slot(seg, segments, j);
        const SegmentInfo s = seg[l];
        const u64 start = detail::rbgs_block_start(seed, step, l, s.size, s.target);
        const u64 t = start + (j - s.first);
        const u64 i = s.offset + (t < s.size ? t : t - s.size);
        return Entry{i, start, s.first, l, state != nullptr ? state[i] : 0.0f};
      },
      [&](u64 j, const Entry& e) {
        emit_one(a, values, j, e.i, e.x);
        if (j == e.first) store_index(a.message, a.layout.index_type, e.l, e.start);
      });
}

__global__ void write_header_kernel(MessageHeader header, unsigned char* message,
                                    const u64* count) {
  write_header_bytes(header, message, count);
}

__device__ __forceinline__ u64 header_count(const unsigned char* message) {
  return reinterpret_cast<const MessageHeader*>(message)->count;
}

// Reply indices are distinct, so the batches never race.
__global__ void apply_sparse_reply_kernel(const unsigned char* __restrict__ reply,
                                          MessageLayout layout, float* __restrict__ w) {
  struct Entry {
    u64 i;
    float d, w;
  };
  const unsigned char* values = reply + layout.values_offset;
  scatter_batched(
      header_count(reply),
      [&](u64 j) {
        const u64 i = load_index(reply, layout.index_type, j);
        return Entry{i, load_value(values, layout.value_type, j), w[i]};
      },
      [&](u64, const Entry& e) { w[e.i] = __fadd_rn(e.w, e.d); });
}

__global__ void apply_dense_reply_kernel(unsigned char* reply, MessageLayout layout, float* w,
                                         bool record) {
  const u64 n = header_count(reply);
  float* values = reinterpret_cast<float*>(reply + layout.values_offset);
  for (u64 i = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<u64>(gridDim.x) * blockDim.x) {
    const float fresh = values[i];
    if (record) values[i] = __fsub_rn(fresh, w[i]);
    w[i] = fresh;
  }
}

__global__ void fold_kernel(const unsigned char* __restrict__ reply, MessageLayout layout,
                            float beta, float* __restrict__ e) {
  struct Entry {
    u64 i;
    float d, e;
  };
  const unsigned char* values = reply + layout.values_offset;
  const bool dense = layout.payload == PayloadLayout::dense;
  scatter_batched(
      header_count(reply),
      [&](u64 j) {
        const u64 i = dense ? j : load_index(reply, layout.index_type, j);
        return Entry{i, load_value(values, layout.value_type, j), e[i]};
      },
      [&](u64, const Entry& x) { e[x.i] = __fmaf_rn(-beta, x.d, x.e); });
}

__global__ void evaluation_point_kernel(const float* w, const float* e, float lambda, float* x,
                                        u64 p) {
  for (u64 i = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; i < p;
       i += static_cast<u64>(gridDim.x) * blockDim.x) {
    x[i] = __fmaf_rn(-lambda, e[i], w[i]);
  }
}

std::string sizes(std::uint64_t n) {
  return "elements " + std::to_string(n);
}

}  // namespace

// The update pass on a grid as wide as the GPU holds at once: each block
// counts every grid-th tile, so it clears its histogram bins once. Each
// launch is checked under its own kernel's name.
void launch_update(const UpdateArgs& args, const Tile* tiles, std::uint32_t tile_count,
                   const SegmentInfo* segments, const FusedHistogram& histogram,
                   int multiprocessors, cudaStream_t stream) {
  if (histogram.active && histogram.capture.list != nullptr && args.selected == nullptr) {
    throw Error(ErrorCode::internal,
                "dgs cuda update: a capturing histogram needs UpdateArgs::selected");
  }
  const unsigned want = grid_for(tile_count, 1);
  const std::string sizes =
      "tiles " + std::to_string(tile_count) + ", method " + to_string(args.method);
  switch (args.method) {
    case Method::gd:
      update_kernel_4<Method::gd>
          <<<resident_grid<update_kernel_4<Method::gd>>(want, multiprocessors), kThreads, 0,
             stream>>>(args, tiles, tile_count, segments, histogram);
      DGS_CUDA_LAUNCHED("update_kernel_4", sizes);
      break;
    case Method::gmc:
    case Method::gmc_plus:
      update_kernel_4<Method::gmc>
          <<<resident_grid<update_kernel_4<Method::gmc>>(want, multiprocessors), kThreads, 0,
             stream>>>(args, tiles, tile_count, segments, histogram);
      DGS_CUDA_LAUNCHED("update_kernel_4", sizes);
      break;
    case Method::dgc:
      update_kernel<Method::dgc>
          <<<resident_grid<update_kernel<Method::dgc>>(want, multiprocessors), kThreads, 0,
             stream>>>(args, tiles, tile_count, segments, histogram);
      DGS_CUDA_LAUNCHED("update_kernel", sizes);
      break;
    case Method::samomentum:
      update_kernel<Method::samomentum>
          <<<resident_grid<update_kernel<Method::samomentum>>(want, multiprocessors), kThreads, 0,
             stream>>>(args, tiles, tile_count, segments, histogram);
      DGS_CUDA_LAUNCHED("update_kernel", sizes);
      break;
    case Method::dense:
      return;
  }
}

void launch_clip_scale(const float* grad, std::uint64_t p, float clip_norm, double* chunk_sums,
                       float* scale, cudaStream_t stream) {
  const std::uint64_t chunks = detail::norm_chunks(p);
  norm_chunks_kernel<<<static_cast<unsigned>(chunks), detail::kNormThreads, 0, stream>>>(
      grad, p, chunk_sums);
  DGS_CUDA_LAUNCHED("norm_chunks_kernel", sizes(p));
  clip_scale_kernel<<<1, detail::kNormThreads, 0, stream>>>(chunk_sums, chunks, clip_norm, scale);
  DGS_CUDA_LAUNCHED("clip_scale_kernel", "chunks " + std::to_string(chunks));
}

void launch_dense_push(const UpdateArgs& args, std::uint64_t p, unsigned char* message,
                       const MessageLayout& layout, cudaStream_t stream) {
  dense_push_kernel<<<grid_for(p, kThreads * 4), kThreads, 0, stream>>>(
      args, p, message + layout.values_offset, layout.value_type);
  DGS_CUDA_LAUNCHED("dense_push_kernel", sizes(p));
}

void launch_emit(const EmitArgs& args, const void* indices, const std::uint64_t* count,
                 std::uint64_t capacity, const MessageHeader& header, cudaStream_t stream) {
  const unsigned grid = grid_for(capacity, kThreads * 4);
  const auto* n = reinterpret_cast<const u64*>(count);
  if (args.layout.index_type == IndexType::u64) {
    emit_kernel<u64>
        <<<grid, kThreads, 0, stream>>>(args, static_cast<const u64*>(indices), n, header);
  } else {
    emit_kernel<u32>
        <<<grid, kThreads, 0, stream>>>(args, static_cast<const u32*>(indices), n, header);
  }
  DGS_CUDA_LAUNCHED("emit_kernel", "capacity " + std::to_string(capacity));
}

void launch_emit_blocks(const EmitArgs& args, const SegmentInfo* segments,
                        std::uint32_t segment_count, std::uint64_t capacity, std::uint64_t seed,
                        std::uint64_t step, cudaStream_t stream) {
  emit_blocks_kernel<<<grid_for(capacity, kThreads * 4), kThreads, 0, stream>>>(
      args, segments, segment_count, capacity, seed, step);
  DGS_CUDA_LAUNCHED("emit_blocks_kernel", "capacity " + std::to_string(capacity));
}

void launch_write_header(const MessageHeader& header, unsigned char* message,
                         const std::uint64_t* count, cudaStream_t stream) {
  write_header_kernel<<<1, 64, 0, stream>>>(header, message, reinterpret_cast<const u64*>(count));
  DGS_CUDA_LAUNCHED("write_header_kernel", count != nullptr
                                               ? std::string("count from the device")
                                               : "count " + std::to_string(header.count));
}

void launch_apply_reply(unsigned char* reply, const MessageLayout& layout, float* weights,
                        bool record_change, cudaStream_t stream) {
  const unsigned grid = grid_for(layout.capacity, kThreads * 4);
  const std::string sizes = "capacity " + std::to_string(layout.capacity);
  if (layout.payload == PayloadLayout::dense) {
    apply_dense_reply_kernel<<<grid, kThreads, 0, stream>>>(reply, layout, weights, record_change);
    DGS_CUDA_LAUNCHED("apply_dense_reply_kernel", sizes);
  } else {
    apply_sparse_reply_kernel<<<grid, kThreads, 0, stream>>>(reply, layout, weights);
    DGS_CUDA_LAUNCHED("apply_sparse_reply_kernel", sizes);
  }
}

void launch_fold(const unsigned char* reply, const MessageLayout& layout, float beta,
                 float* residual, cudaStream_t stream) {
  fold_kernel<<<grid_for(layout.capacity, kThreads * 4), kThreads, 0, stream>>>(reply, layout, beta,
                                                                                residual);
  DGS_CUDA_LAUNCHED("fold_kernel", "capacity " + std::to_string(layout.capacity));
}

void launch_evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                             std::uint64_t p, cudaStream_t stream) {
  evaluation_point_kernel<<<grid_for(p, kThreads * 4), kThreads, 0, stream>>>(weights, residual,
                                                                              lambda, x, p);
  DGS_CUDA_LAUNCHED("evaluation_point_kernel", sizes(p));
}

}  // namespace dgs::cuda
