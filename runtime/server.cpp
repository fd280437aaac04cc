#include "dgs/server.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dgs/error.h"
#include "net/deadline.h"
#include "runtime/backend.h"
#include "runtime/channel.h"
#include "runtime/checkpoint.h"
#include "runtime/log.h"

namespace dgs {

std::uint64_t ServerStats::rejected_total() const noexcept {
  std::uint64_t total = 0;
  for (std::uint64_t r : rejected) total += r;
  return total;
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kPoll{200};

std::size_t staleness_bucket(std::uint64_t s) {
  std::size_t b = 0;
  while (s != 0) {
    ++b;
    s >>= 1;
  }
  return b;
}

}  // namespace

struct Server::Impl {
  static constexpr std::uint64_t kUnknown = ~std::uint64_t{0};

  struct Slot {
    int rank = -1;
    bool live = false;
    Clock::time_point last_heard{};
    std::uint64_t last_dense_version = 0;
    // The version of the last reply sent to it, which its next push must
    // come from (kUnknown: not known, after a restore from an older file).
    std::uint64_t replied_version = kUnknown;
    bool pushed = false;       // sync: its push for the current round is held
    MessageHeader held{};      // sync: the held push's header, as validated
    bool joined_once = false;  // has joined at least once (kept in checkpoints)
    bool given_up = false;     // never joined, and run() no longer waits for it
  };

  Impl(const Config& cfg, const Segments& m, std::shared_ptr<Backend> b,
       std::shared_ptr<Transport> t, const float* initial, ServerOptions o)
      : config((cfg.validate(), cfg)),  // first: the layouts below trust it
        model(m),
        backend(std::move(b)),
        transport(std::move(t)),
        options(std::move(o)),
        push_layout(dgs::push_layout(m, cfg)),
        reply_layout(sparse_reply_layout(m, cfg)),
        dense_layout(dense_reply_layout(m)),
        dense_replies(replies_are_dense(m, cfg)),
        channel(*backend, *transport, options.stream) {
    if (initial == nullptr) {
      throw Error(ErrorCode::invalid_argument, "dgs::Server: the initial model is null");
    }
    check_finite(initial);
    if (options.worker_ranks.empty()) {
      for (std::uint32_t k = 0; k < config.workers; ++k) {
        options.worker_ranks.push_back(static_cast<int>(k) + 1);
      }
    }
    if (options.worker_ranks.size() != config.workers) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs::Server: worker_ranks lists " + std::to_string(options.worker_ranks.size()) +
                      " ranks for Config::workers = " + std::to_string(config.workers));
    }
    slots.resize(config.workers);
    for (std::uint32_t k = 0; k < config.workers; ++k) {
      const int rank = options.worker_ranks[k];
      if (rank < 0 || rank >= transport->size() || rank == transport->rank()) {
        throw Error(ErrorCode::invalid_argument,
                    "dgs::Server: worker " + std::to_string(k) + " has rank " +
                        std::to_string(rank) + ", which is not a peer of server rank " +
                        std::to_string(transport->rank()) + " in a world of " +
                        std::to_string(transport->size()));
      }
      for (std::uint32_t j = 0; j < k; ++j) {
        if (slots[j].rank == rank) {
          throw Error(ErrorCode::invalid_argument,
                      "dgs::Server: workers " + std::to_string(j) + " and " + std::to_string(k) +
                          " both have rank " + std::to_string(rank) +
                          " in worker_ranks; each worker needs its own rank");
        }
      }
      slots[k].rank = rank;
    }
    const std::size_t floats = model.total() * sizeof(float);
    Backend& be = *backend;
    // W lives in the values of a dense reply, so a dense reply is its header
    // written in front of it: no copy, and no buffer of its own.
    weights = detail::Buffer(be, dense_layout.bytes);
    be.upload(W(), initial, floats, options.stream);
    // Where every reply is dense, each worker's replica is W as of its last
    // reply (and in sync mode W itself between rounds): none is kept. The
    // shared replica of sync mode, which a joiner receives, lives in a dense
    // reply too.
    if (!dense_replies) {
      replicas = detail::Buffer(be, sync() ? dense_layout.bytes : floats * config.workers);
      for (std::uint32_t k = 0; k < replica_count(); ++k) {
        be.copy(replica(k), W(), floats, options.stream);
      }
    }
    receive_buffer = detail::Buffer(be, push_layout.bytes);
    if (sync()) {
      round_buffers = detail::Buffer(be, push_layout.bytes * config.workers);
    }
    reply_buffer = detail::Buffer(be, reply_layout.bytes);
    kernels = be.server_kernels(model, config);
    for (const Slot& s : slots) peers.push_back(s.rank);
  }

  bool sync() const { return config.mode == Mode::sync; }

  // A NaN or infinity in the initial model would reach every worker with its
  // first reply, and their pushes would then be rejected as non-finite: name
  // it here instead.
  void check_finite(const float* initial) const {
    const std::uint64_t p = model.total();
    const float* bad =
        std::find_if(initial, initial + p, [](float x) { return !std::isfinite(x); });
    if (bad == initial + p) return;
    const std::uint64_t i = static_cast<std::uint64_t>(bad - initial);
    const std::size_t l = model.segment_of(i);
    throw Error(ErrorCode::invalid_argument,
                "dgs::Server: the initial model holds " + std::to_string(*bad) + " at index " +
                    std::to_string(i) + " (tensor " + std::to_string(l) + ", element " +
                    std::to_string(i - model.offset(l)) + "); every value must be finite");
  }

  // The server's model W, the values of the dense reply `weights`.
  float* W() const { return dense_values(weights); }

  float* dense_values(const detail::Buffer& reply) const {
    return reinterpret_cast<float*>(reply.as<unsigned char>() + dense_layout.values_offset);
  }

  // Replicas kept: one per worker (async), one shared (sync), or none where
  // every reply is dense.
  std::uint32_t replica_count() const { return dense_replies ? 0 : sync() ? 1 : config.workers; }

  // Worker k's replica; null where every reply is dense (none is kept).
  float* replica(std::uint32_t k) const {
    if (!replicas) return nullptr;
    if (sync()) return dense_values(replicas);
    return replicas.as<float>() + std::size_t{k} * model.total();
  }

  // The model worker k holds once it applied its last reply: its replica,
  // or where none is kept W, which every reply carried.
  const float* worker_model(std::uint32_t k) const { return replicas ? replica(k) : W(); }

  void* round_slot(std::uint32_t k) const {
    return round_buffers.as<unsigned char>() + std::size_t{k} * push_layout.bytes;
  }

  std::string who(std::uint32_t k) const {
    return "worker " + std::to_string(k) + " (rank " + std::to_string(slots[k].rank) + ")";
  }

  std::size_t live_count() const {
    return static_cast<std::size_t>(
        std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.live; }));
  }

  int worker_of(int rank) const {
    for (std::size_t k = 0; k < slots.size(); ++k) {
      if (slots[k].rank == rank) return static_cast<int>(k);
    }
    return -1;
  }

  void drop(std::uint32_t k, const std::string& why) {
    Slot& s = slots[k];
    if (!s.live) return;
    s.live = false;
    s.pushed = false;
    ++stats.dropped;
    detail::log(LogLevel::warning, "dgs::Server: dropping " + who(k) + ": " + why);
  }

  // A worker's transport failed: a live one is dropped; one that never joined
  // is no longer waited for by run().
  void peer_failed(std::uint32_t k, const std::string& why) {
    Slot& s = slots[k];
    if (s.live || s.joined_once) {
      drop(k, why);
    } else if (!s.given_up) {
      s.given_up = true;
      detail::log(LogLevel::warning, "dgs::Server: " + who(k) + " failed before joining (" + why +
                                         "); the server no longer waits for it");
    }
  }

  // The workers run() still waits for: never joined and not given up on.
  std::vector<std::uint32_t> awaited() const {
    std::vector<std::uint32_t> out;
    for (std::uint32_t k = 0; k < slots.size(); ++k) {
      if (!slots[k].joined_once && !slots[k].given_up) out.push_back(k);
    }
    return out;
  }

  std::size_t joined_count() const {
    return static_cast<std::size_t>(
        std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.joined_once; }));
  }

  std::string who_of(const std::vector<std::uint32_t>& workers) const {
    std::string out;
    for (std::uint32_t k : workers) out += (out.empty() ? "" : ", ") + who(k);
    return out;
  }

  // Sends to a worker; a worker that cannot be reached is dropped. A
  // worker's silence counts from the later of its last message and the last
  // one sent to it: one waiting for its reply (or, in sync mode, for the
  // round) is not silent.
  bool send(std::uint32_t k, const void* buffer, std::size_t bytes) {
    try {
      channel.send(slots[k].rank, buffer, bytes);
      stats.bytes_sent += bytes;
      slots[k].last_heard = Clock::now();  // sent to it: its silence counts from here
      return true;
    } catch (const Error& e) {
      drop(k, e.what());
      return false;
    }
  }

  // A reply head carrying only a header (and, for a rejection, the verdict);
  // `nonce`: the hello's it answers (0 when it answers no hello).
  bool send_head(std::uint32_t k, MessageKind kind, std::uint64_t step, const Verdict* verdict,
                 std::uint8_t nonce = 0) {
    std::vector<unsigned char> head(reply_layout.bytes, 0);
    MessageHeader h = blank_header();
    h.kind = kind;
    h.layout = reply_layout.payload;
    h.value_type = reply_layout.value_type;
    h.index_type = reply_layout.index_type;
    h.sender = host::kServerSender;
    h.model_size = model.total();
    h.capacity = reply_layout.capacity;
    h.step = step;
    h.model_version = version;
    h.nonce = nonce;
    // The answer to a hello carries the job's first positive lr (that of
    // the first push that had one), the lr_first of lr_proportional, which a
    // worker that has not pushed yet takes (a late joiner's first lr is
    // the job's lr of then, not its start).
    if (nonce != 0) h.lr = first_lr;
    write_header(head.data(), h);
    if (verdict != nullptr) write_reject_verdict(head.data(), *verdict);
    backend->upload(reply_buffer.data(), head.data(), head.size(), options.stream);
    return send(k, reply_buffer.data(), reply_layout.bytes);
  }

  // Rejects the message `h` from worker k (echoing a hello's nonce).
  void reject(std::uint32_t k, const Verdict& verdict, const MessageHeader& h) {
    ++stats.rejected[static_cast<std::size_t>(verdict.reason)];
    detail::log(LogLevel::warning, "dgs::Server: " + verdict.describe(k));
    send_head(k, MessageKind::reject, h.step, &verdict,
              h.kind == MessageKind::hello ? h.nonce : std::uint8_t{0});
  }

  // Makes `reply` (W's buffer, or the shared replica's for a sync joiner)
  // a dense reply to worker k; `replica_to_set`, when given, becomes a copy
  // of the model it holds.
  void write_dense(std::uint32_t k, const detail::Buffer& reply, float* replica_to_set,
                   std::uint64_t step) {
    host::ReplyInfo info;
    info.step = step;
    info.model_version = version;
    kernels->dense_reply(reply.data(), replica_to_set, info, options.stream);
    slots[k].last_dense_version = version;
    slots[k].replied_version = version;
  }

  // Sends a dense reply, announced by a head of the sparse reply's size.
  void send_dense(std::uint32_t k, std::uint64_t step, const detail::Buffer& reply,
                  std::uint8_t nonce = 0) {
    // Counted once sent: a worker that cannot be reached is dropped instead.
    if (send_head(k, MessageKind::dense_reply, step, nullptr, nonce) &&
        send(k, reply.data(), dense_layout.bytes))
      ++stats.dense_replies;
  }

  void notify(std::uint32_t k) {
    if (options.on_reply) {
      backend->synchronize(options.stream);
      options.on_reply(k, version, worker_model(k));
    }
  }

  // Checks the header fields the kernels cannot know: that the sender is the
  // transport peer, and that only joined workers push.
  Verdict check_sender(std::uint32_t k, const MessageHeader& h) const {
    Verdict v;
    if (h.sender != k) {
      v.reason = RejectReason::sender;
      v.value = h.sender;
      v.expected = k;
    } else if (h.kind == MessageKind::push && !slots[k].live) {
      v.reason = RejectReason::kind;
      v.value = static_cast<std::uint64_t>(MessageKind::push);
      v.expected = static_cast<std::uint64_t>(MessageKind::hello);
    } else if (h.kind == MessageKind::push && slots[k].replied_version != kUnknown &&
               h.model_version != slots[k].replied_version) {
      // Its model is not the replica the server keeps for it: replies would
      // then move the two apart for good.
      v.reason = RejectReason::model_version;
      v.value = h.model_version;
      v.expected = slots[k].replied_version;
    } else if (h.kind == MessageKind::push && sync() && h.step != version) {
      // The workers of a round push the same step (a joiner takes the round's
      // number from its answer), so randk and rbgs choose the same
      // coordinates on every worker and warm-up schedules agree.
      v.reason = RejectReason::round;
      v.value = h.step;
      v.expected = version;
    }
    return v;
  }

  // Receives one message; returns the worker it came from, or -1.
  int receive(std::chrono::milliseconds timeout, MessageHeader& header, Verdict& verdict) {
    // A first look that finds nothing tells that nothing was waiting from
    // anyone at that moment (how long a receive took would not: a large
    // message takes long to come in); so does a receive that times out.
    Receipt r = channel.recv_any(peers, receive_buffer.data(), push_layout.bytes,
                                 std::chrono::milliseconds(0));
    if (r.status == Receipt::Status::timeout) {
      quiet_at = Clock::now();
      r = channel.recv_any(peers, receive_buffer.data(), push_layout.bytes, timeout);
      if (r.status == Receipt::Status::timeout) quiet_at = Clock::now();
    }
    if (r.status == Receipt::Status::timeout) return -1;
    const int k = worker_of(r.peer);
    if (r.status == Receipt::Status::peer_failed) {
      if (k >= 0) peer_failed(static_cast<std::uint32_t>(k), r.error);
      return -1;
    }
    stats.bytes_received += r.bytes;
    slots[k].last_heard = Clock::now();
    verdict = kernels->validate(receive_buffer.data(), r.bytes, header, options.stream);
    if (verdict.ok()) verdict = check_sender(static_cast<std::uint32_t>(k), header);
    return k;
  }

  // Drops the live workers silent for longer than worker_timeout as of the
  // last moment nothing was waiting from anyone (quiet_at). Judged against
  // the clock instead, a server kept busy (a slow on_reply, a save, a large
  // apply) dropped workers whose pushes were waiting behind others'.
  void check_timeouts() {
    if (options.worker_timeout.count() == 0) return;
    for (std::uint32_t k = 0; k < slots.size(); ++k) {
      if (!slots[k].live || quiet_at <= slots[k].last_heard ||
          !detail::longer_than(quiet_at - slots[k].last_heard, options.worker_timeout))
        continue;
      if (sync() && slots[k].pushed) continue;  // waiting for the others, not for it
      drop(k, "not heard from for " + std::to_string(options.worker_timeout.count()) + " ms");
    }
  }

  void join(std::uint32_t k, std::uint64_t step, std::uint8_t nonce) {
    Slot& s = slots[k];
    const bool rejoin = s.live;
    s.live = true;
    s.joined_once = true;
    s.pushed = false;
    ++stats.joins;
    detail::log(LogLevel::info, "dgs::Server: " + who(k) + (rejoin ? " rejoined" : " joined") +
                                    " at version " + std::to_string(version));
    // A sync joiner gets the shared replica (what every worker holds), so the
    // round's common reply keeps it equal to the others.
    const detail::Buffer& reply = sync() && replicas ? replicas : weights;
    write_dense(k, reply, sync() ? nullptr : replica(k), step);
    notify(k);
    send_dense(k, step, reply, nonce);
  }

  void note_lr(const MessageHeader& h) {
    if (!(first_lr > 0.0f) && std::isfinite(h.lr) && h.lr > 0.0f) first_lr = h.lr;
  }

  void leave(std::uint32_t k) {
    if (!slots[k].live) return;
    slots[k].live = false;
    slots[k].pushed = false;
    ++stats.leaves;
    detail::log(LogLevel::info, "dgs::Server: " + who(k) + " left");
  }

  bool serve_async(std::chrono::milliseconds timeout) {
    MessageHeader h = blank_header();
    Verdict verdict;
    const int w = receive(timeout, h, verdict);
    check_timeouts();
    if (w < 0) return false;
    const auto k = static_cast<std::uint32_t>(w);
    if (!verdict.ok()) {
      reject(k, verdict, h);
      return true;
    }
    switch (h.kind) {
      case MessageKind::hello:
        join(k, h.step, h.nonce);
        break;
      case MessageKind::bye:
        leave(k);
        break;
      case MessageKind::push: {
        note_lr(h);
        const std::uint64_t staleness = h.model_version <= version ? version - h.model_version : 0;
        ++stats.staleness[staleness_bucket(staleness)];
        kernels->apply(receive_buffer.data(), h, W(), options.stream);
        ++version;
        ++stats.pushes;
        const bool stale = options.staleness_bound > 0 && staleness > options.staleness_bound;
        const bool periodic =
            options.sync_period > 0 && version - slots[k].last_dense_version >= options.sync_period;
        if (dense_replies || stale || periodic) {
          if (stale && !dense_replies && !periodic) ++stats.stale_refreshes;
          write_dense(k, weights, replica(k), h.step);
          notify(k);
          send_dense(k, h.step, weights);
        } else {
          host::ReplyInfo info;
          info.step = h.step;
          info.model_version = version;
          kernels->sparse_reply(W(), replica(k), info, reply_buffer.data(), options.stream);
          slots[k].replied_version = version;
          notify(k);
          if (send(k, reply_buffer.data(), reply_layout.bytes)) ++stats.sparse_replies;
        }
        break;
      }
      default:
        break;  // validation admits only push, hello and bye
    }
    return true;
  }

  bool round_complete() const {
    bool any = false;
    for (const Slot& s : slots) {
      if (s.live && !s.pushed) return false;
      any = any || s.pushed;
    }
    return any;
  }

  bool round_started() const {
    return std::any_of(slots.begin(), slots.end(), [](const Slot& s) { return s.pushed; });
  }

  void complete_round() {
    held.clear();
    for (std::uint32_t k = 0; k < slots.size(); ++k) {  // worker-id order
      if (slots[k].pushed) held.push_back({round_slot(k), slots[k].held});
    }
    const auto contributors = static_cast<std::uint32_t>(held.size());
    kernels->apply_round(held.data(), contributors, W(), options.stream);
    ++version;
    ++stats.rounds;
    stats.pushes += contributors;
    stats.staleness[0] += contributors;
    const bool periodic = options.sync_period > 0 && stats.rounds % options.sync_period == 0;
    const bool dense = dense_replies || periodic;
    host::ReplyInfo info;
    info.model_version = version;
    if (dense) {
      kernels->dense_reply(weights.data(), replica(0), info, options.stream);
    } else {
      kernels->sparse_reply(W(), replica(0), info, reply_buffer.data(), options.stream);
    }
    // The same reply goes to everyone; only the echoed step differs, so its
    // header is read once and rewritten for each.
    void* reply = dense ? weights.data() : reply_buffer.data();
    unsigned char bytes[kHeaderBytes];
    backend->download(bytes, reply, kHeaderBytes, options.stream);
    MessageHeader h = read_header(bytes);
    for (std::uint32_t k = 0; k < slots.size(); ++k) {
      Slot& s = slots[k];
      if (!s.pushed) continue;
      s.pushed = false;
      s.replied_version = h.model_version;
      h.step = s.held.step;
      write_header(bytes, h);
      backend->upload(reply, bytes, kHeaderBytes, options.stream);
      notify(k);
      if (dense) {
        s.last_dense_version = version;
        send_dense(k, s.held.step, weights);
      } else if (send(k, reply_buffer.data(), reply_layout.bytes)) {
        ++stats.sparse_replies;
      }
    }
  }

  bool serve_sync(std::chrono::milliseconds timeout) {
    const auto deadline = detail::deadline_after(timeout);
    for (;;) {
      if (round_complete()) {
        complete_round();
        return true;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      MessageHeader h = blank_header();
      Verdict verdict;
      const int w = receive(std::min(left, kPoll), h, verdict);
      check_timeouts();
      if (w < 0) continue;
      const auto k = static_cast<std::uint32_t>(w);
      Slot& s = slots[k];
      if (verdict.ok() && h.kind == MessageKind::push && s.pushed) {
        verdict.reason = RejectReason::kind;  // a second push in one round
        verdict.value = static_cast<std::uint64_t>(MessageKind::push);
        verdict.expected = static_cast<std::uint64_t>(MessageKind::hello);
      }
      if (!verdict.ok()) {
        // Its model no longer matches the shared replica: it must rejoin.
        reject(k, verdict, h);
        if (s.live) drop(k, "its push was rejected; it must join again");
        continue;
      }
      switch (h.kind) {
        case MessageKind::hello:
          join(k, h.step, h.nonce);
          if (!round_started()) return true;
          break;
        case MessageKind::bye:
          leave(k);
          if (!round_started()) return true;
          break;
        case MessageKind::push:
          backend->copy(round_slot(k), receive_buffer.data(), push_layout.bytes, options.stream);
          s.pushed = true;
          s.held = h;
          note_lr(h);
          break;
        default:
          break;
      }
    }
  }

  Config config;
  Segments model;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Transport> transport;
  ServerOptions options;
  MessageLayout push_layout, reply_layout, dense_layout;
  bool dense_replies;
  detail::Channel channel;
  std::unique_ptr<detail::ServerKernels> kernels;
  // weights: W inside a dense reply (W()); replicas: see replica()
  detail::Buffer weights, replicas, receive_buffer, round_buffers, reply_buffer;
  std::vector<Slot> slots;
  std::vector<host::RoundPush> held;  // a sync round's pushes, in worker-id order
  std::vector<int> peers;
  std::uint64_t version = 0;
  float first_lr = 0.0f;  // the first positive lr a push carried (0: none yet)
  ServerStats stats;
  // The last time a receive found no message waiting (see receive()).
  Clock::time_point quiet_at{};
};

Server::Server(const Config& config, const Segments& model, std::shared_ptr<Backend> backend,
               std::shared_ptr<Transport> transport, const float* initial_model,
               ServerOptions options) {
  if (!backend || !transport) {
    throw Error(ErrorCode::invalid_argument, "dgs::Server: backend and transport are required");
  }
  impl_ = std::make_unique<Impl>(config, model, std::move(backend), std::move(transport),
                                 initial_model, std::move(options));
}

Server::~Server() = default;

bool Server::serve_one(std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  return s.sync() ? s.serve_sync(timeout) : s.serve_async(timeout);
}

void Server::run() {
  Impl& s = *impl_;
  const auto start = Clock::now();
  const std::string limit = std::to_string(s.options.join_timeout.count()) + " ms";
  bool told_waiting = false;
  for (;;) {
    serve_one(kPoll);
    std::vector<std::uint32_t> awaited = s.awaited();
    if (!awaited.empty() && detail::longer_than(Clock::now() - start, s.options.join_timeout)) {
      if (s.joined_count() == 0) {
        throw Error(ErrorCode::timeout, "dgs::Server: no worker joined within " + limit +
                                            " (ServerOptions::join_timeout)");
      }
      const char* them = awaited.size() == 1 ? "it" : "them";
      detail::log(LogLevel::warning, "dgs::Server: " + s.who_of(awaited) + " did not join within " +
                                         limit + "; the server no longer waits for " + them);
      for (std::uint32_t k : awaited) s.slots[k].given_up = true;
      awaited.clear();
    }
    if (s.live_count() > 0) continue;
    if (awaited.empty()) return;
    if (!told_waiting && s.joined_count() > 0) {
      told_waiting = true;
      detail::log(LogLevel::info, "dgs::Server: every worker that joined has left; waiting for " +
                                      s.who_of(awaited) + " to join (at most " + limit +
                                      " after run() began)");
    }
  }
}

std::size_t Server::live_workers() const noexcept {
  return impl_->live_count();
}
std::size_t Server::joined_workers() const noexcept {
  return impl_->joined_count();
}
bool Server::is_live(std::uint32_t worker) const noexcept {
  return worker < impl_->slots.size() && impl_->slots[worker].live;
}
std::uint64_t Server::version() const noexcept {
  return impl_->version;
}
const ServerStats& Server::stats() const noexcept {
  return impl_->stats;
}

void Server::copy_model(float* out) const {
  const Impl& s = *impl_;
  s.backend->download(out, s.W(), s.model.total() * sizeof(float), s.options.stream);
}

namespace {

std::vector<std::uint64_t> server_fingerprint(const Config& c, const Segments& model) {
  return {model.total(),
          model.count(),
          static_cast<std::uint64_t>(c.method),
          static_cast<std::uint64_t>(c.compressor),
          static_cast<std::uint64_t>(c.mode),
          c.workers,
          encode_ratio(c.max_ratio()),
          encode_ratio(c.reply_ratio()),
          static_cast<std::uint64_t>(c.wire_values),
          detail::fnv1a64(model.sizes().data(), model.sizes().size() * 8)};
}

}  // namespace

void Server::save(const std::string& path) const {
  const Impl& s = *impl_;
  if (s.sync() && s.round_started()) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::Server::save: a round is in progress; save between rounds");
  }
  detail::CheckpointWriter out("server");
  const auto f = server_fingerprint(s.config, s.model);
  out.add("fingerprint", f.data(), f.size() * 8);
  const std::string settings = detail::config_settings(s.config);
  out.add("settings", settings.data(), settings.size());
  out.add_u64("version", s.version);
  out.add("first_lr", &s.first_lr, sizeof s.first_lr);
  const std::size_t floats = s.model.total() * sizeof(float);
  std::vector<unsigned char> host(floats);
  s.backend->download(host.data(), s.W(), floats, s.options.stream);
  out.add("weights", host.data(), host.size());
  if (s.replicas) {  // none where every reply is dense
    host.resize(floats * s.replica_count());
    s.backend->download(host.data(), s.replica(0), host.size(), s.options.stream);
    out.add("replicas", host.data(), host.size());
  }
  std::vector<std::uint64_t> live, joined, dense_at, replied;
  for (const auto& slot : s.slots) {
    live.push_back(slot.live);
    joined.push_back(slot.joined_once);
    dense_at.push_back(slot.last_dense_version);
    replied.push_back(slot.replied_version);
  }
  out.add("live", live.data(), live.size() * 8);
  out.add("joined", joined.data(), joined.size() * 8);
  out.add("last_dense_version", dense_at.data(), dense_at.size() * 8);
  out.add("replied_version", replied.data(), replied.size() * 8);
  std::vector<std::uint64_t> counters = {s.stats.pushes,         s.stats.rounds,
                                         s.stats.joins,          s.stats.leaves,
                                         s.stats.dropped,        s.stats.sparse_replies,
                                         s.stats.dense_replies,  s.stats.stale_refreshes,
                                         s.stats.bytes_received, s.stats.bytes_sent};
  counters.insert(counters.end(), s.stats.rejected.begin(), s.stats.rejected.end());
  counters.insert(counters.end(), s.stats.staleness.begin(), s.stats.staleness.end());
  out.add("stats", counters.data(), counters.size() * 8);
  out.write(path);
}

void Server::restore(const std::string& path) {
  Impl& s = *impl_;
  if (s.sync() && s.round_started()) {
    throw Error(ErrorCode::invalid_argument, "dgs::Server::restore: a round is in progress");
  }
  const detail::CheckpointReader in(path, "server");
  const auto f = server_fingerprint(s.config, s.model);
  const auto& got = in.section("fingerprint");
  if (got.size() != f.size() * 8 || std::memcmp(got.data(), f.data(), got.size()) != 0) {
    throw Error(ErrorCode::io,
                "dgs checkpoint " + path + ": written for another model or configuration");
  }
  detail::check_settings(in, s.config, path);
  const std::size_t floats = s.model.total() * sizeof(float);
  std::vector<unsigned char> weights(floats), replicas(floats * s.replica_count());
  in.read("weights", weights.data(), weights.size());
  // A server that keeps no replicas (every reply dense) ignores those of an
  // older file, which kept them.
  if (s.replicas) in.read("replicas", replicas.data(), replicas.size());
  std::vector<std::uint64_t> live(s.slots.size()), joined(s.slots.size()), dense_at(s.slots.size());
  in.read("live", live.data(), live.size() * 8);
  if (in.has("joined")) {
    in.read("joined", joined.data(), joined.size() * 8);
  } else {
    // Written before the server kept who joined: it kept whether anyone had,
    // and run() waited for no one else then.
    std::fill(joined.begin(), joined.end(), in.u64("ever_joined"));
  }
  in.read("last_dense_version", dense_at.data(), dense_at.size() * 8);
  // Older files did not keep it: the next pushes are taken as they come.
  std::vector<std::uint64_t> replied(s.slots.size(), Impl::kUnknown);
  if (in.has("replied_version")) in.read("replied_version", replied.data(), replied.size() * 8);
  ServerStats stats;
  std::vector<std::uint64_t> counters(10 + stats.rejected.size() + stats.staleness.size());
  in.read("stats", counters.data(), counters.size() * 8);
  const std::uint64_t version = in.u64("version");
  float first_lr = 0.0f;  // older files: none known, the next push's is taken
  if (in.has("first_lr")) in.read("first_lr", &first_lr, sizeof first_lr);
  // Everything was read and checked: now change the state.
  s.backend->upload(s.W(), weights.data(), weights.size(), s.options.stream);
  if (s.replicas) {
    s.backend->upload(s.replica(0), replicas.data(), replicas.size(), s.options.stream);
  }
  for (std::size_t k = 0; k < s.slots.size(); ++k) {
    s.slots[k].live = live[k] != 0;
    s.slots[k].joined_once = joined[k] != 0 || live[k] != 0;
    s.slots[k].given_up = false;
    s.slots[k].pushed = false;
    s.slots[k].last_dense_version = dense_at[k];
    s.slots[k].replied_version = replied[k];
    s.slots[k].last_heard = Clock::now();
  }
  s.version = version;
  s.first_lr = first_lr;
  std::uint64_t* fields[] = {&stats.pushes,        &stats.rounds,          &stats.joins,
                             &stats.leaves,        &stats.dropped,         &stats.sparse_replies,
                             &stats.dense_replies, &stats.stale_refreshes, &stats.bytes_received,
                             &stats.bytes_sent};
  for (std::size_t i = 0; i < 10; ++i) *fields[i] = counters[i];
  std::copy(counters.begin() + 10, counters.begin() + 10 + stats.rejected.size(),
            stats.rejected.begin());
  std::copy(counters.begin() + 10 + stats.rejected.size(), counters.end(), stats.staleness.begin());
  s.stats = stats;
}

}  // namespace dgs
