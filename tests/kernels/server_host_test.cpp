#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/error.h"
#include "dgs/plan.h"
#include "kernels/numeric.h"
#include "kernels/server_host.h"
#include "support/host_job.h"
#include "support/random.h"

namespace dgs {
namespace {

using test::Bytes;
using test::RefServer;
using test::RefWorker;

// The server state that a rejected message must leave untouched.
struct Snapshot {
  std::vector<float> weights;
  std::vector<std::vector<float>> replicas;
  std::uint64_t version;
  explicit Snapshot(const RefServer& s)
      : weights(s.weights), replicas(s.replicas), version(s.version) {}
  bool same_bits(const RefServer& s) const {
    if (s.version != version || s.replicas.size() != replicas.size()) return false;
    if (std::memcmp(s.weights.data(), weights.data(), weights.size() * sizeof(float)) != 0) {
      return false;
    }
    for (std::size_t k = 0; k < replicas.size(); ++k) {
      if (std::memcmp(s.replicas[k].data(), replicas[k].data(), weights.size() * sizeof(float))) {
        return false;
      }
    }
    return true;
  }
};

struct Spoiler {
  std::string name;
  RejectReason reason;
  std::function<void(Bytes&, const MessageLayout&)> spoil;
};

void set_header(Bytes& m, const std::function<void(MessageHeader&)>& edit) {
  MessageHeader h = read_header(m.data());
  edit(h);
  write_header(m.data(), h);
}

class Validation : public ::testing::Test {
 protected:
  void SetUp() override {
    config.method = Method::gd;
    config.ratio = 0.02;
    config.workers = 3;
    std::mt19937_64 rng(70);
    w0 = test::random_normal(rng, model.total());
    gradient = test::random_normal(rng, model.total());
  }

  // Sends a spoiled copy of a valid push; expects the reason and no change.
  void expect_rejected(const Spoiler& s, const Config& cfg) {
    RefServer server(model, cfg, w0);
    RefWorker worker(model, cfg, 1, w0);
    Bytes reply;
    ASSERT_TRUE(server.handle(worker.hello(), reply).ok());
    worker.apply(reply);
    Bytes push = worker.push(gradient, 0.1f);
    ASSERT_TRUE(host::validate_push(push.data(), push.size(), server.rules).ok()) << s.name;
    s.spoil(push, worker.layout());
    const Snapshot before(server);
    const Verdict v = server.handle(push, reply);
    EXPECT_EQ(v.reason, s.reason) << s.name << ": " << v.describe(1);
    EXPECT_TRUE(reply.empty()) << s.name;
    EXPECT_TRUE(before.same_bits(server)) << s.name << " changed the server state";
    const std::string text = v.describe(1);
    EXPECT_NE(text.find(field_name(s.reason)), std::string::npos) << text;
    EXPECT_NE(text.find("worker 1"), std::string::npos) << text;
  }

  const Segments model{std::vector<std::uint64_t>{1000, 200, 3, 800}};
  Config config;
  std::vector<float> w0, gradient;
};

TEST_F(Validation, EachRuleRejectsItsOwnFieldAndLeavesTheServerUnchanged) {
  const std::vector<Spoiler> spoilers = {
      {"short buffer", RejectReason::size, [](Bytes& m, const MessageLayout&) { m.pop_back(); }},
      {"magic", RejectReason::magic,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.magic ^= 1; });
       }},
      {"version", RejectReason::version,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.version = 9; });
       }},
      {"kind", RejectReason::kind,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.kind = MessageKind::sparse_reply; });
       }},
      {"unknown kind", RejectReason::kind,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.kind = static_cast<MessageKind>(77); });
       }},
      {"nonce", RejectReason::nonce,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.nonce = 1; });
       }},
      {"sender", RejectReason::sender,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.sender = 3; });
       }},
      {"model_size", RejectReason::model_size,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.model_size = 2004; });
       }},
      {"layout", RejectReason::layout,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.layout = PayloadLayout::blocks; });
       }},
      {"compressor", RejectReason::compressor,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.compressor = Compressor::randk; });
       }},
      {"value_type", RejectReason::value_type,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.value_type = WireValue::f16; });
       }},
      {"index_type", RejectReason::index_type,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.index_type = IndexType::u64; });
       }},
      {"capacity", RejectReason::capacity,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.capacity += 1; });
       }},
      {"count above capacity", RejectReason::count,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.count += 1; });
       }},
      {"count below the ratio's", RejectReason::count,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.count -= 1; });
       }},
      {"ratio", RejectReason::ratio,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.ratio_code = encode_ratio(0.5); });
       }},
      {"ratio one code above the buffers'", RejectReason::ratio,
       [](Bytes& m, const MessageLayout&) {
         set_header(m, [](MessageHeader& h) { h.ratio_code = encode_ratio(0.02) + 1; });
       }},
      {"index beyond the model", RejectReason::index_range,
       [](Bytes& m, const MessageLayout& l) { write_index(m.data(), l, 40, 2003 + 5); }},
      {"duplicate index", RejectReason::index_order,
       [](Bytes& m, const MessageLayout& l) {
         write_index(m.data(), l, 5, read_index(m.data(), l, 4));
       }},
      {"decreasing index", RejectReason::index_order,
       [](Bytes& m, const MessageLayout& l) {
         const std::uint64_t a = read_index(m.data(), l, 2);
         write_index(m.data(), l, 2, read_index(m.data(), l, 3));
         write_index(m.data(), l, 3, a);
       }},
      {"index in the wrong segment", RejectReason::index_segment,
       [](Bytes& m, const MessageLayout& l) {
         // Canonical indices: segment l's slots hold its first coordinates.
         const std::uint64_t k[] = {20, 4, 1, 16};
         const std::uint64_t offset[] = {0, 1000, 1200, 1203};
         std::uint64_t slot = 0;
         for (int seg = 0; seg < 4; ++seg) {
           for (std::uint64_t t = 0; t < k[seg]; ++t)
             write_index(m.data(), l, slot++, offset[seg] + t);
         }
         // Slot 20 is segment 1's first; put segment 0's last coordinate there,
         // still between its neighbours 19 and 1001.
         write_index(m.data(), l, 20, 999);
       }},
      {"nan value", RejectReason::value,
       [](Bytes& m, const MessageLayout& l) { write_value(m.data(), l, 7, std::nanf("")); }},
      {"infinite value", RejectReason::value,
       [](Bytes& m, const MessageLayout& l) { write_value(m.data(), l, 30, -INFINITY); }},
  };
  for (const Spoiler& s : spoilers) expect_rejected(s, config);
}

// A threshold push's count varies, so only count <= capacity bounds it.
TEST_F(Validation, AThresholdPushCountsAtMostItsCapacity) {
  Config cfg = config;
  cfg.compressor = Compressor::threshold;
  expect_rejected({"count one above capacity", RejectReason::count,
                   [](Bytes& m, const MessageLayout&) {
                     set_header(m, [](MessageHeader& h) { h.count = h.capacity + 1; });
                   }},
                  cfg);
}

TEST_F(Validation, BlockStartsBeyondTheirSegmentAreRejected) {
  Config cfg = config;
  cfg.compressor = Compressor::rbgs;
  expect_rejected({"block start", RejectReason::block_start,
                   [](Bytes& m, const MessageLayout& l) { write_index(m.data(), l, 2, 3); }},
                  cfg);
}

TEST_F(Validation, DensePushesMustCarryTheWholeModel) {
  Config cfg = config;
  cfg.method = Method::dense;
  expect_rejected({"dense count", RejectReason::count,
                   [](Bytes& m, const MessageLayout&) {
                     set_header(m, [](MessageHeader& h) { h.count -= 1; });
                   }},
                  cfg);
  expect_rejected(
      {"dense nan", RejectReason::value,
       [](Bytes& m, const MessageLayout& l) { write_value(m.data(), l, 2002, std::nanf("")); }},
      cfg);
}

TEST_F(Validation, ReportsTheLowestFailingEntry) {
  RefServer server(model, config, w0);
  RefWorker worker(model, config, 0, w0);
  Bytes push = worker.push(gradient, 0.1f);
  const MessageLayout& layout = worker.layout();
  write_value(push.data(), layout, 9, INFINITY);
  write_value(push.data(), layout, 3, std::nanf(""));
  Verdict v = host::validate_push(push.data(), push.size(), server.rules);
  EXPECT_EQ(v.reason, RejectReason::value);
  EXPECT_EQ(v.position, 3u);
  // An index failure wins over a value failure at a lower slot.
  write_index(push.data(), layout, 12, 5000);
  v = host::validate_push(push.data(), push.size(), server.rules);
  EXPECT_EQ(v.reason, RejectReason::index_range);
  EXPECT_EQ(v.position, 12u);
  EXPECT_EQ(v.value, 5000u);
  EXPECT_EQ(v.expected, 2003u);
}

TEST_F(Validation, HelloAndByeCarryNoEntries) {
  RefServer server(model, config, w0);
  RefWorker worker(model, config, 2, w0);
  Bytes hello = worker.hello();
  EXPECT_TRUE(host::validate_push(hello.data(), hello.size(), server.rules).ok());
  set_header(hello, [](MessageHeader& h) { h.count = 1; });
  EXPECT_EQ(host::validate_push(hello.data(), hello.size(), server.rules).reason,
            RejectReason::count);
  Bytes bye = worker.bye();
  Bytes reply;
  EXPECT_TRUE(server.handle(bye, reply).ok());
  EXPECT_TRUE(reply.empty());
}

// Three workers push in a random interleaving; after every reply the worker's
// model equals the server's replica of it, bit for bit.
void expect_replica_invariant(Config config, std::uint64_t seed) {
  const Segments model({700, 64, 1, 300, 935});
  config.workers = 3;
  std::mt19937_64 rng(seed);
  const std::vector<float> w0 = test::random_normal(rng, model.total());
  test::Quadratic problem(model.total(), seed + 1);
  RefServer server(model, config, w0);
  std::vector<RefWorker> workers;
  Bytes reply;
  for (std::uint32_t k = 0; k < 3; ++k) {
    workers.emplace_back(model, config, k, std::vector<float>(model.total(), 0.0f));
    ASSERT_TRUE(server.handle(workers[k].hello(), reply).ok());
    workers[k].apply(reply);
  }
  const double loss0 = problem.loss(server.weights);
  std::uniform_int_distribution<std::uint32_t> pick(0, 2);
  for (int t = 0; t < 100; ++t) {
    const std::uint32_t k = pick(rng);
    RefWorker& w = workers[k];
    const std::vector<float> g = problem.gradient(w.weights, w.steps(), k);
    const Verdict v = server.handle(w.push(g, 0.01f), reply);
    ASSERT_TRUE(v.ok()) << v.describe(k);
    w.apply(reply);
    ASSERT_EQ(
        std::memcmp(w.weights.data(), server.replicas[k].data(), model.total() * sizeof(float)), 0)
        << to_string(config.method) << ": worker " << k << " left its replica at push " << t;
    ASSERT_EQ(w.model_version, server.version);
  }
  EXPECT_LT(problem.loss(server.weights), loss0) << to_string(config.method) << " did not train";
}

TEST(ReplicaInvariant, HoldsBitwiseAfterEveryReplyForEveryMethod) {
  for (Method method : {Method::dense, Method::gd, Method::dgc, Method::samomentum, Method::gmc,
                        Method::gmc_plus}) {
    Config config;
    config.method = method;
    config.ratio = 0.05;
    config.server_ratio = 0.1;
    expect_replica_invariant(config, 80 + static_cast<int>(method));
  }
}

TEST(ReplicaInvariant, HoldsWithNarrowWireValuesAndOtherCompressors) {
  Config config;
  config.ratio = 0.05;
  for (Compressor c : {Compressor::threshold, Compressor::randk, Compressor::rbgs}) {
    for (WireValue wire : {WireValue::bf16, WireValue::f16}) {
      config.compressor = c;
      config.wire_values = wire;
      expect_replica_invariant(config, 90);
    }
  }
}

TEST(SparseReply, SendsTheLargestDifferencesAndKeepsTheRest) {
  const Segments model({500, 300});
  Config config;
  config.ratio = 0.02;
  std::mt19937_64 rng(95);
  std::vector<float> w = test::random_normal(rng, model.total());
  std::vector<float> replica = test::random_normal(rng, model.total());
  const std::vector<float> replica_before = replica;
  const SelectionPlan plan = reply_plan(model, config);
  const MessageLayout layout = sparse_reply_layout(model, config);
  Bytes reply(layout.bytes, 0xAB);  // poisoned
  host::Scratch scratch;
  host::ReplyInfo info;
  info.step = 6;
  info.model_version = 40;
  host::write_sparse_reply(w.data(), replica.data(), model, plan, info, reply.data(), layout,
                           scratch);
  const MessageHeader h = read_header(reply.data());
  EXPECT_EQ(h.kind, MessageKind::sparse_reply);
  EXPECT_EQ(h.count, 10u + 6u);
  EXPECT_EQ(h.step, 6u);
  EXPECT_EQ(h.model_version, 40u);
  std::vector<float> difference(model.total());
  for (std::size_t i = 0; i < w.size(); ++i) difference[i] = w[i] - replica_before[i];
  std::vector<std::uint64_t> want(plan.total_capacity());
  host::select(difference.data(), model, plan, 0, 0, 1024, want.data(), nullptr);
  std::vector<bool> sent(model.total(), false);
  for (std::uint64_t j = 0; j < h.count; ++j) {
    const std::uint64_t i = read_index(reply.data(), layout, j);
    ASSERT_EQ(i, want[j]);
    EXPECT_EQ(read_value(reply.data(), layout, j), difference[i]);
    EXPECT_EQ(replica[i], replica_before[i] + difference[i]);
    sent[i] = true;
  }
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (!sent[i]) {
      EXPECT_EQ(replica[i], replica_before[i]);
    }
  }
}

TEST(SyncAverage, SubtractsTheMeanOfThePushesInWorkerOrder) {
  const std::vector<float> acc = {3.0f, -1.5f, 0.3f};
  std::vector<float> w = {1.0f, 1.0f, 1.0f};
  host::apply_average(acc.data(), 3, w.data(), 3);
  const float third = 1.0f / 3.0f;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w[i], 1.0f - acc[i] * third);
  EXPECT_THROW(host::apply_average(acc.data(), 0, w.data(), 3), Error);
}

}  // namespace
}  // namespace dgs
