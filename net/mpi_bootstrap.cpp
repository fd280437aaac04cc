#include <mpi.h>

#include <algorithm>
#include <cstddef>

#include "dgs/bootstrap.h"
#include "dgs/error.h"
#include "net/mpi_check.h"

namespace dgs {
namespace {

class MpiBootstrap final : public Bootstrap {
 public:
  MpiBootstrap() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw Error(ErrorCode::mpi,
                  "dgs::make_mpi_bootstrap: MPI is not initialised "
                  "(create a dgs::MpiSession first)");
    }
    detail::mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank", -1, -1);
    detail::mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size", rank_, -1);
  }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char* name() const noexcept override { return "mpi"; }
  // In pieces below 2 GiB: an MPI count is an int.
  void broadcast(void* data, std::size_t bytes) override {
    constexpr std::size_t kPiece = std::size_t{1} << 30;
    auto* at = static_cast<unsigned char*>(data);
    for (std::size_t done = 0; done < bytes; done += kPiece) {
      const std::size_t n = std::min(kPiece, bytes - done);
      detail::mpi_check(MPI_Bcast(at + done, static_cast<int>(n), MPI_BYTE, 0, MPI_COMM_WORLD),
                        "MPI_Bcast", rank_, 0);
    }
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Bootstrap> make_mpi_bootstrap() {
  return std::make_unique<MpiBootstrap>();
}

}  // namespace dgs
