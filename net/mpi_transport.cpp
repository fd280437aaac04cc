// The MPI transport: blocking sends, and receives by matched probe
// (MPI_Improbe + MPI_Mrecv) polled with a short back-off, so a receive can time
// out and the server can take whichever peer's message arrives first.
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>

#include "dgs/error.h"
#include "dgs/mpi.h"
#include "net/deadline.h"
#include "net/mpi_check.h"
#include "net/mpi_transport.h"

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

class MpiTransport final : public Transport {
 public:
  MpiTransport(MemoryKind memory, int color, std::size_t piece_bytes)
      : memory_(memory), piece_(piece_bytes) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw Error(ErrorCode::mpi,
                  "dgs::make_mpi_transport: MPI is not initialised "
                  "(create a dgs::MpiSession or call MPI_Init first)");
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
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  MemoryKind memory() const noexcept override { return memory_; }
  const char* name() const noexcept override { return "mpi"; }

  // A message of fewer bytes than a piece goes as one MPI message; a longer
  // one as full pieces followed by a shorter last piece (empty when the
  // length is a multiple of the piece). MPI counts are ints, so no single
  // MPI message could carry 2 GiB or more (a dense model of 2^29 floats).
  void send(int peer, const void* buffer, std::size_t bytes) override {
    check_peer(peer);
    const auto* data = static_cast<const unsigned char*>(buffer);
    const bool stage = memory_ == MemoryKind::device && !direct_device_;
    std::size_t at = 0;
    for (;;) {
      const std::size_t n = std::min(piece_, bytes - at);
      const void* piece = data + at;
      if (stage && n > 0) {
        unsigned char* staged = send_stage_.get(n, rank_);
        check_cuda(cudaMemcpy(staged, data + at, n, cudaMemcpyDeviceToHost),
                   "cudaMemcpy(device to host)", rank_, peer);
        piece = staged;
      }
      detail::mpi_check(MPI_Send(piece, static_cast<int>(n), MPI_BYTE, peer, kTag, comm_),
                        "MPI_Send", rank_, peer);
      at += n;
      if (n < piece_) return;
    }
  }

  Receipt recv(int peer, void* buffer, std::size_t bytes,
               std::chrono::milliseconds timeout) override {
    check_peer(peer);
    return receive({peer}, buffer, bytes, timeout);
  }

  Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                   std::chrono::milliseconds timeout) override {
    for (int p : peers) check_peer(p);
    return receive(peers, buffer, bytes, timeout);
  }

 private:
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
                  std::chrono::milliseconds timeout) {
    MPI_Message message;
    MPI_Status status;
    if (!wait_for(peers, detail::deadline_after(timeout), message, status)) {
      return Receipt{};
    }
    const int peer = status.MPI_SOURCE;
    auto* data = static_cast<unsigned char*>(buffer);
    std::size_t total = 0;
    for (;;) {
      const std::size_t n = receive_piece(message, status, peer, data, total, bytes);
      total += n;
      if (n < piece_) break;
      // The next piece is on its way: MPI keeps one sender's messages in order.
      const std::chrono::milliseconds wait = std::max(timeout, kPieceWait);
      if (!wait_for({peer}, detail::deadline_after(wait), message, status)) {
        Receipt cut;
        cut.status = Receipt::Status::peer_failed;
        cut.peer = peer;
        cut.error = "MPI transport rank " + std::to_string(rank_) + ": the message from peer " +
                    std::to_string(peer) + " stopped after " + std::to_string(total) +
                    " bytes (its next piece did not arrive within " + std::to_string(wait.count()) +
                    " ms)";
        return cut;
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
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  bool direct_device_ = false;
  PinnedBuffer send_stage_, recv_stage_;
  std::vector<unsigned char> oversize_;
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

std::shared_ptr<Transport> make_mpi_transport(MemoryKind memory, int color) {
  return std::make_shared<MpiTransport>(memory, color, detail::kMpiPieceBytes);
}

namespace detail {

std::shared_ptr<Transport> make_mpi_transport(MemoryKind memory, int color,
                                              std::size_t piece_bytes) {
  return std::make_shared<MpiTransport>(memory, color, piece_bytes);
}

}  // namespace detail

}  // namespace dgs
