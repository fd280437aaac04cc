// Run as 3 (or more) processes with DGS_RANK, DGS_WORLD_SIZE and
// DGS_RENDEZVOUS set, or under mpirun (built with MPI): rank 0 hands out two
// blobs through dgs::make_bootstrap(), every rank checks them; under mpirun
// also one of 2^31 + 5 bytes, and rank 0 reports every rank's verdict.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dgs/bootstrap.h"
#include "dgs/error.h"
#include "dgs/version.h"
#if DGS_WITH_MPI
#include <mpi.h>

#include <memory>

#include "dgs/mpi.h"
#endif

namespace {

std::vector<unsigned char> blob(std::size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> b(bytes);
  for (auto& x : b) x = static_cast<unsigned char>(rng());
  return b;
}

// Bytes that depend on their position (cheap to make for gigabytes).
unsigned char pattern(std::size_t i) {
  return static_cast<unsigned char>(((i + 1) * 0x9E3779B97F4A7C15ull) >> 56);
}

}  // namespace

int main(int argc, char** argv) {
  try {
#if DGS_WITH_MPI
    std::unique_ptr<dgs::MpiSession> mpi;
    if (dgs::launched_by_mpi()) mpi = std::make_unique<dgs::MpiSession>(&argc, &argv);
#else
    (void)argc;
    (void)argv;
#endif
    auto bootstrap = dgs::make_bootstrap(std::chrono::seconds(60));
    const int rank = bootstrap->rank();
    bool ok = true;
    // Two broadcasts of different sizes, like one NCCL id per worker.
    for (std::size_t bytes : {std::size_t{128} * (bootstrap->size() - 1), std::size_t{77}}) {
      const std::vector<unsigned char> want = blob(bytes, static_cast<unsigned>(bytes));
      std::vector<unsigned char> got = rank == 0 ? want : std::vector<unsigned char>(bytes, 0);
      bootstrap->broadcast(got.data(), got.size());
      ok = ok && got == want;
    }
#if DGS_WITH_MPI
    if (mpi) {
      // One broadcast past an MPI count (1 GiB pieces): 2^31 + 5 bytes.
      const std::size_t bytes = (std::size_t{1} << 31) + 5;
      std::vector<unsigned char> got(bytes, 0);
      if (rank == 0) {
        for (std::size_t i = 0; i < bytes; ++i) got[i] = pattern(i);
      }
      bootstrap->broadcast(got.data(), got.size());
      std::size_t i = 0;
      while (i < bytes && got[i] == pattern(i)) ++i;
      if (i < bytes)
        std::printf("rank %d: the broadcast of 2^31 + 5 bytes differs at %zu\n", rank, i);
      ok = ok && i == bytes;
      // A broadcast rank 0 joins late: the others, with a timeout of 2 s,
      // throw a timeout error that says so; then rank 0 joins, and the
      // abandoned broadcasts complete into buffers the bootstrap kept. (The
      // bootstrap's own collective, the duplication of the world, is waited
      // for with the same timeout: the barrier brings the ranks to it
      // together.)
      MPI_Barrier(MPI_COMM_WORLD);
      auto late = dgs::make_mpi_bootstrap(rank == 0 ? std::chrono::milliseconds(60000)
                                                    : std::chrono::milliseconds(2000));
      std::vector<unsigned char> b(64, 0);
      if (rank != 0) {
        try {
          late->broadcast(b.data(), b.size());
          std::printf("rank %d: a broadcast rank 0 had not joined did not time out\n", rank);
          ok = false;
        } catch (const dgs::Error& e) {
          const bool said =
              e.code() == dgs::ErrorCode::timeout &&
              std::string(e.what()).find("did not complete within 2000 ms") != std::string::npos;
          if (!said) std::printf("rank %d: the timeout said: %s\n", rank, e.what());
          ok = ok && said;
        }
      }
      MPI_Barrier(MPI_COMM_WORLD);
      if (rank == 0) {
        b = blob(64, 5);
        late->broadcast(b.data(), b.size());
      }
      // Rank 0 prints the result for every rank.
      int every = ok ? 1 : 0;
      MPI_Allreduce(MPI_IN_PLACE, &every, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
      ok = every == 1;
    }
#endif
    std::printf("rank %d of %d via %s: %s\n", rank, bootstrap->size(), bootstrap->name(),
                ok ? "ok" : "WRONG BYTES");
    // run_mpi.sh wants one result line (from rank 0).
    if (rank == 0) std::printf("RESULT %s\n", ok ? "ok" : "failed");
    return ok ? 0 : 1;
  } catch (const dgs::Error& e) {
    std::fprintf(stderr, "bootstrap_check: %s\n", e.what());
    return 2;
  }
}
