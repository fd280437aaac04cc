#include "runtime/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <utility>

namespace dgs {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::warning)};
std::mutex g_sink_mutex;
LogSink g_sink;

const char* label(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
    case LogLevel::off:
      break;
  }
  return "";
}

}  // namespace

void set_log_level(LogLevel level) noexcept {
  g_level = static_cast<int>(level);
}
LogLevel log_level() noexcept {
  return static_cast<LogLevel>(g_level.load());
}

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = std::move(sink);
}

namespace detail {

bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::off && static_cast<int>(level) >= g_level.load();
}

void log(LogLevel level, const std::string& message) {
  if (!log_enabled(level)) return;
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  if (g_sink) {
    g_sink(level, message);
  } else {
    std::fprintf(stderr, "dgs %s: %s\n", label(level), message.c_str());
  }
}

}  // namespace detail
}  // namespace dgs
