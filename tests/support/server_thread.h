// Runs a Server's serve_one() loop in a thread that can be stopped and
// restarted, so a test can touch the server (save, inspect) while it is idle.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "dgs/server.h"

namespace dgs::test {

class ServerThread {
 public:
  explicit ServerThread(Server& server) : server_(server) { start(); }
  ~ServerThread() { stop(); }

  void start() {
    stop_ = false;
    thread_ = std::thread([this] {
      while (!stop_) server_.serve_one(std::chrono::milliseconds(20));
    });
  }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  Server& server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dgs::test
