// The Worker and Server runtime on the in-process transport: protocol,
// exactness, checkpoints, bad input and faults. Every test runs on both
// backends: `host`, and `cuda` (the CUDA kernels on a GPU, or their CPU
// emulation in dgs_emulated_tests; skipped where there is neither), with the
// models, gradients and message buffers in the backend's memory.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/error.h"
#include "dgs/log.h"
#include "dgs/plan.h"
#include "dgs/server.h"
#include "dgs/transport.h"
#include "dgs/worker.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "support/floats.h"
#include "support/host_job.h"
#include "support/random.h"
#include "support/server_thread.h"
#include "support/wait.h"

namespace dgs {

// Test names and failures say "host" or "cuda" for the backend parameter.
void PrintTo(BackendKind kind, std::ostream* out) {
  *out << to_string(kind);
}

namespace {

using namespace std::chrono_literals;
using test::Floats;
using test::Quadratic;
using test::ServerThread;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "dgs_" + name + "_" + std::to_string(::getpid());
}

// Raw wire bytes sent to and received from one peer (the server at rank 0
// unless told) on a rank, through a buffer in the transport's memory (the
// backend's).
class Wire {
 public:
  Wire(std::shared_ptr<Transport> rank, Backend& backend, std::size_t capacity, int peer = 0)
      : rank_(std::move(rank)), backend_(&backend), buffer_(backend, capacity), peer_(peer) {}

  void send(const test::Bytes& message, std::size_t bytes) {
    backend_->upload(buffer_.data(), message.data(), bytes, nullptr);
    rank_->send(peer_, buffer_.data(), bytes);
  }
  void send(const test::Bytes& message) { send(message, message.size()); }
  Receipt recv(test::Bytes& out) {
    const Receipt r = rank_->recv(peer_, buffer_.data(), out.size(), 20s);
    if (r.status == Receipt::Status::message) {
      backend_->download(out.data(), buffer_.data(), std::min(r.bytes, out.size()), nullptr);
    }
    return r;
  }

 private:
  std::shared_ptr<Transport> rank_;
  Backend* backend_;
  detail::Buffer buffer_;
  int peer_;
};

// A job on the in-process transport: one server (rank 0) and N workers,
// each with its model and gradient in the backend's memory.
struct Job {
  Job(std::shared_ptr<Backend> b, const Config& c, const Segments& m, std::vector<float> w0,
      ServerOptions options = {})
      : config(c),
        model(m),
        backend(std::move(b)),
        hub(static_cast<int>(c.workers) + 1, memory_of(*backend)),
        initial(std::move(w0)),
        server(std::make_unique<Server>(c, m, backend, hub.endpoint(0), initial.data(),
                                        std::move(options))) {
    for (std::uint32_t k = 0; k < c.workers; ++k) add_worker(k);
  }

  Worker& add_worker(std::uint32_t k, std::chrono::milliseconds timeout = 20s) {
    if (weights.size() <= k) {
      weights.resize(k + 1);
      grads.resize(k + 1);
      workers.resize(k + 1);
    }
    workers[k].reset();
    weights[k] = std::make_unique<Floats>(*backend, model.total());
    grads[k] = std::make_unique<Floats>(*backend, model.total());
    WorkerOptions o;
    o.id = k;
    o.timeout = timeout;
    workers[k] = std::make_unique<Worker>(
        config, model, backend, hub.endpoint(static_cast<int>(k) + 1), weights[k]->data(), o);
    return *workers[k];
  }

  /// Worker k's model, copied to the host.
  std::vector<float> weights_of(std::size_t k) const { return weights[k]->host(); }
  /// Worker k's step (or push) on the gradient `g`, copied to its gradient buffer.
  void step(std::size_t k, const std::vector<float>& g, float lr) {
    grads[k]->assign(g);
    workers[k]->step(grads[k]->data(), lr);
  }
  void push(std::size_t k, const std::vector<float>& g, float lr) {
    grads[k]->assign(g);
    workers[k]->push(grads[k]->data(), lr);
  }

  std::vector<float> server_model() const {
    std::vector<float> w(model.total());
    server->copy_model(w.data());
    return w;
  }

  Config config;
  Segments model;
  std::shared_ptr<Backend> backend;
  LocalHub hub;
  std::vector<float> initial;
  std::unique_ptr<Server> server;
  // Declared before the workers, which keep pointers into them.
  std::vector<std::unique_ptr<Floats>> weights, grads;
  std::vector<std::unique_ptr<Worker>> workers;
};

std::vector<float> random_model(std::uint64_t p, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  return test::random_normal(rng, p);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The backend of the test's parameter; a cuda test skips without a device.
class OnBackend : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::cuda && !cuda_available())
      GTEST_SKIP() << "no CUDA device (or none this build has kernels for)";
    backend = make_backend(GetParam());
  }
  std::shared_ptr<Backend> backend;
};

class Runtime : public OnBackend {};
class Checkpoint : public OnBackend {};

std::string backend_name(const ::testing::TestParamInfo<BackendKind>& info) {
  return to_string(info.param);
}
INSTANTIATE_TEST_SUITE_P(Backend, Runtime, ::testing::Values(BackendKind::host, BackendKind::cuda),
                         backend_name);
INSTANTIATE_TEST_SUITE_P(Backend, Checkpoint,
                         ::testing::Values(BackendKind::host, BackendKind::cuda), backend_name);

// ---------------------------------------------------------------------------

TEST_P(Runtime, SyncGmcAtFullDensityIsHeavyBallMomentumBitwise) {
  constexpr std::uint32_t kWorkers = 3;
  constexpr float kLr = 0.05f, kBeta = 0.9f, kDecay = 1e-3f;
  const Segments model({300, 17, 1, 64});
  Config config;
  config.method = Method::gmc;
  config.mode = Mode::sync;
  config.workers = kWorkers;
  config.ratio = 1.0;
  config.momentum = kBeta;
  config.weight_decay = kDecay;
  const std::vector<float> w0 = random_model(model.total(), 1);
  const Quadratic problem(model.total(), 2);
  Job job(backend, config, model, w0);
  ServerThread serving(*job.server);
  for (auto& w : job.workers) w->join();

  // Heavy ball on the averaged gradient, in the system's order of operations:
  // w' = w - (1/K) sum_k (beta * (w_prev - w) + lr * g_k).
  const float inverse = 1.0f / kWorkers;
  std::vector<float> w = w0, change;
  for (int t = 0; t < 40; ++t) {
    std::vector<float> sum(w.size(), 0.0f);
    for (std::uint32_t k = 0; k < kWorkers; ++k) {
      const std::vector<float> g = problem.gradient(w, t, k);
      for (std::size_t i = 0; i < w.size(); ++i) {
        const float momentum = change.empty() ? 0.0f : std::fmaf(-kBeta, change[i], 0.0f);
        sum[i] = sum[i] + (momentum + kLr * std::fmaf(kDecay, w[i], g[i]));
      }
    }
    std::vector<float> next(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) next[i] = w[i] - sum[i] * inverse;
    change.assign(w.size(), 0.0f);
    for (std::size_t i = 0; i < w.size(); ++i) change[i] = next[i] - w[i];
    w = next;

    for (std::uint32_t k = 0; k < kWorkers; ++k) {
      job.push(k, problem.gradient(job.weights_of(k), t, k), kLr);
    }
    for (auto& worker : job.workers) worker->finish();
    for (std::uint32_t k = 0; k < kWorkers; ++k) {
      ASSERT_TRUE(same_bits(job.weights_of(k), w)) << "worker " << k << " at step " << t;
    }
  }
  for (auto& worker : job.workers) worker->leave();
  serving.stop();
  EXPECT_TRUE(same_bits(job.server_model(), w));
  EXPECT_EQ(job.server->stats().rounds, 40u);
  EXPECT_EQ(job.server->stats().dense_replies, (40u + 1u) * kWorkers);  // rho = 1: all dense
}

// Runs `steps` steps of the first `workers` workers (all by default), in a
// fixed order; in sync mode each step is one round. Step t's learning rate
// is lr / (1 + decay * t).
// Server options whose on_reply copies each reply's replica (the model the
// worker must now hold) into `replica`, sized P.
ServerOptions replica_capture(const std::shared_ptr<Backend>& backend,
                              std::vector<float>& replica) {
  ServerOptions options;
  options.on_reply = [backend, &replica](std::uint32_t, std::uint64_t, const float* r) {
    backend->download(replica.data(), r, replica.size() * sizeof(float), nullptr);
  };
  return options;
}

void run_steps(Job& job, const Quadratic& problem, int first, int steps, float lr,
               std::size_t workers = SIZE_MAX, float decay = 0.0f) {
  const bool sync = job.config.mode == Mode::sync;
  workers = std::min(workers, job.workers.size());
  for (int t = first; t < first + steps; ++t) {
    const float lr_t = lr / (1.0f + decay * static_cast<float>(t));
    for (std::size_t k = 0; k < workers; ++k) {
      const std::vector<float> g =
          problem.gradient(job.weights_of(k), t, static_cast<std::uint32_t>(k));
      if (sync) {
        job.push(k, g, lr_t);
      } else {
        job.step(k, g, lr_t);
      }
    }
    if (sync) {
      for (std::size_t k = 0; k < workers; ++k) job.workers[k]->finish();
    }
  }
}

// Every worker's model equals what on_reply passes as its replica after each
// reply, async and sync, a worker that joins late included: in async mode it
// gets W; in sync mode the shared replica, which every worker holds between
// rounds and which sparse replies leave behind W. Servers whose every reply
// is dense (the dense method, or reply ratio 1) keep no replicas: on_reply
// passes W, which each of their replies carries.
TEST_P(Runtime, EveryWorkerEqualsItsReplicaAfterEachReplyALateJoinerToo) {
  const Segments model({700, 33, 1});
  const Quadratic problem(model.total(), 70);
  // (method, reply ratio): samomentum's pushes are sparse in all three; replies
  // of 2% leave some of a push behind in W − R
  const std::pair<Method, double> cases[] = {
      {Method::dense, 1.0}, {Method::samomentum, 1.0}, {Method::samomentum, 0.02}};
  for (Mode mode : {Mode::async, Mode::sync}) {
    for (const auto& [method, reply_ratio] : cases) {
      SCOPED_TRACE(std::string(to_string(method)) + " " + to_string(mode) + ", replies " +
                   std::to_string(reply_ratio));
      Config config;
      config.method = method;
      config.mode = mode;
      config.workers = 2;
      config.ratio = 0.05;
      config.server_ratio = reply_ratio;
      const bool dense_replies = replies_are_dense(model, config);
      std::mutex mutex;
      std::map<std::uint32_t, std::vector<float>> replica;
      std::uint64_t replies = 0;
      ServerOptions options;
      options.on_reply = [&](std::uint32_t k, std::uint64_t, const float* r) {
        std::vector<float> copy(model.total());
        backend->download(copy.data(), r, copy.size() * sizeof(float), nullptr);
        std::lock_guard<std::mutex> lock(mutex);
        replica[k] = std::move(copy);
        ++replies;
      };
      const std::vector<float> w0 = random_model(model.total(), 71);
      Job job(backend, config, model, w0, options);
      auto expect_equal = [&](std::size_t k, int t) {
        std::lock_guard<std::mutex> lock(mutex);
        EXPECT_TRUE(same_bits(job.weights_of(k), replica[static_cast<std::uint32_t>(k)]))
            << "worker " << k << " after step " << t;
      };
      ServerThread serving(*job.server);
      job.workers[0]->join();
      expect_equal(0, -1);
      EXPECT_TRUE(same_bits(job.weights_of(0), w0));
      run_steps(job, problem, 0, 3, 0.05f, 1);  // worker 0 alone
      expect_equal(0, 2);
      job.workers[1]->join();  // late: async gets W, sync the shared replica
      expect_equal(1, -1);
      if (dense_replies || mode == Mode::sync) {
        // What worker 0 holds: W, which its last reply carried, or the
        // shared replica.
        EXPECT_TRUE(same_bits(job.weights_of(1), job.weights_of(0)));
      }
      for (int t = 3; t < 8; ++t) {
        run_steps(job, problem, t, 1, 0.05f);
        expect_equal(0, t);
        expect_equal(1, t);
      }
      for (auto& w : job.workers) w->leave();
      serving.stop();
      const ServerStats& stats = job.server->stats();
      EXPECT_EQ(stats.rejected_total(), 0u);
      EXPECT_EQ(replies, stats.dense_replies + stats.sparse_replies);
      if (dense_replies) {
        EXPECT_EQ(stats.sparse_replies, 0u);
        if (mode == Mode::sync) {
          EXPECT_TRUE(same_bits(job.server_model(), job.weights_of(0)));
        }
      } else {
        EXPECT_GT(stats.sparse_replies, 0u);
        EXPECT_EQ(stats.dense_replies, 2u);  // the joins
        // Sparse replies leave part of W − R behind, so W is not what the
        // workers hold (nor what a sync joiner may be sent).
        if (mode == Mode::sync) {
          EXPECT_FALSE(same_bits(job.server_model(), job.weights_of(0)));
        }
      }
    }
  }
}

void expect_restore_continues_bitwise(const std::shared_ptr<Backend>& backend, Config config,
                                      float decay = 0.0f) {
  const Segments model({500, 40, 1, 260});
  config.workers = 3;
  const std::vector<float> w0 = random_model(model.total(), 3);
  const Quadratic problem(model.total(), 4);
  constexpr float kLr = 0.02f;

  // Uninterrupted: 30 steps.
  Job straight(backend, config, model, w0);
  {
    ServerThread serving(*straight.server);
    for (auto& w : straight.workers) w->join();
    run_steps(straight, problem, 0, 30, kLr, SIZE_MAX, decay);
  }

  // Interrupted after 12 steps: save everything, rebuild from scratch, restore.
  const std::string dir = temp_path(std::string("ckpt_") + to_string(config.method) + "_" +
                                    to_string(kind_of(*backend)));
  {
    Job first(backend, config, model, w0);
    ServerThread serving(*first.server);
    for (auto& w : first.workers) w->join();
    run_steps(first, problem, 0, 12, kLr, SIZE_MAX, decay);
    serving.stop();
    first.server->save(dir + "_server");
    for (std::size_t k = 0; k < first.workers.size(); ++k) {
      first.workers[k]->save(dir + "_worker" + std::to_string(k));
    }
  }
  Job second(backend, config, model, std::vector<float>(model.total(), 7.0f));
  second.server->restore(dir + "_server");
  for (std::size_t k = 0; k < second.workers.size(); ++k) {
    second.workers[k]->restore(dir + "_worker" + std::to_string(k));
  }
  {
    ServerThread serving(*second.server);
    run_steps(second, problem, 12, 18, kLr, SIZE_MAX, decay);
  }
  SCOPED_TRACE(std::string(to_string(config.method)) + " " + to_string(config.mode));
  EXPECT_TRUE(same_bits(second.server_model(), straight.server_model()));
  EXPECT_EQ(second.server->version(), straight.server->version());
  for (std::size_t k = 0; k < second.workers.size(); ++k) {
    EXPECT_TRUE(same_bits(second.weights_of(k), straight.weights_of(k))) << "worker " << k;
    EXPECT_EQ(second.workers[k]->steps(), 30u);
  }
  std::remove((dir + "_server").c_str());
  for (int k = 0; k < 3; ++k) std::remove((dir + "_worker" + std::to_string(k)).c_str());
}

TEST_P(Checkpoint, SyncRunRestoredFromACheckpointContinuesBitwise) {
  for (Method m : {Method::gmc, Method::samomentum}) {
    Config config;
    config.method = m;
    config.mode = Mode::sync;
    config.ratio = 0.1;
    expect_restore_continues_bitwise(backend, config);
  }
}

TEST_P(Checkpoint, AsyncRunWithAFixedArrivalOrderContinuesBitwise) {
  for (Method m : {Method::samomentum, Method::gmc_plus, Method::dgc, Method::gd}) {
    Config config;
    config.method = m;
    config.ratio = 0.05;
    config.server_ratio = 0.2;
    expect_restore_continues_bitwise(backend, config);
  }
}

// An lr-proportional ratio follows lr_t / lr_0, lr_0 being the worker's
// first step's: a restored worker keeps it (the learning rate decays, so a
// worker that lost it would push at another ratio).
TEST_P(Checkpoint, AnLrProportionalScheduleContinuesAfterARestore) {
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.1;
  config.schedule = RatioSchedule::lr_proportional;
  expect_restore_continues_bitwise(backend, config, 0.1f);
}

// Servers whose every reply is dense (Method::dense, or a reply ratio of 1)
// keep no replicas (README, "Device memory"): a checkpoint of theirs holds
// none, and a run restored from one continues bitwise, async and sync.
TEST_P(Checkpoint, ServersWithOnlyDenseRepliesRestoreWithoutReplicas) {
  for (Mode mode : {Mode::async, Mode::sync}) {
    Config dense;
    dense.method = Method::dense;
    dense.mode = mode;
    expect_restore_continues_bitwise(backend, dense);
    Config whole_replies;
    whole_replies.method = Method::samomentum;
    whole_replies.mode = mode;
    whole_replies.ratio = 0.1;
    whole_replies.server_ratio = 1.0;
    expect_restore_continues_bitwise(backend, whole_replies);
  }
  // An older file of such a server, which kept replicas, still restores
  // (they are W as each worker's last reply carried it, and are ignored).
  const Segments model({300, 7});
  Config config;
  config.method = Method::dense;
  config.workers = 2;
  const std::vector<float> w0 = random_model(model.total(), 60);
  const std::string path = temp_path("dense_server");
  Job job(backend, config, model, w0);
  job.server->save(path);
  const detail::CheckpointReader in(path, "server");
  EXPECT_FALSE(in.has("replicas"));
  detail::CheckpointWriter out("server");
  for (const char* name :
       {"fingerprint", "version", "weights", "live", "joined", "last_dense_version", "stats"}) {
    out.add(name, in.section(name).data(), in.section(name).size());
  }
  const std::vector<float> old_replicas(2 * model.total(), 3.0f);
  out.add("replicas", old_replicas.data(), old_replicas.size() * sizeof(float));
  const std::string older = temp_path("dense_server_older");
  out.write(older);
  Job restored(backend, config, model, random_model(model.total(), 61));
  restored.server->restore(older);
  EXPECT_TRUE(same_bits(restored.server_model(), w0));
  for (const auto& p : {path, older}) std::remove(p.c_str());
}

TEST_P(Checkpoint, BadFilesAreRefusedWithAReasonAndChangeNothing) {
  const Segments model({100, 20});
  Config config;
  config.workers = 1;
  const std::vector<float> w0 = random_model(model.total(), 5);
  Job job(backend, config, model, w0);
  const std::string good = temp_path("good");
  job.server->save(good);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  auto write = [](const std::string& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
  };
  auto expect_refused = [&](const std::string& path, const std::string& reason, auto&& restore) {
    try {
      restore(path);
      ADD_FAILURE() << "accepted " << path;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::io);
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  };
  auto restore_server = [&](const std::string& p) { job.server->restore(p); };
  const std::string truncated = temp_path("truncated");
  write(truncated, bytes.substr(0, bytes.size() / 2));
  expect_refused(truncated, "truncated or corrupt", restore_server);
  const std::string flipped = temp_path("flipped");
  std::string corrupt = bytes;
  corrupt[corrupt.size() / 2] ^= 0x40;
  write(flipped, corrupt);
  expect_refused(flipped, "truncated or corrupt", restore_server);
  const std::string foreign = temp_path("foreign");
  write(foreign, "#!/bin/sh\necho this is not a checkpoint\n");
  expect_refused(foreign, "not a dgs checkpoint", restore_server);
  expect_refused(temp_path("missing"), "cannot open", restore_server);

  // A worker's checkpoint is not a server's, and another model is refused.
  const std::string worker_file = temp_path("worker");
  job.workers[0]->save(worker_file);
  expect_refused(worker_file, "written by a worker, not a server", restore_server);
  Job other(backend, config, Segments({100, 21}), random_model(121, 6));
  expect_refused(good, "another model or configuration",
                 [&](const std::string& p) { other.server->restore(p); });
  // Settings the state depends on, named with both values: tensors left
  // dense decide whether the server keeps replicas; the momentum is a
  // worker's.
  Config dense_small = config;
  dense_small.dense_below = 50;
  Job another(backend, dense_small, model, w0);
  expect_refused(good, "dense_below 0 (this object: 50)",
                 [&](const std::string& p) { another.server->restore(p); });
  Config other_momentum = config;
  other_momentum.momentum = 0.95f;
  other_momentum.seed = 7;
  Job third(backend, other_momentum, model, w0);
  // The seed, which topk never reads, may differ: only the momentum is named.
  expect_refused(worker_file, "another configuration: momentum 0.9 (this object: 0.95)",
                 [&](const std::string& p) { third.workers[0]->restore(p); });
  try {
    third.workers[0]->restore(worker_file);
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("seed"), std::string::npos) << e.what();
  }
  {
    // gd reads neither momentum nor seed: its checkpoint restores with both
    // changed.
    Config gd = config;
    gd.method = Method::gd;
    Job saved(backend, gd, model, w0);
    const std::string gd_file = temp_path("gd_worker");
    saved.workers[0]->save(gd_file);
    gd.momentum = 0.5f;
    gd.seed = 9;
    Job restoring(backend, gd, model, w0);
    EXPECT_NO_THROW(restoring.workers[0]->restore(gd_file));
    std::remove(gd_file.c_str());
  }
  EXPECT_TRUE(same_bits(job.server_model(), w0)) << "a refused restore changed the model";
  // A file without its last-read section is refused before anything changes.
  auto without = [](const std::string& from, const std::string& kind, const std::string& dropped) {
    const detail::CheckpointReader reader(from, kind);
    detail::CheckpointWriter out(kind);
    for (const char* name : {"fingerprint",
                             "settings",
                             "id",
                             "step",
                             "first_lr",
                             "version",
                             "weights",
                             "replicas",
                             "live",
                             "joined",
                             "last_dense_version",
                             "residual",
                             "momentum",
                             "accumulator",
                             "mask",
                             "fold_pending",
                             "last_reply_dense",
                             "last_reply",
                             "model_version",
                             "stats"}) {
      if (name != dropped && reader.has(name)) {
        out.add(name, reader.section(name).data(), reader.section(name).size());
      }
    }
    const std::string path = temp_path("without_" + dropped);
    out.write(path);
    return path;
  };
  // Other contents than the ones it replaces, so that a partial restore shows.
  const std::vector<float> other_model = random_model(model.total(), 8);
  Job donor(backend, config, model, other_model);
  const std::string donor_file = temp_path("donor");
  donor.server->save(donor_file);
  const std::string no_version = without(donor_file, "server", "version");
  expect_refused(no_version, "has no section 'version'", restore_server);
  EXPECT_TRUE(same_bits(job.server_model(), w0)) << "a refused restore changed the model";
  job.weights[0]->assign(random_model(model.total(), 9));
  const std::vector<float> worker_before = job.weights_of(0);
  const std::string donor_worker = temp_path("donor_worker");
  donor.workers[0]->save(donor_worker);
  const std::string no_step = without(donor_worker, "worker", "step");
  expect_refused(no_step, "has no section 'step'",
                 [&](const std::string& p) { job.workers[0]->restore(p); });
  EXPECT_TRUE(same_bits(job.weights_of(0), worker_before)) << "a refused restore changed a worker";
  for (const auto& p : {good, truncated, flipped, foreign, worker_file, donor_file, donor_worker,
                        no_version, no_step}) {
    std::remove(p.c_str());
  }
}

// The server keeps which workers have joined: restored, it does not wait for
// them to join again. A file written before it kept them (a flag saying
// whether any worker had joined) still restores, as it was read then.
TEST_P(Checkpoint, WhichWorkersHaveJoinedIsKeptAndOlderFilesRestore) {
  const Segments model({100, 20});
  Config config;
  config.workers = 2;
  const std::vector<float> w0 = random_model(model.total(), 40);
  const std::string path = temp_path("joined");
  {
    Job job(backend, config, model, w0);
    ServerThread serving(*job.server);
    job.workers[0]->join();
    serving.stop();
    job.workers[0]->leave();
    ASSERT_TRUE(job.server->serve_one(20s));  // the bye
    ASSERT_EQ(job.server->live_workers(), 0u);
    ASSERT_EQ(job.server->joined_workers(), 1u);
    job.server->save(path);
  }
  // With a short join timeout and no worker coming, run() gives up on the
  // workers that never joined if one has, and throws if none has.
  ServerOptions quick;
  quick.join_timeout = 100ms;
  auto run_restored = [&](const std::string& file) {
    Job job(backend, config, model, random_model(model.total(), 41), quick);
    job.server->restore(file);
    const std::size_t joined = job.server->joined_workers();
    job.server->run();
    return joined;
  };
  set_log_level(LogLevel::off);
  EXPECT_EQ(run_restored(path), 1u);
  {
    Job fresh(backend, config, model, w0, quick);
    EXPECT_THROW(fresh.server->run(), Error);
  }

  // The older layout: no "joined" section, an "ever_joined" flag.
  const detail::CheckpointReader in(path, "server");
  EXPECT_TRUE(in.has("joined"));
  auto write_older = [&](std::uint64_t ever_joined) {
    detail::CheckpointWriter out("server");
    for (const char* name :
         {"fingerprint", "version", "weights", "replicas", "live", "last_dense_version", "stats"}) {
      out.add(name, in.section(name).data(), in.section(name).size());
    }
    out.add_u64("ever_joined", ever_joined);
    const std::string older = temp_path("joined_older" + std::to_string(ever_joined));
    out.write(older);
    return older;
  };
  const std::string joined = write_older(1), none = write_older(0);
  EXPECT_EQ(run_restored(joined), 2u);  // everyone, as run() read the flag
  try {
    run_restored(none);
    ADD_FAILURE() << "run() restored from a file where no worker had joined did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout) << e.what();
  }
  set_log_level(LogLevel::warning);
  for (const auto& p : {path, joined, none}) std::remove(p.c_str());
}

// A worker restored alone (its server went on) holds an older model than
// the replica the server keeps for it: its next push is rejected, naming
// model_version, and it must join again; then it holds the server's model
// and trains on. (Accepted, the replies would keep the two apart for good.)
TEST_P(Checkpoint, AWorkerRestoredWithoutItsServerIsToldToJoinAgain) {
  const Segments model({300, 40});
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.05;
  config.workers = 1;
  const Quadratic problem(model.total(), 70);
  std::vector<float> replica(model.total());
  const ServerOptions options = replica_capture(backend, replica);
  Job job(backend, config, model, random_model(model.total(), 71), options);
  ServerThread serving(*job.server);
  Worker& w = *job.workers[0];
  w.join();
  run_steps(job, problem, 0, 2, 0.05f);
  const std::string path = temp_path("worker_alone");
  w.save(path);
  run_steps(job, problem, 2, 2, 0.05f);
  w.restore(path);
  set_log_level(LogLevel::off);
  job.push(0, problem.gradient(job.weights_of(0), 4, 0), 0.05f);
  try {
    w.finish();
    ADD_FAILURE() << "a push from an older model was applied";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_message);
    EXPECT_NE(std::string(e.what()).find("model_version = 2, but the server last sent this "
                                         "worker version 4"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(job.push(0, problem.gradient(job.weights_of(0), 4, 0), 0.05f), Error);
  w.join();
  set_log_level(LogLevel::warning);
  EXPECT_TRUE(same_bits(job.weights_of(0), replica));
  run_steps(job, problem, 5, 3, 0.05f);
  EXPECT_TRUE(same_bits(job.weights_of(0), replica));
  w.leave();
  serving.stop();
  EXPECT_EQ(job.server->stats().rejected[static_cast<std::size_t>(RejectReason::model_version)],
            1u);
  std::remove(path.c_str());
}

// A worker's statistics are restored with its count of pushes, which a
// rejected push set apart from its steps. A file written before that count
// existed (its stats section 8 bytes shorter) restores with a push per step.
TEST_P(Checkpoint, AWorkersPushesAreKeptAndOlderStatisticsRestore) {
  const Segments model({1000, 10});
  Config config;
  config.ratio = 0.01;
  config.workers = 1;
  const std::vector<float> w0 = random_model(model.total(), 50);
  const std::string path = temp_path("pushes");
  {
    Job job(backend, config, model, w0);
    ServerThread serving(*job.server);
    job.workers[0]->join();
    const Quadratic problem(model.total(), 51);
    job.step(0, problem.gradient(job.weights_of(0), 0, 0), 0.01f);
    std::vector<float> bad = problem.gradient(job.weights_of(0), 1, 0);
    bad[3] = std::numeric_limits<float>::infinity();
    set_log_level(LogLevel::off);
    job.push(0, bad, 0.01f);
    EXPECT_THROW(job.workers[0]->finish(), Error);
    // The state the server refused is not saved; a join() clears it.
    EXPECT_THROW(job.workers[0]->save(path), Error);
    job.workers[0]->join();
    set_log_level(LogLevel::warning);
    serving.stop();
    ASSERT_EQ(job.workers[0]->stats().steps, 1u);
    ASSERT_EQ(job.workers[0]->stats().pushes, 2u);
    job.workers[0]->save(path);
  }
  Job restored(backend, config, model, w0);
  restored.workers[0]->restore(path);
  EXPECT_EQ(restored.workers[0]->stats().steps, 1u);
  EXPECT_EQ(restored.workers[0]->stats().pushes, 2u);
  EXPECT_EQ(restored.workers[0]->stats().entries_pushed, 2u * 11u);

  const detail::CheckpointReader in(path, "worker");
  detail::CheckpointWriter out("worker");
  for (const char* name : {"fingerprint", "id", "step", "first_lr", "model_version", "joined",
                           "fold_pending", "last_reply_dense", "weights", "residual", "momentum",
                           "accumulator", "mask", "last_reply"}) {
    if (in.has(name)) out.add(name, in.section(name).data(), in.section(name).size());
  }
  // Nor a setting added since (clip_norm): it was at its default then.
  std::string settings(in.section("settings").begin(), in.section("settings").end());
  const std::size_t clip = settings.find("clip_norm=0\n");
  ASSERT_NE(clip, std::string::npos) << settings;
  settings.erase(clip, std::string("clip_norm=0\n").size());
  out.add("settings", settings.data(), settings.size());
  const auto& stats = in.section("stats");
  ASSERT_EQ(stats.size(), sizeof(WorkerStats));
  out.add("stats", stats.data(), stats.size() - 8);  // without the pushes
  const std::string older = temp_path("pushes_older");
  out.write(older);
  Job again(backend, config, model, w0);
  again.workers[0]->restore(older);
  EXPECT_EQ(again.workers[0]->stats().steps, 1u);
  EXPECT_EQ(again.workers[0]->stats().pushes, 1u);
  EXPECT_EQ(again.workers[0]->stats().entries_pushed, 2u * 11u);
  EXPECT_EQ(again.workers[0]->model_version(), restored.workers[0]->model_version());
  // Restored with that setting changed, it is refused as any other setting.
  Config clipped = config;
  clipped.clip_norm = 2.0f;
  Job other(backend, clipped, model, w0);
  try {
    other.workers[0]->restore(older);
    ADD_FAILURE() << "a checkpoint without clipping was restored into a clipping worker";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("clip_norm 0 (this object: 2)"), std::string::npos)
        << e.what();
  }
  // A setting this version does not know is named.
  detail::CheckpointWriter newer("worker");
  for (const char* name : {"fingerprint", "id", "step", "first_lr", "model_version", "joined",
                           "fold_pending", "last_reply_dense", "weights", "residual", "momentum",
                           "accumulator", "mask", "last_reply", "stats"}) {
    if (in.has(name)) newer.add(name, in.section(name).data(), in.section(name).size());
  }
  const std::string unknown = settings + "future_knob=3\n";
  newer.add("settings", unknown.data(), unknown.size());
  const std::string newer_path = temp_path("pushes_newer");
  newer.write(newer_path);
  try {
    again.workers[0]->restore(newer_path);
    ADD_FAILURE() << "a checkpoint with an unknown setting was restored";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("future_knob 3 (a setting this version does not know)"),
              std::string::npos)
        << e.what();
  }
  for (const auto& p : {path, older, newer_path}) std::remove(p.c_str());
}

// ---------------------------------------------------------------------------
// Bad input while training goes on.

struct Spoil {
  RejectReason reason;
  void (*apply)(test::Bytes&, const MessageLayout&);
};

void set(test::Bytes& m, void (*edit)(MessageHeader&)) {
  MessageHeader h = read_header(m.data());
  edit(h);
  write_header(m.data(), h);
}

// One spoiled push per validation rule (the model {400, 30, 1, 200} at ratio
// 0.05: segment 0 has 20 slots).
std::vector<Spoil> hostile_spoils() {
  return {
      {RejectReason::magic,
       [](test::Bytes& m, const MessageLayout&) { set(m, [](MessageHeader& h) { h.magic = 0; }); }},
      {RejectReason::version,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.version = 9; });
       }},
      {RejectReason::kind,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.kind = MessageKind::dense_reply; });
       }},
      {RejectReason::nonce,
       [](test::Bytes& m, const MessageLayout&) { set(m, [](MessageHeader& h) { h.nonce = 3; }); }},
      {RejectReason::sender,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.sender ^= 1; });
       }},
      {RejectReason::model_size,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.model_size = 1; });
       }},
      {RejectReason::layout,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.layout = PayloadLayout::dense; });
       }},
      {RejectReason::compressor,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.compressor = Compressor::threshold; });
       }},
      {RejectReason::value_type,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.value_type = WireValue::bf16; });
       }},
      {RejectReason::index_type,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.index_type = IndexType::none; });
       }},
      {RejectReason::capacity,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.capacity = 1u << 30; });
       }},
      {RejectReason::count,
       [](test::Bytes& m, const MessageLayout&) { set(m, [](MessageHeader& h) { h.count = 3; }); }},
      {RejectReason::ratio,
       [](test::Bytes& m, const MessageLayout&) {
         set(m, [](MessageHeader& h) { h.ratio_code = 0xFFFFFFFFu; });
       }},
      {RejectReason::index_range,
       [](test::Bytes& m, const MessageLayout& l) {
         write_index(m.data(), l, l.capacity - 1, 1u << 31);
       }},
      {RejectReason::index_order,
       [](test::Bytes& m, const MessageLayout& l) {
         write_index(m.data(), l, 1, read_index(m.data(), l, 0));
       }},
      {RejectReason::index_segment,
       [](test::Bytes& m, const MessageLayout& l) {
         // Segment 0 has 20 slots; move its last entry to the start of segment 1's range.
         write_index(m.data(), l, 19, 400);
         write_index(m.data(), l, 20, 401);
       }},
      {RejectReason::value,
       [](test::Bytes& m, const MessageLayout& l) { write_value(m.data(), l, 4, NAN); }},
  };
}

// Forges a push as `forger` (worker `id`), spoils it with `s`, sends it on
// `rank` and expects the server's reject verdict to name s.reason.
void expect_spoiled_push_rejected(Wire& rank, test::RefWorker& forger, std::uint32_t id,
                                  const Spoil& s, std::mt19937_64& rng, test::Bytes& reply,
                                  std::uint64_t parameters) {
  test::Bytes push = forger.push(test::random_normal(rng, parameters), 0.01f);
  s.apply(push, forger.layout());
  rank.send(push);
  const Receipt r = rank.recv(reply);
  ASSERT_EQ(r.status, Receipt::Status::message) << field_name(s.reason);
  ASSERT_EQ(read_header(reply.data()).kind, MessageKind::reject) << field_name(s.reason);
  EXPECT_EQ(read_reject_verdict(reply.data()).reason, s.reason)
      << read_reject_verdict(reply.data()).describe(id);
}

TEST_P(Runtime, HostileMessagesAreRejectedCountedAndAnsweredWhileTrainingGoesOn) {
  const Segments model({400, 30, 1, 200});
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.05;
  config.workers = 4;  // workers 0-2 train; rank 4 (worker 3) is the attacker
  const std::vector<float> w0 = random_model(model.total(), 8);
  const Quadratic problem(model.total(), 9);
  LocalHub hub(5, memory_of(*backend));
  set_log_level(LogLevel::off);
  Server server(config, model, backend, hub.endpoint(0), w0.data());
  // serve_one() in a loop, not run(), which would wait for worker 3 to join.
  ServerThread serving(server);

  std::vector<std::thread> trainers;
  std::vector<double> start_loss(3), end_loss(3);
  for (std::uint32_t k = 0; k < 3; ++k) {
    trainers.emplace_back([&, k] {
      Floats w(*backend, model.total()), g(*backend, model.total());
      WorkerOptions o;
      o.id = k;
      Worker worker(config, model, backend, hub.endpoint(static_cast<int>(k) + 1), w.data(), o);
      worker.join();
      start_loss[k] = problem.loss(w.host());
      for (int t = 0; t < 150; ++t) {
        g.assign(problem.gradient(w.host(), t, k));
        worker.step(g.data(), 0.01f);
      }
      end_loss[k] = problem.loss(w.host());
      worker.leave();
    });
  }

  const std::vector<Spoil> spoils = hostile_spoils();
  // The attacker speaks the wire protocol directly on worker 3's rank.
  test::RefWorker forger(model, config, 3, w0);
  const MessageLayout reply_layout = sparse_reply_layout(model, config);
  test::Bytes reply(reply_layout.bytes);
  Wire attacker(hub.endpoint(4), *backend,
                std::max<std::size_t>(forger.layout().bytes, reply_layout.bytes));
  std::mt19937_64 rng(10);
  for (const Spoil& s : spoils) {
    expect_spoiled_push_rejected(attacker, forger, 3, s, rng, reply, model.total());
  }
  // A buffer of the wrong size, and a well-formed push from a worker that never joined.
  test::Bytes push = forger.push(test::random_normal(rng, model.total()), 0.01f);
  attacker.send(push, push.size() - 16);
  EXPECT_EQ(attacker.recv(reply).status, Receipt::Status::message);
  EXPECT_EQ(read_reject_verdict(reply.data()).reason, RejectReason::size);
  push = forger.push(test::random_normal(rng, model.total()), 0.01f);
  attacker.send(push);
  EXPECT_EQ(attacker.recv(reply).status, Receipt::Status::message);
  EXPECT_EQ(read_reject_verdict(reply.data()).reason, RejectReason::kind);

  for (auto& t : trainers) t.join();
  serving.stop();
  set_log_level(LogLevel::warning);
  const ServerStats& stats = server.stats();
  EXPECT_EQ(stats.rejected_total(), spoils.size() + 2);
  for (const Spoil& s : spoils) {
    EXPECT_GE(stats.rejected[static_cast<std::size_t>(s.reason)], 1u) << field_name(s.reason);
  }
  EXPECT_EQ(stats.pushes, 3u * 150u);
  for (int k = 0; k < 3; ++k) EXPECT_LT(end_loss[k], 0.5 * start_loss[k]) << "worker " << k;
}

// The real Server (not the test harness): a rejected push from a joined
// worker changes neither W, nor the version, nor that worker's replica —
// the job goes on bitwise as if the messages had never been sent.
TEST_P(Runtime, RejectedPushesFromAJoinedWorkerLeaveTheServerBitwiseUnchanged) {
  const Segments model({400, 30, 1, 200});
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.05;
  config.workers = 2;
  const std::vector<float> w0 = random_model(model.total(), 40);
  const Quadratic problem(model.total(), 41);
  Job clean(backend, config, model, w0);
  Job attacked(backend, config, model, w0);
  set_log_level(LogLevel::off);
  ServerThread serving_clean(*clean.server);
  ServerThread serving_attacked(*attacked.server);
  for (Job* job : {&clean, &attacked}) {
    for (auto& w : job->workers) w->join();
    run_steps(*job, problem, 0, 5, 0.02f);
  }

  // Worker 1's rank carries the forgeries between its steps.
  test::RefWorker forger(model, config, 1, w0);
  test::Bytes reply(sparse_reply_layout(model, config).bytes);
  Wire rank(attacked.hub.endpoint(2), *backend, std::max(forger.layout().bytes, reply.size()));
  std::mt19937_64 rng(42);
  const std::vector<float> model_before = attacked.server_model();
  const std::uint64_t version_before = attacked.server->version();
  const std::uint64_t pushes_before = attacked.server->stats().pushes;
  for (const Spoil& s : hostile_spoils()) {
    expect_spoiled_push_rejected(rank, forger, 1, s, rng, reply, model.total());
    EXPECT_TRUE(same_bits(attacked.server_model(), model_before)) << field_name(s.reason);
    EXPECT_EQ(attacked.server->version(), version_before) << field_name(s.reason);
    EXPECT_EQ(attacked.server->stats().pushes, pushes_before) << field_name(s.reason);
    EXPECT_TRUE(attacked.server->is_live(1)) << field_name(s.reason);
  }

  for (Job* job : {&clean, &attacked}) run_steps(*job, problem, 5, 10, 0.02f);
  serving_clean.stop();
  serving_attacked.stop();
  set_log_level(LogLevel::warning);
  EXPECT_EQ(attacked.server->stats().rejected_total(), hostile_spoils().size());
  EXPECT_EQ(attacked.server->version(), clean.server->version());
  EXPECT_TRUE(same_bits(attacked.server_model(), clean.server_model()));
  for (std::uint32_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(same_bits(attacked.weights_of(k), clean.weights_of(k))) << "worker " << k;
  }
}

// A worker of config `wrong` joins a job of config `config` and is refused:
// returns what the dgs::Error its join() throws says (invalid_message), and
// checks that the server counted one rejection for `reason`.
std::string refused_join(const std::shared_ptr<Backend>& backend, const Segments& model,
                         const Config& config, const Config& wrong, RejectReason reason) {
  Job job(backend, config, model, random_model(model.total(), 11));
  ServerThread serving(*job.server);
  set_log_level(LogLevel::off);
  Floats w(*backend, model.total());
  WorkerOptions o;
  o.timeout = 20s;
  Worker stranger(wrong, model, job.backend, job.hub.endpoint(1), w.data(), o);
  std::string what;
  try {
    stranger.join();
    ADD_FAILURE() << "a mismatched worker joined";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_message);
    what = e.what();
  }
  set_log_level(LogLevel::warning);
  EXPECT_EQ(job.server->stats().rejected[static_cast<std::size_t>(reason)], 1u);
  return what;
}

TEST_P(Runtime, AWorkerWithAnotherConfigIsToldWhatDisagrees) {
  const Segments model({100, 10});
  Config config;
  config.workers = 1;
  Config wrong = config;
  wrong.compressor = Compressor::randk;
  const std::string what = refused_join(backend, model, config, wrong, RejectReason::compressor);
  EXPECT_NE(what.find("compressor"), std::string::npos) << what;
}

// A bad Config is named by its field when a Worker or a Server is made,
// before its buffers are sized from it (a NaN capacity factor would be cast
// to an integer there).
TEST_P(Runtime, AWorkerOrServerNamesABadConfigFieldBeforeUsingIt) {
  const Segments model({100, 10});
  const std::vector<float> w0 = random_model(model.total(), 14);
  Config zero_ratio;
  zero_ratio.ratio = 0.0;
  Config nan_capacity;
  nan_capacity.compressor = Compressor::threshold;
  nan_capacity.threshold_capacity = std::numeric_limits<double>::quiet_NaN();
  for (const auto& [config, field] :
       {std::pair{zero_ratio, "ratio"}, std::pair{nan_capacity, "threshold_capacity"}}) {
    LocalHub hub(2, memory_of(*backend));
    Floats weights(*backend, model.total());
    auto expect_named = [&, f = std::string(field)](auto make) {
      try {
        make();
        ADD_FAILURE() << "a bad " << f << " was accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_config) << e.what();
        EXPECT_EQ(e.field(), f) << e.what();
      }
    };
    expect_named([&] { Server(config, model, backend, hub.endpoint(0), w0.data()); });
    expect_named([&] { Worker(config, model, backend, hub.endpoint(1), weights.data()); });
  }
}

// Two workers given one transport rank: the second could never be told
// apart from the first, so the server refuses to start.
TEST_P(Runtime, AServerRefusesTwoWorkersOnOneRank) {
  const Segments model({100, 10});
  Config config;
  config.workers = 2;
  LocalHub hub(3, memory_of(*backend));
  ServerOptions options;
  options.worker_ranks = {2, 2};
  const std::vector<float> w0 = random_model(model.total(), 15);
  try {
    Server server(config, model, backend, hub.endpoint(0), w0.data(), options);
    ADD_FAILURE() << "a server took two workers on rank 2";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("workers 0 and 1 both have rank 2"), std::string::npos)
        << e.what();
  }
}

// A NaN or infinity in the server's initial model is named when the server
// is made (it would otherwise reach every worker, whose pushes would then be
// rejected as non-finite).
TEST_P(Runtime, AServerRefusesAnInitialModelThatIsNotFinite) {
  const Segments model({100, 10});
  Config config;
  config.workers = 1;
  const std::pair<std::size_t, float> cases[] = {{103, std::numeric_limits<float>::quiet_NaN()},
                                                 {0, std::numeric_limits<float>::infinity()},
                                                 {109, -std::numeric_limits<float>::infinity()}};
  for (const auto& [index, value] : cases) {
    std::vector<float> w0 = random_model(model.total(), 13);
    w0[index] = value;
    LocalHub hub(2, memory_of(*backend));
    try {
      Server server(config, model, backend, hub.endpoint(0), w0.data());
      ADD_FAILURE() << "a server took " << value << " at index " << index;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      const std::string what = e.what();
      const std::size_t l = index < 100 ? 0 : 1;
      EXPECT_NE(
          what.find(std::to_string(value) + " at index " + std::to_string(index) + " (tensor " +
                    std::to_string(l) + ", element " + std::to_string(index - 100 * l) + ")"),
          std::string::npos)
          << what;
    }
  }
}

// A server whose replies are all dense sends heads of 96 bytes; a worker
// configured otherwise expects larger ones, and is told both the sizes and
// why the server rejected its hello.
TEST_P(Runtime, AWorkerOfASparseConfigIsToldWhyADenseServerRejectedIt) {
  const Segments model({1000, 10});  // the worker's reply head: 11 entries, 160 bytes
  Config config;
  config.method = Method::dense;
  config.workers = 1;
  Config wrong = config;
  wrong.method = Method::samomentum;
  const std::string what = refused_join(backend, model, config, wrong, RejectReason::size);
  EXPECT_NE(
      what.find("of 96 bytes, expected " + std::to_string(sparse_reply_layout(model, wrong).bytes)),
      std::string::npos)
      << what;
  EXPECT_NE(what.find("rejection"), std::string::npos) << what;
  EXPECT_NE(what.find(field_name(RejectReason::size)), std::string::npos) << what;
}

// ---------------------------------------------------------------------------
// Faults.

TEST_P(Runtime, AKilledWorkerIsDroppedAndANewOneJoinsAndConverges) {
  const Segments model({600, 50});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.1;
  config.workers = 3;
  const Quadratic problem(model.total(), 12);
  const std::vector<float> w0 = random_model(model.total(), 13);
  LocalHub hub(4, memory_of(*backend));
  set_log_level(LogLevel::off);
  Server server(config, model, backend, hub.endpoint(0), w0.data());
  std::thread serving([&] { server.run(); });

  // One step of `worker` on the gradient at `w`, through the buffer `g`.
  auto step = [&](Worker& worker, const Floats& w, Floats& g, int t, std::uint32_t k) {
    g.assign(problem.gradient(w.host(), t, k));
    worker.step(g.data(), 0.05f);
  };
  // server.run() returns once every worker has joined and none is live, so
  // workers 0 and 1 leave only after worker 2's replacement has joined
  // (support/wait.h): it is a new worker of this job, not of a new one.
  std::atomic<bool> replaced{false};
  auto train = [&](std::uint32_t k, int steps) {
    WorkerOptions o;
    o.id = k;
    o.timeout = 20s;
    Floats w(*backend, model.total()), g(*backend, model.total());
    Worker worker(config, model, backend, hub.endpoint(static_cast<int>(k) + 1), w.data(), o);
    worker.join();
    for (int t = 0; t < steps; ++t) step(worker, w, g, t, k);
    test::wait_until([&] { return replaced.load(); });
    worker.leave();
  };
  std::thread a([&] { train(0, 400); });
  std::thread b([&] { train(1, 400); });
  Floats g(*backend, model.total());
  // Worker 2 dies after 30 steps, without saying bye.
  {
    WorkerOptions o;
    o.id = 2;
    Floats doomed(*backend, model.total());
    Worker worker(config, model, backend, hub.endpoint(3), doomed.data(), o);
    worker.join();
    for (int t = 0; t < 30; ++t) step(worker, doomed, g, t, 2);
    hub.close(3);
    EXPECT_THROW(step(worker, doomed, g, 30, 2), Error);
  }
  while (server.is_live(2)) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(server.stats().dropped, 1u);
  // A new worker takes its place and trains.
  Floats fresh(*backend, model.total());
  double loss_at_join = 0.0;
  {
    WorkerOptions o;
    o.id = 2;
    o.timeout = 20s;
    Worker worker(config, model, backend, hub.endpoint(3), fresh.data(), o);
    worker.join();
    replaced = true;
    EXPECT_EQ(worker.stats().dense_replies, 1u);  // the rejoining worker gets the whole model
    loss_at_join = problem.loss(fresh.host());
    EXPECT_LT(loss_at_join, problem.loss(w0));  // the trained model, not the initial one
    for (int t = 0; t < 200; ++t) step(worker, fresh, g, t, 2);
    worker.leave();
  }
  a.join();
  b.join();
  serving.join();
  set_log_level(LogLevel::warning);
  EXPECT_LT(problem.loss(fresh.host()), loss_at_join);
  std::vector<float> final_model(model.total());
  server.copy_model(final_model.data());
  EXPECT_LT(problem.loss(final_model), 0.2 * problem.loss(w0));
  EXPECT_EQ(server.stats().joins, 4u);
  EXPECT_EQ(server.live_workers(), 0u);
}

// Two workers on a model of 64, both joined, their server dropping a worker
// silent for `timeout`, served in a thread; logging off while it lives.
struct TwoTimedWorkers {
  static Config config_of(Mode mode) {
    Config c;
    c.mode = mode;
    c.workers = 2;
    return c;
  }
  static ServerOptions options_of(std::chrono::milliseconds timeout) {
    ServerOptions o;
    o.worker_timeout = timeout;
    return o;
  }
  TwoTimedWorkers(std::shared_ptr<Backend> backend, Mode mode, std::chrono::milliseconds timeout,
                  std::uint64_t seed)
      : job(std::move(backend), config_of(mode), Segments({64}), random_model(64, seed),
            options_of(timeout)),
        serving(*job.server) {
    job.workers[0]->join();
    job.workers[1]->join();
  }

  // Logging off from before the server serves until after it stopped.
  struct QuietLog {
    QuietLog() { set_log_level(LogLevel::off); }
    ~QuietLog() { set_log_level(LogLevel::warning); }
  };
  Job job;
  QuietLog quiet;
  ServerThread serving;  // stops before the job goes
};

TEST_P(Runtime, ASilentWorkerIsDroppedAfterTheTimeout) {
  TwoTimedWorkers t(backend, Mode::async, 150ms, 14);
  Job& job = t.job;
  const std::vector<float> g = random_model(64, 15);
  const auto until = std::chrono::steady_clock::now() + 600ms;
  while (std::chrono::steady_clock::now() < until) {  // worker 0 keeps pushing, 1 is silent
    job.step(0, g, 1e-3f);
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(job.server->is_live(0));
  EXPECT_FALSE(job.server->is_live(1));
  EXPECT_EQ(job.server->stats().dropped, 1u);
}

// A server kept busy (here a slow on_reply) while pushes wait for it drops
// none of their senders: silence is judged as of the last moment nothing
// was waiting, not by the clock. Worker 0's reply takes 400 ms; workers 1
// and 2 push meanwhile, and worker 2's push waits behind worker 1's with its
// sender last heard from (joining) over 200 ms before.
TEST_P(Runtime, PushesWaitingForABusyServerAreNotTakenForSilence) {
  Config config;
  config.workers = 3;
  std::atomic<bool> slow{true};
  ServerOptions options;
  options.worker_timeout = 200ms;
  options.on_reply = [&](std::uint32_t k, std::uint64_t version, const float*) {
    if (k == 0 && version == 1 && slow.exchange(false)) std::this_thread::sleep_for(400ms);
  };
  Job job(backend, config, Segments({64}), random_model(64, 20), options);
  set_log_level(LogLevel::off);
  ServerThread serving(*job.server);
  for (auto& w : job.workers) w->join();
  const std::vector<float> g = random_model(64, 21);
  std::vector<std::thread> pushers;
  std::vector<std::string> errors(3);
  for (std::size_t k = 0; k < 3; ++k) {
    pushers.emplace_back([&, k] {
      if (k > 0) std::this_thread::sleep_for(50ms);  // after worker 0's push
      try {
        job.step(k, g, 1e-3f);
      } catch (const Error& e) {
        errors[k] = e.what();
      }
    });
  }
  for (auto& t : pushers) t.join();
  serving.stop();
  set_log_level(LogLevel::warning);
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(errors[k], "") << "worker " << k;
    EXPECT_TRUE(job.server->is_live(static_cast<std::uint32_t>(k))) << "worker " << k;
  }
  EXPECT_EQ(job.server->stats().dropped, 0u);
  EXPECT_EQ(job.server->stats().pushes, 3u);
}

// A push the server refuses because it dropped the worker (here for its
// silence) is lost: its entries left the worker's state when it was made.
// push() then refuses until join(), instead of losing push after push.
TEST_P(Runtime, APushRejectedFromADroppedWorkerNeedsAJoin) {
  TwoTimedWorkers t(backend, Mode::async, 150ms, 22);
  Job& job = t.job;
  test::wait_until([&] { return !job.server->is_live(1); });
  ASSERT_FALSE(job.server->is_live(1));
  const std::vector<float> g = random_model(64, 23);
  job.push(1, g, 1e-3f);
  EXPECT_THROW(job.workers[1]->finish(), Error);
  try {
    job.push(1, g, 1e-3f);
    ADD_FAILURE() << "push() went on after a rejection";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("after the server rejected a push: join() again first"),
              std::string::npos)
        << e.what();
  }
  job.workers[1]->join();
  EXPECT_NO_THROW(job.step(1, g, 1e-3f));
  EXPECT_EQ(job.server->stats().rejected[static_cast<std::size_t>(RejectReason::kind)], 1u);
}

// Sync: a worker that waited for a round is not silent meanwhile. Worker 1
// pushes, worker 0 pushes 400 ms later (the round completes), and both
// compute 350 ms before their next pushes: worker 1's comes 750 ms after
// its last push, more than the 600 ms timeout, but 350 ms after its reply.
// It must stay live.
TEST_P(Runtime, ASyncWorkerIsSilentFromItsReplyNotFromItsPush) {
  TwoTimedWorkers t(backend, Mode::sync, 600ms, 16);
  Job& job = t.job;
  const std::vector<float> g = random_model(64, 17);
  for (int round = 0; round < 2; ++round) {
    job.push(1, g, 1e-3f);
    if (round == 0) std::this_thread::sleep_for(400ms);
    job.push(0, g, 1e-3f);
    EXPECT_NO_THROW(job.workers[0]->finish());
    EXPECT_NO_THROW(job.workers[1]->finish());
    std::this_thread::sleep_for(350ms);
  }
  EXPECT_TRUE(job.server->is_live(0));
  EXPECT_TRUE(job.server->is_live(1));
  EXPECT_EQ(job.server->stats().dropped, 0u);
  EXPECT_EQ(job.server->stats().rounds, 2u);
}

// ---------------------------------------------------------------------------
// How long run() serves: until each of Config::workers has joined once and
// none is live, waiting at most ServerOptions::join_timeout for a worker to
// come.

// Worker k of `job`: joins, takes `steps` steps on `problem`, leaves.
void join_train_leave(Job& job, const Quadratic& problem, std::uint32_t k, int steps) {
  job.workers[k]->join();
  for (int t = 0; t < steps; ++t) job.step(k, problem.gradient(job.weights_of(k), t, k), 0.05f);
  job.workers[k]->leave();
}

// run() in a thread; says how long it ran and what it threw.
class RunThread {
 public:
  explicit RunThread(Server& server)
      : thread_([this, &server] {
          const auto start = std::chrono::steady_clock::now();
          try {
            server.run();
          } catch (const Error& e) {
            error_ = e.what();
          }
          ran_ = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - start);
        }) {}
  ~RunThread() {
    if (thread_.joinable()) thread_.join();
  }
  /// Waits for run() to return.
  void join() { thread_.join(); }
  /// How long run() ran, in ms.
  long long ran() const { return ran_.count(); }
  const std::string& error() const { return error_; }

 private:
  std::chrono::milliseconds ran_{};
  std::string error_;
  std::thread thread_;
};

// A job of two workers (samomentum at 10% on {300, 20}) whose server waits
// `join_timeout` for a worker to join.
std::unique_ptr<Job> two_worker_job(std::shared_ptr<Backend> backend,
                                    std::chrono::milliseconds join_timeout,
                                    std::chrono::milliseconds worker_timeout = 0ms) {
  Config config;
  config.method = Method::samomentum;
  config.ratio = 0.1;
  config.workers = 2;
  ServerOptions options;
  options.join_timeout = join_timeout;
  options.worker_timeout = worker_timeout;
  const Segments model({300, 20});
  return std::make_unique<Job>(std::move(backend), config, model, random_model(model.total(), 31),
                               options);
}

// Also with timeouts of milliseconds::max(), for ever: compared with elapsed
// nanoseconds, max() would wrap and end every wait at once (worker 1 not
// waited for, worker 0 dropped at once).
TEST_P(Runtime, RunServesAWorkerThatJoinsAfterTheOthersHaveLeft) {
  for (const std::chrono::milliseconds timeout :
       {std::chrono::milliseconds(10min), std::chrono::milliseconds::max()}) {
    SCOPED_TRACE("join and worker timeouts of " + std::to_string(timeout.count()) + " ms");
    const std::unique_ptr<Job> job = two_worker_job(backend, timeout, timeout);
    const Quadratic problem(job->model.total(), 30);
    set_log_level(LogLevel::off);
    RunThread serving(*job->server);
    join_train_leave(*job, problem, 0, 20);
    // Time for the server (which polls every 200 ms) to take worker 0's bye: a
    // server that stopped once every worker that joined had left would be gone,
    // and worker 1's join would wait 20 s for a reply and throw.
    std::this_thread::sleep_for(500ms);
    join_train_leave(*job, problem, 1, 20);
    serving.join();
    set_log_level(LogLevel::warning);
    EXPECT_EQ(serving.error(), "");
    EXPECT_EQ(job->server->stats().joins, 2u);
    EXPECT_EQ(job->server->joined_workers(), 2u);
    EXPECT_EQ(job->server->stats().leaves, 2u);
    EXPECT_EQ(job->server->stats().pushes, 40u);
    EXPECT_EQ(job->server->stats().dropped, 0u);
  }
}

// Worker 0 of two trains and leaves; worker 1 never joins: it does not come
// (`close_worker_1` false) or its endpoint closes first. Returns how long
// run() served, in ms.
long long serve_without_worker_1(const std::shared_ptr<Backend>& backend,
                                 std::chrono::milliseconds join_timeout, bool close_worker_1) {
  const std::unique_ptr<Job> job = two_worker_job(backend, join_timeout);
  const Quadratic problem(job->model.total(), 32);
  if (close_worker_1) job->hub.close(2);
  set_log_level(LogLevel::off);
  RunThread serving(*job->server);
  join_train_leave(*job, problem, 0, 10);
  serving.join();
  set_log_level(LogLevel::warning);
  EXPECT_EQ(serving.error(), "");
  EXPECT_EQ(job->server->joined_workers(), 1u);
  EXPECT_EQ(job->server->stats().pushes, 10u);
  EXPECT_EQ(job->server->stats().dropped, 0u);  // worker 1 never joined: nothing to drop
  return serving.ran();
}

TEST_P(Runtime, RunStopsWaitingForAWorkerThatDoesNotJoinWithinTheJoinTimeout) {
  EXPECT_GE(serve_without_worker_1(backend, 2s, false), 2000) << "it did not wait for worker 1";
}

TEST_P(Runtime, RunStopsWaitingForAWorkerWhoseTransportFailedBeforeItJoined) {
  EXPECT_LT(serve_without_worker_1(backend, 60s, true), 30000)
      << "run() waited for a worker that could no longer join";
}

TEST_P(Runtime, RunThrowsWhenNoWorkerJoinsWithinTheJoinTimeout) {
  const std::unique_ptr<Job> job = two_worker_job(backend, 300ms);
  try {
    job->server->run();
    ADD_FAILURE() << "run() returned with no worker joined";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout);
    EXPECT_NE(std::string(e.what()).find("no worker joined within 300 ms"), std::string::npos)
        << e.what();
  }
}

TEST_P(Runtime, AStalePushIsAnsweredWithADenseRefresh) {
  const Segments model({500});
  Config config;
  config.ratio = 0.01;
  config.workers = 2;
  ServerOptions options;
  options.staleness_bound = 5;
  Job job(backend, config, model, random_model(500, 16), options);
  ServerThread serving(*job.server);
  for (auto& w : job.workers) w->join();
  const std::vector<float> g = random_model(500, 17);
  for (int t = 0; t < 5; ++t) job.step(0, g, 0.01f);  // worker 1 falls 5 behind: at the bound
  job.step(1, g, 0.01f);
  for (int t = 0; t < 6; ++t) job.step(0, g, 0.01f);  // then 6: past it
  job.step(1, g, 0.01f);
  serving.stop();
  EXPECT_EQ(job.server->stats().stale_refreshes, 1u);
  EXPECT_EQ(job.workers[1]->stats().dense_replies, 2u);  // the join and the refresh
  EXPECT_EQ(job.workers[1]->stats().sparse_replies, 1u);  // the push at the bound
  EXPECT_TRUE(same_bits(job.weights_of(1), job.server_model()));
  // Worker 0's push after worker 1's is one version stale.
  EXPECT_EQ(job.workers[0]->stats().staleness_max, 1u);
  EXPECT_EQ(job.workers[1]->stats().staleness_max, 6u);

  // Where every reply is dense anyway, the bound forces none: none counted.
  config.server_ratio = 1.0;
  Job dense(backend, config, model, random_model(500, 16), options);
  ServerThread serving_dense(*dense.server);
  for (auto& w : dense.workers) w->join();
  for (int t = 0; t < 6; ++t) dense.step(0, g, 0.01f);
  dense.step(1, g, 0.01f);
  serving_dense.stop();
  EXPECT_EQ(dense.server->stats().stale_refreshes, 0u);
  EXPECT_EQ(dense.workers[1]->stats().dense_replies, 2u);
}

TEST_P(Runtime, TheSyncPeriodRefreshesReplicasDensely) {
  const Segments model({300, 20});
  Config config;
  config.ratio = 0.02;
  config.workers = 1;
  ServerOptions options;
  options.sync_period = 4;
  Job job(backend, config, model, random_model(320, 18), options);
  ServerThread serving(*job.server);
  job.workers[0]->join();
  const Quadratic problem(320, 19);
  for (int t = 0; t < 12; ++t) {
    job.step(0, problem.gradient(job.weights_of(0), t, 0), 0.01f);
  }
  serving.stop();
  EXPECT_EQ(job.workers[0]->stats().dense_replies, 1u + 3u);  // join, versions 4, 8, 12
  EXPECT_EQ(job.workers[0]->stats().sparse_replies, 9u);
  EXPECT_TRUE(same_bits(job.weights_of(0), job.server_model()));
}

// The ratio schedules through a real Worker and Server: every push holds
// the entries its step's ratio asks for, the server accepts the changing
// ratio codes, and the worker's model equals its replica after every reply.
void expect_schedule_end_to_end(const std::shared_ptr<Backend>& backend, Config config,
                                const std::vector<float>& lrs) {
  const Segments model({4000, 1000, 37});
  config.method = Method::samomentum;
  config.workers = 1;
  const Quadratic problem(model.total(), 50);
  std::vector<float> replica(model.total());
  const ServerOptions options = replica_capture(backend, replica);
  Job job(backend, config, model, random_model(model.total(), 51), options);
  ServerThread serving(*job.server);
  Worker& worker = *job.workers[0];
  worker.join();
  std::uint64_t entries = 0;
  float first = 0.0f;  // the first positive lr
  for (std::size_t t = 0; t < lrs.size(); ++t) {
    if (!(first > 0.0f)) first = lrs[t];
    const double ratio = config.ratio_at(t, lrs[t], first);
    const std::uint64_t expected = push_plan(model, config, encode_ratio(ratio)).total_target();
    const std::vector<float> gradient = problem.gradient(job.weights_of(0), static_cast<int>(t), 0);
    job.step(0, gradient, lrs[t]);
    ASSERT_TRUE(same_bits(job.grads[0]->host(), gradient)) << "the worker wrote into the gradient";
    EXPECT_EQ(worker.stats().entries_pushed - entries, expected)
        << "step " << t << ", ratio " << ratio;
    entries = worker.stats().entries_pushed;
    ASSERT_TRUE(same_bits(job.weights_of(0), replica)) << "step " << t;
  }
  worker.leave();
  serving.stop();
  EXPECT_EQ(job.server->stats().rejected_total(), 0u);
  EXPECT_EQ(job.server->stats().pushes, lrs.size());
}

TEST_P(Runtime, TheWarmupScheduleRunsEndToEnd) {
  // topk and rbgs, each async and sync: rbgs pushes carry block starts, whose
  // segment table the server takes from each push's validated header (a sync
  // round applies the pushes it held); a topk sync round is summed per tile.
  for (Compressor c : {Compressor::topk, Compressor::rbgs}) {
    for (Mode mode : {Mode::async, Mode::sync}) {
      SCOPED_TRACE(std::string(to_string(c)) + " " + to_string(mode));
      Config config;
      config.compressor = c;
      config.mode = mode;
      config.schedule = RatioSchedule::warmup;
      config.warmup_ratios = {0.25, 0.0625};
      config.warmup_steps = 3;
      config.ratio = 0.01;
      // Three steps at 25%, three at 6.25%, then 1% (the 37-parameter tensor: 1 entry).
      expect_schedule_end_to_end(backend, config, std::vector<float>(10, 0.01f));
    }
  }
}

TEST_P(Runtime, TheLrProportionalScheduleRunsEndToEnd) {
  Config config;
  config.schedule = RatioSchedule::lr_proportional;
  config.ratio = 0.04;
  // The learning rate decays in steps: the ratio follows it down, then a
  // larger rate later is capped at `ratio`.
  expect_schedule_end_to_end(backend, config,
                             {0.1f, 0.1f, 0.1f, 0.05f, 0.05f, 0.025f, 0.0125f, 0.1f, 0.2f});
  // A warm-up from lr = 0: the ratio until the first positive lr, then
  // relative to it (0.05 keeps half the entries 0.1 keeps).
  expect_schedule_end_to_end(backend, config, {0.0f, 0.0f, 0.1f, 0.05f, 0.025f});
}

// Sync rounds go on over the live workers when one stops answering.
TEST_P(Runtime, SyncRoundsGoOnWithoutADroppedWorker) {
  const Segments model({500, 60});
  Config config;
  config.method = Method::gmc;
  config.mode = Mode::sync;
  config.ratio = 0.05;
  config.workers = 3;
  const Quadratic problem(model.total(), 60);
  const std::vector<float> w0 = random_model(model.total(), 61);
  Job job(backend, config, model, w0);
  set_log_level(LogLevel::off);
  ServerThread serving(*job.server);
  for (auto& w : job.workers) w->join();
  run_steps(job, problem, 0, 5, 0.05f);
  EXPECT_EQ(job.server->stats().rounds, 5u);
  job.hub.close(3);  // worker 2 is gone, without a bye
  run_steps(job, problem, 5, 55, 0.05f, 2);
  job.workers[0]->leave();
  job.workers[1]->leave();
  serving.stop();
  set_log_level(LogLevel::warning);
  EXPECT_EQ(job.server->stats().dropped, 1u);
  EXPECT_FALSE(job.server->is_live(2));
  EXPECT_EQ(job.server->stats().rounds, 60u);
  EXPECT_EQ(job.server->stats().pushes, 5u * 3u + 55u * 2u);
  EXPECT_LT(problem.loss(job.server_model()), 0.5 * problem.loss(w0));
}

// A sync worker that joins late takes the round's number as its step: in a
// round every worker then draws the same rbgs blocks (DESIGN §2, "the same
// block on every worker at a step"), so the round changes one block of k_l
// coordinates per segment, not one per worker.
// Two sync workers of gd with rbgs blocks of 5%.
Config sync_rbgs_config() {
  Config config;
  config.method = Method::gd;
  config.compressor = Compressor::rbgs;
  config.mode = Mode::sync;
  config.ratio = 0.05;
  config.workers = 2;
  return config;
}

TEST_P(Runtime, ASyncJoinerTakesTheRoundAsItsStepAndPushesTheOthersBlocks) {
  const Segments model({600, 90});
  const Config config = sync_rbgs_config();
  const Quadratic problem(model.total(), 80);
  Job job(backend, config, model, random_model(model.total(), 81));
  ServerThread serving(*job.server);
  job.workers[0]->join();
  run_steps(job, problem, 0, 3, 0.05f, 1);  // worker 0 alone: rounds 0 to 2
  job.workers[1]->join();
  EXPECT_EQ(job.workers[1]->steps(), 3u);
  EXPECT_EQ(job.workers[1]->model_version(), 3u);
  for (int t = 3; t < 7; ++t) {
    const std::vector<float> before = job.server_model();
    run_steps(job, problem, t, 1, 0.05f);
    const std::vector<float> after = job.server_model();
    for (std::size_t l = 0; l < model.count(); ++l) {
      std::uint64_t changed = 0;
      for (std::uint64_t i = model.offset(l); i < model.offset(l) + model.size(l); ++i) {
        changed += std::memcmp(&before[i], &after[i], sizeof(float)) != 0 ? 1 : 0;
      }
      const auto k = static_cast<std::uint64_t>(0.05 * static_cast<double>(model.size(l)));
      EXPECT_EQ(changed, k) << "round " << t << ", segment " << l;
    }
  }
  EXPECT_EQ(job.workers[0]->steps(), 7u);
  EXPECT_EQ(job.workers[1]->steps(), 7u);
  for (auto& w : job.workers) w->leave();
  serving.stop();
  EXPECT_EQ(job.server->stats().rounds, 7u);
  EXPECT_EQ(job.server->stats().rejected_total(), 0u);
}

// With the lr_proportional schedule a worker that joins late scales its
// ratio by the job's first lr, which the answer to its hello carries, not
// by its own first lr (the job's lr of then): in a round it pushes as many
// entries as the others. Worker 0 trains alone at lr 0.1, 0.05, 0.025;
// worker 1 joins and both push at 0.0125, an eighth of the ratio.
TEST_P(Runtime, ALateJoinerScalesItsRatioByTheJobsFirstLearningRate) {
  const Segments model({800, 400});
  Config config;
  config.method = Method::gd;
  config.compressor = Compressor::randk;
  config.mode = Mode::sync;
  config.schedule = RatioSchedule::lr_proportional;
  config.ratio = 0.2;
  config.workers = 2;
  const Quadratic problem(model.total(), 84);
  Job job(backend, config, model, random_model(model.total(), 85));
  ServerThread serving(*job.server);
  job.workers[0]->join();
  for (int t = 0; t < 3; ++t) run_steps(job, problem, t, 1, 0.1f / float(1 << t), 1);
  job.workers[1]->join();
  const std::uint64_t before = job.workers[0]->stats().entries_pushed;
  run_steps(job, problem, 3, 1, 0.0125f);
  const std::uint64_t round = job.workers[0]->stats().entries_pushed - before;
  EXPECT_EQ(round, 20u + 10u);  // 0.2 / 8 = 2.5% of 800 and of 400
  EXPECT_EQ(job.workers[1]->stats().entries_pushed, round);
  for (auto& w : job.workers) w->leave();
  test::wait_until([&] { return job.server->live_workers() == 0; });  // a bye has no reply
  serving.stop();
  EXPECT_EQ(job.server->stats().rejected_total(), 0u);
  // The server keeps that lr in its checkpoints: a worker joining a server
  // restored from one scales by it too.
  const std::string path = temp_path("first_lr");
  job.server->save(path);
  Job restored(backend, config, model, random_model(model.total(), 86));
  restored.server->restore(path);
  std::remove(path.c_str());
  ServerThread again(*restored.server);
  restored.workers[0]->join();
  run_steps(restored, problem, 4, 1, 0.0125f, 1);
  EXPECT_EQ(restored.workers[0]->stats().entries_pushed, 30u);
  restored.workers[0]->leave();
}

// A sync push whose step is not the round's is rejected (RejectReason::round)
// and its sender dropped; the round goes on without it.
TEST_P(Runtime, ASyncPushOfAnotherRoundIsRejected) {
  const Segments model({600, 90});
  const Config config = sync_rbgs_config();  // worker 1 (rank 2) is written by hand below
  const Quadratic problem(model.total(), 82);
  const std::vector<float> w0 = random_model(model.total(), 83);
  Job job(backend, config, model, w0);
  set_log_level(LogLevel::off);
  ServerThread serving(*job.server);
  job.workers[0]->join();
  run_steps(job, problem, 0, 2, 0.05f, 1);

  test::RefWorker hand(model, config, 1, w0);
  const MessageLayout dense = dense_layout(model.total(), WireValue::f32);
  test::Bytes head(sparse_reply_layout(model, config).bytes), body(dense.bytes);
  Wire rank(job.hub.endpoint(2), *backend, std::max(hand.layout().bytes, dense.bytes));
  rank.send(hand.hello());
  ASSERT_EQ(rank.recv(head).status, Receipt::Status::message);
  ASSERT_EQ(read_header(head.data()).kind, MessageKind::dense_reply);
  ASSERT_EQ(rank.recv(body).status, Receipt::Status::message);
  hand.apply(body);
  EXPECT_EQ(hand.steps(), 2u);  // the reference worker takes the round too
  EXPECT_TRUE(job.server->is_live(1));

  std::mt19937_64 rng(84);
  test::Bytes push = hand.push(test::random_normal(rng, model.total()), 0.05f);
  set(push, [](MessageHeader& h) { h.step = 0; });  // its own count, from 0
  rank.send(push);
  ASSERT_EQ(rank.recv(head).status, Receipt::Status::message);
  ASSERT_EQ(read_header(head.data()).kind, MessageKind::reject);
  const Verdict verdict = read_reject_verdict(head.data());
  EXPECT_EQ(verdict.reason, RejectReason::round);
  EXPECT_EQ(verdict.value, 0u);
  EXPECT_EQ(verdict.expected, 2u);
  EXPECT_NE(verdict.describe(1).find("step = 0, but the sync round is 2"), std::string::npos)
      << verdict.describe(1);
  test::wait_until([&] { return !job.server->is_live(1); });

  run_steps(job, problem, 2, 3, 0.05f, 1);  // the rounds go on without it
  job.workers[0]->leave();
  serving.stop();
  set_log_level(LogLevel::warning);
  EXPECT_EQ(job.server->stats().rounds, 5u);
  EXPECT_EQ(job.server->stats().rejected[static_cast<std::size_t>(RejectReason::round)], 1u);
  EXPECT_EQ(job.server->stats().dropped, 1u);
}

// T_sync in sync mode refreshes every worker's replica densely every
// sync_period rounds.
TEST_P(Runtime, TheSyncPeriodRefreshesEveryWorkerInSyncMode) {
  const Segments model({300, 20});
  Config config;
  config.mode = Mode::sync;
  config.ratio = 0.02;
  config.workers = 2;
  ServerOptions options;
  options.sync_period = 3;
  const Quadratic problem(320, 62);
  Job job(backend, config, model, random_model(320, 63), options);
  ServerThread serving(*job.server);
  for (auto& w : job.workers) w->join();
  run_steps(job, problem, 0, 9, 0.01f);
  serving.stop();
  for (std::uint32_t k = 0; k < 2; ++k) {
    EXPECT_EQ(job.workers[k]->stats().dense_replies, 1u + 3u)
        << "worker " << k;  // join, rounds 3, 6, 9
    EXPECT_EQ(job.workers[k]->stats().sparse_replies, 6u) << "worker " << k;
    EXPECT_TRUE(same_bits(job.weights_of(k), job.server_model())) << "worker " << k;
  }
}

TEST_P(Runtime, TheWorkerRefusesCallsOutOfOrder) {
  const Segments model({32});
  Config config;
  Job job(backend, config, model, random_model(32, 20));
  Worker& w = *job.workers[0];
  const Floats g(*backend, std::vector<float>(32, 1.0f));
  EXPECT_THROW(w.push(g.data(), 0.1f), Error);  // before join
  EXPECT_THROW(w.finish(), Error);
  ServerThread serving(*job.server);
  w.join();
  w.push(g.data(), 0.1f);
  EXPECT_THROW(w.push(g.data(), 0.1f), Error);
  EXPECT_THROW(w.save(temp_path("midstep")), Error);
  w.finish();
  WorkerOptions bad;
  bad.id = 1;
  Floats other(*backend, 32);
  EXPECT_THROW(Worker(config, model, job.backend, job.hub.endpoint(1), other.data(), bad), Error);
}

// Every reply echoes the step of the message it answers; a worker refuses
// one that answers another.
TEST_P(Runtime, TheWorkerRefusesAReplyToAnotherStep) {
  const Segments model({32});
  Config config;
  config.workers = 1;
  LocalHub hub(2, memory_of(*backend));
  Floats weights(*backend, 32);
  WorkerOptions o;
  o.timeout = 20s;
  Worker worker(config, model, backend, hub.endpoint(1), weights.data(), o);
  // A server that answers the hello (step 0) with a dense-reply head for step 7.
  std::thread server([&] {
    const MessageLayout reply_layout = sparse_reply_layout(model, config);
    Wire rank(hub.endpoint(0), *backend, std::max(worker.push_layout().bytes, reply_layout.bytes),
              1);
    test::Bytes hello(worker.push_layout().bytes);
    ASSERT_EQ(rank.recv(hello).status, Receipt::Status::message);
    test::Bytes head(reply_layout.bytes, 0);
    MessageHeader h = blank_header();
    h.kind = MessageKind::dense_reply;
    h.layout = reply_layout.payload;
    h.sender = host::kServerSender;
    h.model_size = model.total();
    h.capacity = reply_layout.capacity;
    h.step = 7;
    h.nonce = read_header(hello.data()).nonce;  // it answers this hello
    write_header(head.data(), h);
    rank.send(head);
  });
  try {
    worker.join();
    ADD_FAILURE() << "the worker took a reply to step 7 as the answer to its hello";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_message);
    EXPECT_NE(std::string(e.what()).find("answers step 7, not step 0"), std::string::npos)
        << e.what();
  }
  server.join();
}

// A worker whose finish() timed out (the server was slow) joins again: the
// late reply to its push, sparse or dense, comes before the answer to its
// hello and is dropped; the worker then holds the server's model and goes on.
TEST_P(Runtime, AWorkerWhoseReplyTimedOutJoinsAgainAndGoesOn) {
  for (const std::uint64_t sync_period : {0, 1}) {  // the late reply sparse, then dense
    SCOPED_TRACE(sync_period == 0 ? "a late sparse reply" : "a late dense reply");
    const Segments model({300, 200});
    Config config;
    config.method = Method::samomentum;
    config.ratio = 0.1;
    config.workers = 1;
    ServerOptions options;
    options.sync_period = sync_period;
    Job job(backend, config, model, random_model(model.total(), 41), options);
    Worker& w = job.add_worker(0, 1s);
    const Quadratic problem(model.total(), 42);
    std::thread hello([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
    w.join();
    hello.join();
    const std::string path = temp_path("timed_out_reply");
    w.save(path);
    job.push(0, problem.gradient(job.weights_of(0), 0, 0), 0.01f);
    set_log_level(LogLevel::off);
    try {
      w.finish();  // nobody serves the push yet
      ADD_FAILURE() << "finish() got a reply nobody sent";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::timeout) << e.what();
    }
    // Until it joins again, the late reply would be taken for the next step's.
    try {
      job.push(0, problem.gradient(job.weights_of(0), 1, 0), 0.01f);
      ADD_FAILURE() << "push() went on after a finish() that failed";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("after a join() or finish() that failed (the server "
                                           "may still answer it): join() again first"),
                std::string::npos)
          << e.what();
    }
    // Nor is that half-taken step saved, and a restore does not undo the
    // reply in flight.
    EXPECT_THROW(w.save(path + "_after"), Error);
    w.restore(path);
    EXPECT_THROW(job.push(0, problem.gradient(job.weights_of(0), 1, 0), 0.01f), Error);
    std::remove(path.c_str());
    ASSERT_TRUE(job.server->serve_one(20s));  // the push, answered late
    std::thread again([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
    EXPECT_NO_THROW(w.join());
    again.join();
    set_log_level(LogLevel::warning);
    EXPECT_TRUE(same_bits(job.weights_of(0), job.server_model()));
    EXPECT_EQ(w.stats().dense_replies, 2u);  // the two joins; the late reply was dropped
    EXPECT_EQ(w.stats().sparse_replies, 0u);
    std::thread step([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
    EXPECT_NO_THROW(job.step(0, problem.gradient(job.weights_of(0), 1, 0), 0.01f));
    step.join();
    EXPECT_EQ(w.stats().steps, 1u);
    EXPECT_EQ(job.server->stats().pushes, 2u);
    EXPECT_TRUE(same_bits(job.weights_of(0), job.server_model()) || sync_period == 0);
  }
}

// A join() that fails on a worker that had joined leaves push() refusing:
// the hello's late answer (the same step, a dense model) would otherwise be
// read as the next push's reply, and every reply after it one behind.
// gd at 10% with `workers` workers: the joins' tests.
Config gd_at_a_tenth(std::uint32_t workers) {
  Config config;
  config.method = Method::gd;
  config.ratio = 0.1;
  config.workers = workers;
  return config;
}

TEST_P(Runtime, APushAfterARejoinThatTimedOutIsRefused) {
  const Segments model({300, 200});
  Job job(backend, gd_at_a_tenth(1), model, random_model(model.total(), 46));
  Worker& w = job.add_worker(0, 300ms);
  const Quadratic problem(model.total(), 47);
  std::thread hello([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
  w.join();
  hello.join();
  set_log_level(LogLevel::off);
  EXPECT_THROW(w.join(), Error);  // nobody serves this hello yet
  try {
    job.push(0, problem.gradient(job.weights_of(0), 0, 0), 0.01f);
    ADD_FAILURE() << "push() went on after a join() that failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("after a join() or finish() that failed"),
              std::string::npos)
        << e.what();
  }
  ASSERT_TRUE(job.server->serve_one(20s));  // the hello, answered late
  std::thread again([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
  EXPECT_NO_THROW(w.join());
  again.join();
  std::thread step([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
  EXPECT_NO_THROW(job.step(0, problem.gradient(job.weights_of(0), 0, 0), 0.01f));
  step.join();
  set_log_level(LogLevel::warning);
  EXPECT_EQ(w.stats().steps, 1u);
  EXPECT_EQ(w.stats().dense_replies, 2u);  // two joins answered; the late answer dropped
}

// A join() that timed out, then another: the first hello's late answer is a
// dense reply to the same step, told apart by the join nonce it echoes, and
// dropped with its model. Without the nonce the second join() took it, and
// the second answer was then read as the first step's reply.
TEST_P(Runtime, AJoinAfterAJoinThatTimedOutTakesItsOwnAnswer) {
  const Segments model({300, 200});
  Job job(backend, gd_at_a_tenth(2), model, random_model(model.total(), 44));
  Worker& w = job.add_worker(0, 300ms);
  const Quadratic problem(model.total(), 45);
  set_log_level(LogLevel::off);
  try {
    w.join();  // nobody serves the hello yet
    ADD_FAILURE() << "join() got an answer nobody sent";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout) << e.what();
  }
  ASSERT_TRUE(job.server->serve_one(20s));  // the first hello, answered late
  // Worker 1 pushes in between, so the two answers hold different models.
  std::thread other([&] {
    EXPECT_TRUE(job.server->serve_one(20s));
    EXPECT_TRUE(job.server->serve_one(20s));
  });
  job.workers[1]->join();
  job.step(1, problem.gradient(job.weights_of(1), 0, 1), 0.05f);
  other.join();
  const std::vector<float> model_now = job.server_model();
  std::thread again([&] { EXPECT_TRUE(job.server->serve_one(20s)); });
  EXPECT_NO_THROW(w.join());
  again.join();
  EXPECT_TRUE(same_bits(job.weights_of(0), model_now)) << "the first hello's answer was taken";
  ServerThread serving(*job.server);
  for (int t = 0; t < 3; ++t) {
    EXPECT_NO_THROW(job.step(0, problem.gradient(job.weights_of(0), t, 0), 0.05f)) << "step " << t;
  }
  set_log_level(LogLevel::warning);
  EXPECT_EQ(w.stats().dense_replies, 1u);  // its own join's; the first answer was dropped
  EXPECT_EQ(w.stats().sparse_replies, 3u);
  job.workers[0]->leave();
  job.workers[1]->leave();
  serving.stop();
}

// Late replies that come before the answer to a hello are dropped: a sparse
// reply to the hello's own step (as one sent to the rank's previous process
// would be), and a dense reply's model that a server sends only after the
// worker's finish() timed out between its head and it.
TEST_P(Runtime, ALateSparseReplyOrDenseModelIsDroppedWhenJoining) {
  const Segments model({40, 24});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.25;
  config.workers = 1;
  LocalHub hub(2, memory_of(*backend));
  Floats weights(*backend, model.total());
  WorkerOptions o;
  o.timeout = 1s;
  Worker worker(config, model, backend, hub.endpoint(1), weights.data(), o);
  const MessageLayout reply_layout = sparse_reply_layout(model, config);
  const MessageLayout dense = dense_reply_layout(model);
  std::mt19937_64 rng(51);
  const std::vector<float> a = test::random_normal(rng, model.total());
  const std::vector<float> b = test::random_normal(rng, model.total());
  const std::vector<float> c = test::random_normal(rng, model.total());
  std::promise<void> timed_out;
  std::thread server([&] {
    Wire rank(hub.endpoint(0), *backend,
              std::max({worker.push_layout().bytes, reply_layout.bytes, dense.bytes}), 1);
    MessageHeader h = blank_header();
    h.kind = MessageKind::dense_reply;
    h.sender = host::kServerSender;
    h.model_size = model.total();
    // `hello`: the hello the head answers (its nonce echoed), if any.
    auto head = [&](std::uint64_t step, std::uint64_t version, const test::Bytes* hello) {
      test::Bytes m(reply_layout.bytes, 0);
      h.layout = reply_layout.payload;
      h.capacity = reply_layout.capacity;
      h.step = step;
      h.model_version = version;
      h.nonce = hello != nullptr ? read_header(hello->data()).nonce : std::uint8_t{0};
      write_header(m.data(), h);
      h.nonce = 0;
      return m;
    };
    auto body = [&](const std::vector<float>& values) {
      test::Bytes m(dense.bytes, 0);
      h.layout = dense.payload;
      h.capacity = dense.capacity;
      h.count = dense.capacity;
      write_header(m.data(), h);
      h.count = 0;
      std::memcpy(m.data() + dense.values_offset, values.data(), values.size() * sizeof(float));
      return m;
    };
    test::Bytes message(worker.push_layout().bytes);
    ASSERT_EQ(rank.recv(message).status, Receipt::Status::message);  // hello, step 0
    const test::Bytes first_hello = message;
    test::Bytes sparse = head(0, 9, nullptr);  // no entries
    MessageHeader late = read_header(sparse.data());
    late.kind = MessageKind::sparse_reply;
    write_header(sparse.data(), late);
    rank.send(sparse);
    rank.send(head(0, 1, &first_hello));
    rank.send(body(a));
    ASSERT_EQ(rank.recv(message).status, Receipt::Status::message);  // the push of step 0
    rank.send(head(0, 2, nullptr));
    timed_out.get_future().wait();
    rank.send(body(b));                                              // late
    ASSERT_EQ(rank.recv(message).status, Receipt::Status::message);  // hello, step 1
    // A rejection of the step-0 push, come late: an earlier step's, dropped.
    test::Bytes rejection = head(0, 2, nullptr);
    MessageHeader r = read_header(rejection.data());
    r.kind = MessageKind::reject;
    write_header(rejection.data(), r);
    Verdict why;
    why.reason = RejectReason::value;
    write_reject_verdict(rejection.data(), why);
    rank.send(rejection);
    // A dense answer to an earlier step that happens to carry this hello's
    // nonce (a previous process's, one time in 255): dropped by its step.
    rank.send(head(0, 2, &message));
    rank.send(body(b));
    rank.send(head(1, 3, &message));
    rank.send(body(c));
  });
  set_log_level(LogLevel::off);
  EXPECT_NO_THROW(worker.join());
  EXPECT_TRUE(same_bits(weights.host(), a));
  Floats grad(*backend, model.total());
  grad.assign(b);
  worker.push(grad.data(), 0.01f);
  try {
    worker.finish();
    ADD_FAILURE() << "finish() got a model nobody sent";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout) << e.what();
  }
  timed_out.set_value();
  EXPECT_NO_THROW(worker.join());
  server.join();
  set_log_level(LogLevel::warning);
  EXPECT_TRUE(same_bits(weights.host(), c));
  EXPECT_EQ(worker.model_version(), 3u);
}

TEST_P(Runtime, StatisticsCountBytesDensityAndReplies) {
  const Segments model({1000, 10});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.01;
  config.workers = 1;
  Job job(backend, config, model, random_model(1010, 21));
  ServerThread serving(*job.server);
  Worker& w = *job.workers[0];
  w.join();
  const Quadratic problem(1010, 22);
  for (int t = 0; t < 5; ++t) job.step(0, problem.gradient(job.weights_of(0), t, 0), 0.01f);
  w.leave();
  while (job.server->live_workers() > 0) std::this_thread::sleep_for(1ms);  // bye has no reply
  serving.stop();
  const WorkerStats& s = w.stats();
  EXPECT_EQ(s.steps, 5u);
  EXPECT_EQ(s.pushes, 5u);
  EXPECT_EQ(s.entries_pushed, 5u * 11u);
  EXPECT_DOUBLE_EQ(s.effective_density(), 11.0 / 1010.0);
  EXPECT_EQ(s.bytes_pushed, 7u * w.push_layout().bytes);  // hello, 5 pushes, bye
  const std::uint64_t sparse = sparse_reply_layout(model, config).bytes;
  const std::uint64_t dense = dense_reply_layout(model).bytes;
  EXPECT_EQ(s.bytes_pulled, 6u * sparse + dense);  // every reply has a head; the join's is dense
  EXPECT_EQ(s.dense_bytes(), 5u * 1010u * 4u);
  const ServerStats& ss = job.server->stats();
  EXPECT_EQ(ss.pushes, 5u);
  EXPECT_EQ(ss.joins, 1u);
  EXPECT_EQ(ss.leaves, 1u);
  EXPECT_EQ(ss.sparse_replies, 5u);
  EXPECT_EQ(ss.dense_replies, 1u);
  EXPECT_EQ(ss.bytes_received, s.bytes_pushed);
  EXPECT_EQ(ss.bytes_sent, s.bytes_pulled);
  EXPECT_EQ(ss.staleness[0], 5u);
}

// A push the server rejects was still sent: it counts as a push (entries,
// bytes) but not as a step, and the density is over the pushes, so one
// rejection does not inflate it.
TEST_P(Runtime, ARejectedPushCountsAsAPushButNotAsAStep) {
  const Segments model({1000, 10});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.01;
  config.workers = 1;
  Job job(backend, config, model, random_model(1010, 21));
  ServerThread serving(*job.server);
  Worker& w = *job.workers[0];
  w.join();
  const Quadratic problem(1010, 22);
  for (int t = 0; t < 3; ++t) job.step(0, problem.gradient(job.weights_of(0), t, 0), 0.01f);
  std::vector<float> bad = problem.gradient(job.weights_of(0), 3, 0);
  bad[17] = std::numeric_limits<float>::quiet_NaN();  // selected, then rejected as not finite
  set_log_level(LogLevel::off);
  job.push(0, bad, 0.01f);
  try {
    w.finish();
    ADD_FAILURE() << "the server applied a push holding a NaN";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_message) << e.what();
  }
  set_log_level(LogLevel::warning);
  serving.stop();
  const WorkerStats& s = w.stats();
  EXPECT_EQ(s.steps, 3u);
  EXPECT_EQ(s.pushes, 4u);
  EXPECT_EQ(s.entries_pushed, 4u * 11u);
  EXPECT_DOUBLE_EQ(s.effective_density(), 11.0 / 1010.0);
  EXPECT_EQ(s.bytes_pushed, 5u * w.push_layout().bytes);  // hello and 4 pushes
  EXPECT_EQ(s.dense_bytes(), 4u * 1010u * 4u);
  EXPECT_EQ(job.server->stats().pushes, 3u);
  EXPECT_EQ(job.server->stats().rejected[static_cast<std::size_t>(RejectReason::value)], 1u);
}

// A learning rate that is not a finite number >= 0 is refused before it
// reaches the state: the job goes on bitwise as if the call had not been made.
TEST_P(Runtime, ALearningRateThatIsNotFiniteOrNegativeIsRefusedBeforeAnythingChanges) {
  const Segments model({300, 20});
  Config config;
  config.method = Method::gd;
  config.ratio = 0.05;
  config.workers = 1;
  const std::vector<float> w0 = random_model(model.total(), 60);
  const Quadratic problem(model.total(), 61);
  Job clean(backend, config, model, w0);
  Job tried(backend, config, model, w0);
  ServerThread serving_clean(*clean.server);
  ServerThread serving_tried(*tried.server);
  for (Job* job : {&clean, &tried}) {
    job->workers[0]->join();
    run_steps(*job, problem, 0, 3, 0.05f);
  }
  const std::vector<float> g = problem.gradient(tried.weights_of(0), 3, 0);
  for (const float lr :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -0.05f}) {
    try {
      tried.push(0, g, lr);
      ADD_FAILURE() << "push() took lr = " << lr;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("push() with lr = "), std::string::npos) << e.what();
    }
  }
  for (Job* job : {&clean, &tried}) run_steps(*job, problem, 3, 3, 0.05f);
  serving_clean.stop();
  serving_tried.stop();
  EXPECT_TRUE(same_bits(tried.weights_of(0), clean.weights_of(0)));
  EXPECT_TRUE(same_bits(tried.server_model(), clean.server_model()));
  EXPECT_EQ(tried.workers[0]->stats().pushes, 6u);
  EXPECT_EQ(tried.server->stats().rejected_total(), 0u);
}

// A NaN in a gradient reaches the method's state before the server rejects
// the push; samomentum keeps the momentum of what it sent, so every later
// push would carry it. push() refuses until the worker joins again, and the
// join clears the state: the steps after it are accepted.
TEST_P(Runtime, ANonFiniteGradientIsRejectedAndJoiningAgainClearsTheState) {
  for (const Mode mode : {Mode::async, Mode::sync}) {
    SCOPED_TRACE(to_string(mode));
    const Segments model({300, 20});
    Config config;
    config.method = Method::samomentum;
    config.mode = mode;
    config.ratio = 0.05;
    config.workers = 1;
    const Quadratic problem(model.total(), 62);
    Job job(backend, config, model, random_model(model.total(), 63));
    ServerThread serving(*job.server);
    Worker& w = *job.workers[0];
    w.join();
    run_steps(job, problem, 0, 2, 0.05f);
    std::vector<float> bad = problem.gradient(job.weights_of(0), 2, 0);
    bad[5] = std::numeric_limits<float>::quiet_NaN();
    bad[310] = -std::numeric_limits<float>::infinity();
    set_log_level(LogLevel::off);
    job.push(0, bad, 0.05f);
    try {
      w.finish();
      ADD_FAILURE() << "a push holding a NaN was applied";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_message);
      EXPECT_NE(std::string(e.what()).find("join() again, which clears it"), std::string::npos)
          << e.what();
    }
    try {
      job.push(0, problem.gradient(job.weights_of(0), 3, 0), 0.05f);
      ADD_FAILURE() << "push() went on with a state holding a NaN";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("not finite: join() again first"), std::string::npos)
          << e.what();
    }
    w.join();
    run_steps(job, problem, 3, 5, 0.05f);  // throws if a push is rejected
    set_log_level(LogLevel::warning);
    w.leave();
    serving.stop();
    EXPECT_EQ(job.server->stats().rejected_total(), 1u);
    EXPECT_EQ(w.stats().steps, 7u);
    EXPECT_EQ(w.stats().pushes, 8u);
  }
}

}  // namespace
}  // namespace dgs
