// Waiting between the threads of a test job.
//
// Server::run() returns once every worker that joined has left or was
// dropped (docs/protocol.md). A test whose workers join from threads must
// therefore not let one leave before the others have joined: on a loaded
// machine a thread can start late enough for the others to have trained and
// left, and the server to have stopped, before it joins.
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
