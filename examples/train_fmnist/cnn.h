// The demo's GPU model: two 5x5 convolutions (cuDNN) with ReLU and 2x2 max
// pooling, then 1568 -> 128 -> 10 dense layers (cuBLAS), softmax cross-entropy.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "model.h"

namespace fmnist {

/// A CNN working on `stream`; parameters and gradients in device memory. The
/// data set is copied to the device once per process and shared.
std::unique_ptr<Model> make_cnn(const Dataset& data, cudaStream_t stream);

}  // namespace fmnist
