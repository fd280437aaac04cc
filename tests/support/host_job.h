// A parameter-server job assembled directly from the host reference twins,
// for tests of the mathematics: workers and a server that exchange real wire
// messages (byte buffers) without the runtime around them.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "kernels/server_host.h"
#include "kernels/worker_host.h"

namespace dgs::test {

using Bytes = std::vector<unsigned char>;

class RefWorker {
  // Declared first: the public buffers below are sized from them.
  Config config_;
  Segments segments_;
  MessageLayout layout_;
  std::uint32_t id_;
  float beta_ = 0.0f;
  float first_lr_ = 0.0f;
  std::uint64_t step_ = 0;
  Bytes last_reply_;
  MessageLayout last_reply_layout_;
  bool fold_pending_ = false;
  bool awaiting_hello_reply_ = false;
  host::Scratch scratch_;

 public:
  RefWorker(const Segments& model, const Config& config, std::uint32_t id,
            std::vector<float> initial_weights)
      : config_(config),
        segments_(selection_segments(model, config)),
        layout_(push_layout(model, config)),
        id_(id),
        weights(std::move(initial_weights)),
        message(layout_.bytes) {
    const std::uint64_t p = model.total();
    switch (config.method) {
      case Method::gd:
      case Method::gmc:
      case Method::gmc_plus:
        residual.assign(p, 0.0f);
        break;
      case Method::dgc:
        momentum.assign(p, 0.0f);
        accumulator.assign(p, 0.0f);
        break;
      case Method::samomentum:
        momentum.assign(p, 0.0f);
        mask.assign(host::mask_words(p), 0u);
        break;
      case Method::dense:
        break;
    }
    // Async gmc: each worker adds beta/K of every global change it sees.
    beta_ = config.mode == Mode::sync ? config.momentum
                                      : config.momentum / static_cast<float>(config.workers);
  }

  host::WorkerState state() {
    host::WorkerState s;
    s.residual = residual.empty() ? nullptr : residual.data();
    s.momentum = momentum.empty() ? nullptr : momentum.data();
    s.accumulator = accumulator.empty() ? nullptr : accumulator.data();
    s.mask = mask.empty() ? nullptr : mask.data();
    return s;
  }

  /// One push from a gradient evaluated by the caller, at learning rate lr.
  const Bytes& push(const std::vector<float>& grad, float lr) {
    if (fold_pending_) {
      host::fold_global_momentum(last_reply_.data(), last_reply_layout_, beta_, residual.data());
      fold_pending_ = false;
    }
    if (!(first_lr_ > 0.0f)) first_lr_ = lr;  // the first positive lr, as the Worker
    const double ratio = config_.ratio_at(step_, lr, first_lr_);
    const SelectionPlan plan = push_plan(segments_, config_, encode_ratio(ratio));
    host::StepParams params;
    params.method = config_.method;
    params.lr = lr;
    params.momentum = config_.momentum;
    params.weight_decay = config_.weight_decay;
    params.clip_norm = config_.clip_norm;
    params.factor_masking = config_.factor_masking;
    params.seed = config_.seed;
    params.step = step_;
    params.model_version = model_version;
    params.sender = id_;
    params.threshold_sample = config_.threshold_sample;
    std::fill(message.begin(), message.end(), 0);
    last_stats = host::worker_step(params, segments_, plan, grad.data(), weights.data(), state(),
                                   message.data(), layout_, scratch_);
    ++step_;
    return message;
  }

  /// The join message: a push-sized buffer of kind hello and no entries.
  const Bytes& hello() { return control(MessageKind::hello); }
  const Bytes& bye() { return control(MessageKind::bye); }

  /// Applies a reply as the runtime does; keeps it for gmc's momentum fold.
  void apply(const Bytes& reply) {
    const MessageHeader h = read_header(reply.data());
    const bool gmc = config_.method == Method::gmc || config_.method == Method::gmc_plus;
    last_reply_ = reply;
    last_reply_layout_ = h.kind == MessageKind::dense_reply
                             ? dense_layout(h.model_size, WireValue::f32)
                             : sparse_layout(h.model_size, h.capacity, h.value_type);
    host::apply_reply(last_reply_.data(), last_reply_layout_, weights.data(), gmc);
    // The answer to a hello is the starting model, not a step: no momentum.
    fold_pending_ = gmc && !awaiting_hello_reply_;
    // A sync worker takes the round's number as its step when it joins, and
    // one that has not pushed yet the job's first lr the answer carries.
    if (awaiting_hello_reply_ && config_.mode == Mode::sync) step_ = h.model_version;
    if (awaiting_hello_reply_ && !(first_lr_ > 0.0f) && h.lr > 0.0f) first_lr_ = h.lr;
    awaiting_hello_reply_ = false;
    model_version = h.model_version;
  }

  std::vector<float> weights;
  std::vector<float> residual, momentum, accumulator;
  std::vector<std::uint32_t> mask;
  Bytes message;
  std::uint64_t model_version = 0;
  host::SelectionStats last_stats;

  const MessageLayout& layout() const { return layout_; }
  std::uint64_t steps() const { return step_; }

 private:
  const Bytes& control(MessageKind kind) {
    std::fill(message.begin(), message.end(), 0);
    MessageHeader h = blank_header();
    h.kind = kind;
    h.layout = layout_.payload;
    h.compressor = config_.compressor;
    h.value_type = layout_.value_type;
    h.index_type = layout_.index_type;
    h.sender = id_;
    h.model_size = layout_.model_size;
    h.capacity = layout_.capacity;
    h.step = step_;
    h.model_version = model_version;
    write_header(message.data(), h);
    if (kind == MessageKind::hello) awaiting_hello_reply_ = true;
    return message;
  }
};

class RefServer {
 public:
  RefServer(const Segments& model, const Config& config, std::vector<float> initial_model)
      : rules(model, config),
        config_(config),
        model_(model),
        dense_replies_(replies_are_dense(model, config)),
        sparse_layout_(sparse_reply_layout(model, config)),
        dense_layout_(dense_reply_layout(model)),
        reply_plan_(reply_plan(rules.segments, config)),
        weights(std::move(initial_model)),
        replicas(config.mode == Mode::sync ? 1 : config.workers, weights) {}

  /// Async: validate, apply, answer. An empty reply for bye or a rejection.
  Verdict handle(const Bytes& message, Bytes& reply) {
    reply.clear();
    const Verdict verdict = host::validate_push(message.data(), message.size(), rules);
    if (!verdict.ok()) return verdict;
    const MessageHeader h = read_header(message.data());
    if (h.kind == MessageKind::bye) return verdict;
    if (h.kind == MessageKind::push) {
      host::apply_push(message.data(), rules, weights.data());
      ++version;
    }
    answer(h.kind == MessageKind::hello, replica_of(h.sender), h.step, reply);
    return verdict;
  }

  /// Sync: one round over the pushes of all workers, in worker-id order. All
  /// must validate. The same reply goes to every worker.
  Verdict round(const std::vector<const Bytes*>& pushes, Bytes& reply) {
    std::vector<float> accumulator(weights.size(), 0.0f);
    for (const Bytes* push : pushes) {
      const Verdict verdict = host::validate_push(push->data(), push->size(), rules);
      if (!verdict.ok()) return verdict;
    }
    for (const Bytes* push : pushes) host::accumulate_push(push->data(), rules, accumulator.data());
    host::apply_average(accumulator.data(), static_cast<std::uint32_t>(pushes.size()),
                        weights.data(), weights.size());
    ++version;
    answer(false, replicas[0], read_header(pushes.front()->data()).step, reply);
    return Verdict{};
  }

  /// Sync mode keeps one shared replica, async one per worker.
  std::vector<float>& replica_of(std::uint32_t worker) {
    return replicas[config_.mode == Mode::sync ? 0 : worker];
  }

  host::PushRules rules;

 private:
  void answer(bool dense, std::vector<float>& replica, std::uint64_t step, Bytes& reply) {
    host::ReplyInfo info;
    info.step = step;
    info.model_version = version;
    if (dense || dense_replies_) {
      reply.assign(dense_layout_.bytes, 0);
      host::write_dense_reply(weights.data(), replica.data(), info, reply.data(), dense_layout_);
    } else {
      reply.assign(sparse_layout_.bytes, 0);
      last_stats =
          host::write_sparse_reply(weights.data(), replica.data(), rules.segments, reply_plan_,
                                   info, reply.data(), sparse_layout_, scratch_);
    }
  }

  Config config_;
  Segments model_;
  bool dense_replies_;
  MessageLayout sparse_layout_;
  MessageLayout dense_layout_;
  SelectionPlan reply_plan_;
  host::Scratch scratch_;

 public:
  std::vector<float> weights;
  std::vector<std::vector<float>> replicas;
  std::uint64_t version = 0;
  host::SelectionStats last_stats;
};

/// A noisy quadratic: g = a * (w - c) + noise(step, worker). Gradients depend
/// on the model, so a trajectory that goes wrong once stays wrong.
class Quadratic {
 public:
  Quadratic(std::uint64_t p, std::uint64_t seed) : a_(p), c_(p), seed_(seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> curvature(0.1f, 2.0f);
    std::normal_distribution<float> centre(0.0f, 1.0f);
    for (std::uint64_t i = 0; i < p; ++i) {
      a_[i] = curvature(rng);
      c_[i] = centre(rng);
    }
  }

  std::vector<float> gradient(const std::vector<float>& w, std::uint64_t step,
                              std::uint32_t worker) const {
    std::mt19937_64 rng(seed_ ^ (step * 0x9E3779B97F4A7C15ull) ^ (std::uint64_t{worker} << 48));
    std::normal_distribution<float> noise(0.0f, 0.1f);
    std::vector<float> g(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) g[i] = a_[i] * (w[i] - c_[i]) + noise(rng);
    return g;
  }

  double loss(const std::vector<float>& w) const {
    double sum = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
      const double d = static_cast<double>(w[i]) - c_[i];
      sum += 0.5 * a_[i] * d * d;
    }
    return sum;
  }

 private:
  std::vector<float> a_, c_;
  std::uint64_t seed_;
};

}  // namespace dgs::test
