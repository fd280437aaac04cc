// The MPI transport: sends from a copy of the message (MPI_Isend), driven to
// completion within a send timeout, past which the peer fails and the
// message is left to MPI with its copy; receives by matched probe
// (MPI_Improbe + MPI_Mrecv) polled with a short back-off, so a receive can
// time out and the server can take whichever peer's message arrives first.
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "dgs/error.h"
#include "dgs/mpi.h"
#include "net/deadline.h"
#include "net/mpi_check.h"
#include "net/mpi_transport.h"
#include "runtime/log.h"

namespace dgs {
namespace {

constexpr int kTag = 0x4447;  // "DG"
// The largest piece an MPI count (int) can describe.
constexpr std::size_t kMaxPieceBytes = 0x7FFFFFFF;

void check_cuda(cudaError_t status, const char* call, int rank, int peer) {
  if (status != cudaSuccess) {
    throw Error(ErrorCode::cuda, std::string("MPI transport rank ") + std::to_string(rank) +
                                     " (peer " + std::to_string(peer) + "): " + call +
                                     " failed: " + cudaGetErrorString(status));
  }
}

// Pinned host memory for staging device buffers through a non-CUDA-aware MPI.
class PinnedBuffer {
 public:
  ~PinnedBuffer() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  unsigned char* get(std::size_t bytes, int rank) {
    if (bytes > size_) {
      if (data_ != nullptr) cudaFreeHost(data_);
      data_ = nullptr;
      size_ = 0;
      check_cuda(cudaMallocHost(&data_, bytes), "cudaMallocHost", rank, -1);
      size_ = bytes;
    }
    return static_cast<unsigned char*>(data_);
  }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

using Clock = std::chrono::steady_clock;

// Memory a message is sent from while MPI still owns it: host memory, pinned
// host memory (device buffers staged for an MPI that is not CUDA-aware), or
// device memory (a CUDA-aware MPI).
class SendCopy {
 public:
  enum class Where { host, pinned, device };
  SendCopy(Where where, std::size_t bytes, int rank, int peer) : where_(where), size_(bytes) {
    const std::size_t n = std::max<std::size_t>(bytes, 1);
    switch (where) {
      case Where::host:
        data_ = ::operator new(n);
        break;
      case Where::pinned:
        check_cuda(cudaMallocHost(&data_, n), "cudaMallocHost", rank, peer);
        break;
      case Where::device:
        check_cuda(cudaMalloc(&data_, n), "cudaMalloc", rank, peer);
        break;
    }
  }
  ~SendCopy() { release(); }
  SendCopy(SendCopy&& o) noexcept : where_(o.where_), data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
  }
  SendCopy& operator=(SendCopy&& o) noexcept {
    if (this != &o) {
      release();
      where_ = o.where_;
      data_ = std::exchange(o.data_, nullptr);
      size_ = o.size_;
    }
    return *this;
  }
  unsigned char* data() const { return static_cast<unsigned char*>(data_); }
  std::size_t size() const { return size_; }
  /// For memory a request that never completed may still read: kept for
  /// good rather than freed under MPI.
  void leak() { data_ = nullptr; }

 private:
  void release() {
    if (data_ == nullptr) return;
    switch (where_) {
      case Where::host:
        ::operator delete(data_);
        break;
      case Where::pinned:
        cudaFreeHost(data_);
        break;
      case Where::device:
        cudaFree(data_);
        break;
    }
    data_ = nullptr;
  }

  Where where_;
  void* data_ = nullptr;
  std::size_t size_;
};

// A message given up on: the requests of its pieces, left to MPI, and its
// copy, which MPI may still read.
struct Abandoned {
  SendCopy copy;
  std::vector<MPI_Request> requests;
};

class MpiTransport final : public Transport {
 public:
  MpiTransport(MemoryKind memory, int color, std::size_t piece_bytes,
               std::chrono::milliseconds send_timeout)
      : memory_(memory), piece_(piece_bytes), send_timeout_(send_timeout) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw Error(ErrorCode::mpi,
                  "dgs::make_mpi_transport: MPI is not initialised "
                  "(create a dgs::MpiSession or call MPI_Init first)");
    }
    if (send_timeout_.count() <= 0) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs::make_mpi_transport: send_timeout must be positive (got " +
                      std::to_string(send_timeout_.count()) + " ms)");
    }
    if (piece_ == 0 || piece_ > kMaxPieceBytes) {
      throw Error(ErrorCode::invalid_argument, "dgs::make_mpi_transport: a message piece of " +
                                                   std::to_string(piece_) + " bytes (1 to " +
                                                   std::to_string(kMaxPieceBytes) + ")");
    }
    int world_rank = 0;
    detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank", world_rank, -1);
    detail::mpi_check(MPI_Comm_split(MPI_COMM_WORLD, color, world_rank, &comm_), "MPI_Comm_split",
                      world_rank, -1);
    detail::mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
                      world_rank, -1);
    detail::mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", world_rank, -1);
    detail::mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", world_rank, -1);
    direct_device_ = memory == MemoryKind::device && MpiSession::cuda_aware();
  }

  ~MpiTransport() override {
    // Every send completed or was given up on before it returned. MPI may
    // still read what was given up on, after this object is gone: those
    // copies are kept.
    for (Abandoned& a : abandoned_) a.copy.leak();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
    MPI_Comm_free(&comm_);
  }

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  MemoryKind memory() const noexcept override { return memory_; }
  const char* name() const noexcept override { return "mpi"; }

  // A message of fewer bytes than a piece goes as one MPI message; a longer
  // one as full pieces followed by a shorter last piece (empty when the
  // length is a multiple of the piece). MPI counts are ints, so no single
  // MPI message could carry 2 GiB or more (a dense model of 2^29 floats).
  //
  // The bytes are copied first (to pinned host memory when a device buffer
  // must be staged), so the caller's buffer is free when send() returns and
  // MPI never reads it later. A message the peer has not taken within the
  // send timeout fails that peer: later sends to it throw, and a receive
  // from it reports peer_failed (a dead peer never takes a message larger
  // than MPI's eager limit, and a blocking send to it would wait for ever).
  void send(int peer, const void* buffer, std::size_t bytes) override {
    check_peer(peer);
    const auto failed = failed_.find(peer);
    if (failed != failed_.end()) {
      throw Error(ErrorCode::transport, "MPI transport rank " + std::to_string(rank_) +
                                            ": cannot send to peer " + std::to_string(peer) +
                                            ", which failed: " + failed->second);
    }
    const auto deadline = detail::deadline_after(send_timeout_);
    SendCopy copy = take_copy(bytes, peer);
    std::vector<MPI_Request> requests;
    if (bytes > 0) {
      if (memory_ == MemoryKind::host) {
        std::memcpy(copy.data(), buffer, bytes);
      } else {
        // On a stream of its own, waited for: a device-to-device cudaMemcpy
        // may return before the copy is done, and MPI reads the copy next.
        // (The caller's stream has finished the message: Channel waits for
        // it before a device send.)
        if (copy_stream_ == nullptr) {
          check_cuda(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking),
                     "cudaStreamCreate", rank_, peer);
        }
        check_cuda(
            cudaMemcpyAsync(copy.data(), buffer, bytes,
                            direct_device_ ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost,
                            copy_stream_),
            direct_device_ ? "cudaMemcpyAsync(device to device)"
                           : "cudaMemcpyAsync(device to host)",
            rank_, peer);
        check_cuda(cudaStreamSynchronize(copy_stream_), "cudaStreamSynchronize", rank_, peer);
      }
    }
    for (std::size_t at = 0;;) {
      const std::size_t n = std::min(piece_, bytes - at);
      MPI_Request request = MPI_REQUEST_NULL;
      const int code =
          MPI_Isend(copy.data() + at, static_cast<int>(n), MPI_BYTE, peer, kTag, comm_, &request);
      if (code != MPI_SUCCESS) {
        fail_peer(peer, "MPI_Isend failed");
        abandon(std::move(copy), std::move(requests));
        detail::mpi_check(code, "MPI_Isend", rank_, peer);
      }
      requests.push_back(request);
      at += n;
      const bool last = n < piece_;  // a shorter piece, maybe empty, ends the message
      if (last) break;
    }
    // Driven to completion here, as a blocking send was: MPI moves a message
    // past its eager limit only inside MPI calls over TCP and over shared
    // memory without single-copy (measured: 8 MiB whose sender made no MPI
    // call for 500 ms arrived after 500 ms), and a receiver that matched it
    // would wait in MPI_Mrecv for the sender's next call. What a blocking
    // send could not do is give up: past the send timeout the peer fails,
    // and the message is left to MPI with its copy (the caller's buffer is
    // free again; a peer that was only late still receives it whole).
    for (;;) {
      int done = 0;
      const int code = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                                   MPI_STATUSES_IGNORE);
      if (code == MPI_SUCCESS && done) {
        keep_spare(std::move(copy));
        return;
      }
      if (code != MPI_SUCCESS || Clock::now() > deadline) {
        if (code != MPI_SUCCESS) {
          char text[MPI_MAX_ERROR_STRING];
          int length = 0;
          MPI_Error_string(code, text, &length);
          fail_peer(peer, "sending a message of " + std::to_string(bytes) + " bytes failed: " +
                              std::string(text, static_cast<std::size_t>(length)));
        } else {
          fail_peer(peer, "a message of " + std::to_string(bytes) +
                              " bytes was not taken within the send timeout of " +
                              std::to_string(send_timeout_.count()) + " ms");
        }
        abandon(std::move(copy), std::move(requests));
        throw Error(ErrorCode::transport, "MPI transport rank " + std::to_string(rank_) +
                                              ": send to peer " + std::to_string(peer) +
                                              " failed: " + failed_.at(peer));
      }
      std::this_thread::yield();
    }
  }

  Receipt recv(int peer, void* buffer, std::size_t bytes,
               std::chrono::milliseconds timeout) override {
    check_peer(peer);
    return receive({peer}, buffer, bytes, timeout, false);
  }

  Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                   std::chrono::milliseconds timeout) override {
    for (int p : peers) check_peer(p);
    return receive(peers, buffer, bytes, timeout, true);
  }

 private:
  // Copies kept for reuse: a server sends one reply after another of the
  // same size.
  static constexpr std::size_t kSpareCopies = 4;

  SendCopy take_copy(std::size_t bytes, int peer) {
    for (auto it = spare_.begin(); it != spare_.end(); ++it) {
      if (it->size() >= bytes) {
        SendCopy c = std::move(*it);
        spare_.erase(it);
        return c;
      }
    }
    const SendCopy::Where where = memory_ == MemoryKind::host ? SendCopy::Where::host
                                  : direct_device_            ? SendCopy::Where::device
                                                              : SendCopy::Where::pinned;
    return SendCopy(where, bytes, rank_, peer);
  }

  // Keeps a copy for reuse, in place of the smallest kept one when as many
  // are kept as allowed (so a dense reply's copy is not made anew each time
  // behind small ones).
  void keep_spare(SendCopy&& copy) {
    if (spare_.size() < kSpareCopies) {
      spare_.push_back(std::move(copy));
      return;
    }
    auto smallest =
        std::min_element(spare_.begin(), spare_.end(),
                         [](const auto& a, const auto& b) { return a.size() < b.size(); });
    if (smallest->size() < copy.size()) *smallest = std::move(copy);
  }

  void fail_peer(int peer, const std::string& why) {
    if (failed_.emplace(peer, why).second) {
      detail::log(LogLevel::warning, "MPI transport rank " + std::to_string(rank_) + ": peer " +
                                         std::to_string(peer) + " failed: " + why);
    }
  }

  // A message that may never complete: its requests are left to MPI and its
  // copy is kept, since MPI may still read it.
  void abandon(SendCopy&& copy, std::vector<MPI_Request>&& requests) {
    for (MPI_Request& r : requests) {
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }
    abandoned_.push_back({std::move(copy), std::move(requests)});
  }

  // One of `peers` that failed (every time for a single-peer receive, once
  // for an any-peer one), or -1.
  int failed_among(const std::vector<int>& peers, bool once) {
    for (int p : peers) {
      if (failed_.count(p) == 0) continue;
      if (!once) return p;
      if (reported_.insert(p).second) return p;
    }
    return -1;
  }

  Receipt failed_receipt(int peer) const {
    Receipt r;
    r.status = Receipt::Status::peer_failed;
    r.peer = peer;
    r.error = "MPI transport rank " + std::to_string(rank_) + ": peer " + std::to_string(peer) +
              " failed: " + failed_.at(peer);
    return r;
  }

  void check_peer(int peer) const {
    if (peer < 0 || peer >= size_ || peer == rank_) {
      throw Error(ErrorCode::invalid_argument,
                  "MPI transport: rank " + std::to_string(rank_) + " has no peer " +
                      std::to_string(peer) + " in a communicator of " + std::to_string(size_));
    }
  }

  // Finds a message from one of `peers`: an any-source probe first (arrival
  // order), then each peer in turn if the first match came from elsewhere.
  bool probe(const std::vector<int>& peers, MPI_Message& message, MPI_Status& status) {
    int found = 0;
    const int source = peers.size() == 1 ? peers.front() : MPI_ANY_SOURCE;
    MPI_Status peek;
    detail::mpi_check(MPI_Iprobe(source, kTag, comm_, &found, &peek), "MPI_Iprobe", rank_, source);
    if (!found) return false;
    int from = peek.MPI_SOURCE;
    if (std::find(peers.begin(), peers.end(), from) == peers.end()) {
      from = -1;
      for (int p : peers) {
        detail::mpi_check(MPI_Iprobe(p, kTag, comm_, &found, &peek), "MPI_Iprobe", rank_, p);
        if (found) {
          from = p;
          break;
        }
      }
      if (from < 0) return false;
    }
    detail::mpi_check(MPI_Improbe(from, kTag, comm_, &found, &message, &status), "MPI_Improbe",
                      rank_, from);
    return found != 0;
  }

  // Polls probe() until a message matches or the deadline passes.
  bool wait_for(const std::vector<int>& peers, std::chrono::steady_clock::time_point deadline,
                MPI_Message& message, MPI_Status& status) {
    auto pause = std::chrono::microseconds(5);
    while (!probe(peers, message, status)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
    return true;
  }

  // Receives one matched piece into buffer[at, at + its size), as much of it
  // as fits in `bytes`, the rest into staging; returns its size.
  std::size_t receive_piece(MPI_Message& message, const MPI_Status& status, int peer,
                            unsigned char* buffer, std::size_t at, std::size_t bytes) {
    int count = 0;
    detail::mpi_check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count", rank_, peer);
    const auto size = static_cast<std::size_t>(count);
    const std::size_t kept = at < bytes ? std::min(size, bytes - at) : 0;
    const bool stage = (memory_ == MemoryKind::device && !direct_device_) || kept < size;
    unsigned char* target = buffer + at;
    if (stage) {
      if (memory_ == MemoryKind::device) {
        target = recv_stage_.get(std::max<std::size_t>(size, 1), rank_);
      } else {
        oversize_.resize(std::max<std::size_t>(size, 1));
        target = oversize_.data();
      }
    }
    detail::mpi_check(MPI_Mrecv(target, count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv",
                      rank_, peer);
    if (stage && kept > 0) {
      if (memory_ == MemoryKind::device) {
        check_cuda(cudaMemcpy(buffer + at, target, kept, cudaMemcpyHostToDevice),
                   "cudaMemcpy(host to device)", rank_, peer);
      } else {
        std::memcpy(buffer + at, target, kept);
      }
    }
    return size;
  }

  Receipt receive(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                  std::chrono::milliseconds timeout, bool any) {
    // A peer fails only in this object's own calls (a send given up on, a
    // message cut short): one that failed before is reported at once.
    const int failed = failed_among(peers, any);
    if (failed >= 0) return failed_receipt(failed);
    MPI_Message message;
    MPI_Status status;
    const auto deadline = detail::deadline_after(timeout);
    int peer = -1;
    for (;;) {
      if (!wait_for(peers, deadline, message, status)) return Receipt{};
      peer = status.MPI_SOURCE;
      if (failed_.count(peer) == 0) break;
      // A failed peer's messages (the rest of a message that stopped, or
      // what a peer thought dead still sends) are read and dropped, never
      // taken for a new message.
      receive_piece(message, status, peer, nullptr, 0, 0);
    }
    auto* data = static_cast<unsigned char*>(buffer);
    std::size_t total = 0;
    for (;;) {
      const std::size_t n = receive_piece(message, status, peer, data, total, bytes);
      total += n;
      if (n < piece_) break;
      // The next piece is on its way: MPI keeps one sender's messages in order.
      const std::chrono::milliseconds wait = std::max(timeout, kPieceWait);
      if (!wait_for({peer}, detail::deadline_after(wait), message, status)) {
        // Its remaining pieces, should they come, are dropped (above).
        fail_peer(peer, "its message stopped after " + std::to_string(total) +
                            " bytes (the next piece did not arrive within " +
                            std::to_string(wait.count()) + " ms)");
        if (any) reported_.insert(peer);
        return failed_receipt(peer);
      }
    }
    Receipt receipt;
    receipt.status = Receipt::Status::message;
    receipt.peer = peer;
    receipt.bytes = total;
    return receipt;
  }

  static constexpr std::chrono::milliseconds kPieceWait{60000};

  MemoryKind memory_;
  std::size_t piece_;
  std::chrono::milliseconds send_timeout_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool direct_device_ = false;
  PinnedBuffer recv_stage_;
  std::vector<unsigned char> oversize_;
  std::vector<Abandoned> abandoned_;  // never completed: their copies stay
  std::vector<SendCopy> spare_;
  std::map<int, std::string> failed_;  // peer -> why
  cudaStream_t copy_stream_ = nullptr;  // device sends' copies
  std::set<int> reported_;             // failed peers an any-peer receive reported
};

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    detail::mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided),
                      "MPI_Init_thread", -1, -1);
    owner_ = true;
    if (provided < MPI_THREAD_SERIALIZED) {
      detail::log(LogLevel::warning, "dgs::MpiSession: the MPI library provides thread level " +
                                         std::to_string(provided) +
                                         ", below MPI_THREAD_SERIALIZED (" +
                                         std::to_string(MPI_THREAD_SERIALIZED) +
                                         "): use dgs from the thread that made the session only");
    }
  }
  detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank", -1, -1);
  detail::mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size", rank_, -1);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owner_ && !finalized) MPI_Finalize();
}

bool MpiSession::cuda_aware() noexcept {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

std::shared_ptr<Transport> make_mpi_transport(MemoryKind memory, int color,
                                              std::chrono::milliseconds send_timeout) {
  return std::make_shared<MpiTransport>(memory, color, detail::kMpiPieceBytes, send_timeout);
}

namespace detail {

std::shared_ptr<Transport> make_mpi_transport(MemoryKind memory, int color, std::size_t piece_bytes,
                                              std::chrono::milliseconds send_timeout) {
  return std::make_shared<MpiTransport>(memory, color, piece_bytes, send_timeout);
}

}  // namespace detail

}  // namespace dgs
