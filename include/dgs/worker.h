// dgs::Worker: the part training code embeds. One call per training step
// pushes the compressed update, receives the server's reply and applies it to
// the caller's own weights.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dgs/backend.h"
#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/segments.h"
#include "dgs/transport.h"

namespace dgs {

struct WorkerOptions {
  /// This worker's id, in [0, Config::workers).
  std::uint32_t id = 0;
  /// Transport rank of the server.
  int server_rank = 0;
  /// How long finish() and join() wait for the server before throwing
  /// dgs::Error (timeout); milliseconds::max() waits for ever.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  /// Stream of every kernel the worker launches (cuda backend).
  Stream stream = nullptr;
};

struct WorkerStats {
  std::uint64_t steps = 0;           ///< steps completed (their replies applied)
  std::uint64_t entries_pushed = 0;  ///< coordinates sent, over all pushes
  std::uint64_t bytes_pushed = 0;    ///< message bytes handed to the transport
  std::uint64_t bytes_pulled = 0;    ///< reply bytes received
  std::uint64_t sparse_replies = 0;
  std::uint64_t dense_replies = 0;
  std::uint64_t staleness_total = 0;  ///< sum over steps of the pushes applied in between
  std::uint64_t staleness_max = 0;
  std::uint64_t threshold_count_error = 0;  ///< threshold: sum over steps of sum_l |sent_l - k_l|
  std::uint64_t threshold_clamped = 0;      ///< threshold: segments clamped to capacity
  std::uint64_t model_size = 0;
  /// Pushes sent, counting those whose step did not complete (rejected by
  /// the server, or finish() failed): more than `steps` after such a failure.
  std::uint64_t pushes = 0;

  /// Fraction of the model a push carried, on average over `pushes`.
  double effective_density() const noexcept;
  /// What `pushes` dense float32 pushes (or as many dense pulls) would have cost.
  std::uint64_t dense_bytes() const noexcept;
};

/// One Worker is used from one thread at a time (its calls are not
/// synchronised). Its kernels run on WorkerOptions::stream, which the caller
/// owns and keeps alive while the Worker lives.
class Worker {
 public:
  /// `weights`: the caller's P parameters (device memory for the cuda
  /// backend, host memory for the host backend). The worker updates them in
  /// place and keeps the pointer; the caller keeps them alive.
  Worker(const Config& config, const Segments& model, std::shared_ptr<Backend> backend,
         std::shared_ptr<Transport> transport, float* weights, WorkerOptions options = {});
  /// Sends nothing: call leave() first, or the server notices only through
  /// ServerOptions::worker_timeout or a failing transport.
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Joins (or rejoins) the job: sends hello and overwrites the weights with
  /// the server's model. After a push rejected for a value that is not
  /// finite, it also clears the method's state (momentum, residual), which
  /// holds that value. In sync mode the worker's step becomes the round's
  /// number (the version the answer carries), so a late joiner draws the
  /// same randk/rbgs coordinates and ratio as the others.
  void join();

  /// One training step: push(grad, lr) then finish(). `grad` (P values, same
  /// memory as the weights) is only read.
  void step(const float* grad, float lr);
  /// Computes this step's push from the gradient and sends it. `lr` must be
  /// finite and >= 0 (else dgs::Error invalid_argument, nothing changed).
  void push(const float* grad, float lr);
  /// Waits for the server's reply and applies it to the weights on
  /// WorkerOptions::stream (stream-ordered: work on another stream must wait
  /// for it). Throws dgs::Error: invalid_message when the server rejected the
  /// push, timeout or transport when no reply came. After any failure, push()
  /// and save() refuse until join() has put the worker and the server back in
  /// step (a late reply would otherwise be taken for the next step's; a
  /// rejected push's update is lost: its entries left the state when it was
  /// made). A join() that fails leaves the same refusal.
  void finish();

  /// Where the next gradient must be evaluated: w - lambda * e for gmc+, the
  /// weights themselves for every other method. Recomputed on each call.
  const float* evaluation_point();

  /// Leaves the job (bye). The worker can join() again later.
  void leave();

  const WorkerStats& stats() const noexcept;
  /// The step number the next push carries: the steps pushed (in sync mode
  /// counted from the round at which the worker last joined).
  std::uint64_t steps() const noexcept;
  /// Server version of the model the worker holds.
  std::uint64_t model_version() const noexcept;
  const MessageLayout& push_layout() const noexcept;

  /// Saves the whole worker state, weights included, to `path` (atomically).
  /// Only between steps, and not while push() waits for a join() (after a
  /// failed finish() or join(), or a rejected push): that state is not one
  /// to continue from. A sync worker restores with its step at the round
  /// of its model version.
  void save(const std::string& path) const;
  /// Restores a state saved by save() for the same config and model. The
  /// server must hold the matching state (restored from its checkpoint of
  /// the same moment); otherwise join() after the restore, so that the
  /// worker takes the server's model.
  void restore(const std::string& path);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgs
