// dgs::Transport: moves fixed-size message buffers between ranks. The runtime
// uses only this interface; net/ holds the implementations (in-process
// threads, MPI, NCCL).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "dgs/backend.h"

namespace dgs {

/// What a receive found.
struct Receipt {
  enum class Status {
    message,      ///< a message arrived from `peer`; `bytes` is its size
    peer_failed,  ///< `peer` is gone (its endpoint closed or its link errored)
    timeout,      ///< nothing arrived before the deadline
  };
  Status status = Status::timeout;
  int peer = -1;
  /// The sender's size (MPI, local); at most the buffer size was copied.
  /// NCCL reports the size asked for, as its receives know no other.
  std::size_t bytes = 0;
  std::string error;      ///< for peer_failed: what the transport saw
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  /// Where the message buffers given to this transport must live.
  virtual MemoryKind memory() const noexcept = 0;
  /// A short name for messages ("local", "mpi", "nccl").
  virtual const char* name() const noexcept = 0;

  /// Sends buffer[0, bytes) to `peer`. Returns when the buffer may be reused.
  /// Throws dgs::Error (transport) naming this rank and the peer.
  virtual void send(int peer, const void* buffer, std::size_t bytes) = 0;

  /// Receives the next message from `peer` into buffer (room for `bytes`).
  /// Never throws for a failed peer or a timeout: the Receipt says so. A
  /// timeout of milliseconds::max() waits for ever.
  virtual Receipt recv(int peer, void* buffer, std::size_t bytes,
                       std::chrono::milliseconds timeout) = 0;

  /// Receives the next message from any of `peers`, in arrival order. A peer
  /// that failed is reported once as peer_failed.
  virtual Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                           std::chrono::milliseconds timeout) = 0;
};

/// The in-process transport: `ranks` endpoints that exchange messages between
/// threads of one process. Buffers are host memory, or device memory of the
/// current GPU for MemoryKind::device (copied through host memory; a receive
/// returns once its copy has landed, whatever stream reads it next). Sends are
/// buffered and never block.
class LocalHub {
 public:
  LocalHub(int ranks, MemoryKind memory);
  ~LocalHub();
  LocalHub(const LocalHub&) = delete;
  LocalHub& operator=(const LocalHub&) = delete;

  /// The endpoint of `rank`. Calling it again after close() reopens the rank
  /// with an empty inbox (a restarted process).
  std::shared_ptr<Transport> endpoint(int rank);
  /// Closes `rank` as if its process died: its peers' receives from it report
  /// peer_failed, and its own calls throw.
  void close(int rank);
  int ranks() const noexcept;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace dgs
