// The NCCL transports: per-pair communicators for multi-process jobs, and a
// loopback mode that runs every message through NCCL send/receive to self on
// one GPU.
#include <nccl.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dgs/error.h"
#include "dgs/nccl.h"
#include "net/deadline.h"

namespace dgs {
namespace {

using Clock = std::chrono::steady_clock;

std::string where(int rank, int peer) {
  return "NCCL transport rank " + std::to_string(rank) + " (peer " + std::to_string(peer) + ")";
}

void nccl_check(ncclResult_t r, const char* call, int rank, int peer) {
  if (r != ncclSuccess && r != ncclInProgress) {
    throw Error(ErrorCode::nccl,
                where(rank, peer) + ": " + call + " failed: " + ncclGetErrorString(r));
  }
}

void cuda_check(cudaError_t e, const char* call, int rank, int peer) {
  if (e != cudaSuccess) {
    throw Error(ErrorCode::cuda,
                where(rank, peer) + ": " + call + " failed: " + cudaGetErrorString(e));
  }
}

// Waits until a non-blocking communicator has no call in progress. Returns
// its async state (ncclSuccess, or the error that broke it).
ncclResult_t settle(ncclComm_t comm, Clock::time_point deadline) {
  ncclResult_t state = ncclInProgress;
  while (true) {
    if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) return ncclInternalError;
    if (state != ncclInProgress) return state;
    if (Clock::now() > deadline) return ncclInProgress;
    std::this_thread::yield();
  }
}

// One direction of one worker-server pair.
struct Link {
  // A receive goes idle -> enqueuing (ncclRecv returned ncclInProgress: the
  // communicator is still connecting, nothing may be queued on its stream)
  // -> posted (the event after it is recorded) -> idle when it completes.
  enum class Receive { idle, enqueuing, posted };
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
  bool failed = false;
  bool reported = false;  // failure already returned by a receive
  std::string error;      // why it failed
  Receive receive = Receive::idle;
  void* staging = nullptr;  // receive buffer
  std::size_t staging_bytes = 0;
  std::size_t posted_bytes = 0;
};

class NcclTransport final : public Transport {
 public:
  NcclTransport(Bootstrap& bootstrap, const NcclOptions& options)
      : rank_(bootstrap.rank()), size_(bootstrap.size()), options_(options) {
    // A constructor that throws runs no destructor: free what was made.
    try {
      connect(bootstrap);
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclTransport() override { release(); }

  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

 private:
  void connect(Bootstrap& bootstrap) {
    const NcclOptions& options = options_;
    const int server = options.server_rank;
    if (server < 0 || server >= size_) {
      throw Error(ErrorCode::invalid_argument, "NCCL transport: server rank " +
                                                   std::to_string(server) + " outside a world of " +
                                                   std::to_string(size_));
    }
    if (options.max_ctas < 1) {
      throw Error(ErrorCode::invalid_argument,
                  "NCCL transport: NcclOptions::max_ctas = " + std::to_string(options.max_ctas) +
                      "; a communicator needs at least 1 CTA");
    }
    if (options.init_timeout.count() <= 0 || options.send_timeout.count() <= 0) {
      throw Error(ErrorCode::invalid_argument,
                  "NCCL transport: NcclOptions::init_timeout and send_timeout must be positive "
                  "(they are " +
                      std::to_string(options.init_timeout.count()) + " and " +
                      std::to_string(options.send_timeout.count()) + " ms)");
    }
    // Two ids per worker rank (push and reply direction), made by bootstrap
    // rank 0, the rank the bootstrap's broadcast sends from (whether or not
    // it is the server: an id only names where its communicator meets).
    std::vector<ncclUniqueId> ids(2 * static_cast<std::size_t>(size_));
    if (rank_ == 0) {
      for (int r = 0; r < size_; ++r) {
        if (r == server) continue;
        nccl_check(ncclGetUniqueId(&ids[2 * r]), "ncclGetUniqueId", rank_, r);
        nccl_check(ncclGetUniqueId(&ids[2 * r + 1]), "ncclGetUniqueId", rank_, r);
      }
    }
    bootstrap.broadcast(ids.data(), ids.size() * sizeof(ncclUniqueId));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    config.maxCTAs = options.max_ctas;
    config.minCTAs = 1;
    push_.resize(size_);
    reply_.resize(size_);
    // In a pair, the server is rank 0 and the worker rank 1 of both
    // communicators. Links are indexed by worker rank on both sides (slot()).
    const int pair_rank = rank_ == server ? 0 : 1;
    for (int r = 0; r < size_; ++r) {
      if (r == server || (rank_ != server && r != rank_)) continue;
      const int peer = rank_ == server ? r : server;
      for (auto [links, id] :
           {std::pair{&push_, &ids[2 * r]}, std::pair{&reply_, &ids[2 * r + 1]}}) {
        Link& link = (*links)[r];
        cuda_check(cudaStreamCreateWithFlags(&link.stream, cudaStreamNonBlocking),
                   "cudaStreamCreate", rank_, peer);
        cuda_check(cudaEventCreateWithFlags(&link.done, cudaEventDisableTiming), "cudaEventCreate",
                   rank_, peer);
        ncclConfig_t c = config;
        nccl_check(ncclCommInitRankConfig(&link.comm, 2, *id, pair_rank, &c),
                   "ncclCommInitRankConfig", rank_, peer);
      }
    }
    // Creation of all pairs proceeds concurrently; wait for each.
    const auto deadline = detail::deadline_after(options.init_timeout);
    for (int r = 0; r < size_; ++r) {
      for (Link* link : {&push_[r], &reply_[r]}) {
        if (link->comm == nullptr) continue;
        const ncclResult_t state = settle(link->comm, deadline);
        if (state != ncclSuccess) {
          throw Error(state == ncclInProgress ? ErrorCode::timeout : ErrorCode::nccl,
                      where(rank_, r) + ": communicator creation " +
                          (state == ncclInProgress
                               ? "did not finish within " +
                                     std::to_string(options.init_timeout.count()) + " ms"
                               : std::string("failed: ") + ncclGetErrorString(state)));
        }
      }
    }
  }

  void release() noexcept {
    for (auto* links : {&push_, &reply_}) {
      for (Link& link : *links) {
        if (link.comm != nullptr) {
          // Receives may still be posted: abort rather than wait for them.
          ncclCommAbort(link.comm);
          link.comm = nullptr;
        }
        if (link.staging != nullptr) cudaFree(link.staging);
        if (link.done != nullptr) cudaEventDestroy(link.done);
        if (link.stream != nullptr) cudaStreamDestroy(link.stream);
        link.staging = nullptr;
        link.done = nullptr;
        link.stream = nullptr;
      }
    }
  }

 public:
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  MemoryKind memory() const noexcept override { return MemoryKind::device; }
  const char* name() const noexcept override { return "nccl"; }

  void send(int peer, const void* buffer, std::size_t bytes) override {
    Link& link = outgoing(peer);
    if (link.failed) {
      throw Error(ErrorCode::transport,
                  where(rank_, peer) + ": the pair has failed (" + link.error + ")");
    }
    const auto deadline = detail::deadline_after(options_.send_timeout);
    const ncclResult_t sent = ncclSend(buffer, bytes, ncclUint8, other(), link.comm, link.stream);
    if (sent != ncclSuccess && sent != ncclInProgress) {
      // The communicator holds an error (its peer died, say): abort it.
      fail(peer, link, std::string("ncclSend failed: ") + ncclGetErrorString(sent));
      nccl_check(sent, "ncclSend", rank_, peer);
    }
    if (sent == ncclInProgress) {
      // Non-blocking communicator still connecting: the send is not on the
      // stream yet, and nothing else may be queued there until it is.
      const ncclResult_t state = settle(link.comm, deadline);
      if (state != ncclSuccess) {
        fail(peer, link,
             state == ncclInProgress ? "send not enqueued within the send timeout"
                                     : std::string("send failed: ") + ncclGetErrorString(state));
        throw Error(
            state == ncclInProgress ? ErrorCode::timeout : ErrorCode::nccl,
            where(rank_, peer) + ": send of " + std::to_string(bytes) + " bytes " +
                (state == ncclInProgress ? "not enqueued within the send timeout"
                                         : std::string("failed: ") + ncclGetErrorString(state)));
      }
    }
    cuda_check(cudaEventRecord(link.done, link.stream), "cudaEventRecord", rank_, peer);
    for (;;) {
      const cudaError_t e = cudaEventQuery(link.done);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) cuda_check(e, "cudaEventQuery", rank_, peer);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(link.comm, &state);
      if ((state != ncclSuccess && state != ncclInProgress) || Clock::now() > deadline) {
        fail(peer, link,
             state == ncclSuccess || state == ncclInProgress
                 ? "a send timed out"
                 : std::string("send failed: ") + ncclGetErrorString(state));
        throw Error(
            state == ncclSuccess || state == ncclInProgress ? ErrorCode::timeout : ErrorCode::nccl,
            where(rank_, peer) + ": send of " + std::to_string(bytes) + " bytes " +
                (state == ncclSuccess || state == ncclInProgress
                     ? "timed out"
                     : std::string("failed: ") + ncclGetErrorString(state)));
      }
      std::this_thread::yield();
    }
  }

  Receipt recv(int peer, void* buffer, std::size_t bytes,
               std::chrono::milliseconds timeout) override {
    return receive({peer}, buffer, bytes, timeout);
  }

  Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                   std::chrono::milliseconds timeout) override {
    if (peers.empty()) return Receipt{};  // nothing to wait for
    return receive(peers, buffer, bytes, timeout);
  }

 private:
  int other() const { return rank_ == options_.server_rank ? 1 : 0; }

  // The index of the pair with `peer`: its worker's rank.
  std::size_t slot(int peer) const {
    check_peer(peer);
    return static_cast<std::size_t>(rank_ == options_.server_rank ? peer : rank_);
  }
  Link& outgoing(int peer) {
    return rank_ == options_.server_rank ? reply_[slot(peer)] : push_[slot(peer)];
  }
  Link& incoming(int peer) {
    return rank_ == options_.server_rank ? push_[slot(peer)] : reply_[slot(peer)];
  }

  void check_peer(int peer) const {
    const bool server = rank_ == options_.server_rank;
    if (peer < 0 || peer >= size_ || peer == rank_ || (!server && peer != options_.server_rank)) {
      throw Error(ErrorCode::invalid_argument,
                  where(rank_, peer) + ": not a peer (workers talk to the server only)");
    }
  }

  void fail(int, Link& link, const std::string& why) {
    if (!link.failed) link.error = why;
    link.failed = true;
    if (link.comm != nullptr) ncclCommAbort(link.comm);
    link.comm = nullptr;
    link.receive = Link::Receive::idle;
  }

  // Keeps a receive posted on every peer's incoming link; returns the first
  // that completes (or failed), scanning from where the last scan stopped.
  Receipt receive(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                  std::chrono::milliseconds timeout) {
    for (int p : peers) {
      Link& link = incoming(p);
      if (link.failed || link.receive != Link::Receive::idle) continue;
      if (link.staging_bytes < bytes) {
        if (link.staging != nullptr) cudaFree(link.staging);
        link.staging = nullptr;
        link.staging_bytes = 0;
        cuda_check(cudaMalloc(&link.staging, bytes), "cudaMalloc", rank_, p);
        link.staging_bytes = bytes;
      }
      const ncclResult_t posted =
          ncclRecv(link.staging, bytes, ncclUint8, other(), link.comm, link.stream);
      if (posted != ncclSuccess && posted != ncclInProgress) {
        // A communicator that broke between receives (its peer died) returns
        // its error here: the peer failed, which the receive reports below.
        fail(p, link, std::string("ncclRecv failed: ") + ncclGetErrorString(posted));
        continue;
      }
      link.posted_bytes = bytes;
      link.receive = Link::Receive::enqueuing;
      if (posted == ncclSuccess) record(p, link);
    }
    const auto deadline = detail::deadline_after(timeout);
    for (;;) {
      for (std::size_t n = 0; n < peers.size(); ++n) {
        const int p = peers[(start_ + n) % peers.size()];
        Link& link = incoming(p);
        if (link.failed) {
          if (link.reported) continue;
          link.reported = true;
          Receipt r;
          r.status = Receipt::Status::peer_failed;
          r.peer = p;
          r.error = where(rank_, p) + ": its NCCL communicator failed: " + link.error;
          return r;
        }
        if (link.receive == Link::Receive::enqueuing) {
          // Connecting (the peer has not reached its side yet): poll until
          // the receive is on the stream, then watch its event.
          if (poll(p, link) == ncclSuccess) record(p, link);
          continue;
        }
        const cudaError_t e = cudaEventQuery(link.done);
        if (e == cudaSuccess) {
          start_ = (start_ + n + 1) % peers.size();
          link.receive = Link::Receive::idle;
          const std::size_t size = std::min(bytes, link.posted_bytes);
          cuda_check(
              cudaMemcpyAsync(buffer, link.staging, size, cudaMemcpyDeviceToDevice, link.stream),
              "cudaMemcpyAsync", rank_, p);
          cuda_check(cudaStreamSynchronize(link.stream), "cudaStreamSynchronize", rank_, p);
          Receipt r;
          r.status = Receipt::Status::message;
          r.peer = p;
          r.bytes = link.posted_bytes;
          return r;
        }
        if (e != cudaErrorNotReady) cuda_check(e, "cudaEventQuery", rank_, p);
        poll(p, link);
      }
      if (Clock::now() > deadline) return Receipt{};
      std::this_thread::yield();
    }
  }

  // The pair's async state (ncclSuccess, ncclInProgress or an error); a pair
  // in error is failed here.
  ncclResult_t poll(int peer, Link& link) {
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(link.comm, &state) != ncclSuccess) state = ncclInternalError;
    if (state != ncclSuccess && state != ncclInProgress)
      fail(peer, link, std::string("asynchronous error: ") + ncclGetErrorString(state));
    return state;
  }

  void record(int peer, Link& link) {
    cuda_check(cudaEventRecord(link.done, link.stream), "cudaEventRecord", rank_, peer);
    link.receive = Link::Receive::posted;
  }

  int rank_, size_;
  NcclOptions options_;
  std::vector<Link> push_, reply_;  // indexed by worker rank
  std::size_t start_ = 0;
};

// --- one-GPU loopback --------------------------------------------------------

struct Loopback {
  struct Pending {
    int source;
    const void* buffer;
    std::size_t bytes;
    bool done = false;
    std::string error;  // set with done when the receiver's NCCL calls failed
  };
  // How long a send waits for its receiver to take it.
  std::chrono::milliseconds send_timeout{std::chrono::minutes(5)};
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::deque<Pending*>> inbox;  // per receiver, arrival order
  std::mutex nccl;                          // the communicator is used by one thread at a time
  ~Loopback() {
    if (comm != nullptr) ncclCommDestroy(comm);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

class LoopbackEndpoint final : public Transport {
 public:
  LoopbackEndpoint(std::shared_ptr<Loopback> loop, int rank)
      : loop_(std::move(loop)), rank_(rank) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return static_cast<int>(loop_->inbox.size()); }
  MemoryKind memory() const noexcept override { return MemoryKind::device; }
  const char* name() const noexcept override { return "nccl-loopback"; }

  // Rendezvous: the message moves when the receiver takes it, within the
  // send timeout (a receiver that never comes, a worker gone, would
  // otherwise hold the sender for ever).
  void send(int peer, const void* buffer, std::size_t bytes) override {
    check(peer);
    Loopback::Pending pending{rank_, buffer, bytes, false, {}};
    std::unique_lock<std::mutex> lock(loop_->mutex);
    auto& inbox = loop_->inbox[peer];
    inbox.push_back(&pending);
    loop_->changed.notify_all();
    const bool taken =
        loop_->changed.wait_until(lock, detail::deadline_after(loop_->send_timeout), [&] {
          return pending.done || std::find(inbox.begin(), inbox.end(), &pending) == inbox.end();
        });
    if (!taken) {
      inbox.erase(std::find(inbox.begin(), inbox.end(), &pending));
      throw Error(ErrorCode::timeout, where(rank_, peer) + ": a message of " +
                                          std::to_string(bytes) + " bytes was not taken within " +
                                          std::to_string(loop_->send_timeout.count()) + " ms");
    }
    // Taken: the receiver is reading the buffer; wait until it is done.
    loop_->changed.wait(lock, [&] { return pending.done; });
    if (!pending.error.empty()) {
      throw Error(ErrorCode::nccl,
                  where(rank_, peer) + ": the receiver's copy failed: " + pending.error);
    }
  }

  Receipt recv(int peer, void* buffer, std::size_t bytes,
               std::chrono::milliseconds timeout) override {
    check(peer);
    return receive({peer}, buffer, bytes, timeout);
  }
  Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                   std::chrono::milliseconds timeout) override {
    for (int p : peers) check(p);
    return receive(peers, buffer, bytes, timeout);
  }

 private:
  void check(int peer) const {
    if (peer < 0 || peer >= size() || peer == rank_) {
      throw Error(ErrorCode::invalid_argument, where(rank_, peer) + ": not a peer of the loopback");
    }
  }

  Receipt receive(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                  std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(loop_->mutex);
    auto& inbox = loop_->inbox[rank_];
    Loopback::Pending* found = nullptr;
    const bool arrived = loop_->changed.wait_until(lock, detail::deadline_after(timeout), [&] {
      for (Loopback::Pending* p : inbox) {
        if (std::find(peers.begin(), peers.end(), p->source) != peers.end()) {
          found = p;
          return true;
        }
      }
      return false;
    });
    if (!arrived) return Receipt{};
    inbox.erase(std::find(inbox.begin(), inbox.end(), found));
    lock.unlock();
    const std::size_t n = std::min(bytes, found->bytes);
    std::string error;
    if (n > 0) {
      try {
        std::lock_guard<std::mutex> nccl(loop_->nccl);
        nccl_check(ncclGroupStart(), "ncclGroupStart", rank_, found->source);
        // The group is ended whatever fails inside it.
        ncclResult_t r = ncclSend(found->buffer, n, ncclUint8, 0, loop_->comm, loop_->stream);
        if (r == ncclSuccess) r = ncclRecv(buffer, n, ncclUint8, 0, loop_->comm, loop_->stream);
        const ncclResult_t ended = ncclGroupEnd();
        nccl_check(r, "ncclSend/ncclRecv", rank_, found->source);
        nccl_check(ended, "ncclGroupEnd", rank_, found->source);
        cuda_check(cudaStreamSynchronize(loop_->stream), "cudaStreamSynchronize", rank_,
                   found->source);
      } catch (const Error& e) {
        error = e.what();
      }
    }
    // The sender waits for this, failed or not.
    lock.lock();
    found->error = error;
    found->done = true;
    loop_->changed.notify_all();
    lock.unlock();
    if (!error.empty()) throw Error(ErrorCode::nccl, error);
    Receipt r;
    r.status = Receipt::Status::message;
    r.peer = found->source;
    r.bytes = found->bytes;
    return r;
  }

  std::shared_ptr<Loopback> loop_;
  int rank_;
};

}  // namespace

std::shared_ptr<Transport> make_nccl_transport(Bootstrap& bootstrap, NcclOptions options) {
  return std::make_shared<NcclTransport>(bootstrap, options);
}

std::vector<std::shared_ptr<Transport>> make_nccl_loopback(int workers) {
  if (workers < 1)
    throw Error(ErrorCode::invalid_argument, "dgs::make_nccl_loopback: needs a worker");
  auto loop = std::make_shared<Loopback>();
  loop->inbox.resize(static_cast<std::size_t>(workers) + 1);
  int device = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice", 0, -1);
  nccl_check(ncclCommInitAll(&loop->comm, 1, &device), "ncclCommInitAll", 0, -1);
  cuda_check(cudaStreamCreateWithFlags(&loop->stream, cudaStreamNonBlocking), "cudaStreamCreate", 0,
             -1);
  std::vector<std::shared_ptr<Transport>> endpoints;
  for (int r = 0; r <= workers; ++r)
    endpoints.push_back(std::make_shared<LoopbackEndpoint>(loop, r));
  return endpoints;
}

}  // namespace dgs
