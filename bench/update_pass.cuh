// The worker's fused update pass on its own (samomentum), for the
// update_pass benchmarks (bench/update_pass.cu): the pass as a step runs it,
// the same pass without its selection work, and a plain streaming kernel
// that moves the same bytes and computes the same values. A diagnostic of
// where the pass loses to the copy bandwidth; worker_step times whole steps.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "dgs/segments.h"

namespace dgs::bench {

enum class UpdateVariant {
  streaming,  // one float4 per thread and iteration, grid-stride, no tiles
  plain,      // the fused pass (tiles, every item's loads in flight) without selection work
  fused,      // the fused pass with the selection work a worker step gives it
};

const char* to_string(UpdateVariant variant);

class UpdatePass {
 public:
  /// A samomentum worker over `segments` keeping `ratio` (the fused variant's
  /// selection plan; the others select nothing).
  UpdatePass(const Segments& segments, double ratio, UpdateVariant variant);
  ~UpdatePass();
  UpdatePass(const UpdatePass&) = delete;
  UpdatePass& operator=(const UpdatePass&) = delete;

  /// Untimed, before each timed pass: zeroes what the fused pass accumulates.
  void prepare(cudaStream_t stream);
  /// The timed part: u = fmaf(c, u, lr * g), c = m where the mask is set,
  /// else 1 (and, fused, the selection work).
  void run(const float* grad, float* u, const std::uint32_t* mask, float lr, float m,
           cudaStream_t stream);
  /// Untimed, after each timed pass: the fused variant's selection over u, so
  /// the next pass starts from a step's state (its collection hints).
  void settle(const float* u, cudaStream_t stream);

  /// Bytes a pass must move: read g and u, write u, read the mask.
  static double bytes(std::uint64_t p) { return 12.0 * static_cast<double>(p) + p / 8.0; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgs::bench
