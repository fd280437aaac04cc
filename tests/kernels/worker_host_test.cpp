#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/plan.h"
#include "kernels/entries_host.h"
#include "kernels/worker_host.h"
#include "support/host_job.h"
#include "support/random.h"

namespace dgs {
namespace {

using test::Bytes;
using test::Quadratic;
using test::RefServer;
using test::RefWorker;

constexpr int kSteps = 50;
constexpr float kLr = 0.05f;
constexpr float kMomentum = 0.9f;
constexpr float kWeightDecay = 1e-3f;

Segments small_model() {
  return Segments({300, 17, 1, 64, 500});
}

Config full_density(Method method) {
  Config config;
  config.method = method;
  config.ratio = 1.0;
  config.momentum = kMomentum;
  config.weight_decay = kWeightDecay;
  return config;
}

float decayed(const std::vector<float>& w, const std::vector<float>& g, std::size_t i) {
  return std::fmaf(kWeightDecay, w[i], g[i]);
}

// One worker and the server at rho = 1; returns the worker's model after each step.
std::vector<std::vector<float>> run_one_worker(const Config& config, const Quadratic& problem,
                                               const std::vector<float>& w0) {
  const Segments model = small_model();
  RefServer server(model, config, w0);
  RefWorker worker(model, config, 0, std::vector<float>(w0.size(), 123.0f));
  Bytes reply;
  EXPECT_TRUE(server.handle(worker.hello(), reply).ok());
  worker.apply(reply);
  EXPECT_EQ(worker.weights, w0);
  std::vector<std::vector<float>> trajectory;
  for (int t = 0; t < kSteps; ++t) {
    const Verdict v =
        server.handle(worker.push(problem.gradient(worker.weights, t, 0), kLr), reply);
    EXPECT_TRUE(v.ok()) << v.describe(0);
    EXPECT_EQ(read_header(reply.data()).kind, MessageKind::dense_reply);
    worker.apply(reply);
    EXPECT_EQ(worker.weights, server.weights);
    trajectory.push_back(worker.weights);
  }
  return trajectory;
}

template <typename Update>
std::vector<std::vector<float>> run_dense_reference(const Quadratic& problem, std::vector<float> w,
                                                    Update update) {
  std::vector<std::vector<float>> trajectory;
  for (int t = 0; t < kSteps; ++t) {
    const std::vector<float> g = problem.gradient(w, t, 0);
    std::vector<float> next = w;
    for (std::size_t i = 0; i < w.size(); ++i) next[i] = update(i, w[i], decayed(w, g, i));
    w = next;
    trajectory.push_back(w);
  }
  return trajectory;
}

void expect_same_trajectory(const std::vector<std::vector<float>>& got,
                            const std::vector<std::vector<float>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t t = 0; t < got.size(); ++t) {
    ASSERT_EQ(std::memcmp(got[t].data(), want[t].data(), got[t].size() * sizeof(float)), 0)
        << "trajectories part at step " << t;
  }
}

class FullDensity : public ::testing::Test {
 protected:
  Quadratic problem{small_model().total(), 31};
  std::vector<float> w0 = [] {
    std::mt19937_64 rng(32);
    return test::random_normal(rng, small_model().total());
  }();
};

TEST_F(FullDensity, SamomentumIsMomentumSgd) {
  std::vector<float> u(w0.size(), 0.0f);
  const auto want = run_dense_reference(problem, w0, [&](std::size_t i, float w, float g) {
    u[i] = std::fmaf(kMomentum, u[i], kLr * g);
    return w - u[i];
  });
  expect_same_trajectory(run_one_worker(full_density(Method::samomentum), problem, w0), want);
}

TEST_F(FullDensity, DgcWithoutFactorMaskingIsMomentumSgd) {
  std::vector<float> u(w0.size(), 0.0f);
  const auto want = run_dense_reference(problem, w0, [&](std::size_t i, float w, float g) {
    u[i] = std::fmaf(kMomentum, u[i], g);
    return w - kLr * u[i];
  });
  Config config = full_density(Method::dgc);
  config.factor_masking = false;
  expect_same_trajectory(run_one_worker(config, problem, w0), want);
}

TEST_F(FullDensity, DgcWithFactorMaskingIsPlainSgd) {
  const auto want =
      run_dense_reference(problem, w0, [](std::size_t, float w, float g) { return w - kLr * g; });
  expect_same_trajectory(run_one_worker(full_density(Method::dgc), problem, w0), want);
}

TEST_F(FullDensity, GradientDroppingIsSgd) {
  const auto want =
      run_dense_reference(problem, w0, [](std::size_t, float w, float g) { return w - kLr * g; });
  expect_same_trajectory(run_one_worker(full_density(Method::gd), problem, w0), want);
}

TEST_F(FullDensity, DenseIsSgd) {
  const auto want =
      run_dense_reference(problem, w0, [](std::size_t, float w, float g) { return w - kLr * g; });
  expect_same_trajectory(run_one_worker(full_density(Method::dense), problem, w0), want);
}

// Sync gmc at rho = 1 with K workers is heavy-ball momentum on the averaged
// gradient: w' = w - (1/K) sum_k (lr g_k + beta (w_prev - w)). The reference
// below is written in the order of operations the system uses.
TEST_F(FullDensity, SyncGmcIsHeavyBallMomentum) {
  constexpr std::uint32_t kWorkers = 3;
  const Segments model = small_model();
  Config config = full_density(Method::gmc);
  config.mode = Mode::sync;
  config.workers = kWorkers;
  RefServer server(model, config, w0);
  std::vector<RefWorker> workers;
  Bytes reply;
  for (std::uint32_t k = 0; k < kWorkers; ++k) {
    workers.emplace_back(model, config, k, std::vector<float>(w0.size(), -1.0f));
    ASSERT_TRUE(server.handle(workers[k].hello(), reply).ok());
    workers[k].apply(reply);
  }

  const float inverse = 1.0f / static_cast<float>(kWorkers);
  std::vector<float> w = w0;
  std::vector<float> change;  // w - w_prev of the last step; empty before the first
  for (int t = 0; t < kSteps; ++t) {
    std::vector<float> sum(w.size(), 0.0f);
    for (std::uint32_t k = 0; k < kWorkers; ++k) {
      const std::vector<float> g = problem.gradient(w, t, k);
      for (std::size_t i = 0; i < w.size(); ++i) {
        const float momentum_term = change.empty() ? 0.0f : std::fmaf(-kMomentum, change[i], 0.0f);
        sum[i] = sum[i] + (momentum_term + kLr * decayed(w, g, i));
      }
    }
    std::vector<float> next(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) next[i] = w[i] - sum[i] * inverse;
    change.resize(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) change[i] = next[i] - w[i];
    w = next;

    std::vector<Bytes> pushes;
    for (std::uint32_t k = 0; k < kWorkers; ++k) {
      pushes.push_back(workers[k].push(problem.gradient(workers[k].weights, t, k), kLr));
    }
    std::vector<const Bytes*> round;
    for (const Bytes& p : pushes) round.push_back(&p);
    const Verdict v = server.round(round, reply);
    ASSERT_TRUE(v.ok()) << v.describe(0);
    for (RefWorker& worker : workers) {
      worker.apply(reply);
      ASSERT_EQ(std::memcmp(worker.weights.data(), w.data(), w.size() * sizeof(float)), 0)
          << "step " << t;
    }
    ASSERT_EQ(server.weights, w);
  }
}

// The original samomentum: u = m u + lr g'; send u_S; u_notS /= m.
struct OriginalSamomentum {
  std::vector<float> u;
  std::vector<std::uint64_t> step(const std::vector<float>& g, float m, const Segments& segments,
                                  const SelectionPlan& plan, std::vector<float>& sent) {
    if (u.empty()) u.assign(g.size(), 0.0f);
    for (std::size_t i = 0; i < g.size(); ++i) u[i] = std::fmaf(m, u[i], kLr * g[i]);
    std::vector<std::uint64_t> chosen(plan.total_capacity());
    chosen.resize(host::select(u.data(), segments, plan, 0, 0, 1024, chosen.data(), nullptr));
    std::vector<bool> in(g.size(), false);
    sent.clear();
    for (std::uint64_t i : chosen) {
      in[i] = true;
      sent.push_back(u[i]);
    }
    for (std::size_t i = 0; i < g.size(); ++i) {
      if (!in[i]) u[i] = u[i] / m;
    }
    return chosen;
  }
};

TEST(Samomentum, DivisionFreeFormEqualsTheOriginalForm) {
  const Segments model({2000, 50, 700, 1, 1200});
  for (float m : {0.3f, 0.7f, 0.9f}) {
    Config config;
    config.method = Method::samomentum;
    config.ratio = 0.05;
    config.momentum = m;
    RefWorker worker(model, config, 0, std::vector<float>(model.total(), 0.0f));
    OriginalSamomentum original;
    const SelectionPlan plan = push_plan(model, config, encode_ratio(config.ratio));
    std::mt19937_64 rng(40);
    std::vector<float> sent;
    for (int t = 0; t < 30; ++t) {
      const std::vector<float> g = test::random_normal(rng, model.total());
      const Bytes& push = worker.push(g, kLr);
      const std::vector<std::uint64_t> chosen = original.step(g, m, model, plan, sent);
      const MessageLayout& layout = worker.layout();
      ASSERT_EQ(read_header(push.data()).count, chosen.size());
      for (std::size_t j = 0; j < chosen.size(); ++j) {
        ASSERT_EQ(read_index(push.data(), layout, j), chosen[j]) << "m " << m << " step " << t;
        const float got = read_value(push.data(), layout, j);
        ASSERT_NEAR(got, sent[j], 1e-5f * std::fabs(sent[j])) << "m " << m << " step " << t;
      }
    }
  }
}

TEST(Samomentum, WithoutMomentumIsGradientDroppingBitForBit) {
  const Segments model({1500, 40, 3, 900});
  Config gd;
  gd.method = Method::gd;
  gd.ratio = 0.03;
  Config sam = gd;
  sam.method = Method::samomentum;
  sam.momentum = 0.0f;
  RefWorker a(model, gd, 0, std::vector<float>(model.total(), 0.0f));
  RefWorker b(model, sam, 0, std::vector<float>(model.total(), 0.0f));
  std::mt19937_64 rng(41);
  for (int t = 0; t < 30; ++t) {
    const std::vector<float> g = test::random_normal(rng, model.total());
    ASSERT_EQ(a.push(g, kLr), b.push(g, kLr)) << "step " << t;
  }
}

// The squared norm is exact where every partial sum is (small integers), in
// every chunk layout: one chunk, a partial last chunk, more chunks than the
// second pass has parts.
TEST(Clipping, TheSquaredNormIsTheSumOfSquares) {
  std::vector<double> chunks;
  for (std::uint64_t p : {1ull, 4095ull, 4097ull, 257ull * 4096 + 5}) {
    std::vector<float> g(p);
    double want = 0.0;
    for (std::uint64_t i = 0; i < p; ++i) {
      g[i] = static_cast<float>(static_cast<int>(i % 13) - 6);
      want += static_cast<double>(g[i]) * g[i];
    }
    EXPECT_EQ(host::squared_norm(g.data(), p, chunks), want) << p;
    EXPECT_EQ(chunks.size(), (p + 4095) / 4096);
  }
}

// g = (3, 4) has norm 5: clipped to 1 it becomes 0.2 * g (the float scale
// (float)(1 / 5.0)), then weight decay is folded in; at a larger clip_norm
// g is unchanged, bit for bit.
TEST(Clipping, AGradientAboveTheNormIsScaledBeforeWeightDecay) {
  const Segments model({2});
  for (float clip : {1.0f, 5.0f, 100.0f}) {
    Config config;
    config.method = Method::gd;
    config.ratio = 1.0;
    config.weight_decay = 0.5f;
    config.clip_norm = clip;
    RefWorker worker(model, config, 0, {1.0f, -2.0f});
    const Bytes& push = worker.push({3.0f, 4.0f}, 1.0f);
    const float scale = clip < 5.0f ? static_cast<float>(1.0 / 5.0) : 1.0f;
    const float want[2] = {std::fmaf(0.5f, 1.0f, scale * 3.0f),
                           std::fmaf(0.5f, -2.0f, scale * 4.0f)};
    std::vector<float> got(2, NAN);
    const host::PushRules rules(model, config);
    const SelectionPlan plan = rules.plan_at(read_header(push.data()).ratio_code);
    host::for_each_entry(push.data(), worker.layout(), &rules.segments, &plan,
                         [&](std::uint64_t i, float s) { got[i] = s; });
    EXPECT_EQ(got[0], want[0]) << clip;
    EXPECT_EQ(got[1], want[1]) << clip;
  }
}

// sum_t s_t + r = sum_t lr * g'_t, to float rounding, for every coordinate.
void expect_conservation(Method method, Compressor compressor, WireValue wire) {
  const Segments model({3000, 100, 1, 900});
  Config config;
  config.method = method;
  config.compressor = compressor;
  config.wire_values = wire;
  config.ratio = 0.02;
  config.weight_decay = 1e-2f;
  config.seed = 99;
  std::mt19937_64 rng(50);
  const std::vector<float> w = test::random_normal(rng, model.total());
  RefWorker worker(model, config, 0, w);
  const host::PushRules rules(model, config);
  std::vector<double> input(model.total(), 0.0), magnitude(model.total(), 0.0),
      sent(model.total(), 0.0);
  for (int t = 0; t < 40; ++t) {
    const std::vector<float> g = test::random_normal(rng, model.total());
    for (std::size_t i = 0; i < g.size(); ++i) {
      const float term = 0.1f * std::fmaf(config.weight_decay, w[i], g[i]);
      input[i] += term;
      magnitude[i] += std::fabs(term);
    }
    const Bytes& push = worker.push(g, 0.1f);
    ASSERT_TRUE(host::validate_push(push.data(), push.size(), rules).ok());
    const MessageHeader h = read_header(push.data());
    const SelectionPlan plan = rules.plan_at(h.ratio_code);
    host::for_each_entry(push.data(), worker.layout(), &rules.segments, &plan,
                         [&](std::uint64_t i, float s) { sent[i] += s; });
  }
  for (std::size_t i = 0; i < input.size(); ++i) {
    ASSERT_NEAR(sent[i] + worker.residual[i], input[i], 1e-5 * magnitude[i] + 1e-30)
        << to_string(method) << " " << to_string(compressor) << " " << to_string(wire) << " at "
        << i;
  }
}

TEST(Conservation, GradientDroppingSentPlusResidualIsTheInput) {
  for (Compressor c :
       {Compressor::topk, Compressor::threshold, Compressor::randk, Compressor::rbgs}) {
    for (WireValue wire : {WireValue::f32, WireValue::bf16, WireValue::f16}) {
      expect_conservation(Method::gd, c, wire);
    }
  }
}

TEST(Conservation, GlobalMomentumSentPlusResidualIsTheInput) {
  for (Compressor c : {Compressor::topk, Compressor::threshold}) {
    for (WireValue wire : {WireValue::f32, WireValue::bf16}) {
      expect_conservation(Method::gmc, c, wire);
      expect_conservation(Method::gmc_plus, c, wire);
    }
  }
}

TEST(WorkerStep, DgcClearsTheSentAccumulatorAndWithMaskingTheMomentum) {
  const Segments model({400, 100});
  for (bool masking : {true, false}) {
    Config config;
    config.method = Method::dgc;
    config.ratio = 0.05;
    config.factor_masking = masking;
    RefWorker worker(model, config, 0, std::vector<float>(model.total(), 0.0f));
    std::mt19937_64 rng(60);
    for (int t = 0; t < 3; ++t) {
      const std::vector<float> u_before = worker.momentum;
      const std::vector<float> v_before = worker.accumulator;
      const std::vector<float> g = test::random_normal(rng, model.total());
      const Bytes& push = worker.push(g, kLr);
      const MessageLayout& layout = worker.layout();
      const std::uint64_t count = read_header(push.data()).count;
      std::vector<bool> chosen(model.total(), false);
      for (std::uint64_t j = 0; j < count; ++j) {
        const std::uint64_t i = read_index(push.data(), layout, j);
        chosen[i] = true;
        const float u = std::fmaf(0.9f, u_before[i], g[i]);
        EXPECT_EQ(read_value(push.data(), layout, j), kLr * (v_before[i] + u));
      }
      for (std::size_t i = 0; i < chosen.size(); ++i) {
        const float u = std::fmaf(0.9f, u_before[i], g[i]);
        if (chosen[i]) {
          EXPECT_EQ(worker.accumulator[i], 0.0f);
          EXPECT_EQ(worker.momentum[i], masking ? 0.0f : u);
        } else {
          EXPECT_EQ(worker.momentum[i], u);
          EXPECT_EQ(worker.accumulator[i], v_before[i] + u);
        }
      }
    }
  }
}

TEST(WorkerStep, WritesACompleteHeader) {
  const Segments model({1000, 24});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.1;
  config.workers = 4;
  RefWorker worker(model, config, 3, std::vector<float>(model.total(), 0.0f));
  worker.model_version = 17;
  std::mt19937_64 rng(61);
  worker.push(test::random_normal(rng, model.total()), 0.5f);
  const Bytes& push = worker.push(test::random_normal(rng, model.total()), 0.25f);
  const MessageHeader h = read_header(push.data());
  EXPECT_EQ(h.magic, kMessageMagic);
  EXPECT_EQ(h.version, kWireVersion);
  EXPECT_EQ(h.kind, MessageKind::push);
  EXPECT_EQ(h.layout, PayloadLayout::sparse);
  EXPECT_EQ(h.compressor, Compressor::topk);
  EXPECT_EQ(h.value_type, WireValue::f32);
  EXPECT_EQ(h.index_type, IndexType::u32);
  EXPECT_EQ(h.nonce, 0);
  EXPECT_EQ(h.sender, 3u);
  EXPECT_EQ(h.model_size, 1024u);
  EXPECT_EQ(h.count, 102u);
  EXPECT_EQ(h.capacity, 102u);
  EXPECT_EQ(h.step, 1u);
  EXPECT_EQ(h.model_version, 17u);
  EXPECT_EQ(h.lr, 0.25f);
  EXPECT_EQ(h.ratio_code, encode_ratio(0.1));
}

TEST(WorkerStep, GmcPlusEvaluationPointIsWeightsMinusLambdaResidual) {
  const std::vector<float> w = {1.0f, -2.0f, 0.5f};
  const std::vector<float> e = {0.1f, 0.2f, -0.3f};
  std::vector<float> x(3);
  host::evaluation_point(w.data(), e.data(), 0.3f, x.data(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(x[i], std::fmaf(-0.3f, e[i], w[i]));
  host::evaluation_point(w.data(), e.data(), 0.0f, x.data(), 3);
  EXPECT_EQ(x, w);
}

}  // namespace
}  // namespace dgs
