// See update_pass.cuh.
#include "update_pass.cuh"

#include <algorithm>
#include <string>

#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "kernels/cuda_check.h"
#include "kernels/kernels.cuh"
#include "kernels/select.cuh"

namespace dgs::bench {
namespace {

using cuda::u32;
using cuda::u64;

__device__ __forceinline__ float momentum_update(float u, float g, bool sent, float lr, float m) {
  return __fmaf_rn(sent ? m : 1.0f, u, __fmul_rn(lr, g));
}

// Four coordinates per thread and iteration: a quad lies in one mask word.
__global__ void streaming_update_kernel(const float4* g, float4* u, const u32* mask, u64 quads,
                                        float lr, float m) {
  for (u64 q = blockIdx.x * static_cast<u64>(blockDim.x) + threadIdx.x; q < quads;
       q += static_cast<u64>(gridDim.x) * blockDim.x) {
    const float4 gv = g[q];
    float4 uv = u[q];
    const u32 bits = mask[q >> 3] >> ((q & 7u) * 4u);
    uv.x = momentum_update(uv.x, gv.x, bits & 1u, lr, m);
    uv.y = momentum_update(uv.y, gv.y, bits & 2u, lr, m);
    uv.z = momentum_update(uv.z, gv.z, bits & 4u, lr, m);
    uv.w = momentum_update(uv.w, gv.w, bits & 8u, lr, m);
    u[q] = uv;
  }
}

__global__ void streaming_tail_kernel(const float* g, float* u, const u32* mask, u64 begin, u64 p,
                                      float lr, float m) {
  const u64 i = begin + threadIdx.x;
  if (i < p) u[i] = momentum_update(u[i], g[i], (mask[i >> 5] >> (i & 31)) & 1u, lr, m);
}

Config samomentum(double ratio) {
  Config c;
  c.method = Method::samomentum;
  c.ratio = ratio;
  c.momentum = 0.9f;
  return c;
}

}  // namespace

const char* to_string(UpdateVariant variant) {
  switch (variant) {
    case UpdateVariant::streaming:
      return "streaming";
    case UpdateVariant::plain:
      return "plain";
    case UpdateVariant::fused:
      return "fused";
  }
  return "?";
}

struct UpdatePass::Impl {
  Impl(const Segments& s, double ratio, UpdateVariant v)
      : segments(s),
        variant(v),
        plan(push_plan(s, samomentum(ratio), encode_ratio(ratio))),
        selector(s, plan.total_capacity(), push_layout(s, samomentum(ratio)).index_type,
                 plan.compressor) {
    selector.set_plan(plan, samomentum(ratio).threshold_sample);
    int device = 0;
    DGS_CUDA_TRY(cudaGetDevice(&device));
    DGS_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  }
  Segments segments;
  UpdateVariant variant;
  SelectionPlan plan;
  cuda::Selector selector;
  int sms = 1;
};

UpdatePass::UpdatePass(const Segments& segments, double ratio, UpdateVariant variant)
    : impl_(std::make_unique<Impl>(segments, ratio, variant)) {}

UpdatePass::~UpdatePass() = default;

void UpdatePass::prepare(cudaStream_t stream) {
  if (impl_->variant == UpdateVariant::fused && impl_->selector.fused_histogram().active) {
    impl_->selector.begin(stream);
  }
}

void UpdatePass::run(const float* grad, float* u, const std::uint32_t* mask, float lr, float m,
                     cudaStream_t stream) {
  const std::uint64_t p = impl_->segments.total();
  if (impl_->variant == UpdateVariant::streaming) {
    const u64 quads = p / 4;
    const unsigned blocks = static_cast<unsigned>(
        std::max<u64>(1, std::min<u64>((quads + 255) / 256, static_cast<u64>(impl_->sms) * 8)));
    streaming_update_kernel<<<blocks, 256, 0, stream>>>(
        reinterpret_cast<const float4*>(grad), reinterpret_cast<float4*>(u), mask, quads, lr, m);
    DGS_CUDA_LAUNCHED("streaming_update_kernel", "quads " + std::to_string(quads));
    if (p % 4 != 0) {
      streaming_tail_kernel<<<1, 4, 0, stream>>>(grad, u, mask, quads * 4, p, lr, m);
      DGS_CUDA_LAUNCHED("streaming_tail_kernel", "from " + std::to_string(quads * 4));
    }
    return;
  }
  cuda::UpdateArgs a;
  a.method = Method::samomentum;
  a.grad = grad;
  a.lr = lr;
  a.momentum = m;
  a.momentum_buffer = u;
  a.selected = u;
  a.mask = mask;
  const cuda::FusedHistogram fused = impl_->variant == UpdateVariant::fused
                                         ? impl_->selector.fused_histogram()
                                         : cuda::FusedHistogram{};
  cuda::launch_update(a, impl_->selector.all_tiles(), impl_->selector.all_tile_count(),
                      impl_->selector.segment_table(), fused, impl_->selector.multiprocessors(),
                      stream);
}

void UpdatePass::settle(const float* u, cudaStream_t stream) {
  if (impl_->variant != UpdateVariant::fused) return;
  cuda::KeySource keys;
  keys.kind = cuda::KeySource::Kind::values;
  keys.x = u;
  impl_->selector.run(keys, impl_->selector.fused_histogram().active, stream);
}

}  // namespace dgs::bench
