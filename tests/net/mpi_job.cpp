// The runtime's asynchronous softmax-regression training across processes:
// rank 0 serves, ranks 1..N train, over the MPI transport on the host backend.
// Rank 0 then trains the same problem with dense ASGD in one process (threads,
// in-process transport) and checks that the MPI run got within the margin the
// in-process test states: at least 75% of dense's loss reduction.
//
//   mpirun -np 5 dgs_mpi_job [--method samomentum] [--steps 300]
//                            [--kill-worker K --kill-after S] [--worker-timeout MS]
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dgs/dgs.h"
#include "dgs/mpi.h"
#include "dgs/server.h"
#include "dgs/worker.h"
#include "support/softmax.h"

namespace {

using dgs::test::SoftmaxProblem;

struct Options {
  dgs::Method method = dgs::Method::samomentum;
  int steps = 300;
  int kill_worker = -1;
  int kill_after = 0;
  int worker_timeout_ms = 0;
};

dgs::Config make_config(dgs::Method method, int workers) {
  dgs::Config c;
  c.method = method;
  c.ratio = 0.1;
  c.momentum = 0.9f;
  c.workers = static_cast<std::uint32_t>(workers);
  return c;
}

float learning_rate(const dgs::Config& c) {
  const bool momentum = c.method != dgs::Method::gd && c.method != dgs::Method::dense;
  return momentum ? 0.1f * (1.0f - c.momentum) : 0.1f;
}

std::vector<float> initial_model() {
  std::vector<float> w(SoftmaxProblem::parameters());
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * std::sin(static_cast<float>(i));
  return w;
}

void train_worker(dgs::Worker& worker, std::vector<float>& weights, const SoftmaxProblem& problem,
                  int k, int workers, int steps, float lr, int kill_after) {
  std::vector<float> grad(weights.size());
  worker.join();
  for (int t = 0; t < steps; ++t) {
    if (t == kill_after) {
      std::printf("worker %d: killing itself after %d steps\n", k, t);
      std::fflush(stdout);
      std::raise(SIGKILL);
    }
    problem.gradient(worker.evaluation_point(), k + t * workers * 8, 1, 8, grad.data());
    worker.step(grad.data(), lr);
  }
  worker.leave();
}

// Dense ASGD with the same workers, steps and data, in this process.
double local_dense_loss(int workers, int steps, const SoftmaxProblem& problem) {
  const dgs::Config config = make_config(dgs::Method::dense, workers);
  const dgs::Segments model = SoftmaxProblem::segments();
  const std::vector<float> w0 = initial_model();
  dgs::LocalHub hub(workers + 1, dgs::MemoryKind::host);
  auto backend = dgs::make_backend(dgs::BackendKind::host);
  dgs::Server server(config, model, backend, hub.endpoint(0), w0.data());
  std::thread serving([&] { server.run(); });
  std::vector<std::thread> threads;
  for (int k = 0; k < workers; ++k) {
    threads.emplace_back([&, k] {
      std::vector<float> w(model.total());
      dgs::WorkerOptions o;
      o.id = static_cast<std::uint32_t>(k);
      dgs::Worker worker(config, model, backend, hub.endpoint(k + 1), w.data(), o);
      train_worker(worker, w, problem, k, workers, steps, learning_rate(config), -1);
    });
  }
  for (auto& t : threads) t.join();
  serving.join();
  std::vector<float> final_model(model.total());
  server.copy_model(final_model.data());
  return problem.loss(final_model.data());
}

}  // namespace

int main(int argc, char** argv) {
  dgs::MpiSession mpi(&argc, &argv);
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* next = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--method")
      opt.method = dgs::parse_method(next), ++i;
    else if (a == "--steps")
      opt.steps = std::atoi(next), ++i;
    else if (a == "--kill-worker")
      opt.kill_worker = std::atoi(next), ++i;
    else if (a == "--kill-after")
      opt.kill_after = std::atoi(next), ++i;
    else if (a == "--worker-timeout")
      opt.worker_timeout_ms = std::atoi(next), ++i;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  const int workers = mpi.size() - 1;
  if (workers < 1) {
    std::fprintf(stderr, "dgs_mpi_job needs at least 2 ranks (mpirun -np 1+N)\n");
    return 2;
  }
  const SoftmaxProblem problem;
  const dgs::Config config = make_config(opt.method, workers);
  const dgs::Segments model = SoftmaxProblem::segments();
  auto backend = dgs::make_backend(dgs::BackendKind::host);
  auto transport = dgs::make_mpi_transport(dgs::MemoryKind::host);
  try {
    if (mpi.rank() == 0) {
      const std::vector<float> w0 = initial_model();
      dgs::ServerOptions options;
      options.worker_timeout = std::chrono::milliseconds(opt.worker_timeout_ms);
      dgs::Server server(config, model, backend, transport, w0.data(), options);
      server.run();
      std::vector<float> final_model(model.total());
      server.copy_model(final_model.data());
      const double initial = problem.loss(w0.data());
      const double loss = problem.loss(final_model.data());
      const int finished = workers - (opt.kill_worker >= 0 ? 1 : 0);
      const double dense = local_dense_loss(finished, opt.steps, problem);
      const double margin = 0.25 * (initial - dense);
      const dgs::ServerStats& s = server.stats();
      const std::uint64_t expected_dropped = opt.kill_worker >= 0 ? 1 : 0;
      const bool ok =
          loss < dense + margin && s.dropped == expected_dropped && s.rejected_total() == 0;
      std::printf(
          "%s over MPI with %d workers: loss %.4f -> %.4f; dense in one process %.4f "
          "(margin %.4f); pushes %llu, dropped %llu\nRESULT %s\n",
          dgs::to_string(opt.method), workers, initial, loss, dense, margin,
          static_cast<unsigned long long>(s.pushes), static_cast<unsigned long long>(s.dropped),
          ok ? "ok" : "FAILED");
      return ok ? 0 : 1;
    }
    const int k = mpi.rank() - 1;
    std::vector<float> weights(model.total());
    dgs::WorkerOptions o;
    o.id = static_cast<std::uint32_t>(k);
    dgs::Worker worker(config, model, backend, transport, weights.data(), o);
    train_worker(worker, weights, problem, k, workers, opt.steps, learning_rate(config),
                 k == opt.kill_worker ? opt.kill_after : -1);
    return 0;
  } catch (const dgs::Error& e) {
    std::fprintf(stderr, "rank %d: %s\n", mpi.rank(), e.what());
    return 1;
  }
}
