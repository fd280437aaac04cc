// The cuda backend against the host reference: every kernel on fresh random
// inputs, outputs poisoned first, results compared bit for bit. Skips cleanly
// where no GPU is present.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/backend.h"
#include "dgs/error.h"
#include "dgs/version.h"
#if DGS_WITH_NCCL && !defined(DGS_CUDA_EMULATION)  // NCCL needs the real runtime
#include "dgs/nccl.h"
#endif
#include "dgs/plan.h"
#include "dgs/server.h"
#include "dgs/transport.h"
#include "dgs/worker.h"
#include "kernels/numeric.h"
#include "runtime/backend.h"
#include "support/floats.h"
#include "support/host_job.h"
#include "support/random.h"
#include "support/server_thread.h"

namespace dgs {
namespace {

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

constexpr unsigned char kPoison = 0xAB;

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available())
      GTEST_SKIP() << "no CUDA device (or none this build has kernels for): the cuda backend tests "
                      "need a GPU";
    backend_ = make_backend(BackendKind::cuda);
    host_ = make_backend(BackendKind::host);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  template <typename T>
  detail::Buffer upload(const std::vector<T>& host) {
    detail::Buffer b(*backend_, std::max<std::size_t>(1, host.size() * sizeof(T)));
    if (!host.empty()) backend_->upload(b.data(), host.data(), host.size() * sizeof(T), stream_);
    return b;
  }
  // The cuda validation of `push` reports what the host's does, and hands
  // back its header.
  void expect_host_verdict(detail::ServerKernels& gpu, const host::PushRules& rules,
                           const test::Bytes& push, const std::string& what) {
    const Verdict want = host::validate_push(push.data(), push.size(), rules);
    detail::Buffer d_push = upload(push);
    MessageHeader header = blank_header();
    const Verdict got = gpu.validate(d_push.data(), push.size(), header, stream_);
    EXPECT_EQ(std::memcmp(&header, push.data(), kHeaderBytes), 0) << what << ": the header";
    EXPECT_EQ(got.reason, want.reason)
        << what << ": " << got.describe(1) << " vs " << want.describe(1);
    EXPECT_EQ(got.position, want.position) << what;
    EXPECT_EQ(got.value, want.value) << what;
    EXPECT_EQ(got.expected, want.expected) << what;
  }
  // Worker `id`'s push (one step from random weights, then a random
  // gradient), uploaded and validated by `gpu`: the message, its device copy,
  // the header validate returned and its verdict.
  struct ValidatedPush {
    test::Bytes bytes;
    detail::Buffer device;
    MessageHeader header;
    Verdict verdict;
  };
  ValidatedPush validated_push(detail::ServerKernels& gpu, const Segments& model,
                               const Config& config, std::uint32_t id, std::mt19937_64& rng) {
    const std::uint64_t p = model.total();
    test::RefWorker worker(model, config, id, test::random_normal(rng, p));
    ValidatedPush v{worker.push(test::random_normal(rng, p), 0.1f), {}, blank_header(), {}};
    v.device = upload(v.bytes);
    v.verdict = gpu.validate(v.device.data(), v.bytes.size(), v.header, stream_);
    return v;
  }
  // Applies a validated push to w on the host and to its device copy d_w,
  // and compares them.
  void expect_host_apply(detail::ServerKernels& gpu, const host::PushRules& rules,
                         const ValidatedPush& pushed, std::vector<float>& w, detail::Buffer& d_w) {
    host::apply_push(pushed.bytes.data(), rules, w.data());
    gpu.apply(pushed.device.data(), pushed.header, d_w.as<float>(), stream_);
    EXPECT_EQ(download<float>(d_w, w.size()), w) << "W after the apply";
  }
  template <typename T>
  std::vector<T> download(const detail::Buffer& b, std::size_t count) {
    std::vector<T> host(count);
    if (count) backend_->download(host.data(), b.data(), count * sizeof(T), stream_);
    return host;
  }
  // `gpu`'s sparse reply to W = w with replica R = r (d_w and d_r their
  // device copies) equals the host's, message and replica bit for bit, from
  // poisoned buffers; r becomes the replica after it. Returns what the
  // selection read (its captures).
  host::CaptureUse expect_host_reply(detail::ServerKernels& gpu, const Segments& model,
                                     const Config& config, const std::vector<float>& w,
                                     std::vector<float>& r, const detail::Buffer& d_w,
                                     detail::Buffer& d_r, const host::ReplyInfo& info) {
    const Segments segments = selection_segments(model, config);
    const MessageLayout layout = sparse_reply_layout(model, config);
    std::vector<unsigned char> reply(layout.bytes, kPoison);
    host::Scratch scratch;
    host::write_sparse_reply(w.data(), r.data(), segments, reply_plan(segments, config), info,
                             reply.data(), layout, scratch);
    detail::Buffer d_reply = poisoned(layout.bytes);
    gpu.sparse_reply(d_w.as<float>(), d_r.as<float>(), info, d_reply.data(), stream_);
    const host::CaptureUse use = gpu.last_capture_use(stream_);
    EXPECT_EQ(download<unsigned char>(d_reply, layout.bytes), reply) << "the reply";
    EXPECT_EQ(download<float>(d_r, r.size()), r) << "the replica";
    return use;
  }

  // `gpu`'s dense reply from a buffer whose values hold w (its header
  // poisoned) equals the host's, bit for bit, and sets a poisoned replica
  // to w; without a replica, the values are left as they are.
  void expect_host_dense_reply(detail::ServerKernels& gpu, const Segments& model,
                               const std::vector<float>& w, const host::ReplyInfo& info) {
    const MessageLayout layout = dense_reply_layout(model);
    std::vector<unsigned char> reply(layout.bytes, kPoison);
    host::write_dense_reply(w.data(), nullptr, info, reply.data(), layout);
    for (const bool with_replica : {true, false}) {
      SCOPED_TRACE(with_replica ? "with a replica to set" : "without a replica");
      detail::Buffer d_reply = poisoned(layout.bytes), d_replica = poisoned(w.size() * 4);
      backend_->upload(static_cast<unsigned char*>(d_reply.data()) + layout.values_offset, w.data(),
                       w.size() * sizeof(float), stream_);
      gpu.dense_reply(d_reply.data(), with_replica ? d_replica.as<float>() : nullptr, info,
                      stream_);
      EXPECT_EQ(download<unsigned char>(d_reply, layout.bytes), reply) << "the dense reply";
      if (with_replica) {
        EXPECT_EQ(download<float>(d_replica, w.size()), w) << "the replica";
      }
    }
  }

  // A worker's and a server's kernels for one method and compressor (pushes
  // at 1%, replies at 2%, one worker), their layouts, and the worker's state
  // on the device: each float state from `state_value`, the samomentum mask
  // empty, and `state` pointing at what the method uses.
  struct Rig {
    Config config;
    Segments segments;
    MessageLayout push, sparse, dense;
    detail::Buffer residual, momentum, accumulator, mask;
    host::WorkerState state{nullptr, nullptr, nullptr, nullptr};
  };
  static Config rig_config(Method m, Compressor c) {
    Config config;
    config.method = m;
    config.compressor = c;
    config.ratio = 0.01;
    config.server_ratio = 0.02;
    config.workers = 1;
    return config;
  }
  Rig rig(const Segments& model, Method m, Compressor c,
          const std::function<std::vector<float>()>& state_value) {
    Rig r;
    r.config = rig_config(m, c);
    r.segments = selection_segments(model, r.config);
    r.push = push_layout(model, r.config);
    r.sparse = sparse_reply_layout(model, r.config);
    r.dense = dense_reply_layout(model);
    r.residual = upload(state_value());
    r.momentum = upload(state_value());
    r.accumulator = upload(state_value());
    r.mask = upload(std::vector<std::uint32_t>(host::mask_words(model.total()), 0u));
    if (m == Method::gd || m == Method::gmc || m == Method::gmc_plus)
      r.state.residual = r.residual.as<float>();
    if (m == Method::dgc || m == Method::samomentum) r.state.momentum = r.momentum.as<float>();
    if (m == Method::dgc) r.state.accumulator = r.accumulator.as<float>();
    if (m == Method::samomentum) r.state.mask = r.mask.as<std::uint32_t>();
    return r;
  }
  detail::Buffer poisoned(std::size_t bytes) {
    detail::Buffer b(*backend_, bytes);
    EXPECT_EQ(cudaMemsetAsync(b.data(), kPoison, bytes, stream_), cudaSuccess);
    return b;
  }

  std::shared_ptr<Backend> backend_, host_;
  cudaStream_t stream_ = nullptr;
};

// Calls that allocate or may wait for the device, so far: counted by the
// emulation (dgs_emu::blocking_calls); 0 on a GPU, where nothing counts them.
std::uint64_t blocking_calls() {
#ifdef DGS_CUDA_EMULATION
  return dgs_emu::blocking_calls();
#else
  return 0;
#endif
}

enum class Data { normal, ties, spanning, mostly_zero };

std::vector<float> make_data(std::mt19937_64& rng, std::size_t n, Data kind) {
  switch (kind) {
    case Data::mostly_zero: {
      // 98% zeros of either sign, the rest standard normal.
      std::vector<float> v = test::random_normal(rng, n);
      for (std::size_t i = 0; i < n; ++i) {
        if (rng() % 50 != 0) v[i] = i % 2 == 0 ? 0.0f : -0.0f;
      }
      return v;
    }
    case Data::ties:
      return test::random_ties(rng, n);
    case Data::spanning: {
      std::vector<float> v = test::random_spanning(rng, n);
      for (std::size_t i = 0; i < n; i += 97) v[i] = -0.0f;  // negative zeros too
      return v;
    }
    case Data::normal:
      break;
  }
  return test::random_normal(rng, n);
}

struct WorkerCase {
  std::string name;
  Segments model;
  Config config;
  Data data = Data::normal;
  int steps = 3;
  // Every large segment selects from its capture after the first step (whose
  // histogram pass has no guess yet); the first step's never do.
  bool expect_captures = false;
  // The method's state starts at zero (and the samomentum mask empty)
  // instead of at small random values.
  bool zero_state = false;
  // When set, step t's gradient (instead of make_data's).
  std::function<std::vector<float>(int step, std::size_t n)> gradient = nullptr;
  // When set, checks step t's use of the captures (after the comparison).
  std::function<void(int step, const host::CaptureUse&)> check_captures = nullptr;
  // Weights, state and normal gradients from test::random_bell (threads,
  // counter-based) instead of a std::normal_distribution: for billions.
  bool bulk = false;
  // When set, step t's learning rate (instead of 0.05): a schedule
  // proportional to it changes the ratio.
  std::function<float(int step)> lr = nullptr;
  // From the second step on, the device's free memory stays as it was after
  // the first: a change of plan allocates nothing either.
  bool steady_memory = false;
};

// Runs `steps` worker steps on both backends and compares state and message bytes.
void compare_worker(Backend& gpu, cudaStream_t stream, const WorkerCase& c) {
  SCOPED_TRACE(c.name + " " + to_string(c.config.method) + " " + to_string(c.config.compressor) +
               " ratio " + std::to_string(c.config.ratio));
  const Segments segments = selection_segments(c.model, c.config);
  const MessageLayout layout = push_layout(c.model, c.config);
  const std::uint64_t p = c.model.total();
  auto device = gpu.worker_kernels(segments, layout, c.config);
  host::Scratch scratch;
  std::mt19937_64 rng(std::hash<std::string>{}(c.name) ^ p);
  auto random = [&rng, &c](std::size_t n, float scale) {
    return c.bulk ? test::random_bell(rng(), n, scale) : test::random_normal(rng, n, scale);
  };
  const std::vector<float> weights = random(p, 1.0f);
  // Host state and its device copy, both starting from the same random values.
  std::vector<float> residual, momentum, accumulator;
  std::vector<std::uint32_t> mask;
  switch (c.config.method) {
    case Method::gd:
    case Method::gmc:
    case Method::gmc_plus:
      residual = random(p, 0.01f);
      break;
    case Method::dgc:
      momentum = random(p, 0.01f);
      accumulator = random(p, 0.01f);
      break;
    case Method::samomentum:
      momentum = random(p, 0.01f);
      mask.resize(host::mask_words(p));
      for (auto& w : mask) w = static_cast<std::uint32_t>(rng());
      break;
    case Method::dense:
      break;
  }
  if (c.zero_state) {
    for (auto* v : {&residual, &momentum, &accumulator}) std::fill(v->begin(), v->end(), 0.0f);
    std::fill(mask.begin(), mask.end(), 0u);
  }
  auto to_device = [&](const auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    detail::Buffer b(gpu, std::max<std::size_t>(1, v.size() * sizeof(T)));
    if (!v.empty()) gpu.upload(b.data(), v.data(), v.size() * sizeof(T), stream);
    return b;
  };
  detail::Buffer d_weights = to_device(weights), d_residual = to_device(residual),
                 d_momentum = to_device(momentum), d_accumulator = to_device(accumulator),
                 d_mask = to_device(mask);
  host::WorkerState hs{
      residual.empty() ? nullptr : residual.data(), momentum.empty() ? nullptr : momentum.data(),
      accumulator.empty() ? nullptr : accumulator.data(), mask.empty() ? nullptr : mask.data()};
  host::WorkerState ds{residual.empty() ? nullptr : d_residual.as<float>(),
                       momentum.empty() ? nullptr : d_momentum.as<float>(),
                       accumulator.empty() ? nullptr : d_accumulator.as<float>(),
                       mask.empty() ? nullptr : d_mask.as<std::uint32_t>()};
  std::vector<unsigned char> host_message(layout.bytes);
  detail::Buffer d_message(gpu, layout.bytes);
  std::uint32_t plan_code = 0;
  std::size_t steady_free = 0;
  for (int step = 0; step < c.steps; ++step) {
    const std::vector<float> grad = c.gradient                         ? c.gradient(step, p)
                                    : c.bulk && c.data == Data::normal ? random(p, 1.0f)
                                                                       : make_data(rng, p, c.data);
    detail::Buffer d_grad = to_device(grad);
    const float lr = c.lr ? c.lr(step) : 0.05f, first_lr = c.lr ? c.lr(0) : 0.05f;
    host::StepParams params;
    params.method = c.config.method;
    params.lr = lr;
    params.momentum = c.config.momentum;
    params.weight_decay = c.config.weight_decay;
    params.clip_norm = c.config.clip_norm;
    params.factor_masking = c.config.factor_masking;
    params.seed = c.config.seed;
    params.step = static_cast<std::uint64_t>(step);
    params.model_version = 7;
    params.sender = 0;
    params.threshold_sample = c.config.threshold_sample;
    const SelectionPlan plan =
        push_plan(segments, c.config, encode_ratio(c.config.ratio_at(step, lr, first_lr)));
    std::fill(host_message.begin(), host_message.end(), kPoison);
    ASSERT_EQ(cudaMemsetAsync(d_message.data(), kPoison, layout.bytes, stream), cudaSuccess);
    const std::uint64_t blocking_before = blocking_calls();
    if (step == 0 || plan.ratio_code != plan_code)
      device->set_plan(plan, stream);  // as the runtime does
    plan_code = plan.ratio_code;
    const std::uint64_t blocking_planned = blocking_calls();
    const host::SelectionStats want =
        host::worker_step(params, segments, plan, grad.data(), weights.data(), hs,
                          host_message.data(), layout, scratch);
    device->step(params, d_grad.as<float>(), d_weights.as<float>(), ds, d_message.data(), stream);
    // Neither a step nor (in a steady run) a later change of plan may wait
    // for the device or allocate (counted on the emulation).
    EXPECT_EQ(blocking_calls(), blocking_planned) << "blocking calls in step " << step;
    if (c.steady_memory && step > 0) {
      EXPECT_EQ(blocking_planned, blocking_before) << "blocking calls in the plan of step " << step;
    }
    const host::SelectionStats got = device->last_stats(stream);
    if (c.steady_memory) {
      std::size_t free_bytes = 0, total = 0;
      ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
      if (step == 0) steady_free = free_bytes;
      EXPECT_EQ(free_bytes, steady_free) << "device memory allocated by step " << step;
    }
    std::vector<unsigned char> message(layout.bytes);
    gpu.download(message.data(), d_message.data(), layout.bytes, stream);
    if (c.expect_captures) {
      const host::CaptureUse use = device->last_capture_use(stream);
      EXPECT_GT(use.segments, 0u);
      EXPECT_EQ(use.used, step == 0 ? 0 : use.segments) << "step " << step;
      EXPECT_EQ(use.missed, 0u) << "step " << step;
    }
    ASSERT_EQ(got.selected, want.selected) << "step " << step;
    ASSERT_EQ(got.clamped_segments, want.clamped_segments) << "step " << step;
    ASSERT_EQ(got.count_error, want.count_error) << "step " << step;
    if (message != host_message) {
      std::size_t at = 0;
      while (message[at] == host_message[at]) ++at;
      FAIL() << "push differs at byte " << at << " of " << layout.bytes << " (values at "
             << layout.values_offset << ") in step " << step;
    }
    auto same = [&](const detail::Buffer& d, const auto& h, const char* what) {
      using T = typename std::decay_t<decltype(h)>::value_type;
      if (h.empty()) return;
      std::vector<T> back(h.size());
      gpu.download(back.data(), d.data(), h.size() * sizeof(T), stream);
      EXPECT_EQ(std::memcmp(back.data(), h.data(), h.size() * sizeof(T)), 0)
          << what << " differs after step " << step;
    };
    same(d_residual, residual, "residual");
    same(d_momentum, momentum, "momentum");
    same(d_accumulator, accumulator, "accumulator");
    same(d_mask, mask, "mask");
    if (c.check_captures) c.check_captures(step, device->last_capture_use(stream));
  }
}

Segments random_model(std::uint64_t seed, std::size_t count, std::uint64_t max_size) {
  std::mt19937_64 rng(seed);
  return test::random_segments(rng, count, max_size);
}

TEST_F(CudaBackendTest, WorkerStepMatchesTheHostForEveryMethodAndCompressor) {
  const std::vector<std::pair<std::string, Segments>> shapes = {
      {"one coordinate", Segments({1})},
      {"mixed segments", random_model(1, 60, 30000)},
      {"10^4 tiny segments", random_model(2, 10000, 40)},
      {"one large segment", Segments({(std::uint64_t{1} << 20) + 3})},
  };
  for (const auto& [name, model] : shapes) {
    for (Method m : {Method::gd, Method::dgc, Method::samomentum, Method::gmc, Method::dense}) {
      for (Compressor c :
           {Compressor::topk, Compressor::threshold, Compressor::randk, Compressor::rbgs}) {
        for (double ratio : {1e-3, 0.05, 1.0}) {
          WorkerCase wc{name, model, Config{}};
          wc.config.method = m;
          wc.config.compressor = c;
          wc.config.ratio = ratio;
          wc.config.weight_decay = 1e-4f;
          wc.config.seed = 11;
          compare_worker(*backend_, stream_, wc);
          if (m == Method::dense) break;
        }
        if (m == Method::dense) break;
      }
    }
  }
}

// Local gradient clipping: the squared norm summed in the same order on both
// sides gives the same scale, bit for bit, whether it clips (a norm far above
// 1) or not (1e30); the large segment's 257 chunks take the second pass's
// loop past one chunk per thread.
TEST_F(CudaBackendTest, WorkerStepClipsItsGradientLikeTheHost) {
  const std::vector<std::pair<std::string, Segments>> shapes = {
      {"mixed segments", random_model(4, 60, 30000)},
      {"one large segment", Segments({(std::uint64_t{1} << 20) + 3})},
  };
  for (const auto& [name, model] : shapes) {
    for (Method m : {Method::gd, Method::dgc, Method::samomentum, Method::gmc, Method::dense}) {
      for (float clip : {1.0f, 1e30f}) {
        WorkerCase wc{name + " clip " + std::to_string(clip), model, Config{}};
        wc.config.method = m;
        wc.config.ratio = 0.01;
        wc.config.weight_decay = 1e-4f;
        wc.config.clip_norm = clip;
        compare_worker(*backend_, stream_, wc);
      }
    }
  }
  // A sum of squares that float partial sums would round: each chunk's
  // first value squares to 2^24 (+ step), and the 15 ones that thread then
  // adds would vanish in float; the scale would differ.
  for (Method m : {Method::gd, Method::samomentum}) {
    WorkerCase wc{"2^12 then ones", Segments({(std::uint64_t{1} << 20) + 3}), Config{}};
    wc.config.method = m;
    wc.config.ratio = 0.01;
    wc.config.clip_norm = 1.0f;
    wc.gradient = [](int step, std::size_t n) {
      std::vector<float> g(n, 1.0f);
      for (std::size_t i = 0; i < n; i += 4096) g[i] = 4096.0f + static_cast<float>(step);
      return g;
    };
    compare_worker(*backend_, stream_, wc);
  }
}

TEST_F(CudaBackendTest, ExactTopkMatchesTheHostOnHardData) {
  for (Data data : {Data::ties, Data::spanning}) {
    for (double ratio : {1e-4, 0.01, 0.3, 0.999}) {
      WorkerCase wc{data == Data::ties ? "ties" : "spanning", random_model(3, 40, 200000),
                    Config{}};
      wc.config.method = Method::gd;
      wc.config.ratio = ratio;
      wc.config.dense_below = 50;
      wc.data = data;
      compare_worker(*backend_, stream_, wc);
    }
  }
}

// While the state's distribution moves slowly from step to step. (Not dgc's
// accumulator from these starting states: its boundary rises by up to an
// octave a step at first, and its captures overflow until it settles.)
TEST_F(CudaBackendTest, WorkerStepsSelectFromTheirCaptureOnceTheyHaveAGuess) {
  for (Method m : {Method::samomentum, Method::gd}) {
    for (Compressor c : {Compressor::topk, Compressor::randk}) {
      WorkerCase wc{"capture", random_model(9, 12, 150000), Config{}};
      wc.config.method = m;
      wc.config.compressor = c;
      wc.config.ratio = 0.01;
      wc.config.seed = 5;
      wc.steps = 4;
      wc.expect_captures = true;
      compare_worker(*backend_, stream_, wc);
    }
  }
}

TEST_F(CudaBackendTest, NarrowWireValuesAndSchedulesMatchTheHost) {
  for (WireValue wire : {WireValue::bf16, WireValue::f16}) {
    WorkerCase wc{"wire", random_model(4, 30, 50000), Config{}};
    wc.config.method = Method::gmc;
    wc.config.ratio = 0.01;
    wc.config.wire_values = wire;
    wc.config.schedule = RatioSchedule::warmup;
    wc.config.warmup_ratios = {0.25, 0.0625};
    wc.config.warmup_steps = 1;
    wc.config.global_selection = wire == WireValue::f16;
    compare_worker(*backend_, stream_, wc);
  }
}

// A ratio that follows the learning rate changes the plan every step here.
// While the tensors keep their kind (whole, small, large or estimated) the
// selector only retargets them (Selector::retarget); a warm-up from ratio 1
// (every tensor whole) to 25% and on, or back to 1 and down again, sorts
// them anew into the same tables. Either way no step after the first
// allocates device memory, (counted on the emulation) no change of plan
// allocates or waits for the device, and the pushes and states equal the
// host's.
TEST_F(CudaBackendTest, RatioChangesMatchTheHostAndAllocateNothing) {
  const std::pair<Method, Compressor> cases[] = {{Method::samomentum, Compressor::topk},
                                                 {Method::gd, Compressor::threshold},
                                                 {Method::dgc, Compressor::randk}};
  for (const auto& [m, c] : cases) {
    WorkerCase wc{"lr-proportional", random_model(25, 30, 40000), Config{}};
    wc.config.method = m;
    wc.config.compressor = c;
    wc.config.ratio = 0.05;
    wc.config.schedule = RatioSchedule::lr_proportional;
    wc.lr = [](int step) { return 0.05f / (1.0f + 0.7f * static_cast<float>(step)); };
    wc.steps = 4;
    wc.steady_memory = true;
    compare_worker(*backend_, stream_, wc);
  }
  for (const auto& [m, c] : cases) {
    for (const std::vector<double>& stages :
         {std::vector<double>{1.0, 0.25}, std::vector<double>{0.25, 1.0}}) {
      WorkerCase wc{"warm-up " + std::to_string(stages[0]) + " " + std::to_string(stages[1]),
                    random_model(26, 30, 40000), Config{}};
      wc.config.method = m;
      wc.config.compressor = c;
      wc.config.ratio = 0.05;
      wc.config.schedule = RatioSchedule::warmup;
      wc.config.warmup_ratios = stages;
      wc.config.warmup_steps = 1;
      wc.steps = 4;
      wc.steady_memory = true;
      compare_worker(*backend_, stream_, wc);
    }
  }
}

// What the every-method test covers only slowly or leaves at its defaults:
// dgc without factor masking, with weight decay; rbgs blocks; threshold on
// segments one below, at and one above its sample size
// (a segment no larger than the sample is its own sample); threshold where
// almost every value is zero, so that the sampled estimate is 0 and tau must
// stay at the smallest positive key (zeros are never sent).
TEST_F(CudaBackendTest, WorkerOptionsAndEdgeDataMatchTheHost) {
  {
    WorkerCase wc{"no factor masking", random_model(12, 20, 30000), Config{}};
    wc.config.method = Method::dgc;
    wc.config.factor_masking = false;
    wc.config.weight_decay = 1e-4f;
    compare_worker(*backend_, stream_, wc);
  }
  {
    WorkerCase wc{"rbgs", random_model(14, 20, 30000), Config{}};
    wc.config.compressor = Compressor::rbgs;
    compare_worker(*backend_, stream_, wc);
  }
  {
    WorkerCase wc{"threshold sample sizes", Segments({999, 1000, 1001, 20000}), Config{}};
    wc.config.method = Method::gd;
    wc.config.compressor = Compressor::threshold;
    wc.config.threshold_sample = 1000;
    wc.config.ratio = 0.05;
    compare_worker(*backend_, stream_, wc);
  }
  for (Method m : {Method::gd, Method::samomentum}) {
    WorkerCase wc{"threshold on zeros", random_model(13, 10, 50000), Config{}};
    wc.config.method = m;
    wc.config.compressor = Compressor::threshold;
    wc.config.ratio = 0.05;
    wc.data = Data::mostly_zero;
    wc.zero_state = true;
    compare_worker(*backend_, stream_, wc);
  }
}

// The histogram pass counts only what reaches the guess the last selection
// left; when fewer than the target reach it, the boundary lies below and the
// segment is counted again in full. Here the target, or one fewer, reaches
// it. One segment of 10^5 (target 1000), gd from a zero residual: step 0
// puts 5000 coordinates at lr (the rest near zero), so the guess is the
// digit below lr's; step 1 cancels what step 0 left there and raises
// `reach` others to about lr.
TEST_F(CudaBackendTest, ACaptureOneShortOfTheTargetIsCountedAgain) {
  constexpr std::size_t kHigh = 5000, kTarget = 1000;
  std::mt19937_64 rng(21);
  const std::vector<float> small = test::random_normal(rng, 100000, 1e-6f);
  for (std::size_t reach : {kTarget - 1, kTarget}) {
    WorkerCase wc{"reach " + std::to_string(reach), Segments({100000}), Config{}};
    wc.config.method = Method::gd;
    wc.config.ratio = 0.01;
    wc.zero_state = true;
    wc.steps = 2;
    wc.gradient = [&small, reach](int step, std::size_t) {
      std::vector<float> g = small;
      for (std::size_t i = 0; i < kHigh; ++i) {
        g[i] = step == 0 ? 1.0f : (i < kTarget ? 0.0f : -1.0f);  // step 0 sent 0..999
      }
      if (step == 1) std::fill_n(g.begin() + 10000, reach, 1.0f);
      return g;
    };
    wc.check_captures = [reach](int step, const host::CaptureUse& use) {
      EXPECT_EQ(use.segments, 1u);
      EXPECT_EQ(use.missed, step == 1 && reach < kTarget ? 1u : 0u) << "step " << step;
      EXPECT_EQ(use.used, step == 1 && reach == kTarget ? 1u : 0u) << "step " << step;
    };
    compare_worker(*backend_, stream_, wc);
  }
}

TEST_F(CudaBackendTest, WorkerStepAtOneHundredMillionParameters) {
  std::size_t free_bytes = 0, total = 0;
  CUDA_OK(cudaMemGetInfo(&free_bytes, &total));
  if (free_bytes < (std::size_t{12} << 30)) GTEST_SKIP() << "needs 12 GiB of free device memory";
  WorkerCase wc{"1e8", random_model(5, 160, 1300000), Config{}};
  wc.config.method = Method::samomentum;
  wc.config.ratio = 0.01;
  wc.steps = 2;
  compare_worker(*backend_, stream_, wc);
}

// The server's push at the benchmarks' size: a samomentum push from a worker
// validated and applied, then the sparse reply (the top 1% of W - R), twice
// so the second selects from its capture; 160 segments of up to 1.3M.
TEST_F(CudaBackendTest, ServerPushAtOneHundredMillionParameters) {
  std::size_t free_bytes = 0, total = 0;
  CUDA_OK(cudaMemGetInfo(&free_bytes, &total));
  if (free_bytes < (std::size_t{8} << 30)) GTEST_SKIP() << "needs 8 GiB of free device memory";
  const Segments model = random_model(5, 160, 1300000);
  Config config = rig_config(Method::samomentum, Compressor::topk);
  config.server_ratio = 0.01;
  std::mt19937_64 rng(31);
  auto gpu = backend_->server_kernels(model, config);
  const ValidatedPush pushed = validated_push(*gpu, model, config, 0, rng);
  ASSERT_TRUE(pushed.verdict.ok()) << pushed.verdict.describe(0);
  const std::uint64_t p = model.total();
  std::vector<float> w = test::random_bell(rng(), p), r = test::random_bell(rng(), p);
  detail::Buffer d_w = upload(w), d_r = upload(r);
  expect_host_apply(*gpu, host::PushRules(model, config), pushed, w, d_w);
  if (HasFailure()) return;
  for (std::uint64_t t = 0; t < 2; ++t) {
    SCOPED_TRACE("reply " + std::to_string(t));
    const host::CaptureUse use = expect_host_reply(*gpu, model, config, w, r, d_w, d_r, {1, t});
    if (HasFailure()) return;
    EXPECT_EQ(use.missed, 0u);
    EXPECT_EQ(use.used, t == 0 ? 0 : use.segments);
    // The next reply answers a model that moved on.
    w = test::random_bell(rng(), p);
    d_w = upload(w);
  }
}

// Selection on one segment of 10^9 coordinates (k = 10^7, heavy ties at
// that size): two samomentum worker steps, then two replies of the server
// (the top of W - R), so the second of each selects from its capture. The
// same cases on 2^21 + 5 coordinates first, which the emulation runs too;
// the billion needs about 21 GiB of device memory and 30 GiB of host memory.
TEST_F(CudaBackendTest, SelectionIsExactOnOneSegmentOfABillion) {
  constexpr std::uint64_t kSmall = (std::uint64_t{1} << 21) + 5, kBillion = 1000000000;
  for (const std::uint64_t n : {kSmall, kBillion}) {
    if (n == kBillion) {
      std::size_t free_bytes = 0, total = 0;
      CUDA_OK(cudaMemGetInfo(&free_bytes, &total));
      if (free_bytes < (std::size_t{28} << 30))
        GTEST_SKIP() << "one segment of 10^9 needs 28 GiB of free device memory (the same cases "
                        "on 2^21 + 5 coordinates ran)";
    }
    const Segments model({n});
    WorkerCase wc{"one segment of " + std::to_string(n), model, Config{}};
    wc.config.method = Method::samomentum;
    wc.config.ratio = 0.01;
    wc.steps = 2;
    wc.bulk = true;
    wc.expect_captures = true;
    compare_worker(*backend_, stream_, wc);
    if (HasFatalFailure()) return;

    Config config;
    config.method = Method::gd;
    config.server_ratio = 0.01;
    config.workers = 1;
    auto gpu = backend_->server_kernels(model, config);
    std::vector<float> r = test::random_bell(n + 1, n, 0.01f);
    detail::Buffer d_r = upload(r);
    for (std::uint64_t t = 0; t < 2; ++t) {
      SCOPED_TRACE("reply " + std::to_string(t) + " on " + std::to_string(n));
      const std::vector<float> w = test::random_bell(n + 2 + t, n);
      detail::Buffer d_w = upload(w);
      const host::CaptureUse use = expect_host_reply(*gpu, model, config, w, r, d_w, d_r, {1, t});
      if (HasFailure()) return;
      EXPECT_EQ(use.segments, 1u);
      EXPECT_EQ(use.used, t);
      EXPECT_EQ(use.missed, 0u);
    }
  }
}

TEST_F(CudaBackendTest, AWorkerStepCanBeCapturedInACudaGraph) {
  const Segments model = random_model(6, 50, 20000);
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.02;
  const MessageLayout layout = push_layout(model, config);
  const std::uint64_t p = model.total();
  auto gpu = backend_->worker_kernels(model, layout, config);
  const SelectionPlan plan = push_plan(model, config, encode_ratio(config.ratio));
  gpu->set_plan(plan, stream_);
  std::mt19937_64 rng(12);
  const std::vector<float> grad = test::random_normal(rng, p);
  std::vector<float> u(p, 0.0f);
  std::vector<std::uint32_t> mask(host::mask_words(p), 0u);
  detail::Buffer d_grad = upload(grad), d_u = upload(u), d_mask = upload(mask);
  detail::Buffer d_message = poisoned(layout.bytes);
  host::StepParams params;
  params.method = config.method;
  params.lr = 0.1f;
  params.momentum = 0.9f;
  host::WorkerState ds{nullptr, d_u.as<float>(), nullptr, d_mask.as<std::uint32_t>()};
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
  gpu->step(params, d_grad.as<float>(), nullptr, ds, d_message.data(), stream_);
  CUDA_OK(cudaStreamEndCapture(stream_, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  // Two replays are two steps (same step number, so the same draws).
  host::Scratch scratch;
  std::vector<unsigned char> want(layout.bytes, kPoison);
  host::WorkerState hs{nullptr, u.data(), nullptr, mask.data()};
  for (int replay = 0; replay < 2; ++replay) {
    CUDA_OK(cudaGraphLaunch(exec, stream_));
    host::worker_step(params, model, plan, grad.data(), nullptr, hs, want.data(), layout, scratch);
    EXPECT_EQ(download<unsigned char>(d_message, layout.bytes), want) << "replay " << replay;
    EXPECT_EQ(download<float>(d_u, p), u) << "replay " << replay;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
}

// Workspace is sized when the kernels are made (a plan's tables when it is
// set): once every kernel has run (CUDA loads them lazily), worker steps,
// validations, applies, replies and their application allocate no device
// memory, for every compressor; and the step, the apply, the replies and
// their application make no call that allocates or may wait for the device
// (counted on the emulation). The emulation counts every byte allocated;
// a GPU reports free memory in pages, so there a small allocation may hide.
TEST_F(CudaBackendTest, SteadyStepsAndRepliesAllocateNoDeviceMemory) {
  const Segments model = random_model(21, 40, 20000);
  const std::uint64_t p = model.total();
  std::mt19937_64 rng(21);
  auto free_bytes = [] {
    std::size_t free = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
    return free;
  };
  for (Compressor c :
       {Compressor::topk, Compressor::threshold, Compressor::randk, Compressor::rbgs}) {
    for (Method m : {Method::samomentum, Method::dgc, Method::gd}) {
      SCOPED_TRACE(std::string(to_string(m)) + " " + to_string(c));
      Rig r = rig(model, m, c, [&] { return test::random_normal(rng, p, 0.01f); });
      const Config& config = r.config;
      const MessageLayout &layout = r.push, &sparse = r.sparse, &dense = r.dense;
      const host::WorkerState& state = r.state;
      auto worker = backend_->worker_kernels(r.segments, layout, config);
      worker->set_plan(push_plan(r.segments, config, encode_ratio(config.ratio)), stream_);
      auto server = backend_->server_kernels(model, config);
      detail::Buffer d_weights = upload(test::random_normal(rng, p)),
                     d_w = upload(test::random_normal(rng, p)),
                     d_r = upload(test::random_normal(rng, p)),
                     d_grad = upload(test::random_normal(rng, p));
      detail::Buffer d_push = poisoned(layout.bytes), d_sparse = poisoned(sparse.bytes),
                     d_dense = poisoned(dense.bytes);
      // The dense reply's values hold a model, as the server's W does.
      backend_->upload(static_cast<unsigned char*>(d_dense.data()) + dense.values_offset,
                       test::random_normal(rng, p).data(), p * sizeof(float), stream_);
      std::size_t before = 0;
      for (int step = 0; step < 4; ++step) {
        if (step == 1) before = free_bytes();  // every kernel has run once
        host::StepParams params;
        params.method = m;
        params.lr = 0.05f;
        params.momentum = config.momentum;
        params.seed = 5;
        params.step = static_cast<std::uint64_t>(step);
        // What does not report back to the host neither allocates nor waits
        // for the device (counted on the emulation); validation and the
        // statistics wait, by design.
        const std::uint64_t blocking = blocking_calls();
        worker->step(params, d_grad.as<float>(), d_weights.as<float>(), state, d_push.data(),
                     stream_);
        EXPECT_EQ(blocking_calls(), blocking) << "blocking calls in the worker's step";
        worker->last_stats(stream_);
        MessageHeader header = blank_header();
        const Verdict v = server->validate(d_push.data(), layout.bytes, header, stream_);
        ASSERT_TRUE(v.ok()) << v.describe(0);
        const std::uint64_t validated = blocking_calls();
        server->apply(d_push.data(), header, d_w.as<float>(), stream_);
        const host::ReplyInfo info{1, static_cast<std::uint64_t>(step)};
        server->sparse_reply(d_w.as<float>(), d_r.as<float>(), info, d_sparse.data(), stream_);
        EXPECT_EQ(blocking_calls(), validated) << "blocking calls in the apply and the reply";
        server->last_capture_use(stream_);
        const std::uint64_t replied = blocking_calls();
        server->dense_reply(d_dense.data(), nullptr, info, stream_);
        worker->apply_reply(d_sparse.data(), sparse, d_weights.as<float>(), false, stream_);
        worker->fold(d_sparse.data(), sparse, 0.5f, r.residual.as<float>(), stream_);
        worker->apply_reply(d_dense.data(), dense, d_weights.as<float>(), true, stream_);
        EXPECT_EQ(blocking_calls(), replied)
            << "blocking calls in the dense reply and the replies' application";
        CUDA_OK(cudaStreamSynchronize(stream_));
      }
      EXPECT_EQ(free_bytes(), before) << "bytes allocated by three steady steps";
    }
  }
}

// The device memory README's "Device memory" states, in bytes: a worker's
// beyond the caller's weights and gradient, and a server's, before the
// selection's small tables (a few KiB per tensor).
std::uint64_t documented_worker_bytes(const Segments& model, const Config& config) {
  const std::uint64_t p = model.total();
  const MessageLayout push = push_layout(model, config);
  const std::uint64_t dense = dense_reply_layout(model).bytes;
  std::uint64_t bytes = push.bytes + sparse_reply_layout(model, config).bytes;
  switch (config.method) {
    case Method::gd:
    case Method::gmc:
      bytes += 4 * p;
      break;
    case Method::gmc_plus:
    case Method::dgc:
      bytes += 8 * p;
      break;
    case Method::samomentum:
      bytes += 4 * p + 4 * host::mask_words(p);
      break;
    case Method::dense:
      break;
  }
  if (config.method == Method::dense) {
    // Dense replies in the push buffer where it is as large (float32 values).
    if (push.bytes < dense) bytes += dense;
  } else if (config.compressor == Compressor::rbgs) {
    bytes += dense;  // a buffer for dense replies
  } else {
    const std::uint64_t index = push.index_type == IndexType::u64 ? 8 : 4;
    // The candidate lists, the first with room for a dense reply between
    // steps, and the selected indices.
    bytes += 4 * p + std::max(4 * p, dense) + push.capacity * index;
    if (config.compressor == Compressor::threshold) {
      bytes += push.capacity * index;  // found out of order, then sorted
    } else {
      bytes += 4 * host::mask_words(p);  // the marks
    }
  }
  return bytes;
}

std::uint64_t documented_server_bytes(const Segments& model, const Config& config) {
  const std::uint64_t p = model.total();
  const bool sync = config.mode == Mode::sync;
  const MessageLayout push = push_layout(model, config), reply = sparse_reply_layout(model, config);
  const bool dense_replies = replies_are_dense(model, config);  // then no replicas
  // W inside a dense reply (a dense reply is W with its header written in
  // front), the replicas (sync: one shared, inside a dense reply for joiners)
  const std::uint64_t dense = dense_reply_layout(model).bytes;
  std::uint64_t bytes = dense +
                        (dense_replies ? 0
                         : sync        ? dense
                                       : 4 * p * config.workers) +
                        push.bytes * (1 + (sync ? config.workers : 0)) + reply.bytes;
  if (!dense_replies) {
    const std::uint64_t index = reply.index_type == IndexType::u64 ? 8 : 4;
    bytes += 8 * p + reply.capacity * index + 4 * host::mask_words(p);
  }
  if (sync && config.compressor == Compressor::rbgs) bytes += 4 * p;  // the round's accumulator
  return bytes;
}

// Workers and servers hold the device memory README states, for every method
// and compressor, async and sync: measured as the free memory they take,
// between the stated bytes and those plus 64 KiB per tensor (the tables).
// The emulation counts bytes; a GPU hands memory out in pages, so there the
// bound is looser by 16 MiB per object (each small table may take a page).
TEST_F(CudaBackendTest, WorkersAndServersHoldTheDocumentedDeviceMemory) {
  const Segments models[] = {Segments({3000000}), random_model(23, 40, 150000)};
#ifdef DGS_CUDA_EMULATION
  const std::uint64_t page_slack = 0;
#else
  const std::uint64_t page_slack = std::uint64_t{16} << 20;
#endif
  auto free_now = [] {
    std::size_t free = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
    return free;
  };
  // (method, compressor, reply ratio: 0 is the push's, 1 makes every reply
  // dense; wire values: a dense push of bf16 has no room for a dense reply)
  const std::tuple<Method, Compressor, double, WireValue> cases[] = {
      {Method::samomentum, Compressor::topk, 0.0, WireValue::f32},
      {Method::samomentum, Compressor::threshold, 0.0, WireValue::f32},
      {Method::gd, Compressor::randk, 0.0, WireValue::f32},
      {Method::dgc, Compressor::rbgs, 0.0, WireValue::f32},
      {Method::gmc_plus, Compressor::topk, 0.0, WireValue::f32},
      {Method::dense, Compressor::topk, 0.0, WireValue::f32},
      {Method::dense, Compressor::topk, 0.0, WireValue::bf16},
      {Method::samomentum, Compressor::topk, 1.0, WireValue::f32}};
  for (const Segments& model : models) {
    for (const auto& [m, c, reply_ratio, wire] : cases) {
      for (Mode mode : {Mode::async, Mode::sync}) {
        Config config;
        config.method = m;
        config.compressor = c;
        config.mode = mode;
        config.ratio = 0.01;
        config.server_ratio = reply_ratio;
        config.wire_values = wire;
        config.workers = 4;
        SCOPED_TRACE(std::string(to_string(m)) + " " + to_string(c) + " " + to_string(mode) +
                     ", replies " + std::to_string(reply_ratio) + ", " + to_string(wire) + ", " +
                     std::to_string(model.count()) + " tensors");
        const std::uint64_t slack =
            (std::uint64_t{128} << 10) + (std::uint64_t{64} << 10) * model.count() + page_slack;
        LocalHub hub(5, MemoryKind::device);
        detail::Buffer d_weights(*backend_, model.total() * sizeof(float));
        const std::vector<float> initial(model.total(), 0.5f);
        const std::size_t before = free_now();
        Server server(config, model, backend_, hub.endpoint(0), initial.data());
        const std::size_t with_server = free_now();
        Worker worker(config, model, backend_, hub.endpoint(1), d_weights.as<float>(),
                      WorkerOptions{});
        const std::size_t with_worker = free_now();
        const std::uint64_t server_bytes = before - with_server,
                            worker_bytes = with_server - with_worker;
        const std::uint64_t want_server = documented_server_bytes(model, config),
                            want_worker = documented_worker_bytes(model, config);
        EXPECT_GE(server_bytes + page_slack, want_server);
        EXPECT_LE(server_bytes, want_server + slack);
        EXPECT_GE(worker_bytes + page_slack, want_worker);
        EXPECT_LE(worker_bytes, want_worker + slack);
      }
    }
  }
}

// Kernels whose selection workspace does not fit the device: making them
// throws a dgs::Error that names the buffer, its bytes and the device's free
// memory, and frees what was allocated before it (a caller may catch the
// error and try a smaller model). The model is sized so that the first
// candidate list (4 B per parameter) fits and the second does not.
TEST_F(CudaBackendTest, AWorkspaceTooLargeForTheDeviceIsNamedAndFreed) {
  std::size_t free_before = 0, total = 0;
  CUDA_OK(cudaMemGetInfo(&free_before, &total));
  const std::uint64_t p = free_before / 6;
  std::vector<std::uint64_t> sizes;
  for (std::uint64_t left = p; left > 0; left -= sizes.back()) {
    sizes.push_back(std::min<std::uint64_t>(left, std::uint64_t{1} << 31));
  }
  const Segments model(sizes);
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.01;
  config.server_ratio = 0.01;
  config.workers = 1;
  const std::string list_bytes = std::to_string(p * 4) + " bytes";
  for (const char* side : {"worker", "server"}) {
    SCOPED_TRACE(side);
    std::string message;
    try {
      if (side == std::string("worker")) {
        backend_->worker_kernels(selection_segments(model, config), push_layout(model, config),
                                 config);
      } else {
        backend_->server_kernels(model, config);
      }
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::cuda);
      message = e.what();
    }
    ASSERT_NE(message, "") << "kernels for " << p << " parameters made with "
                           << free_before / (1u << 20) << " MiB free";
    EXPECT_NE(message.find("cudaMalloc of " + list_bytes), std::string::npos) << message;
    EXPECT_NE(message.find("second candidate list (4 B per parameter)"), std::string::npos)
        << message;
    EXPECT_NE(message.find(" free of "), std::string::npos) << message;
    std::size_t free_after = 0;
    CUDA_OK(cudaMemGetInfo(&free_after, &total));
#ifdef DGS_CUDA_EMULATION
    EXPECT_EQ(free_after, free_before) << "bytes left allocated after the error";
#else
    // A GPU's driver may keep a few pages; the list that leaked was 4P bytes.
    EXPECT_LE(free_before - std::min(free_before, free_after), std::size_t{64} << 20)
        << "bytes left allocated after the error";
#endif
  }
}

// The threshold compressor sorts its message's indices with CUB, whose item
// count is an int: kernels for a message of more slots are refused by name
// before anything is allocated (the count wrapped to INT_MIN before).
TEST_F(CudaBackendTest, AThresholdMessageOfMoreSlotsThanAnIntIsRefused) {
  const Segments model({std::uint64_t{1} << 31, std::uint64_t{1} << 31});
  Config config;
  config.method = Method::gd;
  config.compressor = Compressor::threshold;
  config.ratio = 0.5;
  config.workers = 1;
  const MessageLayout layout = push_layout(model, config);
  ASSERT_GT(layout.capacity, std::uint64_t{INT_MAX});
  std::string message;
  try {
    backend_->worker_kernels(selection_segments(model, config), layout, config);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    message = e.what();
  }
  EXPECT_NE(message.find("at most 2147483647 (2^31 - 1); this message holds " +
                         std::to_string(layout.capacity)),
            std::string::npos)
      << message;
}

#ifdef DGS_CUDA_EMULATION
// Every kernel launch is checked where it is made, and its error names that
// kernel and its sizes: the emulation fails the nth launch (dgs_emu::fail_launch)
// of making the kernels and running a worker step, the application of its
// replies, a validation, an apply, a sync round and both replies, for each n
// in turn, with every method and every compressor; each must throw a
// dgs::Error that names the kernel that failed. A launch left unchecked would let the step go on
// (or name a later kernel).
TEST_F(CudaBackendTest, EveryLaunchIsCheckedAndItsErrorNamesTheKernel) {
  const Segments model = random_model(22, 24, 12000);  // large, small and whole segments
  const std::uint64_t p = model.total();
  std::mt19937_64 rng(22);
  const std::vector<float> weights = test::random_normal(rng, p),
                           grad = test::random_normal(rng, p);
  const std::pair<Method, Compressor> cases[] = {
      {Method::samomentum, Compressor::topk},  {Method::samomentum, Compressor::threshold},
      {Method::samomentum, Compressor::randk}, {Method::samomentum, Compressor::rbgs},
      {Method::gd, Compressor::topk},          {Method::dgc, Compressor::topk},
      {Method::gmc, Compressor::topk},         {Method::dense, Compressor::topk}};
  for (const auto& [m, c] : cases) {
    const Config config = rig_config(m, c);
    const Segments segments = selection_segments(model, config);
    const MessageLayout layout = push_layout(model, config);
    const MessageLayout sparse = sparse_reply_layout(model, config);
    const MessageLayout dense = dense_reply_layout(model);
    test::RefWorker ref(model, config, 0, weights);
    const test::Bytes push = ref.push(grad, 0.1f);
    const std::pair<std::string, std::function<void()>> phases[] = {
        {"worker",
         [&] {
           auto worker = backend_->worker_kernels(segments, layout, config);
           worker->set_plan(push_plan(segments, config, encode_ratio(config.ratio)), stream_);
           Rig r = rig(model, m, c, [p] { return std::vector<float>(p, 0.01f); });
           const host::WorkerState& state = r.state;
           detail::Buffer d_weights = upload(weights), d_grad = upload(grad),
                          d_push = poisoned(layout.bytes), d_sparse = poisoned(sparse.bytes),
                          d_dense = poisoned(dense.bytes);
           host::StepParams params;
           params.method = m;
           params.lr = 0.05f;
           params.momentum = config.momentum;
           worker->step(params, d_grad.as<float>(), d_weights.as<float>(), state, d_push.data(),
                        stream_);
           worker->last_stats(stream_);
           auto server = backend_->server_kernels(model, config);
           detail::Buffer d_w = upload(weights), d_r = upload(weights);
           server->dense_reply(d_dense.data(), nullptr, {1, 1}, stream_);
           if (m != Method::dense) {  // whose every reply is dense
             server->sparse_reply(d_w.as<float>(), d_r.as<float>(), {1, 1}, d_sparse.data(),
                                  stream_);
             worker->apply_reply(d_sparse.data(), sparse, d_weights.as<float>(), false, stream_);
             worker->fold(d_sparse.data(), sparse, 0.5f, r.residual.as<float>(), stream_);
           }
           worker->apply_reply(d_dense.data(), dense, d_weights.as<float>(), true, stream_);
           worker->fold(d_dense.data(), dense, 0.5f, r.residual.as<float>(), stream_);
           worker->evaluation_point(d_weights.as<float>(), r.residual.as<float>(), 0.5f,
                                    d_grad.as<float>(), stream_);
         }},
        {"server",
         [&] {
           auto server = backend_->server_kernels(model, config);
           detail::Buffer d_push = upload(push), d_w = upload(weights), d_r = upload(weights),
                          d_sparse = poisoned(sparse.bytes), d_dense = poisoned(dense.bytes);
           MessageHeader header = blank_header();
           const Verdict v = server->validate(d_push.data(), push.size(), header, stream_);
           if (!v.ok()) throw std::logic_error("the push was rejected: " + v.describe(0));
           server->apply(d_push.data(), header, d_w.as<float>(), stream_);
           const host::RoundPush round[2] = {{d_push.data(), header}, {d_push.data(), header}};
           server->apply_round(round, 2, d_w.as<float>(), stream_);
           if (m != Method::dense) {
             server->sparse_reply(d_w.as<float>(), d_r.as<float>(), {1, 2}, d_sparse.data(),
                                  stream_);
             server->last_capture_use(stream_);
           }
           server->dense_reply(d_dense.data(), d_r.as<float>(), {1, 3}, stream_);
         }},
    };
    for (const auto& [name, run] : phases) {
      SCOPED_TRACE(name + " " + to_string(m) + " " + to_string(c));
      for (std::uint64_t n = 1;; ++n) {
        dgs_emu::fail_launch(n);
        std::string error;
        try {
          run();
        } catch (const Error& e) {
          error = e.what();
        }
        const char* failed = dgs_emu::failed_launch();
        dgs_emu::fail_launch(0);
        if (failed == nullptr) {  // fewer than n launches: all of them ran
          EXPECT_EQ(error, "");
          EXPECT_GT(n, 3u) << "launches";
          break;
        }
        ASSERT_NE(error, "") << "launch " << n << " (" << failed << ") failed and nothing threw";
        const std::string named = std::string(failed) + " failed: cudaErrorLaunchOutOfResources";
        EXPECT_NE(error.find(named), std::string::npos)
            << "launch " << n << " of " << failed << ": " << error;
        const std::size_t open = error.find(" ["), close = error.find("] at ");
        EXPECT_TRUE(open != std::string::npos && close != std::string::npos && close > open + 2)
            << "launch " << n << " names no sizes: " << error;
      }
    }
  }
}
#endif

// Applying a validated push needs no host synchronisation, so the server's
// apply can be captured in a graph for every payload (an rbgs push's segment
// table comes from validate's header, not read back).
TEST_F(CudaBackendTest, TheServersApplyCanBeCapturedInACudaGraph) {
  const Segments model = random_model(9, 30, 6000);
  const std::uint64_t p = model.total();
  for (Compressor c : {Compressor::topk, Compressor::rbgs, Compressor::threshold}) {
    for (Method m : {Method::gd, Method::dense}) {
      if (m == Method::dense && c != Compressor::topk) continue;
      Config config;
      config.method = m;
      config.compressor = c;
      config.ratio = 0.03;
      config.workers = 2;
      const std::string what = std::string(to_string(m)) + "/" + to_string(c);
      std::mt19937_64 rng(15);
      const host::PushRules rules(model, config);
      auto gpu = backend_->server_kernels(model, config);
      const ValidatedPush pushed = validated_push(*gpu, model, config, 0, rng);
      ASSERT_TRUE(pushed.verdict.ok()) << what << ": " << pushed.verdict.describe(0);
      const test::Bytes& push = pushed.bytes;
      const detail::Buffer& d_push = pushed.device;
      const MessageHeader& header = pushed.header;
      std::vector<float> w = test::random_normal(rng, p);
      detail::Buffer d_w = upload(w);
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CUDA_OK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
      gpu->apply(d_push.data(), header, d_w.as<float>(), stream_);
      CUDA_OK(cudaStreamEndCapture(stream_, &graph)) << what;
      CUDA_OK(cudaGraphInstantiate(&exec, graph, 0)) << what;
      for (int replay = 0; replay < 2; ++replay) {  // each replay adds the push once more
        CUDA_OK(cudaGraphLaunch(exec, stream_));
        host::apply_push(push.data(), rules, w.data());
        EXPECT_EQ(download<float>(d_w, p), w) << what << ", replay " << replay;
      }
      CUDA_OK(cudaGraphExecDestroy(exec));
      CUDA_OK(cudaGraphDestroy(graph));
      if (c == Compressor::rbgs) {  // a header that is not the push's is refused, not trusted
        EXPECT_THROW(gpu->apply(d_push.data(), blank_header(), d_w.as<float>(), stream_), Error);
      }
    }
  }
}

TEST_F(CudaBackendTest, ReplyFoldAndEvaluationPointMatchTheHost) {
  const Segments model = random_model(7, 20, 5000);
  Config config;
  config.ratio = 0.05;
  const std::uint64_t p = model.total();
  std::mt19937_64 rng(13);
  const std::vector<float> w0 = test::random_normal(rng, p), e0 = test::random_normal(rng, p, 0.1f);
  // A sparse reply written by the host server twin.
  std::vector<float> server = test::random_normal(rng, p), replica = w0;
  const MessageLayout sparse = sparse_reply_layout(model, config);
  std::vector<unsigned char> reply(sparse.bytes, 0);
  host::Scratch scratch;
  host::write_sparse_reply(server.data(), replica.data(), model, reply_plan(model, config), {},
                           reply.data(), sparse, scratch);
  auto gpu = backend_->worker_kernels(model, push_layout(model, config), config);
  detail::Buffer d_reply = upload(reply), d_w = upload(w0), d_e = upload(e0);
  std::vector<float> w = w0, e = e0;
  host::apply_reply(reply.data(), sparse, w.data(), false);
  host::fold_global_momentum(reply.data(), sparse, 0.225f, e.data());
  gpu->apply_reply(d_reply.data(), sparse, d_w.as<float>(), false, stream_);
  gpu->fold(d_reply.data(), sparse, 0.225f, d_e.as<float>(), stream_);
  EXPECT_EQ(download<float>(d_w, p), w);
  EXPECT_EQ(download<float>(d_e, p), e);
  // Dense reply with the change recorded, then its fold.
  const MessageLayout dense = dense_reply_layout(model);
  std::vector<unsigned char> dense_reply(dense.bytes, 0);
  host::write_dense_reply(server.data(), nullptr, {}, dense_reply.data(), dense);
  detail::Buffer d_dense = upload(dense_reply);
  host::apply_reply(dense_reply.data(), dense, w.data(), true);
  host::fold_global_momentum(dense_reply.data(), dense, 0.9f, e.data());
  gpu->apply_reply(d_dense.data(), dense, d_w.as<float>(), true, stream_);
  gpu->fold(d_dense.data(), dense, 0.9f, d_e.as<float>(), stream_);
  EXPECT_EQ(download<float>(d_w, p), w);
  EXPECT_EQ(download<float>(d_e, p), e);
  EXPECT_EQ(download<unsigned char>(d_dense, dense.bytes), dense_reply);
  std::vector<float> x(p);
  host::evaluation_point(w.data(), e.data(), 0.3f, x.data(), p);
  detail::Buffer d_x = poisoned(p * sizeof(float));
  gpu->evaluation_point(d_w.as<float>(), d_e.as<float>(), 0.3f, d_x.as<float>(), stream_);
  EXPECT_EQ(download<float>(d_x, p), x);
}

TEST_F(CudaBackendTest, ServerKernelsMatchTheHost) {
  const Segments model = random_model(8, 80, 40000);
  // Narrow wire values too: the replica adds what the worker receives.
  const std::pair<Compressor, WireValue> cases[] = {{Compressor::topk, WireValue::f32},
                                                    {Compressor::threshold, WireValue::f32},
                                                    {Compressor::rbgs, WireValue::f32},
                                                    {Compressor::topk, WireValue::bf16},
                                                    {Compressor::threshold, WireValue::f16}};
  for (const auto& [c, wire] : cases) {
    SCOPED_TRACE(std::string(to_string(c)) + " " + to_string(wire));
    Config config;
    config.method = Method::gd;
    config.compressor = c;
    config.wire_values = wire;
    config.ratio = 0.01;
    config.server_ratio = 0.02;
    config.workers = 2;
    const std::uint64_t p = model.total();
    std::mt19937_64 rng(14);
    const host::PushRules rules(model, config);
    auto gpu = backend_->server_kernels(model, config);
    const ValidatedPush pushed = validated_push(*gpu, model, config, 1, rng);
    ASSERT_TRUE(pushed.verdict.ok()) << pushed.verdict.describe(1);
    const test::Bytes& push = pushed.bytes;
    const detail::Buffer& d_push = pushed.device;
    const MessageHeader& header = pushed.header;
    EXPECT_EQ(std::memcmp(&header, push.data(), kHeaderBytes), 0) << "the header read back";
    std::vector<float> w = test::random_normal(rng, p), r = test::random_normal(rng, p);
    detail::Buffer d_w = upload(w), d_r = upload(r);
    expect_host_apply(*gpu, rules, pushed, w, d_w);
    // A sync round of the same push three times (SyncRoundsMatchTheHost has others).
    const host::RoundPush on_host[3] = {
        {push.data(), header}, {push.data(), header}, {push.data(), header}};
    const host::RoundPush on_gpu[3] = {
        {d_push.data(), header}, {d_push.data(), header}, {d_push.data(), header}};
    std::vector<float> acc;
    host::apply_round(on_host, 3, rules, w.data(), acc);
    gpu->apply_round(on_gpu, 3, d_w.as<float>(), stream_);
    EXPECT_EQ(download<float>(d_w, p), w);
    // The sparse reply: message and replica, bit for bit.
    expect_host_reply(*gpu, model, config, w, r, d_w, d_r, {3, 99});
    expect_host_dense_reply(*gpu, model, w, {4, 7});
  }
}

// A sync round of `workers` pushes (Config `config` in sync mode with that
// many workers) applied by the GPU and by the host, on
// the same model, in rounds of the first `counts[r]` pushes: the model bit
// for bit as the host's accumulator and average give it. Worker k pushes
// after `1 + k * stagger` steps (with a ratio schedule, pushes at different
// ratios); `zero_worker`'s gradients are all zero.
void expect_rounds_match(Backend& backend, const Segments& model, Config config,
                         std::uint32_t workers, const std::vector<std::uint32_t>& counts,
                         const std::string& what, std::uint32_t stagger = 0,
                         std::uint32_t zero_worker = UINT32_MAX) {
  config.workers = workers;
  config.mode = Mode::sync;
  auto gpu_kernels = backend.server_kernels(model, config);
  detail::ServerKernels& gpu = *gpu_kernels;
  const std::uint64_t p = model.total();
  const host::PushRules rules(model, config);
  std::mt19937_64 rng(16);
  std::vector<float> w = test::random_normal(rng, p);
  test::Floats d_w(backend, w);
  std::vector<test::Bytes> pushes;
  std::vector<detail::Buffer> d_pushes;
  std::vector<host::RoundPush> on_host, on_gpu;
  for (std::uint32_t k = 0; k < workers; ++k) {
    test::RefWorker worker(model, config, k, w);
    for (std::uint32_t s = 0; s <= k * stagger; ++s) {
      const std::vector<float> g =
          k == zero_worker ? std::vector<float>(p, 0.0f) : test::random_normal(rng, p);
      if (s == k * stagger) {
        pushes.push_back(worker.push(g, 0.1f));
      } else {
        worker.push(g, 0.1f);
      }
    }
    detail::Buffer d(backend, pushes.back().size());
    backend.upload(d.data(), pushes.back().data(), pushes.back().size(), nullptr);
    d_pushes.push_back(std::move(d));
  }
  for (std::uint32_t k = 0; k < workers; ++k) {
    MessageHeader header = blank_header();
    const Verdict v = gpu.validate(d_pushes[k].data(), pushes[k].size(), header, nullptr);
    ASSERT_TRUE(v.ok()) << what << ": " << v.describe(k);
    on_host.push_back({pushes[k].data(), header});
    on_gpu.push_back({d_pushes[k].data(), header});
  }
  // A round of other kernels on other weights first, so the round's code is
  // loaded (CUDA loads kernels lazily) before the free memory is compared.
  {
    auto warm = backend.server_kernels(model, config);
    test::Floats scratch(backend, w);
    warm->apply_round(on_gpu.data(), workers, scratch.data(), nullptr);
    backend.synchronize(nullptr);
  }
  std::vector<float> acc;
  for (std::uint32_t count : counts) {
    host::apply_round(on_host.data(), count, rules, w.data(), acc);
    std::size_t free_before = 0, free_after = 0, total = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
    gpu.apply_round(on_gpu.data(), count, d_w.data(), nullptr);
    ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
    // Its room was made with the kernels: a round allocates nothing.
    EXPECT_EQ(free_after, free_before) << what << ", a round of " << count;
    ASSERT_EQ(d_w.host(), w) << what << ", a round of " << count;
  }
}

// Sync rounds of pushes from different workers (their indices overlap in
// part), for index lists (sums in shared memory, per tile, no accumulator),
// rbgs blocks (the accumulator) and dense pushes (one pass), with wire
// values of every width; the model spans many round tiles, more than the
// blocks the emulation holds at once. Then: a model of over a thousand tiles
// (more than an H100 holds blocks, so there too a block goes from tile to
// tile); a round of 300 pushes (more than a block's threads); pushes at
// different ratios; a push with almost no entries.
TEST_F(CudaBackendTest, SyncRoundsMatchTheHost) {
  const Segments model({70000, 3, 9000, 1, 60000, 40000, 8191, 8193});
  struct Case {
    Method method;
    Compressor compressor;
    double ratio;
    WireValue wire;
  };
  const Case cases[] = {
      {Method::gd, Compressor::topk, 0.01, WireValue::f32},
      {Method::gd, Compressor::topk, 0.3, WireValue::bf16},
      {Method::dgc, Compressor::threshold, 0.02, WireValue::f16},
      {Method::samomentum, Compressor::randk, 0.05, WireValue::f32},
      {Method::gd, Compressor::rbgs, 0.04, WireValue::f32},
      {Method::dense, Compressor::topk, 1.0, WireValue::f32},
  };
  // A sync Config of gd (or `method`) pushes at `ratio`.
  auto config_of = [](double ratio, Method method = Method::gd,
                      Compressor compressor = Compressor::topk) {
    Config config;
    config.method = method;
    config.compressor = compressor;
    config.ratio = ratio;
    return config;
  };
  for (const Case& c : cases) {
    Config config = config_of(c.ratio, c.method, c.compressor);
    config.wire_values = c.wire;
    const std::string what = std::string(to_string(c.method)) + "/" + to_string(c.compressor) +
                             " at " + std::to_string(c.ratio) + ", " + to_string(c.wire);
    expect_rounds_match(*backend_, model, config, 5, {1, 3, 5}, what);
  }
  auto gpu = backend_->server_kernels(model, config_of(0.01));
  EXPECT_THROW(gpu->apply_round(nullptr, 0, nullptr, stream_), Error) << "a round of no pushes";
  const Segments big({(std::uint64_t{1} << 23) + 12345, 70001});
  expect_rounds_match(*backend_, big, config_of(0.01), 3, {3}, "over a thousand tiles");
  expect_rounds_match(*backend_, Segments({3000, 2000}), config_of(0.02), 300, {300, 257},
                      "300 pushes");
  for (Compressor c : {Compressor::topk, Compressor::rbgs}) {
    Config config = config_of(0.01, Method::gd, c);
    config.schedule = RatioSchedule::warmup;
    config.warmup_ratios = {0.25, 0.1, 0.05};
    config.warmup_steps = 1;
    expect_rounds_match(*backend_, model, config, 4, {4, 2},
                        std::string("ratios of ") + to_string(c), 1);
  }
  expect_rounds_match(*backend_, model, config_of(0.02, Method::dgc, Compressor::threshold), 3, {3},
                      "a push of zeros", 0, 1);
}

// The reply selection's capture (select.cuh) as W - R moves: reused while the
// boundary stays above the guess, abandoned segment by segment when it falls
// below it or the capture overflows, and the reply equal to the host's
// throughout.
TEST_F(CudaBackendTest, ReplySelectionFallsBackToTheDataWhenItsCaptureMisses) {
  // Segments 0, 1, 3, 4 and 5 are large (over 4096 coordinates, k < n).
  const Segments model({5000, 70000, 300, 20000, (std::uint64_t{1} << 17) + 5, 9000});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.01;
  config.server_ratio = 0.01;
  config.workers = 1;
  auto gpu = backend_->server_kernels(model, config);
  std::mt19937_64 rng(15);
  const std::uint64_t p = model.total();
  std::vector<float> r = test::random_normal(rng, p, 0.01f);
  detail::Buffer d_r = upload(r);
  struct Step {
    float even, odd;  // scale of W in even and odd segments; 0: ties
    int used;         // large segments expected to read their capture; -1: any
    int missed;       // large segments expected to be histogrammed again; -1: any
  };
  const Step steps[] = {
      {1, 1, 0, 0},                      // no guess yet: every segment histogrammed in full
      {1, 1, 5, 0},                      // same distribution: every capture holds the boundary
      {0.25f, 1, 3, 2},                  // boundaries of segments 0 and 4 fall below their guess
      {0.25f, 1, 5, 0}, {16, 16, 0, 0},  // every capture overflows its room
      {16, 16, 5, 0},   {0, 0, -1, -1},  // heavy ties
      {0, 0, -1, -1},
  };
  for (std::size_t t = 0; t < std::size(steps); ++t) {
    SCOPED_TRACE("reply " + std::to_string(t));
    std::vector<float> w(p);
    for (std::size_t l = 0; l < model.count(); ++l) {
      const float scale = l % 2 == 0 ? steps[t].even : steps[t].odd;
      const std::vector<float> x = scale == 0 ? test::random_ties(rng, model.size(l))
                                              : test::random_normal(rng, model.size(l), scale);
      std::copy(x.begin(), x.end(), w.begin() + static_cast<std::ptrdiff_t>(model.offset(l)));
    }
    detail::Buffer d_w = upload(w);
    const host::CaptureUse use =
        expect_host_reply(*gpu, model, config, w, r, d_w, d_r, {1, static_cast<std::uint64_t>(t)});
    if (HasFailure()) return;
    EXPECT_EQ(use.segments, 5u);
    if (steps[t].used >= 0) {
      EXPECT_EQ(use.used, static_cast<std::uint64_t>(steps[t].used));
    }
    if (steps[t].missed >= 0) {
      EXPECT_EQ(use.missed, static_cast<std::uint64_t>(steps[t].missed));
    }
  }
}

TEST_F(CudaBackendTest, ValidationReportsWhatTheHostReports) {
  const Segments model({1000, 200, 3, 800});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.02;
  config.workers = 3;
  std::mt19937_64 rng(15);
  test::RefWorker worker(model, config, 1, test::random_normal(rng, model.total()));
  const host::PushRules rules(model, config);
  auto gpu = backend_->server_kernels(model, config);
  const MessageLayout& l = worker.layout();
  const std::vector<std::function<void(test::Bytes&)>> spoilers = {
      [](test::Bytes&) {},
      [](test::Bytes& m) {
        MessageHeader h = read_header(m.data());
        h.count += 1;
        write_header(m.data(), h);
      },
      [&](test::Bytes& m) { write_index(m.data(), l, 40, 5000); },
      [&](test::Bytes& m) { write_index(m.data(), l, 5, read_index(m.data(), l, 4)); },
      [&](test::Bytes& m) {
        write_index(m.data(), l, 19, 998);
        write_index(m.data(), l, 20, 999);
      },
      [&](test::Bytes& m) {
        write_value(m.data(), l, 7, std::nanf(""));
        write_value(m.data(), l, 3, INFINITY);
      },
      [&](test::Bytes& m) {
        write_value(m.data(), l, 2, INFINITY);
        write_index(m.data(), l, 30, 1);
      },
  };
  for (std::size_t s = 0; s < spoilers.size(); ++s) {
    test::Bytes push = worker.push(test::random_normal(rng, model.total()), 0.1f);
    spoilers[s](push);
    expect_host_verdict(*gpu, rules, push, "spoiler " + std::to_string(s));
  }
  // rbgs: one block start per segment, inside it (segment 3 has 800).
  config.compressor = Compressor::rbgs;
  test::RefWorker blocks(model, config, 1, test::random_normal(rng, model.total()));
  const host::PushRules block_rules(model, config);
  auto block_gpu = backend_->server_kernels(model, config);
  for (std::uint64_t start : {799ull, 800ull, 801ull, 1ull << 31}) {
    test::Bytes push = blocks.push(test::random_normal(rng, model.total()), 0.1f);
    write_index(push.data(), blocks.layout(), 3, start);
    expect_host_verdict(*block_gpu, block_rules, push, "block start " + std::to_string(start));
  }
}

// Validation checks a push's entries against the segment table of the last
// push while the header comes down; a push at another ratio must be checked
// against its own. Pushes of a warm-up schedule (10% for a step, then 2%)
// alternate, clean and spoiled, with a hello between: every verdict is the
// host's. A 10% push is valid only under its table (its slot 20 lies in
// segment 0), and the spoiled 2% push is invalid only under its own.
TEST_F(CudaBackendTest, ValidationFollowsThePushRatioFromMessageToMessage) {
  const Segments model({1000, 200, 3, 800});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.02;
  config.schedule = RatioSchedule::warmup;
  config.warmup_ratios = {0.1};
  config.warmup_steps = 1;
  config.workers = 3;
  std::mt19937_64 rng(17);
  const host::PushRules rules(model, config);
  auto gpu = backend_->server_kernels(model, config);
  const std::uint64_t p = model.total();
  test::RefWorker ref(model, config, 1, test::random_normal(rng, p));
  const MessageLayout l = ref.layout();
  // A push of a fresh worker: its first step (10%) or its second (2%).
  auto push = [&](bool warm) {
    test::RefWorker worker(model, config, 1, test::random_normal(rng, p));
    if (!warm) worker.push(test::random_normal(rng, p), 0.1f);
    return test::Bytes(worker.push(test::random_normal(rng, p), 0.1f));
  };
  auto spoiled_order = [&] {
    test::Bytes m = push(false);
    write_index(m.data(), l, 19, 998);
    write_index(m.data(), l, 20, 999);
    return m;
  };
  auto spoiled_count = [&] {
    test::Bytes m = push(false);
    MessageHeader h = read_header(m.data());
    h.count = l.capacity + 5;  // entries past the buffer: never read
    write_header(m.data(), h);
    return m;
  };
  auto spoiled_value = [&] {
    test::Bytes m = push(true);
    write_value(m.data(), l, 50, std::nanf(""));
    return m;
  };
  const std::vector<std::pair<test::Bytes, RejectReason>> messages = {
      {push(false), RejectReason::none},
      {push(true), RejectReason::none},
      {spoiled_order(), RejectReason::index_segment},
      {push(false), RejectReason::none},
      {ref.hello(), RejectReason::none},
      {spoiled_count(), RejectReason::count},
      {spoiled_value(), RejectReason::value},
      {push(true), RejectReason::none},
      {push(false), RejectReason::none},
  };
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const test::Bytes& m = messages[i].first;
    ASSERT_EQ(host::validate_push(m.data(), m.size(), rules).reason, messages[i].second)
        << "message " << i << ": the host's verdict";
    expect_host_verdict(*gpu, rules, m, "message " + std::to_string(i));
  }
}

// A whole job (server thread, three workers in a fixed order) on each
// backend: the cuda run must equal the host run bit for bit. With
// `restore_at` in [1, steps), after that many steps the server and every
// worker save a checkpoint, and a new server and new workers, started from
// other weights, restore them and go on.
std::vector<std::vector<float>> run_job(Backend& backend_ref, std::shared_ptr<Backend> backend,
                                        const Config& config, const Segments& model, int steps,
                                        std::vector<std::shared_ptr<Transport>> endpoints = {},
                                        int restore_at = -1) {
  const std::uint64_t p = model.total();
  const MemoryKind memory = memory_of(*backend);
  LocalHub hub(static_cast<int>(config.workers) + 1, memory);
  if (endpoints.empty()) {
    for (int r = 0; r <= static_cast<int>(config.workers); ++r)
      endpoints.push_back(hub.endpoint(r));
  }
  std::mt19937_64 rng(16);
  const std::vector<float> w0 = test::random_normal(rng, p);
  auto server = std::make_unique<Server>(config, model, backend, endpoints[0], w0.data());
  auto serving = std::make_unique<test::ServerThread>(*server);
  std::vector<std::unique_ptr<test::Floats>> weights, grads;
  std::vector<std::unique_ptr<Worker>> workers(config.workers);
  auto make_worker = [&](std::uint32_t k) {
    WorkerOptions o;
    o.id = k;
    workers[k] =
        std::make_unique<Worker>(config, model, backend, endpoints[k + 1], weights[k]->data(), o);
  };
  for (std::uint32_t k = 0; k < config.workers; ++k) {
    weights.push_back(std::make_unique<test::Floats>(backend_ref, p));
    grads.push_back(std::make_unique<test::Floats>(backend_ref, p));
    make_worker(k);
    workers[k]->join();
  }
  const test::Quadratic problem(p, 17);
  for (int t = 0; t < steps; ++t) {
    if (t == restore_at) {
      serving->stop();
      const std::string path = ::testing::TempDir() + "dgs_gpu_job_" + std::to_string(::getpid());
      server->save(path + "_server");
      for (std::uint32_t k = 0; k < config.workers; ++k) {
        workers[k]->save(path + "_worker" + std::to_string(k));
      }
      for (auto& worker : workers) worker.reset();
      serving.reset();
      server.reset();
      const std::vector<float> other(p, 7.0f);
      server = std::make_unique<Server>(config, model, backend, endpoints[0], other.data());
      server->restore(path + "_server");
      std::remove((path + "_server").c_str());
      for (std::uint32_t k = 0; k < config.workers; ++k) {
        weights[k]->assign(other);
        make_worker(k);
        workers[k]->restore(path + "_worker" + std::to_string(k));
        std::remove((path + "_worker" + std::to_string(k)).c_str());
      }
      serving = std::make_unique<test::ServerThread>(*server);
    }
    for (std::uint32_t k = 0; k < config.workers; ++k) {
      grads[k]->assign(problem.gradient(weights[k]->host(), t, k));
      if (config.mode == Mode::sync) {
        workers[k]->push(grads[k]->data(), 0.02f);
      } else {
        workers[k]->step(grads[k]->data(), 0.02f);
      }
    }
    if (config.mode == Mode::sync) {
      for (auto& worker : workers) worker->finish();
    }
  }
  serving->stop();
  std::vector<std::vector<float>> out;
  for (const auto& b : weights) out.push_back(b->host());
  out.emplace_back(p);
  server->copy_model(out.back().data());
  return out;
}

// Three workers, 2% pushes and 5% replies.
Config job_config(Method method, Mode mode) {
  Config config;
  config.method = method;
  config.mode = mode;
  config.ratio = 0.02;
  config.server_ratio = 0.05;
  config.workers = 3;
  return config;
}

// Two run_job results hold the same bits, process by process.
void expect_same_job(const std::vector<std::vector<float>>& want,
                     const std::vector<std::vector<float>>& got, const Config& config,
                     const char* what) {
  ASSERT_EQ(want.size(), got.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(std::memcmp(want[i].data(), got[i].data(), want[i].size() * sizeof(float)), 0)
        << to_string(config.method) << " " << to_string(config.mode) << ": "
        << (i + 1 == want.size() ? std::string("server model") : "worker " + std::to_string(i))
        << " differs " << what;
  }
}

// Replies of 5%, and for gmc every reply dense: a worker receives those into
// its selection's workspace, and folds each into its residual at its next
// push, before the step that reuses that workspace.
TEST_F(CudaBackendTest, AWholeJobOnTheGpuEqualsTheHostRunBitForBit) {
  const Segments model = random_model(18, 30, 20000);
  const std::pair<Method, double> cases[] = {{Method::samomentum, 0.05},
                                             {Method::gmc_plus, 0.05},
                                             {Method::dgc, 0.05},
                                             {Method::gmc, 1.0}};
  for (Mode mode : {Mode::async, Mode::sync}) {
    for (const auto& [method, reply_ratio] : cases) {
      SCOPED_TRACE("replies " + std::to_string(reply_ratio));
      Config config = job_config(method, mode);
      config.server_ratio = reply_ratio;
      expect_same_job(run_job(*host_, host_, config, model, 20),
                      run_job(*backend_, backend_, config, model, 20), config, "on the GPU");
    }
  }
}

// Checkpoints of a GPU job (server model, replicas, worker state and the
// last reply, all in device memory) restore into new processes that go on
// exactly as the uninterrupted host run.
// A gmc worker whose replies are all dense keeps its last reply (to fold) in
// its selection's workspace; the checkpoint holds it.
TEST_F(CudaBackendTest, AGpuJobRestoredFromCheckpointsContinuesLikeTheHostRun) {
  const Segments model = random_model(24, 20, 20000);
  const std::pair<Method, double> cases[] = {
      {Method::samomentum, 0.05}, {Method::gmc, 0.05}, {Method::gmc, 1.0}};
  for (Mode mode : {Mode::async, Mode::sync}) {
    for (const auto& [method, reply_ratio] : cases) {
      SCOPED_TRACE("replies " + std::to_string(reply_ratio));
      Config config = job_config(method, mode);
      config.server_ratio = reply_ratio;
      expect_same_job(run_job(*host_, host_, config, model, 16),
                      run_job(*backend_, backend_, config, model, 16, {}, 7), config,
                      "after the restore");
    }
  }
}

#if DGS_WITH_NCCL && !defined(DGS_CUDA_EMULATION)  // NCCL needs the real runtime
TEST_F(CudaBackendTest, AWholeJobOverTheNcclLoopbackEqualsTheHostRun) {
  const Segments model = random_model(19, 20, 10000);
  for (Mode mode : {Mode::async, Mode::sync}) {
    Config config = job_config(Method::samomentum, mode);
    config.server_ratio = 0.0;  // replies at the push ratio
    expect_same_job(run_job(*host_, host_, config, model, 10),
                    run_job(*backend_, backend_, config, model, 10, make_nccl_loopback(3)), config,
                    "over the NCCL loopback");
  }
}
#endif

}  // namespace
}  // namespace dgs
