#include "kernels/worker_host.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dgs/error.h"
#include "kernels/entries_host.h"
#include "kernels/numeric.h"

namespace dgs::host {
namespace {

bool mask_bit(const std::uint32_t* mask, std::uint64_t i) {
  return (mask[i >> 5] >> (i & 31)) & 1u;
}

void require(bool ok, const char* what) {
  if (!ok) throw Error(ErrorCode::invalid_argument, std::string("dgs::host::worker_step: ") + what);
}

void check_state(Method method, const WorkerState& s) {
  switch (method) {
    case Method::dense:
      break;
    case Method::gd:
    case Method::gmc:
    case Method::gmc_plus:
      require(s.residual != nullptr, "the method needs state.residual");
      break;
    case Method::dgc:
      require(s.momentum != nullptr && s.accumulator != nullptr,
              "dgc needs state.momentum and state.accumulator");
      break;
    case Method::samomentum:
      require(s.momentum != nullptr && s.mask != nullptr,
              "samomentum needs state.momentum and state.mask");
      break;
  }
}

// The parts of one pass, added by halves.
double add_by_halves(double* part) {
  for (unsigned h = detail::kNormThreads / 2; h > 0; h /= 2) {
    for (unsigned t = 0; t < h; ++t) part[t] = part[t] + part[t + h];
  }
  return part[0];
}

}  // namespace

double squared_norm(const float* g, std::uint64_t p, std::vector<double>& chunk_sums) {
  using detail::kNormChunk;
  using detail::kNormThreads;
  const std::uint64_t chunks = detail::norm_chunks(p);
  chunk_sums.assign(chunks, 0.0);
  double part[kNormThreads];
  for (std::uint64_t c = 0; c < chunks; ++c) {
    const std::uint64_t end = std::min(p, (c + 1) * kNormChunk);
    for (unsigned t = 0; t < kNormThreads; ++t) {
      double s = 0.0;
      for (std::uint64_t i = c * kNormChunk + t; i < end; i += kNormThreads) {
        const double x = g[i];
        s = s + x * x;
      }
      part[t] = s;
    }
    chunk_sums[c] = add_by_halves(part);
  }
  for (unsigned t = 0; t < kNormThreads; ++t) {
    double s = 0.0;
    for (std::uint64_t c = t; c < chunks; c += kNormThreads) s = s + chunk_sums[c];
    part[t] = s;
  }
  return add_by_halves(part);
}

MessageHeader make_push_header(const StepParams& params, const MessageLayout& layout) {
  MessageHeader header = blank_header();
  header.kind = MessageKind::push;
  header.layout = layout.payload;
  header.value_type = layout.value_type;
  header.index_type = layout.index_type;
  header.sender = params.sender;
  header.model_size = layout.model_size;
  header.capacity = layout.capacity;
  header.step = params.step;
  header.model_version = params.model_version;
  header.lr = params.lr;
  return header;
}

SelectionStats worker_step(const StepParams& params, const Segments& segments,
                           const SelectionPlan& plan, const float* grad, const float* weights,
                           const WorkerState& state, void* message, const MessageLayout& layout,
                           Scratch& scratch) {
  const std::uint64_t p = layout.model_size;
  const Method method = params.method;
  const float lr = params.lr;
  const float m = params.momentum;
  const float wd = params.weight_decay;
  require(wd == 0.0f || weights != nullptr, "weight decay needs the weights");
  check_state(method, state);

  MessageHeader header = make_push_header(params, layout);

  const bool clip = params.clip_norm > 0.0f;
  const float scale =
      clip ? detail::clip_scale(squared_norm(grad, p, scratch.norm_chunks), params.clip_norm)
           : 1.0f;
  auto gradient = [&](std::uint64_t i) {
    const float g = clip ? scale * grad[i] : grad[i];
    return wd != 0.0f ? std::fmaf(wd, weights[i], g) : g;
  };

  if (method == Method::dense) {
    require(layout.payload == PayloadLayout::dense, "Method::dense pushes use the dense layout");
    for (std::uint64_t i = 0; i < p; ++i) write_value(message, layout, i, lr * gradient(i));
    header.compressor = Compressor::topk;
    header.count = p;
    header.ratio_code = 0xFFFFFFFFu;
    write_header(message, header);
    SelectionStats stats;
    stats.selected = stats.target = p;
    return stats;
  }

  require(segments.total() == p, "segments do not cover the model");
  require(plan.total_capacity() <= layout.capacity, "the plan does not fit the message capacity");
  require(layout.payload ==
              (plan.compressor == Compressor::rbgs ? PayloadLayout::blocks : PayloadLayout::sparse),
          "the message layout does not match the compressor");

  // 1. The fused pass: fold g' into the state; the state is what is selected from.
  const float* selected_from = nullptr;
  switch (method) {
    case Method::gd:
    case Method::gmc:
    case Method::gmc_plus: {
      float* r = state.residual;
      for (std::uint64_t i = 0; i < p; ++i) r[i] = r[i] + lr * gradient(i);
      selected_from = r;
      break;
    }
    case Method::dgc: {
      float* u = state.momentum;
      float* v = state.accumulator;
      for (std::uint64_t i = 0; i < p; ++i) {
        u[i] = std::fmaf(m, u[i], gradient(i));
        v[i] = v[i] + u[i];
      }
      selected_from = v;
      break;
    }
    case Method::samomentum: {
      float* u = state.momentum;
      for (std::uint64_t i = 0; i < p; ++i) {
        const float c = mask_bit(state.mask, i) ? m : 1.0f;
        u[i] = std::fmaf(c, u[i], lr * gradient(i));
      }
      selected_from = u;
      std::memset(state.mask, 0, mask_words(p) * sizeof(std::uint32_t));
      break;
    }
    case Method::dense:
      break;
  }

  // 2. Selection.
  scratch.indices.resize(plan.total_capacity());
  SelectionStats stats;
  const std::uint64_t count = select(selected_from, segments, plan, params.seed, params.step,
                                     params.threshold_sample, scratch.indices.data(), &stats);

  // 3. Compaction into the message and the post-selection state update.
  const bool blocks = layout.payload == PayloadLayout::blocks;
  for (std::uint64_t j = 0; j < count; ++j) {
    const std::uint64_t i = scratch.indices[j];
    if (!blocks) write_index(message, layout, j, i);
    switch (method) {
      case Method::gd:
      case Method::gmc:
      case Method::gmc_plus: {
        float* r = state.residual;
        r[i] = r[i] - write_value(message, layout, j, r[i]);
        break;
      }
      case Method::dgc:
        write_value(message, layout, j, lr * state.accumulator[i]);
        state.accumulator[i] = 0.0f;
        if (params.factor_masking) state.momentum[i] = 0.0f;
        break;
      case Method::samomentum:
        write_value(message, layout, j, state.momentum[i]);
        state.mask[i >> 5] |= 1u << (i & 31);
        break;
      case Method::dense:
        break;
    }
  }
  if (blocks) {
    for (std::size_t l = 0; l < segments.count(); ++l) {
      write_index(
          message, layout, l,
          detail::rbgs_block_start(params.seed, params.step, l, segments.size(l), plan.target[l]));
    }
  }

  header.compressor = plan.compressor;
  header.count = count;
  header.ratio_code = plan.ratio_code;
  write_header(message, header);
  return stats;
}

void apply_reply(void* reply, const MessageLayout& layout, float* weights, bool record_change) {
  const MessageHeader header = read_header(reply);
  if (layout.payload == PayloadLayout::dense) {
    for (std::uint64_t i = 0; i < header.count; ++i) {
      const float fresh = read_value(reply, layout, i);
      if (record_change) write_value(reply, layout, i, fresh - weights[i]);
      weights[i] = fresh;
    }
    return;
  }
  if (layout.payload != PayloadLayout::sparse) {
    throw Error(ErrorCode::invalid_argument, "dgs::host::apply_reply: replies are sparse or dense");
  }
  for_each_entry(reply, layout, nullptr, nullptr,
                 [weights](std::uint64_t i, float d) { weights[i] = weights[i] + d; });
}

void fold_global_momentum(const void* reply, const MessageLayout& layout, float beta,
                          float* residual) {
  for_each_entry(reply, layout, nullptr, nullptr, [residual, beta](std::uint64_t i, float d) {
    residual[i] = std::fmaf(-beta, d, residual[i]);
  });
}

void evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                      std::uint64_t p) {
  for (std::uint64_t i = 0; i < p; ++i) x[i] = std::fmaf(-lambda, residual[i], weights[i]);
}

}  // namespace dgs::host
