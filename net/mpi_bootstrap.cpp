#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "dgs/bootstrap.h"
#include "dgs/error.h"
#include "net/deadline.h"
#include "net/mpi_check.h"

namespace dgs {
namespace {

class MpiBootstrap final : public Bootstrap {
 public:
  explicit MpiBootstrap(std::chrono::milliseconds timeout) : timeout_(timeout) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw Error(ErrorCode::mpi,
                  "dgs::make_mpi_bootstrap: MPI is not initialised "
                  "(create a dgs::MpiSession first)");
    }
    detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank", -1, -1);
    detail::mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size", rank_, -1);
    // MPI_COMM_WORLD's errors abort the job by default; a duplicate whose
    // errors come back lets a failed broadcast become a dgs::Error. The
    // duplication is collective too: polled against the same deadline.
    MPI_Request request = MPI_REQUEST_NULL;
    detail::mpi_check(MPI_Comm_idup(MPI_COMM_WORLD, &comm_, &request), "MPI_Comm_idup", rank_, -1);
    wait(request, detail::deadline_after(timeout_), "the duplication of MPI_COMM_WORLD");
    detail::mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
                      rank_, -1);
  }
  ~MpiBootstrap() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  MpiBootstrap(const MpiBootstrap&) = delete;
  MpiBootstrap& operator=(const MpiBootstrap&) = delete;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char* name() const noexcept override { return "mpi"; }

  // In pieces below 2 GiB (an MPI count is an int), each polled until the
  // deadline: a rank that never joins the broadcast (it died, or took
  // another path) makes the others fail in time instead of waiting for ever.
  // Through a buffer of its own, which a broadcast given up on keeps: MPI
  // may still write into it after broadcast() has thrown.
  void broadcast(void* data, std::size_t bytes) override {
    if (broken_) {
      throw Error(ErrorCode::invalid_argument,
                  "dgs mpi bootstrap: rank " + std::to_string(rank_) +
                      ": a broadcast timed out before; the ranks' collectives no longer match");
    }
    constexpr std::size_t kPiece = std::size_t{1} << 30;
    const auto deadline = detail::deadline_after(timeout_);
    auto* at = static_cast<unsigned char*>(data);
    std::unique_ptr<unsigned char[]> piece(
        new unsigned char[std::max<std::size_t>(std::min(kPiece, bytes), 1)]);
    std::size_t done = 0;
    do {
      const std::size_t n = std::min(kPiece, bytes - done);
      if (rank_ == 0 && n > 0) std::memcpy(piece.get(), at + done, n);
      MPI_Request request = MPI_REQUEST_NULL;
      detail::mpi_check(MPI_Ibcast(piece.get(), static_cast<int>(n), MPI_BYTE, 0, comm_, &request),
                        "MPI_Ibcast", rank_, 0);
      try {
        wait(request, deadline, "the broadcast from rank 0");
      } catch (...) {
        piece.release();  // MPI may still write into it
        throw;
      }
      if (rank_ != 0 && n > 0) std::memcpy(at + done, piece.get(), n);
      done += n;
    } while (done < bytes);
  }

 private:
  // Polls `request` until it completes or the deadline passes (then the
  // bootstrap is broken: the request cannot be taken back).
  void wait(MPI_Request& request, std::chrono::steady_clock::time_point deadline,
            const char* what) {
    // MPI moves a collective's data only inside MPI calls: poll without
    // sleeping (yielding the core to other ranks on a shared machine).
    for (int complete = 0;;) {
      detail::mpi_check(MPI_Test(&request, &complete, MPI_STATUS_IGNORE), "MPI_Test", rank_, 0);
      if (complete) return;
      if (std::chrono::steady_clock::now() > deadline) {
        broken_ = true;
        throw Error(ErrorCode::timeout,
                    "dgs mpi bootstrap: rank " + std::to_string(rank_) + " of " +
                        std::to_string(size_) + ": " + what + " did not complete within " +
                        std::to_string(timeout_.count()) +
                        " ms (a rank died, or did not make the same bootstrap and broadcasts)");
      }
      std::this_thread::yield();
    }
  }

  bool broken_ = false;
  std::chrono::milliseconds timeout_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Bootstrap> make_mpi_bootstrap(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) {
    throw Error(ErrorCode::invalid_argument,
                "dgs::make_mpi_bootstrap: the timeout must be positive (got " +
                    std::to_string(timeout.count()) + " ms)");
  }
  return std::make_unique<MpiBootstrap>(timeout);
}

}  // namespace dgs
