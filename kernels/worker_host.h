// Host reference of the worker step (DESIGN.md section 3) and of applying a
// server reply. The CUDA kernels are tested against these bit for bit.
//
// Rounding is part of the specification (DESIGN.md section 9). With
// g' = fmaf(wd, w, g) when wd != 0 (else g), and every other a*b + c rounded
// twice unless written fmaf:
//   dense       s = lr * g'
//   gd          r = r + lr * g'                      select on r; s = r_S; r_S -= s
//   dgc         u = fmaf(m, u, g'); v = v + u        select on v; s = lr * v_S; v_S = 0;
//                                                    u_S = 0 with factor masking
//   samomentum  u = fmaf(c, u, lr * g'), c = m on the previous step's selection,
//               1 elsewhere                          select on u; s = u_S; mask = S
//   gmc, gmc+   e = e + lr * g'                      select on e; s = e_S; e_S -= s
// where "-= s" subtracts the value as it went on the wire (0 for float32; the
// rounding error for bf16/f16 stays in the residual). gmc's momentum term
// beta * (w_prev - w) is folded into e before the step by
// fold_global_momentum, from the last reply the worker applied.
#pragma once

#include <cstdint>
#include <vector>

#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "kernels/select_host.h"

namespace dgs::host {

/// A worker's method state; only the arrays its method uses are set.
struct WorkerState {
  float* residual = nullptr;      ///< gd: r; gmc, gmc+: e (P values)
  float* momentum = nullptr;      ///< dgc, samomentum: u (P values)
  float* accumulator = nullptr;   ///< dgc: v (P values)
  std::uint32_t* mask = nullptr;  ///< samomentum: previous selection, bit i%32 of word i/32
};

/// Number of 32-bit words of a samomentum mask for P coordinates.
inline std::uint64_t mask_words(std::uint64_t p) {
  return (p + 31) / 32;
}

struct StepParams {
  Method method = Method::samomentum;
  float lr = 0.0f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  float clip_norm = 0.0f;  ///< 0: no clipping (Config::clip_norm)
  bool factor_masking = true;
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  std::uint64_t model_version = 0;  ///< version of the worker's model, for the header
  std::uint32_t sender = 0;
  std::uint32_t threshold_sample = 1024;
};

/// Buffers the host step reuses; they grow once and are then kept.
struct Scratch {
  std::vector<std::uint64_t> indices;
  std::vector<float> values;
  std::vector<double> norm_chunks;  ///< clipping: a squared norm per chunk
};

/// The squared L2 norm of g[0, p), summed in double in the fixed order of
/// detail::kNormChunk (numeric.h), which the GPU's norm kernels follow.
double squared_norm(const float* g, std::uint64_t p, std::vector<double>& chunk_sums);

/// The header of a push (compressor, count and ratio_code left for the caller).
MessageHeader make_push_header(const StepParams& params, const MessageLayout& layout);

/// One worker step: fold the gradient into the method state, select, and
/// write the push into `message` (a buffer of layout.bytes with `layout`;
/// dense layout for Method::dense). `segments` are the selection segments and
/// `plan` the push plan at this step's ratio (both unused by Method::dense).
/// `weights` is read only when weight_decay != 0.
SelectionStats worker_step(const StepParams& params, const Segments& segments,
                           const SelectionPlan& plan, const float* grad, const float* weights,
                           const WorkerState& state, void* message, const MessageLayout& layout,
                           Scratch& scratch);

/// Applies a server reply to the worker's model: sparse, w[i] += d_i (in
/// float32, exactly as the server updated its replica); dense, w = W. With
/// record_change a dense reply's values are overwritten with d = W - w_old,
/// so fold_global_momentum can read the change afterwards.
void apply_reply(void* reply, const MessageLayout& layout, float* weights, bool record_change);

/// gmc: e[i] = fmaf(-beta, d_i, e[i]) over the entries d of the last applied
/// reply, i.e. e += beta * (w_prev - w). Sparse in sync mode: no dense pass.
void fold_global_momentum(const void* reply, const MessageLayout& layout, float beta,
                          float* residual);

/// gmc+: x = fmaf(-lambda, e, w), the point the gradient is evaluated at.
void evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                      std::uint64_t p);

}  // namespace dgs::host
