// Start-up of a multi-process job: which rank am I, how many are we, and a
// way for rank 0 to hand every rank a few bytes (the NCCL unique ids).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace dgs {

/// Where this process's rank and the world size came from.
struct LaunchInfo {
  int rank = -1;
  int size = -1;
  /// The variables they were read from: "DGS_RANK/DGS_WORLD_SIZE",
  /// "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE" (mpirun),
  /// "PMI_RANK/PMI_SIZE", "SLURM_PROCID/SLURM_NTASKS" (srun) or "RANK/WORLD_SIZE"
  /// (torchrun; before the others when TORCHELASTIC_RUN_ID is set).
  std::string source;
  /// This process's rank on its node, from the same launcher: DGS_LOCAL_RANK,
  /// OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID (MPICH's PMI), SLURM_LOCALID
  /// or torchrun's LOCAL_RANK; -1 when that launcher did not set it. Which
  /// GPU to use: see local_gpu().
  int local_rank = -1;
};

/// The GPU a process of a launched job should use among the `devices` its
/// node shows: its local rank modulo `devices`, or its rank modulo `devices`
/// when the launcher gave no local rank (ranks placed node by node). 0 when
/// `devices` < 1.
int local_gpu(const LaunchInfo& launch, int devices) noexcept;

/// Reads the rank and world size from the launcher's environment, in the
/// order listed above. Throws dgs::Error (invalid_argument) naming the
/// variables it looked for when none are set, or when they are inconsistent
/// (a rank outside the world, not a number, only one of DGS_RANK and
/// DGS_WORLD_SIZE).
LaunchInfo detect_launch();

/// The same, but nullopt when no pair of variables is set (throws only when
/// they are inconsistent): for programs that also run without a launcher.
std::optional<LaunchInfo> find_launch();

/// True when the process was started by mpirun or srun under an MPI launcher
/// (false under torchrun, whose processes inherit such variables from a
/// launcher around it but are not MPI ranks).
bool launched_by_mpi() noexcept;

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  virtual const char* name() const noexcept = 0;
  /// Rank 0's `bytes` bytes at `data` are copied to `data` on every rank.
  /// Collective: every rank calls it with the same size, in the same order.
  virtual void broadcast(void* data, std::size_t bytes) = 0;
};

/// Rendezvous through a file on a file system every rank sees. `path` must be
/// unique to the job (put the job id in it); rank 0 removes its files once
/// every rank has read them.
std::unique_ptr<Bootstrap> make_file_bootstrap(int rank, int size, const std::string& path,
                                               std::chrono::milliseconds timeout);

/// Rendezvous over TCP: rank 0 listens on `port` (all interfaces) and the
/// others connect to `host`:`port`. Used only at start-up.
std::unique_ptr<Bootstrap> make_tcp_bootstrap(int rank, int size, const std::string& host, int port,
                                              std::chrono::milliseconds timeout);

/// Through a duplicate of MPI_COMM_WORLD (MPI must be initialised) whose
/// errors are returned, not fatal: a broadcast that does not complete within
/// `timeout` throws dgs::Error (timeout), an MPI error dgs::Error (mpi)
/// naming the call. Throws when dgs was built without MPI.
std::unique_ptr<Bootstrap> make_mpi_bootstrap(
    std::chrono::milliseconds timeout = std::chrono::minutes(5));

/// Picks one: MPI when launched by mpirun/srun and dgs was built with MPI;
/// otherwise the environment: rank and size from detect_launch() and
/// DGS_RENDEZVOUS = "file:/shared/path/job-42" or "tcp:host:port".
std::unique_ptr<Bootstrap> make_bootstrap(
    std::chrono::milliseconds timeout = std::chrono::minutes(5));

}  // namespace dgs
