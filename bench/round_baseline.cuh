// The sync round as the server applied it before sparse_round_kernel (and
// still does for dense and rbgs pushes), for the sync_round benchmark's
// baseline: an accumulator of P floats zeroed, every push added into it in
// order, then W -= acc * (1/K) over all P coordinates.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dgs/message.h"

namespace dgs::bench {

/// `pushes`: `count` device pointers to validated index-list pushes of
/// `layout`; `accumulator`: P floats of scratch.
void accumulator_round(const void* const* pushes, std::uint32_t count, const MessageLayout& layout,
                       float* accumulator, float* model, cudaStream_t stream);

}  // namespace dgs::bench
