#include <mpi.h>

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
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char* name() const noexcept override { return "mpi"; }
  void broadcast(void* data, std::size_t bytes) override {
    detail::mpi_check(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, 0, MPI_COMM_WORLD),
                      "MPI_Bcast", rank_, 0);
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Bootstrap> make_mpi_bootstrap() {
  return std::make_unique<MpiBootstrap>();
}

}  // namespace dgs
