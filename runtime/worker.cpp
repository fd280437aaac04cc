#include "dgs/worker.h"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <string>

#include "dgs/error.h"
#include "runtime/backend.h"
#include "runtime/channel.h"
#include "runtime/checkpoint.h"
#include "runtime/log.h"

namespace dgs {

// Checkpoints hold WorkerStats as its bytes; `pushes` came last, after the
// eleven counters files written before it hold.
static_assert(offsetof(WorkerStats, pushes) == 11 * sizeof(std::uint64_t) &&
                  sizeof(WorkerStats) == 12 * sizeof(std::uint64_t),
              "WorkerStats: new fields go last, and restore() must read older files");

double WorkerStats::effective_density() const noexcept {
  return pushes == 0 || model_size == 0
             ? 0.0
             : static_cast<double>(entries_pushed) / (static_cast<double>(pushes) * model_size);
}

std::uint64_t WorkerStats::dense_bytes() const noexcept {
  return pushes * model_size * 4;
}

struct Worker::Impl {
  Impl(const Config& cfg, const Segments& m, std::shared_ptr<Backend> b,
       std::shared_ptr<Transport> t, float* w, WorkerOptions o)
      : config((cfg.validate(), cfg)),  // first: the layouts below trust it
        model(m),
        segments(selection_segments(m, cfg)),
        backend(std::move(b)),
        transport(std::move(t)),
        weights(w),
        options(o),
        push_layout(dgs::push_layout(m, cfg)),
        reply_layout(sparse_reply_layout(m, cfg)),
        dense_layout(dense_reply_layout(m)),
        channel(*backend, *transport, o.stream) {
    backend->check_pointer(weights, "dgs::Worker: the weights");
    if (options.id >= config.workers) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs::Worker: id " + std::to_string(options.id) +
                      " is not below Config::workers = " + std::to_string(config.workers));
    }
    const std::uint64_t p = model.total();
    const std::size_t floats = p * sizeof(float);
    Backend& be = *backend;
    switch (config.method) {
      case Method::gd:
      case Method::gmc:
      case Method::gmc_plus:
        residual = detail::Buffer(be, floats);
        break;
      case Method::dgc:
        momentum = detail::Buffer(be, floats);
        accumulator = detail::Buffer(be, floats);
        break;
      case Method::samomentum:
        momentum = detail::Buffer(be, floats);
        mask = detail::Buffer(be, host::mask_words(p) * sizeof(std::uint32_t));
        break;
      case Method::dense:
        break;
    }
    zero_state();
    if (config.method == Method::gmc_plus) evaluation = detail::Buffer(be, floats);
    push_buffer = detail::Buffer(be, push_layout.bytes);
    reply_buffer = detail::Buffer(be, reply_layout.bytes);
    be.zero(push_buffer.data(), push_buffer.bytes(), options.stream);
    kernels = be.worker_kernels(segments, push_layout, config);
    // Dense replies lie in the selection's workspace where the kernels lend
    // room there (it holds nothing between steps); for the dense method, in
    // the push buffer where it is as large (float32 wire values), as a push
    // has been sent (sends return once their buffer may be reused) before
    // its reply arrives, and the next push is written after the reply is
    // applied; else in a buffer of their own.
    dense_reply = kernels->dense_reply_room();
    if (dense_reply == nullptr && config.method == Method::dense &&
        push_layout.bytes >= dense_layout.bytes) {
      dense_reply = push_buffer.data();
    }
    if (dense_reply == nullptr) {
      dense_buffer = detail::Buffer(be, dense_layout.bytes);
      dense_reply = dense_buffer.data();
    }
    // The first step's plan (its ratio does not depend on the learning
    // rate), made with the workspace, so that the first step allocates
    // nothing; push() makes another only when the ratio changes.
    if (config.method != Method::dense) use_plan(encode_ratio(config.ratio_at(0, 1.0f, 1.0f)));
    beta = config.mode == Mode::sync ? config.momentum
                                     : config.momentum / static_cast<float>(config.workers);
    stats.model_size = p;
  }

  // The method's state (residual, momentum, accumulator, mask) becomes zero.
  void zero_state() {
    for (detail::Buffer* state_buffer : {&residual, &momentum, &accumulator, &mask}) {
      if (*state_buffer) backend->zero(state_buffer->data(), state_buffer->bytes(), options.stream);
    }
  }

  // The push plan at `ratio_code` becomes the kernels' (on the worker's stream).
  void use_plan(std::uint32_t ratio_code) {
    plan = push_plan(segments, config, ratio_code);
    kernels->set_plan(plan, options.stream);
    plan_set = true;
  }

  bool global_momentum() const {
    return config.method == Method::gmc || config.method == Method::gmc_plus;
  }

  std::string who() const {
    return "dgs::Worker " + std::to_string(options.id) + " (rank " +
           std::to_string(transport->rank()) + ")";
  }

  host::WorkerState state() const {
    host::WorkerState s;
    s.residual = residual.as<float>();
    s.momentum = momentum.as<float>();
    s.accumulator = accumulator.as<float>();
    s.mask = mask.as<std::uint32_t>();
    return s;
  }

  MessageHeader header_of(const detail::Buffer& buffer) const {
    unsigned char bytes[kHeaderBytes];
    backend->download(bytes, buffer.data(), kHeaderBytes, options.stream);
    return read_header(bytes);
  }

  void send_control(MessageKind kind) {
    MessageHeader h = blank_header();
    h.kind = kind;
    h.layout = push_layout.payload;
    h.compressor = config.compressor;
    h.value_type = push_layout.value_type;
    h.index_type = push_layout.index_type;
    h.sender = options.id;
    h.model_size = push_layout.model_size;
    h.capacity = push_layout.capacity;
    h.step = step;
    h.model_version = model_version;
    if (kind == MessageKind::hello) h.nonce = join_nonce;
    unsigned char bytes[kHeaderBytes];
    write_header(bytes, h);
    backend->upload(push_buffer.data(), bytes, kHeaderBytes, options.stream);
    channel.send(options.server_rank, push_buffer.data(), push_layout.bytes);
    stats.bytes_pushed += push_layout.bytes;
  }

  // Returns false only when `joining` and what came is a dense model left
  // from before the hello (a finish() that timed out after its head), which
  // is dropped.
  bool receive(void* buffer, std::size_t bytes, const char* what, bool joining = false) {
    const Receipt r = channel.recv(options.server_rank, buffer, bytes, options.timeout);
    switch (r.status) {
      case Receipt::Status::timeout:
        throw Error(ErrorCode::timeout, who() + ": no " + what + " from the server (rank " +
                                            std::to_string(options.server_rank) + ") within " +
                                            std::to_string(options.timeout.count()) + " ms");
      case Receipt::Status::peer_failed:
        throw Error(ErrorCode::transport, who() + ": the server (rank " +
                                              std::to_string(options.server_rank) +
                                              ") is gone: " + r.error);
      case Receipt::Status::message:
        break;
    }
    if (r.bytes != bytes && joining && r.bytes == dense_layout.bytes) {
      stats.bytes_pulled += r.bytes;
      detail::log(LogLevel::warning, who() + ": joining, dropped a late dense model of the server");
      return false;
    }
    if (r.bytes != bytes) {
      // A server of another config sizes its replies otherwise; when what
      // came is its rejection, say why it rejected.
      std::string why;
      if (r.bytes >= kHeaderBytes + 32 && r.bytes < bytes) {
        unsigned char head[kHeaderBytes + 32];
        backend->download(head, buffer, sizeof head, options.stream);
        const MessageHeader h = read_header(head);
        if (h.magic == kMessageMagic && h.kind == MessageKind::reject) {
          why = "; it is a rejection: " + read_reject_verdict(head).describe(options.id);
        }
      }
      throw Error(ErrorCode::invalid_message,
                  who() + ": a " + what + " of " + std::to_string(r.bytes) + " bytes, expected " +
                      std::to_string(bytes) + " (the server's config differs?)" + why);
    }
    stats.bytes_pulled += bytes;
    return true;
  }

  // The next reply head, checked to be a dgs message for this model.
  // `joining`: a late dense model before it is dropped.
  MessageHeader receive_head(bool joining = false) {
    while (!receive(reply_buffer.data(), reply_layout.bytes, "reply", joining)) {
    }
    const MessageHeader h = header_of(reply_buffer);
    if (h.magic != kMessageMagic || h.version != kWireVersion || h.model_size != model.total()) {
      throw Error(ErrorCode::invalid_message,
                  who() + ": the reply is not a dgs message for this model (magic " +
                      std::to_string(h.magic) + ", model_size " + std::to_string(h.model_size) +
                      ")");
    }
    return h;
  }

  // Before the answer to a hello may come replies to this worker's earlier
  // messages: to a push whose finish() timed out and was answered late, to
  // an earlier hello whose join() timed out, or sent to this rank's previous
  // process. Each is a reply to a step before the hello's, or sparse (a
  // hello is answered densely or rejected), or a dense reply without this
  // hello's nonce, or the dense model of a reply whose head a timed-out
  // finish() read. They are read and dropped, a dense one with its model,
  // and logged; the answer to the hello follows them (the server answers
  // one worker in order). Returns the head of that answer.
  MessageHeader receive_hello_answer() {
    for (;;) {
      const MessageHeader h = receive_head(true);
      const bool answers_it =
          (h.kind == MessageKind::reject || h.kind == MessageKind::dense_reply) &&
          h.nonce == join_nonce;
      if (h.step >= step && answers_it) return h;
      if (h.kind == MessageKind::dense_reply) {
        receive(dense_reply, dense_layout.bytes, "dense model");
      }
      detail::log(LogLevel::warning,
                  who() + ": joining, dropped a late reply of the server (kind " +
                      std::to_string(int(h.kind)) + ", to step " + std::to_string(h.step) +
                      "; the hello carries step " + std::to_string(step) + ")");
    }
  }

  // Receives the reply (head, and the dense model when announced) and applies it.
  void receive_reply(bool answers_hello) {
    const MessageHeader h = answers_hello ? receive_hello_answer() : receive_head();
    // Every reply echoes the step of the message it answers: a hello carries
    // the step to come, a push the step just taken.
    const std::uint64_t answered = answers_hello ? step : step - 1;
    if (h.step != answered || (!answers_hello && h.nonce != 0)) {
      throw Error(ErrorCode::invalid_message,
                  who() + ": the server's reply answers step " + std::to_string(h.step) +
                      (h.nonce != 0 && !answers_hello ? " (a hello's answer)" : "") +
                      ", not step " + std::to_string(answered) + " (this worker's last message)");
    }
    switch (h.kind) {
      case MessageKind::sparse_reply:
        kernels->apply_reply(reply_buffer.data(), reply_layout, weights, false, options.stream);
        last_reply_dense = false;
        ++stats.sparse_replies;
        break;
      case MessageKind::dense_reply:
        // Into the selection's workspace, maybe: reading the head above
        // waited for the stream, so the step that used it has finished.
        receive(dense_reply, dense_layout.bytes, "dense model");
        kernels->apply_reply(dense_reply, dense_layout, weights,
                             global_momentum() && !answers_hello, options.stream);
        last_reply_dense = true;
        ++stats.dense_replies;
        break;
      case MessageKind::reject: {
        unsigned char bytes[kHeaderBytes + 32];
        backend->download(bytes, reply_buffer.data(), sizeof bytes, options.stream);
        const Verdict verdict = read_reject_verdict(bytes);
        std::string then;
        if (!answers_hello && verdict.reason == RejectReason::value) {
          // A NaN or infinity in the gradient is in the method's state too
          // (samomentum keeps the momentum of what it sent, and what was not
          // sent stays): every later push would carry it.
          state_not_finite = true;
          rejoin_reason = "the server rejected a value that is not finite";
          then =
              " (a NaN or infinity in the gradient reached this worker's state: join() again, "
              "which clears it)";
        } else if (!answers_hello && verdict.reason == RejectReason::model_version) {
          rejoin_reason = "the server rejected a push from another model than its replica";
          then = " (join() again to take the server's model)";
        } else if (!answers_hello && config.mode == Mode::sync) {
          rejoin_reason = "the sync server rejected a push and dropped this worker";
          then = " (the server dropped this worker: join() again)";
        } else if (!answers_hello) {
          // The push's entries left this worker's state when it was made
          // (gd's residual, dgc's accumulator were zeroed there): the update
          // is lost, and a server that refuses this worker's pushes (it was
          // dropped, or restored without it) refuses the next ones too.
          rejoin_reason = "the server rejected a push";
          then = " (its update is lost; join() again)";
        }
        rejected = true;
        throw Error(ErrorCode::invalid_message, who() + ": the server rejected step " +
                                                    std::to_string(h.step) + ": " +
                                                    verdict.describe(options.id) + then);
      }
      default:
        throw Error(ErrorCode::invalid_message, who() + ": unexpected message kind " +
                                                    std::to_string(int(h.kind)) +
                                                    " from the server");
    }
    // The answer to a hello is the starting model, not a step: no momentum.
    fold_pending = global_momentum() && !answers_hello;
    model_version = h.model_version;
    // It also carries the job's first positive lr (0 when no push had one):
    // a worker that has not pushed yet scales its lr_proportional ratio by it.
    if (answers_hello && !(first_lr > 0.0f) && std::isfinite(h.lr) && h.lr > 0.0f) first_lr = h.lr;
  }

  // The last reply received, and its layout.
  void* last_reply() const { return last_reply_dense ? dense_reply : reply_buffer.data(); }
  const MessageLayout& last_reply_layout() const {
    return last_reply_dense ? dense_layout : reply_layout;
  }

  // Set by receive_reply when what came was the server's rejection.
  bool rejected = false;
  // The nonce of the last hello (1 to 255), which the answer to it echoes;
  // each join() takes the next. It starts at random, so that a process
  // restarted on a rank rarely takes its predecessor's answers for its own.
  std::uint8_t join_nonce = static_cast<std::uint8_t>(std::random_device{}() % 255 + 1);
  // Why push() must wait for a join(): empty when it need not.
  std::string rejoin_reason;
  // A push was rejected for a value that is not finite: join() clears the state.
  bool state_not_finite = false;
  // A join() or finish() failed without the server's answer: it may still
  // come, so push() and save() wait for a join() (which drops it).
  bool reply_in_flight = false;

  // Why push() and save() must wait for a join(), or "" when they need not.
  std::string join_needed() const {
    if (!rejoin_reason.empty()) return rejoin_reason;
    if (reply_in_flight) return "a join() or finish() that failed (the server may still answer it)";
    return "";
  }

  void require(bool ok, const std::string& what) const {
    if (!ok) throw Error(ErrorCode::invalid_argument, who() + ": " + what);
  }

  Config config;
  Segments model;
  Segments segments;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Transport> transport;
  float* weights;
  WorkerOptions options;
  MessageLayout push_layout, reply_layout, dense_layout;
  detail::Channel channel;
  std::unique_ptr<detail::WorkerKernels> kernels;
  detail::Buffer residual, momentum, accumulator, mask, evaluation;
  detail::Buffer push_buffer, reply_buffer;
  detail::Buffer dense_buffer;  // only where the kernels lend no room
  void* dense_reply = nullptr;  // where dense replies are received
  SelectionPlan plan;
  bool plan_set = false;
  float beta = 0.0f;

  std::uint64_t step = 0;
  float first_lr = 0.0f;
  std::uint64_t model_version = 0;
  std::uint64_t pushed_version = 0;
  bool joined = false;
  bool awaiting_reply = false;
  bool fold_pending = false;
  bool last_reply_dense = false;
  WorkerStats stats;
};

Worker::Worker(const Config& config, const Segments& model, std::shared_ptr<Backend> backend,
               std::shared_ptr<Transport> transport, float* weights, WorkerOptions options) {
  if (!backend || !transport) {
    throw Error(ErrorCode::invalid_argument, "dgs::Worker: backend and transport are required");
  }
  impl_ = std::make_unique<Impl>(config, model, std::move(backend), std::move(transport), weights,
                                 options);
}

Worker::~Worker() = default;

void Worker::join() {
  Impl& w = *impl_;
  w.require(!w.awaiting_reply, "join() while a step is waiting for its reply");
  w.join_nonce = static_cast<std::uint8_t>(w.join_nonce % 255 + 1);
  // Until its answer is in, the hello may still be answered: a join() that
  // fails leaves push() refusing, as a failed finish() does.
  w.reply_in_flight = true;  // until the answer is in
  w.send_control(MessageKind::hello);
  w.receive_reply(true);
  w.reply_in_flight = false;
  // A sync worker's steps are the rounds (the server's versions), whenever
  // it joined: the workers of a round then draw the same randk and rbgs
  // coordinates and are at the same point of a ratio schedule.
  if (w.config.mode == Mode::sync) w.step = w.model_version;
  w.joined = true;
  w.rejoin_reason.clear();
  if (w.state_not_finite) {
    w.zero_state();
    w.state_not_finite = false;
    detail::log(LogLevel::warning,
                w.who() + ": rejoined after a push with a value that is not finite; its " +
                    "momentum/residual were cleared");
  }
  detail::log(LogLevel::info,
              w.who() + " joined at model version " + std::to_string(w.model_version));
}

void Worker::push(const float* grad, float lr) {
  Impl& w = *impl_;
  w.require(w.joined, "push() before join()");
  w.require(!w.awaiting_reply, "push() twice without finish()");
  const std::string wait_for_join = w.join_needed();
  w.require(wait_for_join.empty(), "push() after " + wait_for_join + ": join() again first");
  w.backend->check_pointer(grad, "dgs::Worker::push: the gradient");
  if (!(std::isfinite(lr) && lr >= 0.0f)) {
    throw Error(ErrorCode::invalid_argument,
                w.who() + ": push() with lr = " + std::to_string(lr) +
                    ", which is not a finite number >= 0 (nothing was changed)");
  }
  if (w.fold_pending) {
    w.kernels->fold(w.last_reply(), w.last_reply_layout(), w.beta, w.residual.as<float>(),
                    w.options.stream);
    w.fold_pending = false;
  }
  // lr_proportional scales by the first positive lr: a warm-up that starts
  // at lr = 0 takes its first step above 0.
  if (!(w.first_lr > 0.0f)) w.first_lr = lr;
  if (w.config.method != Method::dense) {
    const std::uint32_t code = encode_ratio(w.config.ratio_at(w.step, lr, w.first_lr));
    if (!w.plan_set || code != w.plan.ratio_code) w.use_plan(code);
  }
  host::StepParams params;
  params.method = w.config.method;
  params.lr = lr;
  params.momentum = w.config.momentum;
  params.weight_decay = w.config.weight_decay;
  params.clip_norm = w.config.clip_norm;
  params.factor_masking = w.config.factor_masking;
  params.seed = w.config.seed;
  params.step = w.step;
  params.model_version = w.model_version;
  params.sender = w.options.id;
  params.threshold_sample = w.config.threshold_sample;
  w.kernels->step(params, grad, w.weights, w.state(), w.push_buffer.data(), w.options.stream);
  const host::SelectionStats s = w.kernels->last_stats(w.options.stream);
  w.channel.send(w.options.server_rank, w.push_buffer.data(), w.push_layout.bytes);
  ++w.stats.pushes;
  w.stats.entries_pushed += s.selected;
  w.stats.bytes_pushed += w.push_layout.bytes;
  w.stats.threshold_count_error += s.count_error;
  w.stats.threshold_clamped += s.clamped_segments;
  w.pushed_version = w.model_version;
  w.awaiting_reply = true;
  ++w.step;
}

void Worker::finish() {
  Impl& w = *impl_;
  w.require(w.awaiting_reply, "finish() without push()");
  w.awaiting_reply = false;
  w.rejected = false;
  try {
    w.receive_reply(false);
  } catch (...) {
    // Without the reply (a timeout, a lost server, a reply out of step),
    // the server may still answer this step: only a join() puts the two
    // back in step (a restore() does not: the late reply may still come).
    if (!w.rejected) w.reply_in_flight = true;
    throw;
  }
  const std::uint64_t staleness =
      w.model_version > w.pushed_version ? w.model_version - w.pushed_version - 1 : 0;
  w.stats.staleness_total += staleness;
  w.stats.staleness_max = std::max(w.stats.staleness_max, staleness);
  ++w.stats.steps;
}

void Worker::step(const float* grad, float lr) {
  push(grad, lr);
  finish();
}

const float* Worker::evaluation_point() {
  Impl& w = *impl_;
  if (w.config.method != Method::gmc_plus) return w.weights;
  w.kernels->evaluation_point(w.weights, w.residual.as<float>(), w.config.gmc_lambda,
                              w.evaluation.as<float>(), w.options.stream);
  return w.evaluation.as<float>();
}

void Worker::leave() {
  Impl& w = *impl_;
  w.require(!w.awaiting_reply, "leave() while a step is waiting for its reply");
  if (!w.joined) return;
  w.send_control(MessageKind::bye);
  w.joined = false;
}

const WorkerStats& Worker::stats() const noexcept {
  return impl_->stats;
}
std::uint64_t Worker::steps() const noexcept {
  return impl_->step;
}
std::uint64_t Worker::model_version() const noexcept {
  return impl_->model_version;
}
const MessageLayout& Worker::push_layout() const noexcept {
  return impl_->push_layout;
}

namespace {

std::vector<unsigned char> download_all(Backend& backend, const detail::Buffer& buffer,
                                        Stream stream) {
  std::vector<unsigned char> host(buffer.bytes());
  backend.download(host.data(), buffer.data(), buffer.bytes(), stream);
  return host;
}

// What a checkpoint must agree on to be restored into this object.
std::vector<std::uint64_t> fingerprint(const Config& c, const Segments& model) {
  std::vector<std::uint64_t> f = {model.total(),
                                  model.count(),
                                  static_cast<std::uint64_t>(c.method),
                                  static_cast<std::uint64_t>(c.compressor),
                                  static_cast<std::uint64_t>(c.mode),
                                  c.workers,
                                  encode_ratio(c.max_ratio()),
                                  encode_ratio(c.reply_ratio()),
                                  static_cast<std::uint64_t>(c.wire_values)};
  f.push_back(detail::fnv1a64(model.sizes().data(), model.sizes().size() * 8));
  return f;
}

void check_fingerprint(const detail::CheckpointReader& reader, const Config& c,
                       const Segments& model, const std::string& path) {
  const std::vector<std::uint64_t> want = fingerprint(c, model);
  const auto& got = reader.section("fingerprint");
  if (got.size() != want.size() * 8 || std::memcmp(got.data(), want.data(), got.size()) != 0) {
    throw Error(ErrorCode::io, "dgs checkpoint " + path +
                                   ": written for another model or configuration (model size, "
                                   "segments, method, compressor, mode, workers or ratios differ)");
  }
}

}  // namespace

void Worker::save(const std::string& path) const {
  const Impl& w = *impl_;
  w.require(!w.awaiting_reply, "save() while a step is waiting for its reply");
  // Its state is not one to continue from (a step half taken, a state the
  // server refused): the file would restore it as if it were.
  const std::string wait_for_join = w.join_needed();
  w.require(wait_for_join.empty(), "save() after " + wait_for_join + ": join() again first");
  Backend& be = *w.backend;
  const Stream s = w.options.stream;
  detail::CheckpointWriter out("worker");
  const std::vector<std::uint64_t> f = fingerprint(w.config, w.model);
  out.add("fingerprint", f.data(), f.size() * 8);
  const std::string settings = detail::config_settings(w.config);
  out.add("settings", settings.data(), settings.size());
  out.add_u64("id", w.options.id);
  out.add_u64("step", w.step);
  out.add("first_lr", &w.first_lr, sizeof w.first_lr);
  out.add_u64("model_version", w.model_version);
  out.add_u64("joined", w.joined);
  out.add_u64("fold_pending", w.fold_pending);
  out.add_u64("last_reply_dense", w.last_reply_dense);
  std::vector<float> weights(w.model.total());
  be.download(weights.data(), w.weights, weights.size() * sizeof(float), s);
  out.add("weights", weights.data(), weights.size() * sizeof(float));
  const std::pair<const char*, const detail::Buffer*> states[] = {{"residual", &w.residual},
                                                                  {"momentum", &w.momentum},
                                                                  {"accumulator", &w.accumulator},
                                                                  {"mask", &w.mask}};
  for (const auto& [name, buffer] : states) {
    if (*buffer) {
      const auto host = download_all(be, *buffer, s);
      out.add(name, host.data(), host.size());
    }
  }
  if (w.fold_pending) {
    std::vector<unsigned char> reply(w.last_reply_layout().bytes);
    be.download(reply.data(), w.last_reply(), reply.size(), s);
    out.add("last_reply", reply.data(), reply.size());
  }
  const char* stats_name = "stats";
  out.add(stats_name, &w.stats, sizeof w.stats);
  out.write(path);
}

void Worker::restore(const std::string& path) {
  Impl& w = *impl_;
  w.require(!w.awaiting_reply, "restore() while a step is waiting for its reply");
  const detail::CheckpointReader in(path, "worker");
  check_fingerprint(in, w.config, w.model, path);
  detail::check_settings(in, w.config, path);
  if (in.u64("id") != w.options.id) {
    throw Error(ErrorCode::io, "dgs checkpoint " + path + ": written by worker " +
                                   std::to_string(in.u64("id")) + ", not worker " +
                                   std::to_string(w.options.id));
  }
  Backend& be = *w.backend;
  const Stream s = w.options.stream;
  std::vector<float> weights(w.model.total());
  in.read("weights", weights.data(), weights.size() * sizeof(float));
  const std::pair<const char*, detail::Buffer*> states[] = {{"residual", &w.residual},
                                                            {"momentum", &w.momentum},
                                                            {"accumulator", &w.accumulator},
                                                            {"mask", &w.mask}};
  std::vector<std::vector<unsigned char>> loaded;
  for (const auto& [name, buffer] : states) {
    if (*buffer) {
      loaded.emplace_back(buffer->bytes());
      in.read(name, loaded.back().data(), buffer->bytes());
    }
  }
  const bool fold_pending = in.u64("fold_pending") != 0;
  const bool last_reply_dense = in.u64("last_reply_dense") != 0;
  std::vector<unsigned char> reply;
  if (fold_pending) {
    reply.resize(last_reply_dense ? w.dense_layout.bytes : w.reply_layout.bytes);
    in.read("last_reply", reply.data(), reply.size());
  }
  WorkerStats stats;
  if (in.section("stats").size() == offsetof(WorkerStats, pushes)) {
    // Written before WorkerStats::pushes existed: a checkpoint is saved
    // between steps, and one push per completed step is the best count.
    in.read("stats", &stats, offsetof(WorkerStats, pushes));
    stats.pushes = stats.steps;
  } else {
    in.read("stats", &stats, sizeof stats);
  }
  float first_lr;
  in.read("first_lr", &first_lr, sizeof first_lr);
  const std::uint64_t step = in.u64("step");
  const std::uint64_t model_version = in.u64("model_version");
  const bool joined = in.u64("joined") != 0;
  // Everything was read and checked: now change the state.
  be.upload(w.weights, weights.data(), weights.size() * sizeof(float), s);
  std::size_t next = 0;
  for (const auto& [name, buffer] : states) {
    if (*buffer) be.upload(buffer->data(), loaded[next++].data(), buffer->bytes(), s);
  }
  if (fold_pending) {
    be.upload(last_reply_dense ? w.dense_reply : w.reply_buffer.data(), reply.data(), reply.size(),
              s);
  }
  // A sync worker's step is the round's number between steps (a file that a
  // late joiner wrote before that rule held its own count).
  w.step = w.config.mode == Mode::sync ? model_version : step;
  w.first_lr = first_lr;
  w.model_version = model_version;
  w.joined = joined;
  w.fold_pending = fold_pending;
  w.last_reply_dense = last_reply_dense;
  w.plan_set = false;
  w.stats = stats;
  // The restored state is a saved one; a reply still in flight is not
  // undone by it (reply_in_flight stays until a join()).
  w.rejoin_reason.clear();
  w.state_not_finite = false;
}

}  // namespace dgs
