// The library's only output: messages go through a sink the user can replace
// or silence. By default warnings and errors go to stderr.
#pragma once

#include <functional>
#include <string_view>

namespace dgs {

enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3, off = 4 };

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

/// Messages below `level` are dropped; LogLevel::off silences the library.
void set_log_level(LogLevel level) noexcept;
LogLevel log_level() noexcept;
/// Replaces the sink (thread-safe); an empty function restores the default.
void set_log_sink(LogSink sink);

}  // namespace dgs
