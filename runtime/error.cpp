#include "dgs/error.h"

#include <utility>

namespace dgs {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::invalid_config:
      return "invalid_config";
    case ErrorCode::invalid_message:
      return "invalid_message";
    case ErrorCode::cuda:
      return "cuda";
    case ErrorCode::nccl:
      return "nccl";
    case ErrorCode::mpi:
      return "mpi";
    case ErrorCode::io:
      return "io";
    case ErrorCode::transport:
      return "transport";
    case ErrorCode::timeout:
      return "timeout";
    case ErrorCode::internal:
      return "internal";
  }
  return "unknown";
}

Error::Error(ErrorCode code, const std::string& message, std::string field)
    : std::runtime_error(message), code_(code), field_(std::move(field)) {}

}  // namespace dgs
