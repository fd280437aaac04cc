#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/plan.h"
#include "kernels/numeric.h"
#include "kernels/select_host.h"
#include "support/random.h"

namespace dgs::host {
namespace {

// Brute force: sort by (|x| descending, index ascending), keep k, sort by index.
std::vector<std::uint64_t> brute_topk(const float* x, std::uint64_t n, std::uint64_t k,
                                      std::uint64_t base) {
  std::vector<std::uint64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [x](std::uint64_t a, std::uint64_t b) {
    const std::uint32_t ka = detail::magnitude_key(x[a]);
    const std::uint32_t kb = detail::magnitude_key(x[b]);
    return ka != kb ? ka > kb : a < b;
  });
  order.resize(std::min(k, n));
  std::sort(order.begin(), order.end());
  for (auto& i : order) i += base;
  return order;
}

std::vector<std::uint64_t> run_select(const std::vector<float>& x, const Segments& segments,
                                      const SelectionPlan& plan, std::uint64_t seed = 0,
                                      std::uint64_t step = 0, SelectionStats* stats = nullptr,
                                      std::uint32_t sample = 1024) {
  std::vector<std::uint64_t> out(plan.total_capacity() + 1, ~std::uint64_t{0});  // poisoned
  const std::uint64_t count =
      select(x.data(), segments, plan, seed, step, sample, out.data(), stats);
  EXPECT_LE(count, plan.total_capacity());
  EXPECT_EQ(out[plan.total_capacity()], ~std::uint64_t{0}) << "wrote past the capacity";
  out.resize(count);
  return out;
}

void expect_exact_topk(const std::vector<float>& x, const Segments& segments, double ratio) {
  const SelectionPlan plan = make_plan(segments, Compressor::topk, encode_ratio(ratio), 0, 1.0);
  const std::vector<std::uint64_t> got = run_select(x, segments, plan);
  ASSERT_EQ(got.size(), plan.total_capacity());
  for (std::size_t l = 0; l < segments.count(); ++l) {
    const std::vector<std::uint64_t> want = brute_topk(
        x.data() + segments.offset(l), segments.size(l), plan.target[l], segments.offset(l));
    const std::vector<std::uint64_t> slice(got.begin() + plan.first[l],
                                           got.begin() + plan.first[l + 1]);
    ASSERT_EQ(slice, want) << "segment " << l << " of size " << segments.size(l) << " at ratio "
                           << ratio;
  }
}

// DESIGN.md section 9: every draw is keyed by (seed, step, segment, use), so
// two streams that differ in any one of them differ (randk would otherwise
// pick the same positions in every segment of a size, say).
TEST(RandomStreams, DifferInEachOfTheirKeys) {
  std::set<std::uint64_t> keys;
  for (std::uint64_t seed = 0; seed < 3; ++seed) {
    for (std::uint64_t step = 0; step < 3; ++step) {
      for (std::uint64_t segment = 0; segment < 3; ++segment) {
        for (detail::RandomUse use : {detail::RandomUse::randk, detail::RandomUse::rbgs,
                                      detail::RandomUse::threshold_sample}) {
          keys.insert(detail::stream_key(seed, step, segment, use));
        }
      }
    }
  }
  EXPECT_EQ(keys.size(), 81u);
}

TEST(SelectTopk, MatchesBruteForceOnRandomSegmentsAndRatios) {
  std::mt19937_64 rng(1);
  for (double ratio : {1e-4, 0.001, 0.01, 0.1, 0.5, 0.99, 1.0}) {
    const Segments segments = test::random_segments(rng, 40, 3000);
    expect_exact_topk(test::random_normal(rng, segments.total()), segments, ratio);
  }
}

TEST(SelectTopk, BreaksHeavyTiesTowardTheLowerIndex) {
  std::mt19937_64 rng(2);
  for (double ratio : {0.01, 0.1, 0.3, 0.7}) {
    const Segments segments = test::random_segments(rng, 30, 2000);
    expect_exact_topk(test::random_ties(rng, segments.total()), segments, ratio);
  }
  // Negative and positive zero are the same magnitude: the lower index wins.
  const std::vector<float> zeros = {0.0f, -0.0f, 0.0f, -0.0f, 1.0f};
  std::vector<std::uint64_t> out(3);
  ASSERT_EQ(select_topk_segment(zeros.data(), 5, 3, 0, out.data()), 3u);
  EXPECT_EQ(out, (std::vector<std::uint64_t>{0, 1, 4}));
}

TEST(SelectTopk, HandlesValuesSpanningManyExponents) {
  std::mt19937_64 rng(3);
  const Segments segments = test::random_segments(rng, 20, 5000);
  expect_exact_topk(test::random_spanning(rng, segments.total()), segments, 0.01);
  expect_exact_topk(test::random_spanning(rng, segments.total()), segments, 0.2);
}

TEST(SelectTopk, PutsNanAboveInfinity) {
  const std::vector<float> x = {1.0f, INFINITY, -2.0f, std::nanf(""), -INFINITY, 3.0f};
  std::vector<std::uint64_t> out(3);
  select_topk_segment(x.data(), x.size(), 3, 0, out.data());
  EXPECT_EQ(out, (std::vector<std::uint64_t>{1, 3, 4}));
}

TEST(SelectTopk, SegmentsOfSizeOneAndKEqualToN) {
  std::mt19937_64 rng(4);
  const Segments ones(std::vector<std::uint64_t>(50, 1));
  expect_exact_topk(test::random_normal(rng, 50), ones, 0.01);
  const Segments mixed({7, 1, 64, 3});
  expect_exact_topk(test::random_normal(rng, mixed.total()), mixed, 1.0);
  std::vector<float> x = test::random_normal(rng, 16);
  std::vector<std::uint64_t> out(16);
  ASSERT_EQ(select_topk_segment(x.data(), 16, 16, 100, out.data()), 16u);
  for (std::uint64_t i = 0; i < 16; ++i) EXPECT_EQ(out[i], 100 + i);
}

TEST(SelectTopk, ExactOnASegmentLargerThan2To24) {
  std::mt19937_64 rng(5);
  const std::uint64_t n = (std::uint64_t{1} << 24) + 77;
  // Normal values plus planted ties at the cut.
  std::vector<float> x = test::random_normal(rng, n);
  for (std::uint64_t i = 0; i < n; i += 9973) x[i] = 3.5f;
  const Segments segments({n});
  const std::uint64_t k = 4000;
  std::vector<std::uint64_t> got(k);
  ASSERT_EQ(select_topk_segment(x.data(), n, k, 0, got.data()), k);
  // Brute force by nth_element over (key, index) pairs, to stay fast.
  std::vector<std::pair<std::uint32_t, std::uint64_t>> keyed(n);
  for (std::uint64_t i = 0; i < n; ++i) keyed[i] = {detail::magnitude_key(x[i]), i};
  auto better = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::nth_element(keyed.begin(), keyed.begin() + k, keyed.end(), better);
  std::vector<std::uint64_t> want(k);
  for (std::uint64_t j = 0; j < k; ++j) want[j] = keyed[j].second;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
}

TEST(SelectThreshold, NeverExceedsCapacityAndReportsItsCountError) {
  std::mt19937_64 rng(6);
  for (int trial = 0; trial < 12; ++trial) {
    const Segments segments = test::random_segments(rng, 25, 20000);
    std::vector<float> x = trial % 3 == 0   ? test::random_ties(rng, segments.total())
                           : trial % 3 == 1 ? test::random_spanning(rng, segments.total())
                                            : test::random_normal(rng, segments.total());
    const SelectionPlan plan =
        make_plan(segments, Compressor::threshold, encode_ratio(0.01 * (trial + 1)), 0, 1.25);
    SelectionStats stats;
    const std::vector<std::uint64_t> got = run_select(x, segments, plan, 42, trial, &stats);
    std::uint64_t error = 0;
    std::size_t j = 0;
    for (std::size_t l = 0; l < segments.count(); ++l) {
      const std::uint64_t lo = segments.offset(l);
      const std::uint64_t hi = lo + segments.size(l);
      std::uint64_t in_segment = 0;
      for (; j < got.size() && got[j] < hi; ++j) {
        ASSERT_GE(got[j], lo);
        if (in_segment > 0) {
          ASSERT_GT(got[j], got[j - 1]);
        }
        ++in_segment;
      }
      ASSERT_LE(in_segment, plan.capacity[l]) << "segment " << l;
      if (plan.target[l] < segments.size(l)) {
        error +=
            in_segment > plan.target[l] ? in_segment - plan.target[l] : plan.target[l] - in_segment;
      }
    }
    EXPECT_EQ(j, got.size());
    EXPECT_EQ(stats.selected, got.size());
    EXPECT_EQ(stats.count_error, error);
    EXPECT_EQ(stats.target, plan.total_target());
  }
}

TEST(SelectThreshold, SelectsEverythingAtOrAboveItsEstimateAndNoZeros) {
  std::mt19937_64 rng(7);
  const std::uint64_t n = 50000;
  std::vector<float> x = test::random_normal(rng, n);
  for (std::uint64_t i = 0; i < n; i += 3) x[i] = 0.0f;
  const std::uint64_t k = 500;
  const std::uint32_t tau = estimate_threshold_key(x.data(), n, k, 9, 4, 0, 1024);
  const Segments segments({n});
  const SelectionPlan plan = make_plan(segments, Compressor::threshold, encode_ratio(0.01), 0, 2.0);
  ASSERT_EQ(plan.target[0], k);
  SelectionStats stats;
  const std::vector<std::uint64_t> got = run_select(x, segments, plan, 9, 4, &stats);
  ASSERT_EQ(stats.clamped_segments, 0u);
  std::vector<std::uint64_t> want;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (detail::magnitude_key(x[i]) >= tau) want.push_back(i);
  }
  EXPECT_EQ(got, want);
  for (std::uint64_t i : got) EXPECT_NE(x[i], 0.0f);
  // A sampled estimate: within a factor of two of the target on normal data.
  EXPECT_GT(got.size(), k / 2);
  EXPECT_LT(got.size(), 2 * k);
}

TEST(SelectThreshold, FallsBackToExactTopkWhenTheEstimateOverflows) {
  // All magnitudes equal: the estimate admits everything, capacity clamps.
  const Segments segments({4000});
  const std::vector<float> x(4000, 0.25f);
  const SelectionPlan plan =
      make_plan(segments, Compressor::threshold, encode_ratio(0.01), 0, 1.25);
  SelectionStats stats;
  const std::vector<std::uint64_t> got = run_select(x, segments, plan, 1, 1, &stats);
  EXPECT_EQ(stats.clamped_segments, 1u);
  ASSERT_EQ(got.size(), plan.capacity[0]);
  for (std::uint64_t j = 0; j < got.size(); ++j) EXPECT_EQ(got[j], j);  // ties: lowest indices
}

TEST(SelectRandk, IsReproducibleFromSeedStepAndSegmentAndSharedByWorkers) {
  std::mt19937_64 rng(8);
  const Segments segments = test::random_segments(rng, 15, 4000);
  const SelectionPlan plan = make_plan(segments, Compressor::randk, encode_ratio(0.05), 0, 1.0);
  const std::vector<float> a = test::random_normal(rng, segments.total());
  const std::vector<float> b = test::random_spanning(rng, segments.total());
  const auto first = run_select(a, segments, plan, 77, 3);
  EXPECT_EQ(first, run_select(b, segments, plan, 77, 3)) << "two workers disagree";
  EXPECT_EQ(first, run_select(a, segments, plan, 77, 3)) << "not reproducible";
  EXPECT_NE(first, run_select(a, segments, plan, 77, 4)) << "the step is ignored";
  EXPECT_NE(first, run_select(a, segments, plan, 78, 3)) << "the seed is ignored";
  ASSERT_EQ(first.size(), plan.total_capacity());
  for (std::size_t l = 0; l < segments.count(); ++l) {
    for (std::uint64_t j = plan.first[l]; j < plan.first[l + 1]; ++j) {
      EXPECT_EQ(segments.segment_of(first[j]), l);
      if (j > plan.first[l]) {
        EXPECT_GT(first[j], first[j - 1]);
      }
    }
  }
}

TEST(SelectRandk, ChoosesCoordinatesUniformly) {
  const std::uint64_t n = 200;
  const Segments segments({n});
  const SelectionPlan plan = make_plan(segments, Compressor::randk, encode_ratio(0.1), 0, 1.0);
  std::vector<int> hits(n, 0);
  const std::vector<float> x(n, 1.0f);
  const int steps = 4000;
  for (int t = 0; t < steps; ++t) {
    for (std::uint64_t i : run_select(x, segments, plan, 5, t)) ++hits[i];
  }
  // Each coordinate is chosen with probability 0.1: 400 expected, sd ~19.
  double chi2 = 0.0;
  for (int h : hits) chi2 += (h - 400.0) * (h - 400.0) / 400.0;
  EXPECT_LT(chi2, 199 + 5 * std::sqrt(2.0 * 199));  // mean 199, 5 sd
  for (int h : hits) EXPECT_GT(h, 300);
}

TEST(SelectRbgs, SendsTheSameWrappedBlockOnEveryWorker) {
  std::mt19937_64 rng(9);
  const Segments segments = test::random_segments(rng, 20, 1000);
  const SelectionPlan plan = make_plan(segments, Compressor::rbgs, encode_ratio(0.3), 0, 1.0);
  const auto a = run_select(test::random_normal(rng, segments.total()), segments, plan, 3, 10);
  const auto b = run_select(test::random_ties(rng, segments.total()), segments, plan, 3, 10);
  EXPECT_EQ(a, b);
  bool wrapped = false;
  for (std::size_t l = 0; l < segments.count(); ++l) {
    const std::uint64_t n = segments.size(l);
    const std::uint64_t k = plan.target[l];
    const std::uint64_t start = detail::rbgs_block_start(3, 10, l, n, k);
    ASSERT_LT(start, n);
    for (std::uint64_t t = 0; t < k; ++t) {
      EXPECT_EQ(a[plan.first[l] + t], segments.offset(l) + (start + t) % n);
    }
    wrapped = wrapped || start + k > n;
  }
  EXPECT_TRUE(wrapped) << "no block wrapped around its segment end; pick another seed";
  EXPECT_NE(a, run_select(std::vector<float>(segments.total(), 1.0f), segments, plan, 3, 11));
}

}  // namespace
}  // namespace dgs::host
