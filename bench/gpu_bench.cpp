// GPU microbenchmarks: the worker step and the server push against their byte
// floors (DESIGN.md section 8) and against the CUB-only baseline, all measured
// in one run with the device-to-device copy bandwidth they are compared to.
//
//   dgs_bench_gpu --benchmark_out=gpu.json --benchmark_out_format=json
//                 [--shapes=bench/shapes] [--max-p=1500000000] [--repetitions=10] [--quick]
//
// Times come from CUDA events around each iteration (manual time); every
// benchmark repeats and reports the median. Counted bytes: worker step 16 B
// per parameter (read g, read and write the state, one selection read);
// server push 8 B per parameter (read W and R) plus the push and reply.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cub_baseline.cuh"
#include "dgs/dgs.h"
#include "fill.cuh"
#include "kernels/server_host.h"
#include "round_baseline.cuh"
#include "runtime/backend.h"
#include "update_pass.cuh"

namespace {

using namespace dgs;

std::string g_shapes_dir = "bench/shapes";
std::uint64_t g_max_p = 1500000000ull;
bool g_quick = false;
int g_repetitions = 10;
double g_copy_bandwidth = 0.0;  // bytes/s, read + write

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

std::vector<std::uint64_t> tensor_sizes(const std::string& shape) {
  std::ifstream in(g_shapes_dir + "/" + shape + "_tensors.tsv");
  if (!in) {
    std::fprintf(stderr, "cannot read %s/%s_tensors.tsv (pass --shapes=DIR)\n",
                 g_shapes_dir.c_str(), shape.c_str());
    std::exit(1);
  }
  std::vector<std::uint64_t> sizes;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    std::uint64_t n = 0;
    fields >> name >> n;
    if (n > 0) sizes.push_back(n);
  }
  return sizes;
}

// The tensor list repeated until it covers P, the last tensor cut to fit.
Segments segments_for(const std::string& shape, std::uint64_t p) {
  if (shape == "flat") return Segments::single(p);
  const std::vector<std::uint64_t> base = tensor_sizes(shape);
  std::vector<std::uint64_t> sizes;
  std::uint64_t total = 0;
  for (std::size_t i = 0; total < p; i = (i + 1) % base.size()) {
    const std::uint64_t n = std::min(base[i], p - total);
    sizes.push_back(n);
    total += n;
  }
  return Segments(sizes);
}

// Device memory filled with normal random values, drawn on the device.
float* random_device(std::uint64_t n, std::uint64_t seed) {
  float* d = nullptr;
  check(cudaMalloc(&d, std::max<std::uint64_t>(1, n) * sizeof(float)), "cudaMalloc");
  check(bench::fill_normal(d, n, seed), "fill_normal");
  return d;
}

bool fits(std::uint64_t bytes) {
  std::size_t free_bytes = 0, total = 0;
  cudaMemGetInfo(&free_bytes, &total);
  return bytes < free_bytes * 0.85;
}

class Timer {
 public:
  Timer() {
    cudaEventCreate(&start_);
    cudaEventCreate(&stop_);
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  void start(cudaStream_t s) { cudaEventRecord(start_, s); }
  double stop(cudaStream_t s) {
    cudaEventRecord(stop_, s);
    check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start_, stop_);
    return ms / 1000.0;
  }

 private:
  cudaEvent_t start_, stop_;
};

void report(benchmark::State& state, double floor_bytes, std::uint64_t p) {
  state.counters["P"] = static_cast<double>(p);
  state.counters["bytes_per_iter"] = floor_bytes;
  state.counters["GB/s"] =
      benchmark::Counter(floor_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["copy_GB/s"] = g_copy_bandwidth * 1e-9;
  state.counters["floor_s"] = floor_bytes / g_copy_bandwidth;
}

void BM_CopyBandwidth(benchmark::State& state) {
  const std::size_t bytes = std::size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  Timer timer;
  for (auto _ : state) {
    timer.start(nullptr);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr);
    state.SetIterationTime(timer.stop(nullptr));
  }
  state.counters["GB/s"] =
      benchmark::Counter(2.0 * bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  cudaFree(a);
  cudaFree(b);
}

// The share of large segments whose selection read the histogram pass's
// capture instead of the data (kernels/select.cuh), and the share histogrammed
// a second time because too few reached their guess, over the timed steps.
struct CaptureTally {
  std::uint64_t used = 0, missed = 0, segments = 0;
  void add(const host::CaptureUse& c) {
    used += c.used;
    missed += c.missed;
    segments += c.segments;
  }
  void report(benchmark::State& state) const {
    if (segments == 0) return;
    state.counters["captured"] = static_cast<double>(used) / segments;
    state.counters["missed"] = static_cast<double>(missed) / segments;
  }
};

void BM_WorkerStep(benchmark::State& state, std::string shape, std::uint64_t p, double ratio,
                   Method method) {
  const std::uint64_t need = p * 4 * 6 + p * 8;  // g, w, state (2), lists, indices
  if (!fits(need)) {
    state.SkipWithError("not enough device memory");
    return;
  }
  Config config;
  config.method = method;
  config.ratio = ratio;
  config.momentum = 0.9f;
  const Segments model = segments_for(shape, p);
  const MessageLayout layout = push_layout(model, config);
  auto backend = make_backend(BackendKind::cuda);
  auto kernels = backend->worker_kernels(model, layout, config);
  kernels->set_plan(push_plan(model, config, encode_ratio(ratio)), nullptr);
  float* grad = random_device(p, 1);
  float *a = random_device(p, 2), *b = method == Method::dgc ? random_device(p, 3) : nullptr;
  std::uint32_t* mask = nullptr;
  check(cudaMalloc(&mask, (p + 31) / 32 * 4), "cudaMalloc");
  check(cudaMemset(mask, 0, (p + 31) / 32 * 4), "cudaMemset");
  void* message = nullptr;
  check(cudaMalloc(&message, layout.bytes), "cudaMalloc");
  host::WorkerState s;
  if (method == Method::samomentum) {
    s.momentum = a;
    s.mask = mask;
  } else if (method == Method::dgc) {
    s.momentum = a;
    s.accumulator = b;
  } else {
    s.residual = a;
  }
  host::StepParams params;
  params.method = method;
  params.lr = 0.01f;
  params.momentum = 0.9f;
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  Timer timer;
  for (int warm = 0; warm < 3; ++warm) kernels->step(params, grad, nullptr, s, message, stream);
  CaptureTally captures;
  for (auto _ : state) {
    timer.start(stream);
    kernels->step(params, grad, nullptr, s, message, stream);
    state.SetIterationTime(timer.stop(stream));
    captures.add(kernels->last_capture_use(stream));  // after the timed part
    ++params.step;
  }
  // The byte floor (DESIGN.md §8): read g, read and write the state, one
  // selection read of what is selected from: 16 B per parameter; dgc has two
  // state vectors (u and v), 24 B.
  report(state, (method == Method::dgc ? 24.0 : 16.0) * p, p);
  state.counters["segments"] = static_cast<double>(model.count());
  captures.report(state);
  cudaStreamDestroy(stream);
  for (void* ptr : {static_cast<void*>(grad), static_cast<void*>(a), static_cast<void*>(b),
                    static_cast<void*>(mask), message}) {
    cudaFree(ptr);
  }
}

// The worker's update pass alone (bench/update_pass.cuh), timed against the
// bytes it must move. Between passes, untimed, the fused variant runs the
// selection a step would, so each pass starts from a step's state.
void BM_UpdatePass(benchmark::State& state, std::string shape, std::uint64_t p, double ratio,
                   bench::UpdateVariant variant) {
  const Segments model = segments_for(shape, p);
  bench::UpdatePass pass(model, ratio, variant);
  float* grad = random_device(p, 1);
  float* u = random_device(p, 2);
  std::uint32_t* mask = nullptr;
  check(cudaMalloc(&mask, (p + 31) / 32 * 4), "cudaMalloc");
  check(cudaMemset(mask, 0, (p + 31) / 32 * 4), "cudaMemset");
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  Timer timer;
  for (int warm = 0; warm < 3; ++warm) {
    pass.prepare(stream);
    pass.run(grad, u, mask, 0.01f, 0.9f, stream);
    pass.settle(u, stream);
  }
  for (auto _ : state) {
    pass.prepare(stream);
    timer.start(stream);
    pass.run(grad, u, mask, 0.01f, 0.9f, stream);
    state.SetIterationTime(timer.stop(stream));
    pass.settle(u, stream);
  }
  check(cudaStreamSynchronize(stream), "update_pass");
  report(state, bench::UpdatePass::bytes(p), p);
  state.counters["segments"] = static_cast<double>(model.count());
  cudaStreamDestroy(stream);
  for (void* ptr : {static_cast<void*>(grad), static_cast<void*>(u), static_cast<void*>(mask)}) {
    cudaFree(ptr);
  }
}

void BM_CubBaseline(benchmark::State& state, std::string shape, std::uint64_t p, double ratio) {
  if (p >= (std::uint64_t{1} << 31) || !fits(p * 4 * 8)) {
    state.SkipWithError("too large for the CUB baseline here");
    return;
  }
  if (p > 100000000 && shape != "resnet50") {
    state.SkipWithError(
        "CUB baseline skipped: its segmented sort takes seconds per step on few large segments");
    return;
  }
  const Segments model = segments_for(shape, p);
  std::vector<std::uint64_t> k(model.count());
  const std::uint32_t code = encode_ratio(ratio);
  for (std::size_t l = 0; l < model.count(); ++l) k[l] = entries_for(model.size(l), code);
  bench::CubTopk cub(model.sizes(), k);
  float* grad = random_device(p, 1);
  float* u = random_device(p, 2);
  std::uint32_t *mask = nullptr, *indices = nullptr;
  float* values = nullptr;
  check(cudaMalloc(&mask, (p + 31) / 32 * 4), "cudaMalloc");
  check(cudaMemset(mask, 0, (p + 31) / 32 * 4), "cudaMemset");
  check(cudaMalloc(&indices, cub.selected() * 4), "cudaMalloc");
  check(cudaMalloc(&values, cub.selected() * 4), "cudaMalloc");
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  Timer timer;
  for (int warm = 0; warm < 2; ++warm)
    cub.step(grad, u, mask, 0.01f, 0.9f, indices, values, stream);
  for (auto _ : state) {
    timer.start(stream);
    cub.step(grad, u, mask, 0.01f, 0.9f, indices, values, stream);
    state.SetIterationTime(timer.stop(stream));
  }
  report(state, 16.0 * p, p);
  cudaStreamDestroy(stream);
  for (void* ptr : {static_cast<void*>(grad), static_cast<void*>(u), static_cast<void*>(mask),
                    static_cast<void*>(indices), static_cast<void*>(values)}) {
    cudaFree(ptr);
  }
}

void BM_ServerPush(benchmark::State& state, std::string shape, std::uint64_t p, double ratio) {
  if (!fits(p * 4 * 6)) {
    state.SkipWithError("not enough device memory");
    return;
  }
  Config config;
  config.method = Method::gd;
  config.ratio = ratio;
  const Segments model = segments_for(shape, p);
  auto backend = make_backend(BackendKind::cuda);
  auto server = backend->server_kernels(model, config);
  auto worker = backend->worker_kernels(model, push_layout(model, config), config);
  worker->set_plan(push_plan(model, config, encode_ratio(ratio)), nullptr);
  const MessageLayout push = push_layout(model, config);
  const MessageLayout reply = sparse_reply_layout(model, config);
  float* w = random_device(p, 4);
  float* r = random_device(p, 5);
  float* grad = random_device(p, 6);
  float* residual = random_device(p, 7);
  void *push_buffer = nullptr, *reply_buffer = nullptr;
  check(cudaMalloc(&push_buffer, push.bytes), "cudaMalloc");
  check(cudaMalloc(&reply_buffer, reply.bytes), "cudaMalloc");
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  host::StepParams params;
  params.method = Method::gd;
  params.lr = 0.01f;
  host::WorkerState s;
  s.residual = residual;
  worker->step(params, grad, nullptr, s, push_buffer, stream);  // one realistic push
  Timer timer;
  host::ReplyInfo info;
  MessageHeader header = blank_header();
  // One push: validate, apply, reply; false (the benchmark skipped) when the
  // push is refused.
  auto push_once = [&] {
    const Verdict v = server->validate(push_buffer, push.bytes, header, stream);
    if (!v.ok()) {
      state.SkipWithError(v.describe(0).c_str());
      return false;
    }
    server->apply(push_buffer, header, w, stream);
    server->sparse_reply(w, r, info, reply_buffer, stream);
    return true;
  };
  // Warm-up, as the worker step has: the first push builds the validation's
  // segment table, and the first reply has no capture guess yet.
  bool ok = push_once() && push_once() && push_once();
  CaptureTally captures;
  for (auto _ : state) {
    if (!ok) break;
    timer.start(stream);
    ok = push_once();
    state.SetIterationTime(timer.stop(stream));
    captures.add(server->last_capture_use(stream));  // after the timed part
  }
  report(state, 8.0 * p + push.bytes + reply.bytes, p);
  state.counters["segments"] = static_cast<double>(model.count());
  captures.report(state);
  cudaStreamDestroy(stream);
  for (void* ptr : {static_cast<void*>(w), static_cast<void*>(r), static_cast<void*>(grad),
                    static_cast<void*>(residual), push_buffer, reply_buffer}) {
    cudaFree(ptr);
  }
}

// A sync round of `workers` gd pushes at `ratio` (each worker's own
// gradient): the server's apply_round (`tiles`: sums per tile in shared
// memory, touching only the named coordinates) or, as the baseline in the
// same run, the accumulator round it replaced (`accumulator`: zero P floats,
// add every push, average over all P). Floor: the pushes read once, and a
// 32-byte sector of W read and written for each coordinate they name (at
// most workers * k, at most all of W): the least memory moves when it
// touches scattered coordinates.
void BM_SyncRound(benchmark::State& state, std::string shape, std::uint64_t p, double ratio,
                  std::uint32_t workers, bool tiles) {
  if (!fits(p * 4 * 5)) {
    state.SkipWithError("not enough device memory");
    return;
  }
  Config config;
  config.method = Method::gd;
  config.mode = Mode::sync;
  config.ratio = ratio;
  config.workers = workers;
  const Segments model = segments_for(shape, p);
  auto backend = make_backend(BackendKind::cuda);
  auto server = backend->server_kernels(model, config);
  auto worker = backend->worker_kernels(model, push_layout(model, config), config);
  const SelectionPlan plan = push_plan(model, config, encode_ratio(ratio));
  worker->set_plan(plan, nullptr);
  const MessageLayout push = push_layout(model, config);
  float* w = random_device(p, 4);
  float* grad = random_device(p, 6);
  float* residual = random_device(p, 7);
  float* accumulator = nullptr;
  if (!tiles) check(cudaMalloc(&accumulator, p * sizeof(float)), "cudaMalloc");
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  std::vector<void*> buffers(workers);
  std::vector<host::RoundPush> pushes(workers);
  for (std::uint32_t k = 0; k < workers; ++k) {
    check(cudaMalloc(&buffers[k], push.bytes), "cudaMalloc");
    check(bench::fill_normal(grad, p, 100 + k), "fill_normal");
    host::StepParams params;
    params.method = Method::gd;
    params.lr = 0.01f;
    params.sender = k;
    host::WorkerState s;
    s.residual = residual;
    worker->step(params, grad, nullptr, s, buffers[k], stream);
    MessageHeader header = blank_header();
    const Verdict v = server->validate(buffers[k], push.bytes, header, stream);
    if (!v.ok()) {
      state.SkipWithError(v.describe(k).c_str());
      return;
    }
    pushes[k] = {buffers[k], header};
  }
  auto round = [&] {
    if (tiles) {
      server->apply_round(pushes.data(), workers, w, stream);
    } else {
      bench::accumulator_round(buffers.data(), workers, push, accumulator, w, stream);
    }
  };
  round();  // untimed: the first allocates the round's pointer and cursor room
  check(cudaStreamSynchronize(stream), "sync_round warm-up");
  Timer timer;
  for (auto _ : state) {
    timer.start(stream);
    round();
    state.SetIterationTime(timer.stop(stream));
  }
  const double named = static_cast<double>(workers) * plan.total_target();
  report(state, static_cast<double>(workers) * push.bytes + 2.0 * std::min(4.0 * p, 32.0 * named),
         p);
  state.counters["segments"] = static_cast<double>(model.count());
  state.counters["workers"] = workers;
  cudaStreamDestroy(stream);
  for (void* ptr : buffers) cudaFree(ptr);
  for (float* ptr : {w, grad, residual, accumulator}) cudaFree(ptr);
}

double measure_copy_bandwidth() {
  const std::size_t bytes = std::size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  Timer timer;
  std::vector<double> times;
  for (int i = 0; i < 23; ++i) {
    timer.start(nullptr);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr);
    const double t = timer.stop(nullptr);
    if (i >= 3) times.push_back(t);
  }
  cudaFree(a);
  cudaFree(b);
  std::sort(times.begin(), times.end());
  return 2.0 * bytes / times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--shapes=", 0) == 0)
      g_shapes_dir = a.substr(9);
    else if (a == "--shapes" && i + 1 < argc)  // the space form too
      g_shapes_dir = argv[++i];
    else if (a.rfind("--max-p=", 0) == 0)
      g_max_p = std::stoull(a.substr(8));
    else if (a == "--quick")
      g_quick = true;
    else if (a.rfind("--repetitions=", 0) == 0)
      g_repetitions = std::stoi(a.substr(14));
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: dgs_bench_gpu [--shapes=DIR] [--max-p=P] [--quick] [--repetitions=N]\n"
          "                     [Google Benchmark flags: --benchmark_filter=REGEX,\n"
          "                      --benchmark_out=FILE --benchmark_out_format=json, ...]\n"
          "  --shapes=DIR       the tensor lists (default bench/shapes)\n"
          "  --max-p=P          leave out sizes above P\n"
          "  --quick            P = 10^6 and 10^8 only, 3 repetitions\n"
          "  --repetitions=N    repetitions of each benchmark (median reported)\n"
          "Needs a CUDA device (bench/README.md).\n");
      return 0;
    } else
      rest.push_back(argv[i]);
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "dgs_bench_gpu: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  g_copy_bandwidth = measure_copy_bandwidth();
  benchmark::AddCustomContext("device", prop.name);
  benchmark::AddCustomContext("copy_bandwidth_GBps", std::to_string(g_copy_bandwidth * 1e-9));
  benchmark::AddCustomContext("dgs_version", DGS_VERSION_STRING);

  const int repetitions = g_quick ? 3 : g_repetitions;
  auto common = [&](benchmark::internal::Benchmark* b) {
    b->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Repetitions(repetitions)
        ->ReportAggregatesOnly(true)
        ->MinTime(0.05);
  };
  common(benchmark::RegisterBenchmark("copy_bandwidth/1GiB", BM_CopyBandwidth));
  const std::vector<std::uint64_t> sizes =
      g_quick ? std::vector<std::uint64_t>{1000000, 100000000}
              : std::vector<std::uint64_t>{1000000, 10000000, 100000000, 1500000000};
  // The targets' configuration first (a run cut short still has it), then the rest.
  for (Method m : {Method::samomentum, Method::gd, Method::dgc, Method::gmc}) {
    common(benchmark::RegisterBenchmark(
        (std::string("worker_step/") + to_string(m) + "/resnet50/P=100000000/ratio=0.010").c_str(),
        BM_WorkerStep, std::string("resnet50"), std::uint64_t{100000000}, 0.01, m));
  }
  common(benchmark::RegisterBenchmark("cub_baseline/samomentum/resnet50/P=100000000/ratio=0.010",
                                      BM_CubBaseline, std::string("resnet50"),
                                      std::uint64_t{100000000}, 0.01));
  common(benchmark::RegisterBenchmark("server_push/resnet50/P=100000000/ratio=0.010", BM_ServerPush,
                                      std::string("resnet50"), std::uint64_t{100000000}, 0.01));
  // Sync rounds of 4 and 16 workers, against the accumulator round they replaced.
  for (std::uint32_t workers : {4u, 16u}) {
    for (bool tiles : {true, false}) {
      common(benchmark::RegisterBenchmark(
          (std::string("sync_round/") + (tiles ? "tiles" : "accumulator") +
           "/workers=" + std::to_string(workers) + "/resnet50/P=100000000/ratio=0.010")
              .c_str(),
          BM_SyncRound, std::string("resnet50"), std::uint64_t{100000000}, 0.01, workers, tiles));
    }
  }
  // Where the worker step's update pass stands against its own bytes.
  for (bench::UpdateVariant v : {bench::UpdateVariant::streaming, bench::UpdateVariant::plain,
                                 bench::UpdateVariant::fused}) {
    common(benchmark::RegisterBenchmark(
        (std::string("update_pass/") + bench::to_string(v) + "/resnet50/P=100000000/ratio=0.010")
            .c_str(),
        BM_UpdatePass, std::string("resnet50"), std::uint64_t{100000000}, 0.01, v));
  }
  for (const char* shape : {"resnet50", "gpt2", "gpt2-xl", "flat"}) {
    for (std::uint64_t p : sizes) {
      if (p > g_max_p) continue;
      // The largest size on two shapes: the segment count matters, not the model.
      if (p > 100000000 && std::string(shape) != "resnet50" && std::string(shape) != "flat")
        continue;
      for (double ratio : {0.001, 0.01}) {
        if (std::string(shape) == "resnet50" && p == 100000000 && ratio == 0.01)
          continue;  // registered above
        const std::string tag = std::string(shape) + "/P=" + std::to_string(p) +
                                "/ratio=" + std::to_string(ratio).substr(0, 5);
        common(benchmark::RegisterBenchmark(("worker_step/samomentum/" + tag).c_str(),
                                            BM_WorkerStep, shape, p, ratio, Method::samomentum));
        common(benchmark::RegisterBenchmark(("cub_baseline/samomentum/" + tag).c_str(),
                                            BM_CubBaseline, shape, p, ratio));
        common(benchmark::RegisterBenchmark(("server_push/" + tag).c_str(), BM_ServerPush, shape, p,
                                            ratio));
      }
    }
  }
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
