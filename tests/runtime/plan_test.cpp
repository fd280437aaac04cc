#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "dgs/error.h"
#include "dgs/plan.h"

namespace dgs {
namespace {

TEST(Ratio, EncodingIsTheSmallestRepresentableRatioNotBelowTheRequest) {
  for (double r : {1.0, 0.5, 0.25, 0.1, 0.01, 0.001, 1e-4, 0.3, 0.29, 1e-9, 0x1p-32}) {
    const std::uint32_t code = encode_ratio(r);
    EXPECT_GE(decode_ratio(code), r) << r;
    if (code > 0) {
      EXPECT_LT(decode_ratio(code - 1), r) << r;
    }
  }
  EXPECT_EQ(encode_ratio(1.0), 0xFFFFFFFFu);
  EXPECT_EQ(encode_ratio(0.5), 0x7FFFFFFFu);
  EXPECT_EQ(encode_ratio(1e-12), 0u);
  EXPECT_THROW(encode_ratio(0.0), Error);
  EXPECT_THROW(encode_ratio(1.01), Error);
}

TEST(Ratio, EntriesAreTheFloorOfRatioTimesSizeAtLeastOne) {
  EXPECT_EQ(entries_for(1000, encode_ratio(0.01)), 10u);
  EXPECT_EQ(entries_for(1000000, encode_ratio(0.001)), 1000u);
  EXPECT_EQ(entries_for(100000000, encode_ratio(0.01)), 1000000u);
  EXPECT_EQ(entries_for(100, encode_ratio(0.29)), 29u);  // 0.29 * 100 in double is 28.999...
  EXPECT_EQ(entries_for(7, encode_ratio(1.0)), 7u);
  EXPECT_EQ(entries_for(7, encode_ratio(0.01)), 1u);
  EXPECT_EQ(entries_for(1, encode_ratio(1e-6)), 1u);
  const std::uint64_t huge = std::uint64_t{3} << 40;
  EXPECT_EQ(entries_for(huge, encode_ratio(0.5)), huge / 2);
  EXPECT_EQ(entries_for(huge, encode_ratio(1.0)), huge);
  // Against the exact rational floor(n * (code + 1) / 2^32) on random inputs.
  std::mt19937_64 rng(7);
  for (int t = 0; t < 10000; ++t) {
    const std::uint64_t n = rng() >> (24 + rng() % 40);
    const auto code = static_cast<std::uint32_t>(rng());
    __extension__ using u128 = unsigned __int128;
    const u128 exact = (u128(n) * (u128(code) + 1)) >> 32;
    const std::uint64_t want = exact == 0 ? 1 : static_cast<std::uint64_t>(exact);
    ASSERT_EQ(entries_for(n, code), want) << n << " " << code;
  }
}

TEST(Plan, FixedCountPlansPlaceEachSegmentAfterThePrevious) {
  const Segments segments({1000, 10, 1, 5000});
  const SelectionPlan plan = make_plan(segments, Compressor::topk, encode_ratio(0.01), 0, 1.0);
  EXPECT_EQ(plan.target, (std::vector<std::uint64_t>{10, 1, 1, 50}));
  EXPECT_EQ(plan.capacity, plan.target);
  EXPECT_EQ(plan.first, (std::vector<std::uint64_t>{0, 10, 11, 12, 62}));
  EXPECT_EQ(plan.total_capacity(), 62u);
  EXPECT_EQ(plan.total_target(), 62u);
  EXPECT_TRUE(plan.fixed_count());
}

TEST(Plan, SegmentsBelowTheDenseThresholdAreSentWhole) {
  const Segments segments({1000, 64, 64, 5000});
  const SelectionPlan plan = make_plan(segments, Compressor::topk, encode_ratio(0.01), 100, 1.0);
  EXPECT_EQ(plan.target, (std::vector<std::uint64_t>{10, 64, 64, 50}));
}

TEST(Plan, ThresholdCapacityIsScaledAndCappedAtTheSegmentSize) {
  const Segments segments({1000, 11, 10, 64});
  const SelectionPlan plan = make_plan(segments, Compressor::threshold, encode_ratio(0.5), 11, 1.5);
  EXPECT_EQ(plan.target, (std::vector<std::uint64_t>{500, 5, 10, 32}));
  EXPECT_EQ(plan.capacity, (std::vector<std::uint64_t>{750, 8, 10, 48}));
  EXPECT_FALSE(plan.fixed_count());
  EXPECT_EQ(plan.total_capacity(), 816u);
}

TEST(Plan, GlobalSelectionUsesOneSegment) {
  Config config;
  config.global_selection = true;
  const Segments model({100, 200, 300});
  const Segments selection = selection_segments(model, config);
  ASSERT_EQ(selection.count(), 1u);
  EXPECT_EQ(selection.total(), 600u);
  config.global_selection = false;
  EXPECT_EQ(selection_segments(model, config), model);
}

TEST(Segments, OffsetsAndLookup) {
  const Segments s({3, 1, 4});
  EXPECT_EQ(s.total(), 8u);
  EXPECT_EQ(s.offsets(), (std::vector<std::uint64_t>{0, 3, 4, 8}));
  EXPECT_EQ(s.segment_of(0), 0u);
  EXPECT_EQ(s.segment_of(2), 0u);
  EXPECT_EQ(s.segment_of(3), 1u);
  EXPECT_EQ(s.segment_of(7), 2u);
  EXPECT_THROW(s.segment_of(8), Error);
  EXPECT_THROW(Segments(std::vector<std::uint64_t>{}), Error);
  EXPECT_THROW(Segments({4, 0, 2}), Error);
}

}  // namespace
}  // namespace dgs
