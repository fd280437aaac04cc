// dgs::Config: everything that decides what a worker pushes and how the
// server answers. One Config is shared by the server and all its workers;
// the server rejects pushes that disagree with it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dgs {

/// Worker update rule (DESIGN.md section 3).
enum class Method : std::uint8_t {
  dense = 0,       ///< ASGD: push eta * g', no compression; the server replies densely
  gd = 1,          ///< gradient dropping with error feedback
  dgc = 2,         ///< deep gradient compression: momentum correction (+ factor masking)
  samomentum = 3,  ///< DGS sparsification-aware momentum (division-free form)
  gmc = 4,         ///< global momentum compression
  gmc_plus = 5,    ///< gmc with detached error feedback (evaluation point w - lambda * e)
};

/// Selection of the coordinates a message carries (DESIGN.md section 2).
enum class Compressor : std::uint8_t {
  topk = 0,       ///< exact top-|x| per segment, ties to the lower index
  threshold = 1,  ///< |x| >= an estimated threshold, clamped to the segment capacity
  randk = 2,      ///< k uniformly random coordinates per segment, shared by all workers
  rbgs = 3,       ///< one random contiguous block per segment; no indices on the wire
};

/// Asynchronous (each push answered at once) or synchronous (BSP rounds).
enum class Mode : std::uint8_t { async = 0, sync = 1 };

/// Value encoding on the wire. Narrow types round to nearest even and saturate
/// at the largest finite value; gd and gmc keep the rounding error in their
/// residual, the other methods lose it (see docs/methods.md).
enum class WireValue : std::uint8_t { f32 = 0, bf16 = 1, f16 = 2 };

/// How the keep ratio changes over training (DESIGN.md section 3, options).
enum class RatioSchedule : std::uint8_t {
  constant = 0,         ///< ratio every step
  lr_proportional = 1,  ///< ratio * lr_t / lr_first, never above ratio (DGS reference);
                        ///< lr_first is the first positive lr (ratio until there is one)
  warmup = 2,           ///< warmup_ratios[i] for warmup_steps steps each, then ratio (DGC)
};

struct Config {
  Method method = Method::samomentum;
  Compressor compressor = Compressor::topk;
  Mode mode = Mode::async;

  /// Number of workers the server serves; their sender ids are 0..workers-1.
  std::uint32_t workers = 1;

  /// Keep ratio rho of a push, in (0, 1]: segment l carries max(1, floor(rho * n_l)).
  double ratio = 0.01;
  /// Keep ratio rho_s of a sparse reply, in (0, 1]; 0 means "same as ratio".
  double server_ratio = 0.0;

  /// Momentum m (dgc, samomentum) or beta (gmc, gmc+), in [0, 1).
  float momentum = 0.9f;
  /// Weight decay wd >= 0, folded into the gradient first: g' = g + wd * w.
  float weight_decay = 0.0f;
  /// Local gradient clipping (DGC), every method: a worker scales its
  /// gradient by min(1, clip_norm / ||g||_2) before weight decay is folded
  /// in. DGC takes the global threshold times workers^(-1/2). 0 = off; else
  /// finite and > 0. Costs one more read of g per step.
  float clip_norm = 0.0f;
  /// dgc: also clear the momentum of sent coordinates (on by default, as DGC does).
  bool factor_masking = true;
  /// gmc+: the gradient is evaluated at w - gmc_lambda * e; in [0, 1].
  float gmc_lambda = 0.3f;

  /// Seed of every random choice (randk, rbgs, threshold sampling). All
  /// workers of a job must share it; choices depend on (seed, step, segment).
  std::uint64_t seed = 0;

  /// Segments with fewer elements than this are always sent whole (biases,
  /// norms). 0 sends every segment sparsely.
  std::uint64_t dense_below = 0;
  /// Select over the whole model as one segment instead of per tensor
  /// (then dense_below must be 0).
  bool global_selection = false;

  /// threshold: a segment may carry up to ceil(threshold_capacity * k_l)
  /// entries; in [1, 1024]. Larger values waste wire bytes, smaller ones
  /// clamp more.
  double threshold_capacity = 1.25;
  /// threshold: number of sampled coordinates per segment for the estimate,
  /// in [16, 65536]. Segments no larger than this are read whole.
  std::uint32_t threshold_sample = 1024;

  RatioSchedule schedule = RatioSchedule::constant;
  /// warmup: the ratios of the warm-up stages, each in (0, 1], e.g.
  /// {0.25, 0.0625, 0.0156, 0.004}.
  std::vector<double> warmup_ratios;
  /// warmup: steps per warm-up stage (>= 1), typically one epoch.
  std::uint64_t warmup_steps = 0;

  WireValue wire_values = WireValue::f32;

  /// Throws dgs::Error (ErrorCode::invalid_config) naming the first field
  /// that is out of range.
  void validate() const;

  /// Largest push ratio any step can use; push buffers are sized for it.
  double max_ratio() const;
  /// The reply ratio actually used (server_ratio, or ratio when it is 0).
  double reply_ratio() const;
  /// Push ratio of a step. lr is that step's learning rate and first_lr the
  /// learning rate of the worker's first step (lr_proportional only).
  double ratio_at(std::uint64_t step, float lr, float first_lr) const;
};

const char* to_string(Method method) noexcept;
const char* to_string(Compressor compressor) noexcept;
const char* to_string(Mode mode) noexcept;
const char* to_string(WireValue value) noexcept;
const char* to_string(RatioSchedule schedule) noexcept;

/// Parse the names printed by to_string ("samomentum", "gmc+", "topk", ...).
/// Throw dgs::Error (invalid_argument) listing the accepted names.
Method parse_method(std::string_view name);
Compressor parse_compressor(std::string_view name);
Mode parse_mode(std::string_view name);
WireValue parse_wire_value(std::string_view name);

/// True for the methods that keep what they did not send in a residual
/// (gd, gmc, gmc+): their wire rounding error is fed back, not lost.
bool has_error_feedback(Method method) noexcept;

}  // namespace dgs
