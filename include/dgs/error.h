// dgs::Error: the one error type the library throws.
#pragma once

#include <stdexcept>
#include <string>

namespace dgs {

/// What kind of failure an Error reports.
enum class ErrorCode {
  invalid_argument,  ///< a function argument is out of its documented range
  invalid_config,    ///< a Config field is out of range; Error::field() names it
  invalid_message,   ///< a wire message failed validation; field() names the header field
  cuda,              ///< a CUDA runtime call failed
  nccl,              ///< an NCCL call failed
  mpi,               ///< an MPI call failed
  io,                ///< a file could not be read or written
  transport,         ///< a transport could not deliver a message
  timeout,           ///< a wait ran past its deadline
  internal,          ///< a broken internal invariant (a bug in dgs)
};

/// Short lowercase name of a code ("invalid_config", "cuda", ...).
const char* to_string(ErrorCode code) noexcept;

/// Thrown for every failure. what() is a complete sentence naming the
/// operation, the failing call and its code, and (where there is one) the
/// rank and the peer; field() names the offending Config or message field.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, std::string field = {});

  ErrorCode code() const noexcept { return code_; }
  /// The Config or message field at fault, or empty when none applies.
  const std::string& field() const noexcept { return field_; }

 private:
  ErrorCode code_;
  std::string field_;
};

}  // namespace dgs
