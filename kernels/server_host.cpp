#include "kernels/server_host.h"

#include <cstring>
#include <string>

#include "dgs/error.h"
#include "kernels/entries_host.h"
#include "kernels/numeric.h"

namespace dgs::host {
namespace {

Verdict reject(RejectReason reason, std::uint64_t value, std::uint64_t expected,
               std::uint64_t position = 0) {
  Verdict v;
  v.reason = reason;
  v.value = value;
  v.expected = expected;
  v.position = position;
  return v;
}

template <typename E>
std::uint64_t raw(E e) {
  return static_cast<std::uint64_t>(e);
}

}  // namespace

PushRules::PushRules(const Segments& model, const Config& cfg)
    : config(cfg),
      segments(selection_segments(model, cfg)),
      layout(push_layout(model, cfg)),
      max_ratio_code(encode_ratio(cfg.max_ratio())) {}

SelectionPlan PushRules::plan_at(std::uint32_t ratio_code) const {
  return push_plan(segments, config, ratio_code);
}

Verdict validate_push_header(const MessageHeader& h, std::size_t bytes, const PushRules& rules,
                             SelectionPlan* plan) {
  const MessageLayout& layout = rules.layout;
  if (bytes != layout.bytes) return reject(RejectReason::size, bytes, layout.bytes);
  if (h.magic != kMessageMagic) return reject(RejectReason::magic, h.magic, kMessageMagic);
  if (h.version != kWireVersion) return reject(RejectReason::version, h.version, kWireVersion);
  if (h.kind != MessageKind::push && h.kind != MessageKind::hello && h.kind != MessageKind::bye) {
    return reject(RejectReason::kind, raw(h.kind), raw(MessageKind::push));
  }
  if (h.nonce != 0 && h.kind != MessageKind::hello) return reject(RejectReason::nonce, h.nonce, 0);
  if (h.sender >= rules.config.workers) {
    return reject(RejectReason::sender, h.sender, rules.config.workers);
  }
  if (h.model_size != layout.model_size) {
    return reject(RejectReason::model_size, h.model_size, layout.model_size);
  }
  if (h.layout != layout.payload) {
    return reject(RejectReason::layout, raw(h.layout), raw(layout.payload));
  }
  const bool dense = layout.payload == PayloadLayout::dense;
  if (!dense && h.compressor != rules.config.compressor) {
    return reject(RejectReason::compressor, raw(h.compressor), raw(rules.config.compressor));
  }
  if (h.value_type != layout.value_type) {
    return reject(RejectReason::value_type, raw(h.value_type), raw(layout.value_type));
  }
  if (h.index_type != layout.index_type) {
    return reject(RejectReason::index_type, raw(h.index_type), raw(layout.index_type));
  }
  if (h.capacity != layout.capacity) {
    return reject(RejectReason::capacity, h.capacity, layout.capacity);
  }
  if (h.count > h.capacity) return reject(RejectReason::count, h.count, h.capacity);
  if (h.kind != MessageKind::push) {
    if (h.count != 0) return reject(RejectReason::count, h.count, 0);
    return Verdict{};
  }
  if (dense) {
    if (h.count != layout.model_size)
      return reject(RejectReason::count, h.count, layout.model_size);
    return Verdict{};
  }
  if (h.ratio_code > rules.max_ratio_code) {
    return reject(RejectReason::ratio, h.ratio_code, rules.max_ratio_code);
  }
  SelectionPlan at = rules.plan_at(h.ratio_code);
  if (at.fixed_count() && h.count != at.total_capacity()) {
    return reject(RejectReason::count, h.count, at.total_capacity());
  }
  if (plan != nullptr) *plan = std::move(at);
  return Verdict{};
}

Verdict validate_push(const void* message, std::size_t bytes, const PushRules& rules) {
  const MessageLayout& layout = rules.layout;
  MessageHeader h = blank_header();
  if (bytes >= kHeaderBytes) h = read_header(message);
  SelectionPlan plan;
  const Verdict header = validate_push_header(h, bytes, rules, &plan);
  if (!header.ok() || h.kind != MessageKind::push) return header;

  // The index region.
  const Segments& segments = rules.segments;
  if (layout.payload == PayloadLayout::blocks) {
    for (std::size_t l = 0; l < segments.count(); ++l) {
      const std::uint64_t start = read_index(message, layout, l);
      if (start >= segments.size(l)) {
        return reject(RejectReason::block_start, start, segments.size(l), l);
      }
    }
  } else if (layout.payload == PayloadLayout::sparse) {
    const bool fixed = plan.fixed_count();
    std::size_t segment = 0;
    for (std::uint64_t j = 0; j < h.count; ++j) {
      const std::uint64_t i = read_index(message, layout, j);
      if (i >= layout.model_size) return reject(RejectReason::index_range, i, layout.model_size, j);
      if (j > 0) {
        const std::uint64_t previous = read_index(message, layout, j - 1);
        if (i <= previous) return reject(RejectReason::index_order, i, previous, j);
      }
      if (fixed) {
        while (j >= plan.first[segment + 1]) ++segment;
        const std::uint64_t lo = segments.offset(segment);
        if (i < lo || i >= lo + segments.size(segment)) {
          return reject(RejectReason::index_segment, i, segment, j);
        }
      }
    }
  }

  // The value region.
  for (std::uint64_t j = 0; j < h.count; ++j) {
    const float value = read_value(message, layout, j);
    if (!detail::is_finite(value)) {
      return reject(RejectReason::value, detail::float_bits(value), 0, j);
    }
  }
  return Verdict{};
}

namespace {

template <typename Fn>
void for_each_push_entry(const void* message, const PushRules& rules, Fn&& fn) {
  const MessageHeader h = read_header(message);
  if (rules.layout.payload == PayloadLayout::blocks) {
    const SelectionPlan plan = rules.plan_at(h.ratio_code);
    for_each_entry(message, rules.layout, &rules.segments, &plan, fn);
  } else {
    for_each_entry(message, rules.layout, nullptr, nullptr, fn);
  }
}

}  // namespace

void apply_push(const void* message, const PushRules& rules, float* model) {
  for_each_push_entry(message, rules,
                      [model](std::uint64_t i, float s) { model[i] = model[i] - s; });
}

void accumulate_push(const void* message, const PushRules& rules, float* accumulator) {
  for_each_push_entry(message, rules, [accumulator](std::uint64_t i, float s) {
    accumulator[i] = accumulator[i] + s;
  });
}

void apply_average(const float* accumulator, std::uint32_t contributors, float* model,
                   std::uint64_t p) {
  if (contributors == 0) {
    throw Error(ErrorCode::invalid_argument, "dgs::host::apply_average: no contributors");
  }
  const float inverse = 1.0f / static_cast<float>(contributors);
  for (std::uint64_t i = 0; i < p; ++i) model[i] = model[i] - accumulator[i] * inverse;
}

void apply_round(const RoundPush* pushes, std::uint32_t count, const PushRules& rules, float* model,
                 std::vector<float>& accumulator) {
  if (count == 0) throw Error(ErrorCode::invalid_argument, "dgs::host::apply_round: no pushes");
  accumulator.assign(rules.layout.model_size, 0.0f);
  for (std::uint32_t k = 0; k < count; ++k) {
    accumulate_push(pushes[k].message, rules, accumulator.data());
  }
  apply_average(accumulator.data(), count, model, rules.layout.model_size);
}

MessageHeader make_reply_header(MessageKind kind, const MessageLayout& layout,
                                const ReplyInfo& info) {
  MessageHeader h = blank_header();
  h.kind = kind;
  h.layout = layout.payload;
  h.compressor = Compressor::topk;
  h.value_type = layout.value_type;
  h.index_type = layout.index_type;
  h.sender = kServerSender;
  h.model_size = layout.model_size;
  h.capacity = layout.capacity;
  h.step = info.step;
  h.model_version = info.model_version;
  return h;
}

SelectionStats write_sparse_reply(const float* model, float* replica, const Segments& segments,
                                  const SelectionPlan& plan, const ReplyInfo& info, void* reply,
                                  const MessageLayout& layout, Scratch& scratch) {
  const std::uint64_t p = layout.model_size;
  if (layout.payload != PayloadLayout::sparse || plan.total_capacity() > layout.capacity ||
      segments.total() != p) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::host::write_sparse_reply: the layout, plan and segments disagree");
  }
  scratch.values.resize(p);
  float* difference = scratch.values.data();
  for (std::uint64_t i = 0; i < p; ++i) difference[i] = model[i] - replica[i];
  scratch.indices.resize(plan.total_capacity());
  SelectionStats stats;
  const std::uint64_t count =
      select(difference, segments, plan, 0, 0, 1024, scratch.indices.data(), &stats);
  for (std::uint64_t j = 0; j < count; ++j) {
    const std::uint64_t i = scratch.indices[j];
    write_index(reply, layout, j, i);
    replica[i] = replica[i] + write_value(reply, layout, j, difference[i]);
  }
  MessageHeader h = make_reply_header(MessageKind::sparse_reply, layout, info);
  h.count = count;
  h.ratio_code = plan.ratio_code;
  write_header(reply, h);
  return stats;
}

namespace {

void check_dense_layout(const MessageLayout& layout, const char* who) {
  if (layout.payload != PayloadLayout::dense || layout.value_type != WireValue::f32) {
    throw Error(ErrorCode::invalid_argument,
                std::string("dgs::host::") + who + ": a dense reply is a dense float32 layout");
  }
}

}  // namespace

void write_dense_reply(const float* model, float* replica, const ReplyInfo& info, void* reply,
                       const MessageLayout& layout) {
  check_dense_layout(layout, "write_dense_reply");
  std::memcpy(static_cast<unsigned char*>(reply) + layout.values_offset, model,
              layout.model_size * sizeof(float));
  finish_dense_reply(reply, replica, info, layout);
}

void finish_dense_reply(void* reply, float* replica, const ReplyInfo& info,
                        const MessageLayout& layout) {
  check_dense_layout(layout, "finish_dense_reply");
  const std::uint64_t p = layout.model_size;
  const auto* model =
      reinterpret_cast<const float*>(static_cast<unsigned char*>(reply) + layout.values_offset);
  if (replica != nullptr) std::memcpy(replica, model, p * sizeof(float));
  MessageHeader h = make_reply_header(MessageKind::dense_reply, layout, info);
  h.count = p;
  h.ratio_code = 0xFFFFFFFFu;
  write_header(reply, h);
}

}  // namespace dgs::host
