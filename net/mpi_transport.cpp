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
#include "net/mpi_check.h"

namespace dgs {
namespace {

constexpr int kTag = 0x4447;  // "DG"

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
  MpiTransport(MemoryKind memory, int color) : memory_(memory) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw Error(ErrorCode::mpi,
                  "dgs::make_mpi_transport: MPI is not initialised "
                  "(create a dgs::MpiSession or call MPI_Init first)");
    }
    int world_rank = 0;
    detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank", world_rank, -1);
    detail::mpi_check(MPI_Comm_split(MPI_COMM_WORLD, color, world_rank, &comm_), "MPI_Comm_split",
                      world_rank, -1);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
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

  void send(int peer, const void* buffer, std::size_t bytes) override {
    check_peer(peer);
    const void* data = buffer;
    if (memory_ == MemoryKind::device && !direct_device_) {
      unsigned char* staged = send_stage_.get(bytes, rank_);
      check_cuda(cudaMemcpy(staged, buffer, bytes, cudaMemcpyDeviceToHost),
                 "cudaMemcpy(device to host)", rank_, peer);
      data = staged;
    }
    detail::mpi_check(MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, peer, kTag, comm_),
                      "MPI_Send", rank_, peer);
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

  Receipt receive(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                  std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::microseconds(5);
    MPI_Message message;
    MPI_Status status;
    while (!probe(peers, message, status)) {
      if (std::chrono::steady_clock::now() >= deadline) return Receipt{};
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    const int peer = status.MPI_SOURCE;
    const auto size = static_cast<std::size_t>(count);
    const bool stage = (memory_ == MemoryKind::device && !direct_device_) || size > bytes;
    unsigned char* target = static_cast<unsigned char*>(buffer);
    if (stage) {
      if (memory_ == MemoryKind::device) {
        target = recv_stage_.get(std::max<std::size_t>(size, 1), rank_);
      } else {
        oversize_.resize(size);
        target = oversize_.data();
      }
    }
    detail::mpi_check(MPI_Mrecv(target, count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv",
                      rank_, peer);
    const std::size_t kept = std::min(size, bytes);
    if (stage && kept > 0) {
      if (memory_ == MemoryKind::device) {
        check_cuda(cudaMemcpy(buffer, target, kept, cudaMemcpyHostToDevice),
                   "cudaMemcpy(host to device)", rank_, peer);
      } else {
        std::memcpy(buffer, target, kept);
      }
    }
    Receipt receipt;
    receipt.status = Receipt::Status::message;
    receipt.peer = peer;
    receipt.bytes = size;
    return receipt;
  }

  MemoryKind memory_;
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
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
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
  return std::make_shared<MpiTransport>(memory, color);
}

}  // namespace dgs
