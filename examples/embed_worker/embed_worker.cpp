// Embedding dgs in training code: a server thread and two worker threads fit
// y = A x by least squares, each worker pushing 5% of its update per step.
// The worker applies the server's replies to the caller's own weights.
// On a GPU the same code runs on the cuda backend with device pointers.
#include <cmath>
#include <cstdio>
#include <exception>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

#include <dgs/dgs.h>
#include <dgs/server.h>
#include <dgs/worker.h>

int main() {
  constexpr int kRows = 256, kCols = 1000, kWorkers = 2, kSteps = 400;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(kRows * kCols), truth(kCols), y(kRows, 0.0f);
  for (float& v : a) v = normal(rng) / std::sqrt(float(kCols));
  for (float& v : truth) v = normal(rng);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) y[r] += a[r * kCols + c] * truth[c];

  dgs::Config config;                       // shared by the server and all workers
  config.method = dgs::Method::samomentum;  // sparsification-aware momentum
  config.ratio = 0.05;                      // push 5% of each tensor
  config.workers = kWorkers;
  const dgs::Segments model({kCols});  // one tensor of 1000 weights

  const bool gpu = dgs::cuda_available();
  auto backend = dgs::make_backend(gpu ? dgs::BackendKind::cuda : dgs::BackendKind::host);
  dgs::LocalHub hub(1 + kWorkers, gpu ? dgs::MemoryKind::device : dgs::MemoryKind::host);
  const std::vector<float> initial(kCols, 0.0f);
  dgs::Server server(config, model, backend, hub.endpoint(0), initial.data());
  // A failure in any thread is kept and reported; closing the failed rank's
  // endpoint tells the others (a dgs::Error names the cause).
  std::mutex failure_mutex;
  std::string failure;
  auto fail = [&](int rank, const std::exception& e) {
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (failure.empty()) failure = e.what();
    hub.close(rank);
  };
  std::thread serving([&] {
    try {
      server.run();  // until every worker has joined and left
    } catch (const std::exception& e) {
      fail(0, e);
    }
  });

  std::vector<std::thread> workers;
  for (int k = 0; k < kWorkers; ++k) {
    workers.emplace_back([&, k] {
      std::vector<float> w(kCols), g(kCols);  // host copies for the gradient
      float *weights = w.data(), *grad = g.data();
      try {
        if (gpu) {  // the training code's own device memory
          if (cudaMalloc(&weights, kCols * sizeof(float)) != cudaSuccess ||
              cudaMalloc(&grad, kCols * sizeof(float)) != cudaSuccess)
            throw std::runtime_error("cudaMalloc of the weights or gradient failed");
        }
        dgs::WorkerOptions options;
        options.id = static_cast<std::uint32_t>(k);
        dgs::Worker worker(config, model, backend, hub.endpoint(1 + k), weights, options);
        worker.join();  // weights = the server's model
        for (int step = 0; step < kSteps; ++step) {
          if (gpu) cudaMemcpy(w.data(), weights, kCols * sizeof(float), cudaMemcpyDeviceToHost);
          std::fill(g.begin(), g.end(),
                    0.0f);  // gradient of |A x - y|^2 / 2 over this worker's rows
          for (int r = k; r < kRows; r += kWorkers) {
            float e = -y[r];
            for (int c = 0; c < kCols; ++c) e += a[r * kCols + c] * w[c];
            for (int c = 0; c < kCols; ++c) g[c] += e * a[r * kCols + c];
          }
          if (gpu) cudaMemcpy(grad, g.data(), kCols * sizeof(float), cudaMemcpyHostToDevice);
          worker.step(grad, 0.05f);  // push 5%, receive the reply, apply it to weights
        }
        worker.leave();
        if (k == 0) {
          std::printf(
              "worker 0: %llu steps, %.1f%% of the model per push, %llu bytes pushed "
              "(dense: %llu)\n",
              static_cast<unsigned long long>(worker.stats().steps),
              100.0 * worker.stats().effective_density(),
              static_cast<unsigned long long>(worker.stats().bytes_pushed),
              static_cast<unsigned long long>(worker.stats().dense_bytes()));
        }
      } catch (const std::exception& e) {
        fail(1 + k, e);
      }
      if (gpu) {
        cudaFree(weights == w.data() ? nullptr : weights);
        cudaFree(grad == g.data() ? nullptr : grad);
      }
    });
  }
  for (auto& t : workers) t.join();
  serving.join();
  if (!failure.empty()) {
    std::fprintf(stderr, "embed_worker: %s\n", failure.c_str());
    return 1;
  }

  std::vector<float> x(kCols);
  server.copy_model(x.data());
  double residual = 0.0, norm = 0.0;
  for (int r = 0; r < kRows; ++r) {
    double e = -y[r];
    for (int c = 0; c < kCols; ++c) e += a[r * kCols + c] * x[c];
    residual += e * e;
    norm += double(y[r]) * y[r];
  }
  std::printf("relative residual |Ax - y| / |y| = %.4f (%s backend)\n", std::sqrt(residual / norm),
              gpu ? "cuda" : "host");
  return std::sqrt(residual / norm) < 0.1 ? 0 : 1;
}
