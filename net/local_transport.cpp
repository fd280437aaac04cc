// The in-process transport: endpoints are threads of one process; a message
// is copied into the receiver's inbox on send (so sends never block) and out
// of it on receive. Device buffers are staged through host memory.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "dgs/error.h"
#include "dgs/transport.h"
#include "net/deadline.h"

namespace dgs {

struct LocalHub::State {
  struct Message {
    int source;
    std::vector<unsigned char> bytes;
  };

  State(int n, MemoryKind m)
      : ranks(n), memory(m), inbox(n), closed(n, false), generation(n, 0), failed(n) {}

  const int ranks;
  const MemoryKind memory;
  std::mutex mutex;
  std::condition_variable arrived;
  std::vector<std::deque<Message>> inbox;  // per receiver, in arrival order
  std::vector<bool> closed;
  std::vector<std::uint64_t> generation;  // bumped when a rank is reopened
  std::vector<std::set<int>> failed;      // per receiver: closed peers not yet reported
};

namespace {

void check_cuda(cudaError_t status, const char* call, int rank, int peer) {
  if (status != cudaSuccess) {
    throw Error(ErrorCode::cuda, std::string("local transport rank ") + std::to_string(rank) +
                                     " (peer " + std::to_string(peer) + "): " + call +
                                     " failed: " + cudaGetErrorString(status));
  }
}

class LocalEndpoint final : public Transport {
 public:
  LocalEndpoint(std::shared_ptr<LocalHub::State> state, int rank, std::uint64_t generation)
      : state_(std::move(state)), rank_(rank), generation_(generation) {}
  ~LocalEndpoint() override {
    if (copies_ != nullptr) cudaStreamDestroy(copies_);
  }
  LocalEndpoint(const LocalEndpoint&) = delete;
  LocalEndpoint& operator=(const LocalEndpoint&) = delete;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return state_->ranks; }
  MemoryKind memory() const noexcept override { return state_->memory; }
  const char* name() const noexcept override { return "local"; }

  void send(int peer, const void* buffer, std::size_t bytes) override {
    check_peer(peer);
    LocalHub::State::Message message{rank_, std::vector<unsigned char>(bytes)};
    if (bytes > 0) {
      if (state_->memory == MemoryKind::device) {
        check_cuda(cudaMemcpy(message.bytes.data(), buffer, bytes, cudaMemcpyDeviceToHost),
                   "cudaMemcpy(device to host)", rank_, peer);
      } else {
        std::memcpy(message.bytes.data(), buffer, bytes);
      }
    }
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      check_open_locked();
      if (state_->closed[peer]) {
        throw Error(ErrorCode::transport, "local transport: rank " + std::to_string(rank_) +
                                              " cannot send to rank " + std::to_string(peer) +
                                              ": the peer is closed");
      }
      state_->inbox[peer].push_back(std::move(message));
    }
    state_->arrived.notify_all();
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
  // The stream this endpoint's receives copy on (made at the first).
  cudaStream_t copy_stream(int peer) {
    std::call_once(copies_made_, [&] {
      check_cuda(cudaStreamCreateWithFlags(&copies_, cudaStreamNonBlocking),
                 "cudaStreamCreateWithFlags", rank_, peer);
    });
    return copies_;
  }

  void check_peer(int peer) const {
    if (peer < 0 || peer >= state_->ranks || peer == rank_) {
      throw Error(ErrorCode::invalid_argument, "local transport: rank " + std::to_string(rank_) +
                                                   " has no peer " + std::to_string(peer) +
                                                   " (ranks 0.." +
                                                   std::to_string(state_->ranks - 1) + ")");
    }
  }

  void check_open_locked() const {
    if (state_->closed[rank_] || state_->generation[rank_] != generation_) {
      throw Error(ErrorCode::transport,
                  "local transport: rank " + std::to_string(rank_) + " is closed");
    }
  }

  Receipt receive(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                  std::chrono::milliseconds timeout) {
    const auto deadline = detail::deadline_after(timeout);
    std::unique_lock<std::mutex> lock(state_->mutex);
    auto& inbox = state_->inbox[rank_];
    auto& failed = state_->failed[rank_];
    for (;;) {
      check_open_locked();
      const auto it = std::find_if(inbox.begin(), inbox.end(), [&](const auto& m) {
        return std::find(peers.begin(), peers.end(), m.source) != peers.end();
      });
      if (it != inbox.end()) {
        LocalHub::State::Message message = std::move(*it);
        inbox.erase(it);
        lock.unlock();
        Receipt receipt;
        receipt.status = Receipt::Status::message;
        receipt.peer = message.source;
        receipt.bytes = message.bytes.size();
        const std::size_t n = std::min(bytes, message.bytes.size());
        if (n > 0) {
          if (state_->memory == MemoryKind::device) {
            // From pageable memory cudaMemcpy may return before the copy
            // has landed, unordered with a non-blocking stream's kernels:
            // the copy goes on this endpoint's stream and is waited for.
            const cudaStream_t stream = copy_stream(message.source);
            check_cuda(
                cudaMemcpyAsync(buffer, message.bytes.data(), n, cudaMemcpyHostToDevice, stream),
                "cudaMemcpyAsync(host to device)", rank_, message.source);
            check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize", rank_,
                       message.source);
          } else {
            std::memcpy(buffer, message.bytes.data(), n);
          }
        }
        return receipt;
      }
      for (int p : peers) {
        if (failed.erase(p) > 0) {
          Receipt receipt;
          receipt.status = Receipt::Status::peer_failed;
          receipt.peer = p;
          receipt.error = "rank " + std::to_string(p) + " closed its local endpoint";
          return receipt;
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) return Receipt{};
      state_->arrived.wait_until(lock, deadline);
    }
  }

  std::shared_ptr<LocalHub::State> state_;
  int rank_;
  std::uint64_t generation_;
  std::once_flag copies_made_;
  cudaStream_t copies_ = nullptr;  // device memory: where receives copy
};

}  // namespace

LocalHub::LocalHub(int ranks, MemoryKind memory) {
  if (ranks < 2) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::LocalHub: needs at least 2 ranks (a server and a worker), got " +
                    std::to_string(ranks));
  }
  state_ = std::make_shared<State>(ranks, memory);
}

LocalHub::~LocalHub() = default;

int LocalHub::ranks() const noexcept {
  return state_->ranks;
}

std::shared_ptr<Transport> LocalHub::endpoint(int rank) {
  if (rank < 0 || rank >= state_->ranks) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::LocalHub::endpoint: no rank " + std::to_string(rank));
  }
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (state_->closed[rank]) {
    // Reopen: a restarted process with an empty inbox; its old failure is moot.
    state_->closed[rank] = false;
    ++state_->generation[rank];
    state_->inbox[rank].clear();
    for (auto& pending : state_->failed) pending.erase(rank);
  }
  return std::make_shared<LocalEndpoint>(state_, rank, state_->generation[rank]);
}

void LocalHub::close(int rank) {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (rank < 0 || rank >= state_->ranks || state_->closed[rank]) return;
    state_->closed[rank] = true;
    state_->inbox[rank].clear();
    for (int r = 0; r < state_->ranks; ++r) {
      if (r != rank) state_->failed[r].insert(rank);
    }
  }
  state_->arrived.notify_all();
}

}  // namespace dgs
