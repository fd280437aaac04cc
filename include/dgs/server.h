// dgs::Server: owns the global model W, its version and the workers' replicas,
// and answers every push with a sparsified model difference.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dgs/backend.h"
#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/segments.h"
#include "dgs/transport.h"

namespace dgs {

struct ServerOptions {
  /// Transport rank of worker k is worker_ranks[k]; empty means k + 1 (the
  /// server at rank 0, workers after it).
  std::vector<int> worker_ranks;
  /// T_sync: a worker's replica is refreshed with a dense reply at least every
  /// this many versions (async), or all workers every this many rounds (sync).
  /// 0 never forces one.
  std::uint64_t sync_period = 0;
  /// Async: a push more than this many versions stale is applied and answered
  /// with a dense refresh, so the worker's next gradient is fresh. Waiting
  /// instead would stall a worker until others stopped pushing, which is what
  /// sync mode is for. 0 means no bound.
  std::uint64_t staleness_bound = 0;
  /// A live worker not heard from for this long is dropped. Its silence
  /// counts from the later of its last message and the last one sent to it
  /// (a worker waiting for its reply, or for a sync round, is not silent),
  /// up to the last moment the server found nothing waiting (a push queued
  /// while the server was busy is not silence). 0 (or milliseconds::max())
  /// waits for ever. A worker that ends without
  /// leave() (its program killed, its Worker destroyed: ~Worker sends
  /// nothing) is noticed only by a failing transport or by this timeout;
  /// with 0, run() waits for it for ever.
  std::chrono::milliseconds worker_timeout{0};
  /// How long after it begins run() waits for each of Config::workers to join
  /// once. A worker that has not joined by then is no longer waited for
  /// (logged); if none has, run() throws dgs::Error (timeout).
  /// milliseconds::max() waits for ever.
  std::chrono::milliseconds join_timeout{std::chrono::minutes(10)};
  /// Stream of every server kernel (cuda backend).
  Stream stream = nullptr;
  /// Called in the server's thread for each reply, after it is written and
  /// before it is sent, with the worker, the model version the reply carries
  /// and that worker's replica (P floats in backend memory) — which the
  /// worker's model will equal once it applied the reply. Where every reply
  /// is dense (Method::dense, or a reply ratio of 1) the server keeps no
  /// replicas and passes W instead, which that reply carries. For monitoring
  /// and tests; must not call the server.
  std::function<void(std::uint32_t worker, std::uint64_t version, const float* replica)> on_reply;
};

struct ServerStats {
  std::uint64_t pushes = 0;  ///< pushes applied
  std::uint64_t rounds = 0;  ///< sync rounds completed
  std::uint64_t joins = 0;
  std::uint64_t leaves = 0;
  /// Workers dropped after a transport failure or timeout, or (sync) a
  /// rejected push.
  std::uint64_t dropped = 0;
  std::uint64_t sparse_replies = 0;
  std::uint64_t dense_replies = 0;
  /// Dense replies forced by staleness_bound (not those that were dense anyway).
  std::uint64_t stale_refreshes = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_sent = 0;
  /// Rejected messages by RejectReason (index = the enum's value).
  std::vector<std::uint64_t> rejected = std::vector<std::uint64_t>(32, 0);
  /// Staleness of applied pushes: bucket 0 counts 0, bucket b >= 1 counts
  /// [2^(b-1), 2^b).
  std::vector<std::uint64_t> staleness = std::vector<std::uint64_t>(65, 0);

  std::uint64_t rejected_total() const noexcept;
};

class Server {
 public:
  /// `initial_model`: P floats in host memory, copied; every one finite (a
  /// NaN or infinity throws dgs::Error naming its index and tensor).
  Server(const Config& config, const Segments& model, std::shared_ptr<Backend> backend,
         std::shared_ptr<Transport> transport, const float* initial_model,
         ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Serves until each of Config::workers has joined at least once and none
  /// is live (all have left or were dropped). A worker that joins late, after
  /// the others have trained and left, is still served. A worker that has not
  /// joined within ServerOptions::join_timeout of run()'s start, or whose
  /// transport failed before it joined, is not waited for.
  void run();
  /// Async: handles one incoming message; false when nothing arrived within
  /// `timeout`. Sync: serves until a round completes, or a hello or bye
  /// comes while no round has begun; false when `timeout` passed first (the
  /// pushes of a round begun stay held for the next call).
  bool serve_one(std::chrono::milliseconds timeout);

  // The queries below read the server's state without a lock: call them
  // from the thread that runs run() or serve_one() (on_reply included), or
  // once run() has returned, not while another thread serves.
  std::size_t live_workers() const noexcept;
  /// Workers that have joined at least once (kept in checkpoints); run()
  /// waits for all of Config::workers, at most ServerOptions::join_timeout.
  std::size_t joined_workers() const noexcept;
  bool is_live(std::uint32_t worker) const noexcept;
  /// Number of pushes (async) or rounds (sync) applied to W.
  std::uint64_t version() const noexcept;
  /// Copies W to host memory (P floats).
  void copy_model(float* out) const;
  const ServerStats& stats() const noexcept;

  /// Saves W, the version, the replicas (none where every reply is dense),
  /// the live set and which workers have joined (atomically).
  void save(const std::string& path) const;
  void restore(const std::string& path);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgs
