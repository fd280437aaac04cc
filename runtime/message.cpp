#include "dgs/message.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "dgs/error.h"
#include "dgs/plan.h"
#include "kernels/numeric.h"

namespace dgs {
namespace {

std::uint64_t align_up(std::uint64_t bytes) {
  return (bytes + kRegionAlignment - 1) / kRegionAlignment * kRegionAlignment;
}

MessageLayout make_layout(PayloadLayout payload, IndexType index_type, WireValue values,
                          std::uint64_t model_size, std::uint64_t capacity,
                          std::uint64_t index_slots) {
  MessageLayout layout;
  layout.payload = payload;
  layout.index_type = index_type;
  layout.value_type = values;
  layout.model_size = model_size;
  layout.capacity = capacity;
  layout.index_slots = index_slots;
  layout.values_offset = align_up(kHeaderBytes + index_slots * index_bytes(index_type));
  layout.bytes = align_up(layout.values_offset + capacity * value_bytes(values));
  return layout;
}

void check_slot(const MessageLayout& layout, std::uint64_t slot, std::uint64_t slots,
                const char* what) {
  if (slot >= slots) {
    throw Error(ErrorCode::invalid_argument, std::string("dgs message ") + what + " slot " +
                                                 std::to_string(slot) + " is not below " +
                                                 std::to_string(slots) + " (payload layout " +
                                                 std::to_string(int(layout.payload)) + ")");
  }
}

}  // namespace

std::size_t index_bytes(IndexType type) noexcept {
  switch (type) {
    case IndexType::u32:
      return 4;
    case IndexType::u64:
      return 8;
    case IndexType::none:
      break;
  }
  return 0;
}

std::size_t value_bytes(WireValue type) noexcept {
  switch (type) {
    case WireValue::f32:
      return 4;
    case WireValue::bf16:
    case WireValue::f16:
      return 2;
  }
  return 4;
}

IndexType index_type_for(std::uint64_t model_size) noexcept {
  return model_size < (std::uint64_t{1} << 32) ? IndexType::u32 : IndexType::u64;
}

MessageLayout sparse_layout(std::uint64_t model_size, std::uint64_t capacity, WireValue values) {
  return make_layout(PayloadLayout::sparse, index_type_for(model_size), values, model_size,
                     capacity, capacity);
}

MessageLayout dense_layout(std::uint64_t model_size, WireValue values) {
  return make_layout(PayloadLayout::dense, IndexType::none, values, model_size, model_size, 0);
}

MessageLayout block_layout(std::uint64_t model_size, std::uint64_t segments, std::uint64_t capacity,
                           WireValue values) {
  return make_layout(PayloadLayout::blocks, index_type_for(model_size), values, model_size,
                     capacity, segments);
}

MessageLayout push_layout(const Segments& model, const Config& config) {
  const std::uint64_t p = model.total();
  if (config.method == Method::dense) return dense_layout(p, config.wire_values);
  const Segments segments = selection_segments(model, config);
  const SelectionPlan plan = push_plan(segments, config, encode_ratio(config.max_ratio()));
  if (config.compressor == Compressor::rbgs) {
    return block_layout(p, segments.count(), plan.total_capacity(), config.wire_values);
  }
  return sparse_layout(p, plan.total_capacity(), config.wire_values);
}

MessageLayout sparse_reply_layout(const Segments& model, const Config& config) {
  // Where every reply is dense this buffer only ever carries a head (or a
  // reject and its verdict): one slot holds those (96 bytes in all).
  const std::uint64_t capacity =
      replies_are_dense(model, config)
          ? 1
          : reply_plan(selection_segments(model, config), config).total_capacity();
  return sparse_layout(model.total(), capacity, config.wire_values);
}

MessageLayout dense_reply_layout(const Segments& model) {
  return dense_layout(model.total(), WireValue::f32);
}

bool replies_are_dense(const Segments& model, const Config& config) {
  if (config.method == Method::dense) return true;
  const SelectionPlan plan = reply_plan(selection_segments(model, config), config);
  return plan.total_capacity() == model.total();
}

MessageHeader read_header(const void* message) noexcept {
  MessageHeader header;
  std::memcpy(&header, message, sizeof header);
  return header;
}

void write_header(void* message, const MessageHeader& header) noexcept {
  std::memcpy(message, &header, sizeof header);
}

MessageHeader blank_header() noexcept {
  MessageHeader header;
  std::memset(&header, 0, sizeof header);
  header.magic = kMessageMagic;
  header.version = kWireVersion;
  return header;
}

std::uint64_t read_index(const void* message, const MessageLayout& layout, std::uint64_t slot) {
  check_slot(layout, slot, layout.index_slots, "index");
  const auto* at = static_cast<const unsigned char*>(message) + kHeaderBytes;
  if (layout.index_type == IndexType::u64) {
    std::uint64_t index;
    std::memcpy(&index, at + slot * 8, 8);
    return index;
  }
  std::uint32_t index;
  std::memcpy(&index, at + slot * 4, 4);
  return index;
}

void write_index(void* message, const MessageLayout& layout, std::uint64_t slot,
                 std::uint64_t index) {
  check_slot(layout, slot, layout.index_slots, "index");
  auto* at = static_cast<unsigned char*>(message) + kHeaderBytes;
  if (layout.index_type == IndexType::u64) {
    std::memcpy(at + slot * 8, &index, 8);
  } else {
    const auto narrow = static_cast<std::uint32_t>(index);
    std::memcpy(at + slot * 4, &narrow, 4);
  }
}

float read_value(const void* message, const MessageLayout& layout, std::uint64_t slot) {
  check_slot(layout, slot, layout.capacity, "value");
  const auto* at = static_cast<const unsigned char*>(message) + layout.values_offset;
  if (layout.value_type == WireValue::f32) {
    float value;
    std::memcpy(&value, at + slot * 4, 4);
    return value;
  }
  std::uint16_t half;
  std::memcpy(&half, at + slot * 2, 2);
  return layout.value_type == WireValue::bf16 ? detail::bf16_to_float(half)
                                              : detail::f16_to_float(half);
}

float write_value(void* message, const MessageLayout& layout, std::uint64_t slot, float value) {
  check_slot(layout, slot, layout.capacity, "value");
  auto* at = static_cast<unsigned char*>(message) + layout.values_offset;
  switch (layout.value_type) {
    case WireValue::f32:
      std::memcpy(at + slot * 4, &value, 4);
      return value;
    case WireValue::bf16: {
      const std::uint16_t half = detail::float_to_bf16(value);
      std::memcpy(at + slot * 2, &half, 2);
      return detail::bf16_to_float(half);
    }
    case WireValue::f16: {
      const std::uint16_t half = detail::float_to_f16(value);
      std::memcpy(at + slot * 2, &half, 2);
      return detail::f16_to_float(half);
    }
  }
  return value;
}

void write_reject_verdict(void* message, const Verdict& verdict) noexcept {
  const std::uint64_t words[4] = {static_cast<std::uint64_t>(verdict.reason), verdict.position,
                                  verdict.value, verdict.expected};
  std::memcpy(static_cast<unsigned char*>(message) + kHeaderBytes, words, sizeof words);
}

Verdict read_reject_verdict(const void* message) noexcept {
  std::uint64_t words[4];
  std::memcpy(words, static_cast<const unsigned char*>(message) + kHeaderBytes, sizeof words);
  Verdict verdict;
  verdict.reason = static_cast<RejectReason>(words[0]);
  verdict.position = words[1];
  verdict.value = words[2];
  verdict.expected = words[3];
  return verdict;
}

const char* field_name(RejectReason reason) noexcept {
  switch (reason) {
    case RejectReason::none:
      return "none";
    case RejectReason::size:
      return "size";
    case RejectReason::magic:
      return "magic";
    case RejectReason::version:
      return "version";
    case RejectReason::kind:
      return "kind";
    case RejectReason::nonce:
      return "nonce";
    case RejectReason::sender:
      return "sender";
    case RejectReason::model_size:
      return "model_size";
    case RejectReason::layout:
      return "layout";
    case RejectReason::compressor:
      return "compressor";
    case RejectReason::value_type:
      return "value_type";
    case RejectReason::index_type:
      return "index_type";
    case RejectReason::capacity:
      return "capacity";
    case RejectReason::count:
      return "count";
    case RejectReason::ratio:
      return "ratio_code";
    case RejectReason::index_range:
    case RejectReason::index_order:
    case RejectReason::index_segment:
      return "indices";
    case RejectReason::block_start:
      return "block_starts";
    case RejectReason::value:
      return "values";
    case RejectReason::model_version:
      return "model_version";
    case RejectReason::round:
      return "step";
  }
  return "?";
}

std::string Verdict::describe(std::uint32_t sender) const {
  std::ostringstream out;
  out << "message from worker " << sender;
  if (ok()) {
    out << " accepted";
    return out.str();
  }
  out << " rejected: ";
  const std::string at = std::string(field_name(reason)) + "[" + std::to_string(position) + "]";
  switch (reason) {
    case RejectReason::index_range:
      out << at << " = " << value << " is not below model_size " << expected;
      break;
    case RejectReason::index_order:
      out << at << " = " << value << " does not exceed the previous index " << expected
          << " (indices must be strictly increasing)";
      break;
    case RejectReason::index_segment:
      out << at << " = " << value << " lies outside segment " << expected
          << ", which that slot belongs to";
      break;
    case RejectReason::block_start:
      out << at << " = " << value << " is not below the size " << expected << " of its segment";
      break;
    case RejectReason::value:
      out << at << " = " << detail::bits_float(static_cast<std::uint32_t>(value))
          << " is not finite";
      break;
    case RejectReason::size:
      out << "size = " << value << " bytes, expected " << expected;
      break;
    case RejectReason::count:
      out << "count = " << value << ", expected " << (value > expected ? "at most " : "")
          << expected;
      break;
    case RejectReason::ratio:
      out << "ratio_code = " << value << " exceeds the configured maximum " << expected;
      break;
    case RejectReason::model_version:
      out << "model_version = " << value << ", but the server last sent this worker version "
          << expected << " (a worker restored without its server? it must join again)";
      break;
    case RejectReason::round:
      out << "step = " << value << ", but the sync round is " << expected
          << " (every worker of a round pushes its step; it must join again)";
      break;
    default:
      out << field_name(reason) << " = " << value << ", expected " << expected;
      break;
  }
  return out.str();
}

}  // namespace dgs
