// Run as 3 (or more) processes with DGS_RANK, DGS_WORLD_SIZE and
// DGS_RENDEZVOUS set: rank 0 hands out two blobs, every rank checks them.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "dgs/bootstrap.h"
#include "dgs/error.h"

namespace {

std::vector<unsigned char> blob(std::size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> b(bytes);
  for (auto& x : b) x = static_cast<unsigned char>(rng());
  return b;
}

}  // namespace

int main() {
  try {
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
    std::printf("rank %d of %d via %s: %s\n", rank, bootstrap->size(), bootstrap->name(),
                ok ? "ok" : "WRONG BYTES");
    return ok ? 0 : 1;
  } catch (const dgs::Error& e) {
    std::fprintf(stderr, "bootstrap_check: %s\n", e.what());
    return 2;
  }
}
