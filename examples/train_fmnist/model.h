// The models the demo trains: a small MLP in plain C++ (host backend) and a
// small CNN with cuDNN and cuBLAS (cuda backend). Parameters and gradients
// live in the backend's memory; one Model object per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dgs/segments.h"
#include "idx.h"

namespace fmnist {

class Model {
 public:
  virtual ~Model() = default;
  /// The parameter tensors, in the order of the flat parameter vector.
  virtual dgs::Segments segments() const = 0;
  /// Writes initial parameters (deterministic in `seed`) to host memory.
  virtual void initialize(std::vector<float>& params, std::uint64_t seed) const = 0;
  /// Mean cross-entropy gradient of the training samples `ids` at `params`,
  /// written to `grad` (asynchronously on the model's stream for the CNN).
  virtual void gradient(const float* params, const std::vector<int>& ids, float* grad) = 0;
  /// Sum of the batch-mean losses since the last call, and how many batches.
  virtual double take_loss(std::uint64_t& batches) = 0;
  /// Test-set accuracy and mean loss of `params`.
  virtual void evaluate(const float* params, double& accuracy, double& loss) = 0;
};

/// 784 -> 128 (ReLU) -> 10, on the host.
std::unique_ptr<Model> make_mlp(const Dataset& data);

}  // namespace fmnist
