// Launchers of the worker and server kernels (kernels/worker.cu,
// kernels/server.cu). Each takes raw device pointers, sizes and a stream,
// allocates nothing, and checks its launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dgs/config.h"
#include "dgs/message.h"
#include "kernels/device.cuh"
#include "kernels/select.cuh"

namespace dgs::cuda {

struct UpdateArgs {
  Method method = Method::samomentum;
  const float* grad = nullptr;
  const float* weights = nullptr;  // read only when weight_decay != 0
  float lr = 0.0f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  /// Clipping: the device scalar g is multiplied by (launch_clip_scale); null: none.
  const float* clip_scale = nullptr;
  float* residual = nullptr;
  float* momentum_buffer = nullptr;
  float* accumulator = nullptr;
  /// The state selection reads (one of the above; selected_from): where a
  /// capturing histogram reads the captured keys back.
  const float* selected = nullptr;
  const std::uint32_t* mask = nullptr;
};

/// The fused pass: fold g' into the method state (every coordinate, once);
/// with an active FusedHistogram also histogram digit 0 of the large segments.
/// Bytes: read g (and w with weight decay), read and write the state.
/// `multiprocessors`: the device's (the grid is as wide as it holds at once).
void launch_update(const UpdateArgs& args, const Tile* tiles, std::uint32_t tile_count,
                   const SegmentInfo* segments, const FusedHistogram& histogram,
                   int multiprocessors, cudaStream_t stream);

/// Local gradient clipping: writes detail::clip_scale(||g||^2, clip_norm) to
/// the device float `scale`, the squared norm summed in numeric.h's order.
/// `chunk_sums` holds ceil(p / detail::kNormChunk) doubles. Bytes: read g.
void launch_clip_scale(const float* grad, std::uint64_t p, float clip_norm, double* chunk_sums,
                       float* scale, cudaStream_t stream);

/// Method::dense: s = lr * g' straight into a dense message's values.
void launch_dense_push(const UpdateArgs& args, std::uint64_t p, unsigned char* message,
                       const MessageLayout& layout, cudaStream_t stream);

struct EmitArgs {
  Method method = Method::samomentum;
  float lr = 0.0f;
  bool factor_masking = true;
  float* residual = nullptr;
  float* momentum_buffer = nullptr;
  float* accumulator = nullptr;
  const float* sent = nullptr;  ///< the state the entries are sent from (one of the above)
  std::uint32_t* mask = nullptr;
  unsigned char* message = nullptr;
  MessageLayout layout;
};

/// Writes the selected entries (sorted indices, device count) into the push,
/// updates the state of the sent coordinates, and writes `header` with that
/// count (no launch of its own).
void launch_emit(const EmitArgs& args, const void* indices, const std::uint64_t* count,
                 std::uint64_t capacity, const MessageHeader& header, cudaStream_t stream);

/// rbgs: block entries computed from (seed, step, segment), and the block starts.
void launch_emit_blocks(const EmitArgs& args, const SegmentInfo* segments,
                        std::uint32_t segment_count, std::uint64_t capacity, std::uint64_t seed,
                        std::uint64_t step, cudaStream_t stream);

/// Writes a header prepared on the host; `count`, when given, is read on the device.
void launch_write_header(const MessageHeader& header, unsigned char* message,
                         const std::uint64_t* count, cudaStream_t stream);

/// Worker side of a reply: sparse w += d; dense w = W (recording d = W - w_old
/// in the message when asked).
void launch_apply_reply(unsigned char* reply, const MessageLayout& layout, float* weights,
                        bool record_change, cudaStream_t stream);
/// e = fmaf(-beta, d, e) over a reply's entries.
void launch_fold(const unsigned char* reply, const MessageLayout& layout, float beta,
                 float* residual, cudaStream_t stream);
/// x = fmaf(-lambda, e, w).
void launch_evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                             std::uint64_t p, cudaStream_t stream);

// --- Server ----------------------------------------------------------------

/// Result of the entry checks: the lowest failing index slot (slot << 8 |
/// reason) and the lowest non-finite value slot; ~0 when none.
struct EntryCheck {
  unsigned long long index_failure;
  unsigned long long value_failure;
};

/// Checks a push's index and value regions: the result is the message's
/// verdict when its header passes and `segments` is the plan at its ratio
/// (fixed-count checks and block starts) or null for a dense payload. Reads
/// at most `layout.capacity` entries whatever the header's count, so it may
/// run before the header is known.
void launch_check_entries(const unsigned char* message, const MessageLayout& layout,
                          const SegmentInfo* segments, std::uint32_t segment_count,
                          bool fixed_count, EntryCheck* result, cudaStream_t stream);

/// W -= s (sign = -1) or acc += s (sign = +1) over a push's entries.
void launch_apply_push(const unsigned char* message, const MessageLayout& layout,
                       const SegmentInfo* segments, std::uint32_t segment_count, float* target,
                       bool accumulate, cudaStream_t stream);

/// W = W - acc * inverse.
void launch_average(const float* accumulator, float inverse, float* model, std::uint64_t p,
                    cudaStream_t stream);

/// Coordinates per tile of the sync round's sums (in shared memory).
constexpr std::uint32_t kRoundTile = 8192;

/// The blocks a sync round of index-list pushes runs on (as many as the
/// device holds at once); it needs `blocks * count` u64 of cursor scratch.
unsigned sparse_round_grid(int multiprocessors);

/// A sync round of pushes with sorted index lists (a sparse payload):
/// W_i -= (s_1,i + ... + s_count,i, summed from 0 in the order given) *
/// inverse, writing only the coordinates the pushes name whose sum is not
/// zero (the others would keep their bits). `pushes`: a device
/// array of `count` device pointers to validated messages.
void launch_sparse_round(const unsigned char* const* pushes, std::uint32_t count,
                         const MessageLayout& layout, float inverse, float* model,
                         std::uint64_t* cursors, unsigned blocks, cudaStream_t stream);

/// The same round for dense pushes: one pass over W and the pushes.
void launch_dense_round(const unsigned char* const* pushes, std::uint32_t count,
                        const MessageLayout& layout, float inverse, float* model,
                        cudaStream_t stream);

/// The sparse reply's entries: d = q(W - R) at the selected indices, R += d;
/// and its `header`, prepared on the host (no launch of its own).
void launch_emit_reply(const float* model, float* replica, const void* indices, std::uint64_t count,
                       unsigned char* reply, const MessageLayout& layout,
                       const MessageHeader& header, cudaStream_t stream);

}  // namespace dgs::cuda
