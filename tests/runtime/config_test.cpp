#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/config.h"
#include "dgs/error.h"

namespace dgs {
namespace {

TEST(Config, DefaultsAreValid) {
  Config config;
  EXPECT_NO_THROW(config.validate());
  EXPECT_EQ(config.method, Method::samomentum);
  EXPECT_EQ(config.compressor, Compressor::topk);
  EXPECT_EQ(config.reply_ratio(), config.ratio);
}

struct BadField {
  std::string field;
  std::function<void(Config&)> spoil;
};

TEST(Config, EachOutOfRangeFieldIsRejectedByName) {
  const std::vector<BadField> cases = {
      {"method", [](Config& c) { c.method = static_cast<Method>(9); }},
      {"compressor", [](Config& c) { c.compressor = static_cast<Compressor>(4); }},
      {"mode", [](Config& c) { c.mode = static_cast<Mode>(2); }},
      {"wire_values", [](Config& c) { c.wire_values = static_cast<WireValue>(3); }},
      {"schedule", [](Config& c) { c.schedule = static_cast<RatioSchedule>(3); }},
      {"workers", [](Config& c) { c.workers = 0; }},
      {"ratio", [](Config& c) { c.ratio = 0.0; }},
      {"ratio", [](Config& c) { c.ratio = 1.5; }},
      {"ratio", [](Config& c) { c.ratio = std::nan(""); }},
      {"server_ratio", [](Config& c) { c.server_ratio = -0.1; }},
      {"server_ratio", [](Config& c) { c.server_ratio = 2.0; }},
      {"momentum", [](Config& c) { c.momentum = 1.0f; }},
      {"momentum", [](Config& c) { c.momentum = -0.1f; }},
      {"weight_decay", [](Config& c) { c.weight_decay = -1e-4f; }},
      {"clip_norm", [](Config& c) { c.clip_norm = -1.0f; }},
      {"clip_norm", [](Config& c) { c.clip_norm = NAN; }},
      {"clip_norm", [](Config& c) { c.clip_norm = INFINITY; }},
      {"weight_decay", [](Config& c) { c.weight_decay = INFINITY; }},
      {"gmc_lambda", [](Config& c) { c.gmc_lambda = 1.5f; }},
      {"threshold_capacity", [](Config& c) { c.threshold_capacity = 0.9; }},
      {"threshold_sample", [](Config& c) { c.threshold_sample = 8; }},
      {"threshold_sample", [](Config& c) { c.threshold_sample = 100000; }},
      {"warmup_ratios",
       [](Config& c) {
         c.schedule = RatioSchedule::warmup;
         c.warmup_steps = 10;
       }},
      {"warmup_ratios",
       [](Config& c) {
         c.schedule = RatioSchedule::warmup;
         c.warmup_ratios = {0.25, 0.0};
         c.warmup_steps = 10;
       }},
      {"warmup_ratios", [](Config& c) { c.warmup_ratios = {0.25}; }},
      {"warmup_steps",
       [](Config& c) {
         c.schedule = RatioSchedule::warmup;
         c.warmup_ratios = {0.25};
       }},
      {"warmup_steps", [](Config& c) { c.warmup_steps = 5; }},  // not a warmup schedule
      {"dense_below",
       [](Config& c) {
         c.global_selection = true;
         c.dense_below = 10;
       }},
  };
  for (const BadField& bad : cases) {
    Config config;
    bad.spoil(config);
    try {
      config.validate();
      ADD_FAILURE() << "a bad " << bad.field << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_config);
      EXPECT_EQ(e.field(), bad.field) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.field), std::string::npos) << e.what();
    }
  }
}

TEST(Config, BoundaryValuesAreAccepted) {
  Config config;
  config.ratio = 1.0;
  config.server_ratio = 1e-9;
  config.momentum = 0.0f;
  config.gmc_lambda = 1.0f;
  config.threshold_capacity = 1.0;
  config.threshold_sample = 16;
  EXPECT_NO_THROW(config.validate());
}

TEST(Config, NamesRoundTripThroughParse) {
  for (Method m : {Method::dense, Method::gd, Method::dgc, Method::samomentum, Method::gmc,
                   Method::gmc_plus}) {
    EXPECT_EQ(parse_method(to_string(m)), m);
  }
  for (Compressor c :
       {Compressor::topk, Compressor::threshold, Compressor::randk, Compressor::rbgs}) {
    EXPECT_EQ(parse_compressor(to_string(c)), c);
  }
  EXPECT_EQ(parse_mode("sync"), Mode::sync);
  EXPECT_EQ(parse_wire_value("bf16"), WireValue::bf16);
  EXPECT_STREQ(to_string(Method::gmc_plus), "gmc+");
}

TEST(Config, ParseRejectsUnknownNamesListingTheChoices) {
  try {
    parse_method("sgd");
    FAIL() << "accepted an unknown method";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    const std::string what = e.what();
    EXPECT_NE(what.find("'sgd'"), std::string::npos) << what;
    EXPECT_NE(what.find("samomentum"), std::string::npos) << what;
    EXPECT_NE(what.find("gmc+"), std::string::npos) << what;
  }
  EXPECT_THROW(parse_compressor("top-k"), Error);
  EXPECT_THROW(parse_mode("bsp"), Error);
  EXPECT_THROW(parse_wire_value("fp8"), Error);
}

TEST(Config, WarmupScheduleWalksItsStagesThenSettles) {
  Config config;
  config.ratio = 0.001;
  config.schedule = RatioSchedule::warmup;
  config.warmup_ratios = {0.25, 0.0625, 0.0156, 0.004};
  config.warmup_steps = 100;
  config.validate();
  EXPECT_EQ(config.ratio_at(0, 0.1f, 0.1f), 0.25);
  EXPECT_EQ(config.ratio_at(99, 0.1f, 0.1f), 0.25);
  EXPECT_EQ(config.ratio_at(100, 0.1f, 0.1f), 0.0625);
  EXPECT_EQ(config.ratio_at(399, 0.1f, 0.1f), 0.004);
  EXPECT_EQ(config.ratio_at(400, 0.1f, 0.1f), 0.001);
  EXPECT_EQ(config.max_ratio(), 0.25);
}

TEST(Config, LrProportionalScheduleFollowsTheLearningRateButNeverExceedsTheRatio) {
  Config config;
  config.ratio = 0.01;
  config.schedule = RatioSchedule::lr_proportional;
  config.validate();
  EXPECT_DOUBLE_EQ(config.ratio_at(10, 0.01f, 0.1f), 0.01 * double(0.01f) / double(0.1f));
  EXPECT_EQ(config.ratio_at(10, 0.1f, 0.1f), 0.01);
  EXPECT_EQ(config.ratio_at(10, 0.5f, 0.1f), 0.01);  // lr warm-up above the first lr
  EXPECT_GT(config.ratio_at(10, 0.0f, 0.1f), 0.0);   // still a valid ratio
  EXPECT_EQ(config.ratio_at(0, 0.0f, 0.0f), 0.01);   // no positive lr yet: the ratio
  EXPECT_EQ(config.max_ratio(), 0.01);
}

}  // namespace
}  // namespace dgs
