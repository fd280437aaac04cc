// The NCCL transport (built with -DDGS_WITH_NCCL=ON). No NCCL header is
// needed to use it: NCCL stays inside net/.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "dgs/bootstrap.h"
#include "dgs/transport.h"

namespace dgs {

struct NcclOptions {
  /// Bootstrap rank of the server; every other rank is a worker.
  int server_rank = 0;
  /// CTAs a communicator may use (>= 1): pending receives of dozens of
  /// workers then leave the GPU's other SMs to the server's kernels.
  int max_ctas = 2;
  /// Communicator creation must finish within this time.
  std::chrono::milliseconds init_timeout{std::chrono::minutes(2)};
  /// A send must complete within this time, else its pair is aborted.
  std::chrono::milliseconds send_timeout{std::chrono::minutes(5)};
};

/// The NCCL transport of a multi-process job, one GPU per process (the
/// current device). Every worker-server pair gets two communicators, one per
/// direction, so the server keeps a receive posted on every worker's push
/// communicator (each on its own stream, completion found by polling events)
/// while it answers others. Communicators are created non-blocking; unique
/// ids go from bootstrap rank 0 to everyone through `bootstrap` (collective).
/// ncclCommGetAsyncError is polled while waiting; a failed or timed-out pair
/// is aborted (ncclCommAbort) and reported as peer_failed without touching
/// the other pairs. Transport ranks are the bootstrap's ranks.
std::shared_ptr<Transport> make_nccl_transport(Bootstrap& bootstrap, NcclOptions options = {});

/// One-GPU mode: 1 + `workers` endpoints (the server is rank 0) for threads of
/// one process on the current GPU. Every message is an NCCL send/receive to
/// self on a one-rank communicator, issued as one group when both sides are
/// ready, so the NCCL data path can be exercised on a single GPU. A send
/// waits for its receiver at most 5 minutes (then dgs::Error, timeout).
std::vector<std::shared_ptr<Transport>> make_nccl_loopback(int workers);

}  // namespace dgs
