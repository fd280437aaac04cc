// One server and four worker threads on the in-process transport, training a
// softmax regression asynchronously with every method.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/backend.h"
#include "dgs/server.h"
#include "dgs/transport.h"
#include "dgs/worker.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "support/floats.h"
#include "support/softmax.h"

namespace dgs {
namespace {

using test::SoftmaxProblem;

struct Outcome {
  double initial_loss = 0.0;
  double final_loss = 0.0;
  std::uint64_t replies_checked = 0;
  std::vector<std::string> failures;
  ServerStats stats;
  WorkerStats worker0;
};

std::uint64_t hash_floats(const float* p, std::size_t n) {
  return detail::fnv1a64(p, n * sizeof(float));
}

std::vector<float> initial_model() {
  std::mt19937_64 rng(17);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<float> w(SoftmaxProblem::parameters());
  for (float& x : w) x = normal(rng);
  return w;
}

// Trains with `workers` threads for `steps` steps each; checks after every
// reply that the worker's model equals the server's replica of it.
Outcome train(Config config, int workers, int steps, float lr,
              BackendKind kind = BackendKind::host) {
  static const SoftmaxProblem problem;
  const Segments model = SoftmaxProblem::segments();
  const std::size_t p = model.total();
  config.workers = static_cast<std::uint32_t>(workers);
  const std::vector<float> w0 = initial_model();
  auto backend = make_backend(kind);
  const bool device = kind == BackendKind::cuda;
  LocalHub hub(workers + 1, device ? MemoryKind::device : MemoryKind::host);
  // Host copies of backend memory, through the backend (checked copies that
  // throw dgs::Error on a CUDA failure; plain copies on the host backend).
  auto to_host = [&](const float* data, std::vector<float>& out) {
    out.resize(p);
    backend->download(out.data(), data, p * sizeof(float), nullptr);
  };

  std::mutex mutex;
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::uint64_t> replica_hash;
  ServerOptions options;
  options.on_reply = [&](std::uint32_t k, std::uint64_t version, const float* replica) {
    std::vector<float> copy;
    to_host(replica, copy);
    const std::uint64_t h = hash_floats(copy.data(), p);
    std::lock_guard<std::mutex> lock(mutex);
    replica_hash[{k, version}] = h;
  };
  Server server(config, model, backend, hub.endpoint(0), w0.data(), options);
  Outcome out;
  out.initial_loss = problem.loss(w0.data());

  std::thread serving([&] { server.run(); });
  std::vector<std::thread> threads;
  std::vector<WorkerStats> worker_stats(workers);
  std::atomic<std::uint64_t> checked{0};
  for (int k = 0; k < workers; ++k) {
    // A failed CUDA call throws dgs::Error, which ends the test process with
    // its message (the server would wait for this worker otherwise).
    threads.emplace_back([&, k] {
      std::vector<float> grad(p), point(p);
      // The worker's model and gradient in the backend's memory.
      test::Floats weights(*backend, p), grads(*backend, p);
      WorkerOptions wo;
      wo.id = static_cast<std::uint32_t>(k);
      Worker worker(config, model, backend, hub.endpoint(k + 1), weights.data(), wo);
      auto check = [&](const char* when) {
        const std::vector<float> now = weights.host();
        const std::uint64_t h = hash_floats(now.data(), p);
        std::lock_guard<std::mutex> lock(mutex);
        const auto it = replica_hash.find({wo.id, worker.model_version()});
        if (it == replica_hash.end() || it->second != h) {
          out.failures.push_back("worker " + std::to_string(k) + " differs from its replica " +
                                 when + " at version " + std::to_string(worker.model_version()));
        }
        ++checked;
      };
      worker.join();
      check("after joining");
      for (int t = 0; t < steps; ++t) {
        to_host(worker.evaluation_point(), point);
        problem.gradient(point.data(), k + t * workers * 8, 1, 8, grad.data());
        grads.assign(grad);
        worker.step(grads.data(), lr);
        check("after a step");
      }
      worker.leave();
      worker_stats[k] = worker.stats();
    });
  }
  for (auto& t : threads) t.join();
  serving.join();
  std::vector<float> final_model(p);
  server.copy_model(final_model.data());
  out.final_loss = problem.loss(final_model.data());
  out.replies_checked = checked;
  out.stats = server.stats();
  out.worker0 = worker_stats[0];
  return out;
}

Config method_config(Method method) {
  Config config;
  config.method = method;
  config.ratio = 0.1;
  config.momentum = 0.9f;
  return config;
}

void expect_every_method_trains(BackendKind kind) {
  constexpr int kWorkers = 4;
  constexpr int kSteps = 300;
  constexpr float kLr = 0.1f;
  const Outcome dense = train(method_config(Method::dense), kWorkers, kSteps, kLr, kind);
  ASSERT_TRUE(dense.failures.empty()) << dense.failures.front();
  ASSERT_LT(dense.final_loss, 0.6 * dense.initial_loss);
  for (Method method :
       {Method::gd, Method::dgc, Method::samomentum, Method::gmc, Method::gmc_plus}) {
    // Momentum methods take steps of about lr / (1 - m): the same effective
    // step as dense needs lr * (1 - m).
    const Config config = method_config(method);
    const float lr = method == Method::gd ? kLr : kLr * (1.0f - config.momentum);
    const Outcome got = train(config, kWorkers, kSteps, lr, kind);
    SCOPED_TRACE(to_string(method));
    EXPECT_TRUE(got.failures.empty()) << got.failures.front();
    EXPECT_EQ(got.replies_checked, kWorkers * (kSteps + 1u));
    EXPECT_EQ(got.stats.pushes, kWorkers * std::uint64_t{kSteps});
    EXPECT_EQ(got.stats.rejected_total(), 0u);
    EXPECT_EQ(got.stats.joins, std::uint64_t{kWorkers});
    EXPECT_EQ(got.stats.leaves, std::uint64_t{kWorkers});
    EXPECT_NEAR(got.worker0.effective_density(), 0.1, 0.001);
    // The stated margin: at least 75% of the loss reduction dense achieves.
    const double margin = 0.25 * (dense.initial_loss - dense.final_loss);
    EXPECT_LT(got.final_loss, dense.final_loss + margin);
    std::printf("  %-10s loss %.4f -> %.4f (dense %.4f), density %.3f\n", to_string(method),
                got.initial_loss, got.final_loss, dense.final_loss,
                got.worker0.effective_density());
  }
}

TEST(AsyncTraining, EveryMethodApproachesTheDenseLossAndKeepsReplicasExact) {
  expect_every_method_trains(BackendKind::host);
}

TEST(AsyncTraining, EveryMethodTrainsOnTheCudaBackendToo) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (or none this build has kernels for)";
  expect_every_method_trains(BackendKind::cuda);
}

}  // namespace
}  // namespace dgs
