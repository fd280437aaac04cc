// Turns an MPI return code into a dgs::Error naming the call, rank and peer.
#pragma once

#include <mpi.h>

#include <string>

#include "dgs/error.h"

namespace dgs::detail {

inline void mpi_check(int code, const char* call, int rank, int peer) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(ErrorCode::mpi, std::string(call) + " failed on rank " + std::to_string(rank) +
                                  (peer >= 0 ? " (peer " + std::to_string(peer) + ")" : "") + ": " +
                                  std::string(text, static_cast<std::size_t>(length)));
}

}  // namespace dgs::detail
