// The library's internal logging entry point (see include/dgs/log.h).
#pragma once

#include <string>

#include "dgs/log.h"

namespace dgs::detail {

bool log_enabled(LogLevel level) noexcept;
void log(LogLevel level, const std::string& message);

}  // namespace dgs::detail
