// Timeouts of any length, milliseconds::max() (for ever) included. In
// steady_clock's nanoseconds, now() + milliseconds::max() wraps into the past,
// so a wait meant to last for ever would end at once, and so would a
// comparison of elapsed time with such a limit.
#pragma once

#include <chrono>

namespace dgs::detail {

/// The moment `timeout` from now ends; time_point::max(), which never comes,
/// when that passes the clock's range.
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point now = Clock::now();
  if (timeout <= std::chrono::milliseconds::zero()) return now;
  // The milliseconds left before the clock's end, rounded down.
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now);
  if (timeout >= left) return Clock::time_point::max();
  return now + timeout;
}

/// Whether `elapsed` is longer than `limit`, compared in milliseconds (in the
/// clock's nanoseconds, a limit of milliseconds::max() would wrap).
inline bool longer_than(std::chrono::steady_clock::duration elapsed,
                        std::chrono::milliseconds limit) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(elapsed) > limit;
}

}  // namespace dgs::detail
