// The MPI transport's internals that tests reach: the piece size a message
// is cut into (net/mpi_transport.cpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "dgs/backend.h"
#include "dgs/transport.h"

namespace dgs::detail {

/// Messages longer than this go as several MPI messages: an MPI count is an
/// int, so one MPI message cannot hold 2 GiB (a dense model of 2^29 floats),
/// and device buffers are staged a piece at a time, not whole.
constexpr std::size_t kMpiPieceBytes = std::size_t{64} << 20;

/// make_mpi_transport with another piece size (1 to 2^31 - 1 bytes), so that
/// tests can cut small messages into pieces.
std::shared_ptr<Transport> make_mpi_transport(
    MemoryKind memory, int color, std::size_t piece_bytes,
    std::chrono::milliseconds send_timeout = std::chrono::minutes(5));

}  // namespace dgs::detail
