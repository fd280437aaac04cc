// Waiting between the threads of a test job.
//
// Server::run() returns once each worker has joined at least once and none is
// live (docs/protocol.md). A worker that joins again after that (a
// replacement for a dropped one) finds no server, so a test that replaces a
// worker keeps the others from leaving until the replacement has joined.
#pragma once

#include <chrono>
#include <thread>

namespace dgs::test {

/// Waits until pred() holds, at most `limit` (a thread that failed elsewhere
/// must not leave this one waiting for ever).
template <typename Pred>
void wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace dgs::test
