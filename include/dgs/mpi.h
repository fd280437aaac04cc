// The MPI transport (built with -DDGS_WITH_MPI=ON). No MPI header is needed
// to use it: MPI stays inside net/.
#pragma once

#include <chrono>
#include <memory>

#include "dgs/backend.h"
#include "dgs/transport.h"

namespace dgs {

/// Initialises MPI (MPI_THREAD_SERIALIZED) unless the program already did, and
/// finalises it on destruction if it was the one to initialise it.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// True when the MPI library takes device pointers (MPIX_Query_cuda_support).
  static bool cuda_aware() noexcept;

 private:
  bool owner_ = false;
  int rank_ = 0;
  int size_ = 1;
};

/// A transport over MPI_COMM_WORLD, or over the ranks that pass the same
/// `color` (MPI_Comm_split; collective), which is how several jobs share one
/// mpirun. memory == device: device buffers go to MPI directly when it is
/// CUDA-aware and are staged through pinned host memory otherwise. The server
/// takes the next push with an any-source probe.
///
/// send() copies the message (host, pinned host or device memory, as MPI
/// takes it; a few copies are kept for reuse) and drives it to completion.
/// A message its peer has not taken within `send_timeout` fails that peer
/// (milliseconds::max() waits for ever): that send and later ones to it
/// throw dgs::Error (transport), receives from it report peer_failed (a
/// server drops that worker), and what it still sends is dropped; the
/// message is left to MPI with its copy.
std::shared_ptr<Transport> make_mpi_transport(
    MemoryKind memory = MemoryKind::host, int color = 0,
    std::chrono::milliseconds send_timeout = std::chrono::minutes(5));

}  // namespace dgs
