#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/error.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "kernels/numeric.h"

namespace dgs {
namespace {

using Bytes = std::vector<unsigned char>;

TEST(WireFormat, HeaderFieldsSitAtTheirDocumentedOffsets) {
  EXPECT_EQ(offsetof(MessageHeader, magic), 0u);
  EXPECT_EQ(offsetof(MessageHeader, version), 4u);
  EXPECT_EQ(offsetof(MessageHeader, kind), 6u);
  EXPECT_EQ(offsetof(MessageHeader, layout), 7u);
  EXPECT_EQ(offsetof(MessageHeader, compressor), 8u);
  EXPECT_EQ(offsetof(MessageHeader, value_type), 9u);
  EXPECT_EQ(offsetof(MessageHeader, index_type), 10u);
  EXPECT_EQ(offsetof(MessageHeader, nonce), 11u);
  EXPECT_EQ(offsetof(MessageHeader, sender), 12u);
  EXPECT_EQ(offsetof(MessageHeader, model_size), 16u);
  EXPECT_EQ(offsetof(MessageHeader, count), 24u);
  EXPECT_EQ(offsetof(MessageHeader, capacity), 32u);
  EXPECT_EQ(offsetof(MessageHeader, step), 40u);
  EXPECT_EQ(offsetof(MessageHeader, model_version), 48u);
  EXPECT_EQ(offsetof(MessageHeader, lr), 56u);
  EXPECT_EQ(offsetof(MessageHeader, ratio_code), 60u);
  EXPECT_EQ(sizeof(MessageHeader), 64u);
}

// A sparse float32 push of 3 entries into a model of 10, byte for byte.
TEST(WireFormat, SparsePushMatchesTheGoldenBuffer) {
  const Bytes golden = {
      0x44, 0x47, 0x53, 0x4D,                          // magic "DGSM"
      0x02, 0x00,                                      // version 2
      0x01,                                            // kind push
      0x00,                                            // layout sparse
      0x00,                                            // compressor topk
      0x00,                                            // value_type f32
      0x01,                                            // index_type u32
      0x00,                                            // nonce
      0x02, 0x00, 0x00, 0x00,                          // sender 2
      0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // model_size 10
      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // count 3
      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capacity 3
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // step 0x0102030405060708
      0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0x00, 0x00,  // model_version 0x1122334455
      0xCD, 0xCC, 0xCC, 0x3D,                          // lr 0.1f
      0xCC, 0xCC, 0xCC, 0x4C,                          // ratio_code 0x4CCCCCCC
      0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,  // indices 1 4 7
      0x00, 0x00, 0x00, 0x00,                                                  // padding to 16
      0x00, 0x00, 0x00, 0x3F,                                                  // 0.5f
      0x00, 0x00, 0x00, 0xC0,                                                  // -2.0f
      0x6F, 0x12, 0x83, 0x3A,                                                  // 0.001f
      0x00, 0x00, 0x00, 0x00,                                                  // padding to 16
  };
  const MessageLayout layout = sparse_layout(10, 3, WireValue::f32);
  ASSERT_EQ(layout.bytes, golden.size());
  EXPECT_EQ(layout.values_offset, 80u);

  Bytes message(layout.bytes, 0);
  MessageHeader h = blank_header();
  h.kind = MessageKind::push;
  h.layout = PayloadLayout::sparse;
  h.compressor = Compressor::topk;
  h.value_type = WireValue::f32;
  h.index_type = IndexType::u32;
  h.sender = 2;
  h.model_size = 10;
  h.count = 3;
  h.capacity = 3;
  h.step = 0x0102030405060708ull;
  h.model_version = 0x1122334455ull;
  h.lr = 0.1f;
  h.ratio_code = 0x4CCCCCCCu;
  write_header(message.data(), h);
  const std::uint64_t indices[] = {1, 4, 7};
  const float values[] = {0.5f, -2.0f, 0.001f};
  for (int j = 0; j < 3; ++j) {
    write_index(message.data(), layout, j, indices[j]);
    write_value(message.data(), layout, j, values[j]);
  }
  EXPECT_EQ(message, golden);

  // And back.
  const MessageHeader back = read_header(golden.data());
  EXPECT_EQ(std::memcmp(&back, &h, sizeof h), 0);
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(read_index(golden.data(), layout, j), indices[j]);
    EXPECT_EQ(read_value(golden.data(), layout, j), values[j]);
  }
}

// An rbgs push with bf16 values: one block start per segment, no indices.
TEST(WireFormat, BlockPushWithBf16ValuesMatchesTheGoldenBuffer) {
  const Bytes golden = {
      0x44, 0x47, 0x53, 0x4D, 0x02, 0x00,              // magic, version 2
      0x01,                                            // push
      0x02,                                            // layout blocks
      0x03,                                            // compressor rbgs
      0x01,                                            // value_type bf16
      0x01,                                            // index_type u32
      0x00, 0x00, 0x00, 0x00, 0x00,                    // sender 0
      0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // model_size 20
      0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // count 4
      0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // capacity 4
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // step 0
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // model_version 0
      0x00, 0x00, 0x80, 0x3E,                          // lr 0.25f
      0xFF, 0xFF, 0xFF, 0x7F,                          // ratio 1/2
      0x0B, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,  // block starts 11, 3
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // padding to 16
      0x80, 0x3F,                                      // bf16 1.0
      0x00, 0xBF,                                      // bf16 -0.5
      0x40, 0x40,                                      // bf16 3.0
      0x80, 0x3F,                                      // bf16(1 + 2^-8): a tie, to even
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // padding to 16
  };
  const MessageLayout layout = block_layout(20, 2, 4, WireValue::bf16);
  ASSERT_EQ(layout.bytes, golden.size());
  Bytes message(layout.bytes, 0);
  MessageHeader h = blank_header();
  h.kind = MessageKind::push;
  h.layout = PayloadLayout::blocks;
  h.compressor = Compressor::rbgs;
  h.value_type = WireValue::bf16;
  h.index_type = IndexType::u32;
  h.model_size = 20;
  h.count = 4;
  h.capacity = 4;
  h.lr = 0.25f;
  h.ratio_code = encode_ratio(0.5);
  write_header(message.data(), h);
  write_index(message.data(), layout, 0, 11);
  write_index(message.data(), layout, 1, 3);
  const float values[] = {1.0f, -0.5f, 3.0f, 1.0f + 0x1p-8f};
  for (int j = 0; j < 4; ++j) write_value(message.data(), layout, j, values[j]);
  EXPECT_EQ(message, golden);
  EXPECT_EQ(read_value(golden.data(), layout, 3), 1.0f);
}

TEST(WireFormat, DenseReplyIsHeaderThenValues) {
  const MessageLayout layout = dense_layout(3, WireValue::f32);
  EXPECT_EQ(layout.index_slots, 0u);
  EXPECT_EQ(layout.values_offset, 64u);
  EXPECT_EQ(layout.bytes, 80u);
  EXPECT_EQ(layout.capacity, 3u);
}

TEST(WireFormat, ModelsOfFourBillionParametersUse64BitIndices) {
  const std::uint64_t p = std::uint64_t{1} << 32;
  EXPECT_EQ(index_type_for(p - 1), IndexType::u32);
  EXPECT_EQ(index_type_for(p), IndexType::u64);
  const MessageLayout layout = sparse_layout(p, 5, WireValue::f32);
  EXPECT_EQ(layout.index_type, IndexType::u64);
  EXPECT_EQ(layout.values_offset, 112u);  // 64 + 5 * 8 = 104, aligned to 16
  EXPECT_EQ(layout.bytes, 144u);
  Bytes message(layout.bytes, 0);
  write_index(message.data(), layout, 4, p + 7);
  EXPECT_EQ(read_index(message.data(), layout, 4), p + 7);
}

TEST(WireFormat, BufferLayoutsFollowTheConfig) {
  const Segments model({1000, 10, 5000});
  Config config;
  config.ratio = 0.01;
  MessageLayout push = push_layout(model, config);
  EXPECT_EQ(push.payload, PayloadLayout::sparse);
  EXPECT_EQ(push.capacity, 10u + 1u + 50u);
  config.compressor = Compressor::rbgs;
  push = push_layout(model, config);
  EXPECT_EQ(push.payload, PayloadLayout::blocks);
  EXPECT_EQ(push.index_slots, 3u);
  config.method = Method::dense;
  push = push_layout(model, config);
  EXPECT_EQ(push.payload, PayloadLayout::dense);
  EXPECT_EQ(push.capacity, 6010u);
  EXPECT_TRUE(replies_are_dense(model, config));
  // Every reply dense: the reply buffer carries heads and rejections only.
  EXPECT_EQ(sparse_reply_layout(model, config).capacity, 1u);
  EXPECT_EQ(sparse_reply_layout(model, config).bytes, kHeaderBytes + 32u);
  config.method = Method::gd;
  config.server_ratio = 1.0;
  EXPECT_TRUE(replies_are_dense(model, config));
  EXPECT_EQ(sparse_reply_layout(model, config).bytes, kHeaderBytes + 32u);
  config.wire_values = WireValue::bf16;
  EXPECT_EQ(sparse_reply_layout(model, config).bytes, kHeaderBytes + 32u);
  config.wire_values = WireValue::f32;
  config.server_ratio = 0.1;
  EXPECT_FALSE(replies_are_dense(model, config));
  EXPECT_EQ(sparse_reply_layout(model, config).capacity, 100u + 1u + 500u);
  // The warm-up stages are larger than the final ratio: buffers fit them.
  config.compressor = Compressor::topk;
  config.schedule = RatioSchedule::warmup;
  config.warmup_ratios = {0.25};
  config.warmup_steps = 1;
  EXPECT_EQ(push_layout(model, config).capacity, 250u + 2u + 1250u);
}

TEST(WireFormat, AccessorsRefuseSlotsOutsideTheBuffer) {
  const MessageLayout layout = sparse_layout(10, 3, WireValue::f32);
  Bytes message(layout.bytes, 0);
  EXPECT_THROW(write_index(message.data(), layout, 3, 1), Error);
  EXPECT_THROW(read_value(message.data(), layout, 3), Error);
}

TEST(WireValues, HalfPrecisionRoundsToNearestEvenAndSaturates) {
  using detail::float_to_f16;
  EXPECT_EQ(float_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_f16(1e6f), 0x7BFF);  // saturates instead of becoming inf
  EXPECT_EQ(float_to_f16(-1e6f), 0xFBFF);
  EXPECT_EQ(float_to_f16(INFINITY), 0x7C00);
  EXPECT_EQ(float_to_f16(std::nanf("")) & 0x7C00, 0x7C00);
  EXPECT_NE(float_to_f16(std::nanf("")) & 0x03FF, 0);
  EXPECT_EQ(float_to_f16(0x1p-24f), 0x0001);
  EXPECT_EQ(float_to_f16(0x1p-25f), 0x0000);    // tie between 0 and 2^-24: even
  EXPECT_EQ(float_to_f16(0x1.8p-25f), 0x0001);  // above the tie
  EXPECT_EQ(float_to_f16(0x1.8p-24f), 0x0002);  // 1.5 units: tie to even 2
  EXPECT_EQ(float_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_f16(0x1p-14f), 0x0400);           // smallest normal
  EXPECT_EQ(float_to_f16(1.0f + 0x1p-11f), 0x3C00);    // tie, even
  EXPECT_EQ(float_to_f16(1.0f + 0x1.8p-10f), 0x3C02);  // tie, even
}

TEST(WireValues, HalfPrecisionAgreesWithTheCompilersConversion) {
  // Every half value survives a round trip.
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const auto half = static_cast<std::uint16_t>(h);
    if ((half & 0x7C00) == 0x7C00 && (half & 0x3FF) != 0) continue;  // NaN payloads
    ASSERT_EQ(detail::float_to_f16(detail::f16_to_float(half)), half) << std::hex << h;
  }
  // Random floats against the compiler's round-to-nearest-even _Float16.
  std::mt19937 rng(11);
  for (int t = 0; t < 2000000; ++t) {
    const float x = detail::bits_float(static_cast<std::uint32_t>(rng()));
    if (std::isnan(x)) continue;
    const _Float16 reference = static_cast<_Float16>(x);
    std::uint16_t want;
    std::memcpy(&want, &reference, 2);
    if ((want & 0x7FFF) == 0x7C00 && !std::isinf(x)) want = (want & 0x8000) | 0x7BFF;  // saturation
    ASSERT_EQ(detail::float_to_f16(x), want) << x;
    if (!std::isinf(static_cast<float>(reference))) {
      ASSERT_EQ(detail::f16_to_float(want), static_cast<float>(reference)) << x;
    }
  }
}

// bf16 by definition: the nearer of the two bf16 neighbours, ties to even.
std::uint16_t bf16_by_definition(float x) {
  const std::uint32_t u = detail::float_bits(x);
  const auto lo = static_cast<std::uint16_t>(u >> 16);
  const auto hi = static_cast<std::uint16_t>(lo + 1);
  const double below = std::fabs(double(detail::bf16_to_float(lo)) - double(x));
  const double above = std::fabs(double(detail::bf16_to_float(hi)) - double(x));
  if ((u & 0xFFFF) == 0) return lo;
  std::uint16_t nearest = below < above ? lo : above < below ? hi : ((lo & 1) ? hi : lo);
  if ((nearest & 0x7FFF) == 0x7F80) nearest = (nearest & 0x8000) | 0x7F7F;  // saturation
  return nearest;
}

TEST(WireValues, Bf16RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(detail::float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(detail::float_to_bf16(1.0f + 0x1p-8f), 0x3F80);
  EXPECT_EQ(detail::float_to_bf16(1.0f + 0x1.8p-7f), 0x3F82);
  EXPECT_EQ(detail::float_to_bf16(std::numeric_limits<float>::max()), 0x7F7F);
  EXPECT_EQ(detail::float_to_bf16(-std::numeric_limits<float>::max()), 0xFF7F);
  EXPECT_EQ(detail::float_to_bf16(-INFINITY), 0xFF80);
  std::mt19937 rng(12);
  for (int t = 0; t < 2000000; ++t) {
    const float x = detail::bits_float(static_cast<std::uint32_t>(rng()));
    if (!std::isfinite(x)) continue;
    ASSERT_EQ(detail::float_to_bf16(x), bf16_by_definition(x)) << x;
  }
}

TEST(Verdict, DescriptionsNameTheSenderFieldAndValues) {
  Verdict v;
  EXPECT_TRUE(v.ok());
  v.reason = RejectReason::index_range;
  v.position = 17;
  v.value = 900;
  v.expected = 800;
  EXPECT_EQ(v.describe(3),
            "message from worker 3 rejected: indices[17] = 900 is not below model_size 800");
  v = Verdict{};
  v.reason = RejectReason::magic;
  v.value = 7;
  v.expected = kMessageMagic;
  EXPECT_EQ(v.describe(1), "message from worker 1 rejected: magic = 7, expected 1297303364");
  v = Verdict{};
  v.reason = RejectReason::value;
  v.position = 2;
  v.value = detail::float_bits(INFINITY);
  EXPECT_EQ(v.describe(0), "message from worker 0 rejected: values[2] = inf is not finite");
}

}  // namespace
}  // namespace dgs
