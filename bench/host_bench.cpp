// Speed of the host reference (the CI backend and the GPU tests' oracle):
// exact segmented top-k and a whole worker step on the CPU.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "dgs/dgs.h"
#include "kernels/select_host.h"
#include "kernels/worker_host.h"

namespace {

std::vector<float> normal(std::size_t n) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void BM_HostTopk(benchmark::State& state) {
  const auto p = static_cast<std::uint64_t>(state.range(0));
  const dgs::Segments segments({p / 2, p / 4, p - p / 2 - p / 4});
  const dgs::SelectionPlan plan =
      dgs::make_plan(segments, dgs::Compressor::topk, dgs::encode_ratio(0.01), 0, 1.0);
  const std::vector<float> x = normal(p);
  std::vector<std::uint64_t> out(plan.total_capacity());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        dgs::host::select(x.data(), segments, plan, 0, 0, 1024, out.data(), nullptr));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * p * 4));
}
BENCHMARK(BM_HostTopk)->Arg(1 << 20)->Arg(1 << 24)->Unit(benchmark::kMillisecond);

void BM_HostSamomentumStep(benchmark::State& state) {
  const auto p = static_cast<std::uint64_t>(state.range(0));
  const dgs::Segments segments({p / 2, p - p / 2});
  dgs::Config config;
  config.ratio = 0.01;
  const dgs::MessageLayout layout = dgs::push_layout(segments, config);
  const dgs::SelectionPlan plan = dgs::push_plan(segments, config, dgs::encode_ratio(0.01));
  const std::vector<float> g = normal(p);
  std::vector<float> u(p, 0.0f);
  std::vector<std::uint32_t> mask(dgs::host::mask_words(p), 0);
  std::vector<unsigned char> message(layout.bytes);
  dgs::host::Scratch scratch;
  dgs::host::StepParams params;
  params.lr = 0.01f;
  params.momentum = 0.9f;
  dgs::host::WorkerState s{nullptr, u.data(), nullptr, mask.data()};
  for (auto _ : state) {
    dgs::host::worker_step(params, segments, plan, g.data(), nullptr, s, message.data(), layout,
                           scratch);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * p * 16));
}
BENCHMARK(BM_HostSamomentumStep)->Arg(1 << 20)->Arg(1 << 24)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
