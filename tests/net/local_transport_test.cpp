#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "dgs/error.h"
#include "dgs/transport.h"
#include "net/deadline.h"

namespace dgs {
namespace {

using namespace std::chrono_literals;

std::vector<unsigned char> bytes(std::initializer_list<int> v) {
  std::vector<unsigned char> out;
  for (int x : v) out.push_back(static_cast<unsigned char>(x));
  return out;
}

TEST(LocalTransport, DeliversInArrivalOrderFromAnyPeer) {
  LocalHub hub(4, MemoryKind::host);
  auto server = hub.endpoint(0);
  auto a = hub.endpoint(1);
  auto b = hub.endpoint(2);
  b->send(0, bytes({2, 2}).data(), 2);
  a->send(0, bytes({1}).data(), 1);
  b->send(0, bytes({3, 3, 3}).data(), 3);
  std::vector<unsigned char> buffer(8, 0xEE);
  Receipt r = server->recv_any({1, 2, 3}, buffer.data(), buffer.size(), 1s);
  EXPECT_EQ(r.status, Receipt::Status::message);
  EXPECT_EQ(r.peer, 2);
  EXPECT_EQ(r.bytes, 2u);
  r = server->recv_any({1, 2}, buffer.data(), buffer.size(), 1s);
  EXPECT_EQ(r.peer, 1);
  EXPECT_EQ(buffer[0], 1);
  // recv from one peer skips the others' messages.
  a->send(0, bytes({9}).data(), 1);
  r = server->recv(1, buffer.data(), buffer.size(), 1s);
  EXPECT_EQ(r.peer, 1);
  EXPECT_EQ(buffer[0], 9);
  r = server->recv(2, buffer.data(), buffer.size(), 1s);
  EXPECT_EQ(r.bytes, 3u);
  EXPECT_EQ(buffer[2], 3);
}

TEST(LocalTransport, ReportsTheSendersSizeButCopiesAtMostTheBuffer) {
  LocalHub hub(2, MemoryKind::host);
  auto r0 = hub.endpoint(0);
  auto r1 = hub.endpoint(1);
  r1->send(0, bytes({1, 2, 3, 4}).data(), 4);
  std::vector<unsigned char> buffer(3, 0);
  const Receipt r = r0->recv(1, buffer.data(), 2, 1s);
  EXPECT_EQ(r.bytes, 4u);
  EXPECT_EQ(buffer, bytes({1, 2, 0}));
}

TEST(LocalTransport, TimesOutWhenNothingArrives) {
  LocalHub hub(2, MemoryKind::host);
  auto r0 = hub.endpoint(0);
  unsigned char b;
  const auto start = std::chrono::steady_clock::now();
  const Receipt r = r0->recv_any({1}, &b, 1, 50ms);
  EXPECT_EQ(r.status, Receipt::Status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
}

TEST(LocalTransport, WakesAReceiverWaitingInAnotherThread) {
  LocalHub hub(2, MemoryKind::host);
  auto r0 = hub.endpoint(0);
  auto r1 = hub.endpoint(1);
  std::thread sender([&] {
    std::this_thread::sleep_for(30ms);
    r1->send(0, bytes({7}).data(), 1);
  });
  unsigned char b = 0;
  const Receipt r = r0->recv(1, &b, 1, 5s);
  sender.join();
  EXPECT_EQ(r.status, Receipt::Status::message);
  EXPECT_EQ(b, 7);
}

// milliseconds::max() means wait for ever: now() + max() in nanoseconds
// would wrap into the past and end the wait at once.
TEST(LocalTransport, ATimeoutOfMillisecondsMaxWaitsForTheMessage) {
  LocalHub hub(2, MemoryKind::host);
  auto r0 = hub.endpoint(0);
  auto r1 = hub.endpoint(1);
  std::thread sender([&] {
    std::this_thread::sleep_for(30ms);
    r1->send(0, bytes({9}).data(), 1);
  });
  unsigned char b = 0;
  const Receipt r = r0->recv_any({1}, &b, 1, std::chrono::milliseconds::max());
  sender.join();
  EXPECT_EQ(r.status, Receipt::Status::message);
  EXPECT_EQ(b, 9);
}

TEST(Deadline, EndsAfterTheTimeoutAndNeverWhenItPassesTheClocksRange) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point before = Clock::now();
  const Clock::time_point in_a_second = detail::deadline_after(1000ms);
  const Clock::time_point after = Clock::now();
  EXPECT_GE(in_a_second, before + 1000ms);
  EXPECT_LE(in_a_second, after + 1000ms);
  EXPECT_EQ(detail::deadline_after(std::chrono::milliseconds::max()), Clock::time_point::max());
  EXPECT_EQ(detail::deadline_after(std::chrono::hours(24 * 365 * 1000)),
            Clock::time_point::max());  // a thousand years: past the nanosecond clock's ~292
  const Clock::time_point now = detail::deadline_after(0ms);
  const Clock::time_point past = detail::deadline_after(-5ms);
  EXPECT_LE(now, past);  // both now: no wait
  EXPECT_LE(past, Clock::now());
}

TEST(LocalTransport, AClosedPeerIsReportedOnceAfterItsLastMessages) {
  LocalHub hub(3, MemoryKind::host);
  auto server = hub.endpoint(0);
  auto worker = hub.endpoint(1);
  worker->send(0, bytes({5}).data(), 1);
  hub.close(1);
  unsigned char b;
  Receipt r = server->recv_any({1, 2}, &b, 1, 1s);
  EXPECT_EQ(r.status, Receipt::Status::message);
  r = server->recv_any({1, 2}, &b, 1, 1s);
  EXPECT_EQ(r.status, Receipt::Status::peer_failed);
  EXPECT_EQ(r.peer, 1);
  EXPECT_FALSE(r.error.empty());
  r = server->recv_any({1, 2}, &b, 1, 20ms);
  EXPECT_EQ(r.status, Receipt::Status::timeout);
  // The dead endpoint refuses to work, and sending to it fails naming both ranks.
  EXPECT_THROW(worker->send(0, &b, 1), Error);
  try {
    server->send(1, &b, 1);
    FAIL() << "sent to a closed rank";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::transport);
    EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos);
  }
  // Reopening gives a fresh endpoint.
  auto again = hub.endpoint(1);
  again->send(0, bytes({6}).data(), 1);
  r = server->recv(1, &b, 1, 1s);
  EXPECT_EQ(r.status, Receipt::Status::message);
  EXPECT_EQ(b, 6);
}

TEST(LocalTransport, RejectsPeersOutsideTheWorld) {
  LocalHub hub(2, MemoryKind::host);
  auto r0 = hub.endpoint(0);
  unsigned char b = 0;
  EXPECT_THROW(r0->send(2, &b, 1), Error);
  EXPECT_THROW(r0->send(0, &b, 1), Error);
  EXPECT_THROW(r0->recv_any({-1}, &b, 1, 1ms), Error);
  EXPECT_THROW(LocalHub(1, MemoryKind::host), Error);
}

// A device message has landed when its receive returns, for work on any
// stream: here a copy back on a non-blocking stream, issued at once (a
// plain cudaMemcpy from pageable memory may return before its copy lands).
TEST(LocalTransport, ADeviceMessageHasLandedWhenItsReceiveReturns) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device";
  }
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  LocalHub hub(2, MemoryKind::device);
  auto r0 = hub.endpoint(0);
  auto r1 = hub.endpoint(1);
  void *sent = nullptr, *received = nullptr, *pinned = nullptr;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaMalloc(&sent, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&received, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&pinned, kBytes), cudaSuccess);
  auto* back = static_cast<unsigned char*>(pinned);
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::vector<unsigned char> pattern(kBytes);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (std::size_t i = 0; i < kBytes; ++i) {
      pattern[i] = static_cast<unsigned char>((i * 131 + round * 7 + (i >> 12)) & 0xFF);
    }
    ASSERT_EQ(cudaMemcpy(sent, pattern.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(received, 0xA5, kBytes), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    r1->send(0, sent, kBytes);
    ASSERT_EQ(r0->recv(1, received, kBytes, 10s).status, Receipt::Status::message);
    ASSERT_EQ(cudaMemcpyAsync(back, received, kBytes, cudaMemcpyDeviceToHost, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(std::memcmp(back, pattern.data(), kBytes), 0);
  }
  cudaStreamDestroy(stream);
  cudaFreeHost(back);
  cudaFree(received);
  cudaFree(sent);
}

}  // namespace
}  // namespace dgs
