// The environment bootstrap's choices, in one process: which launcher's
// variables give the rank and size, what a mistake in them says, and why a
// TCP rendezvous could not reach rank 0. (Several processes meeting:
// net/run_bootstrap.sh and net/bootstrap_check.cpp.)
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/bootstrap.h"
#include "dgs/error.h"
#if defined(DGS_TEST_NCCL)
#include "dgs/nccl.h"
#endif

namespace dgs {
namespace {

using namespace std::chrono_literals;

// Clears every variable the bootstrap reads, sets the test's, and puts the
// old values back afterwards.
class LaunchEnvironment : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kNames) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v == nullptr ? std::nullopt : std::optional<std::string>(v));
      ::unsetenv(name);
    }
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name, value->c_str(), 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  static void set(const char* name, const char* value) { ::setenv(name, value, 1); }

  static std::string error_of(void (*call)()) {
    try {
      call();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      return e.what();
    }
    return "no error";
  }

 private:
  static constexpr const char* kNames[] = {"DGS_RANK",
                                           "DGS_WORLD_SIZE",
                                           "OMPI_COMM_WORLD_RANK",
                                           "OMPI_COMM_WORLD_SIZE",
                                           "PMI_RANK",
                                           "PMI_SIZE",
                                           "SLURM_PROCID",
                                           "SLURM_NTASKS",
                                           "RANK",
                                           "WORLD_SIZE",
                                           "TORCHELASTIC_RUN_ID",
                                           "DGS_RENDEZVOUS",
                                           "OMPI_COMM_WORLD_LOCAL_RANK",
                                           "PMIX_RANK",
                                           "MPI_LOCALNRANKS",
                                           "DGS_LOCAL_RANK",
                                           "LOCAL_RANK",
                                           "MPI_LOCALRANKID",
                                           "SLURM_LOCALID"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST_F(LaunchEnvironment, NoVariablesMeanNoLaunch) {
  EXPECT_FALSE(find_launch().has_value());
  EXPECT_NE(error_of([] { detect_launch(); }).find("set DGS_RANK and DGS_WORLD_SIZE"),
            std::string::npos);
}

TEST_F(LaunchEnvironment, DgsVariablesComeFirst) {
  set("SLURM_PROCID", "0");
  set("SLURM_NTASKS", "2");
  set("OMPI_COMM_WORLD_RANK", "1");
  set("OMPI_COMM_WORLD_SIZE", "4");
  EXPECT_EQ(detect_launch().source, "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE");
  EXPECT_EQ(detect_launch().rank, 1);
  set("DGS_RANK", "3");
  set("DGS_WORLD_SIZE", "5");
  const LaunchInfo info = detect_launch();
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.size, 5);
  EXPECT_EQ(info.source, "DGS_RANK/DGS_WORLD_SIZE");
}

// Half of the pair set by hand is a mistake, said as such, not a reason to
// take another launcher's rank.
TEST_F(LaunchEnvironment, HalfOfTheDgsPairIsRefusedByName) {
  set("RANK", "1");
  set("WORLD_SIZE", "2");
  set("DGS_RANK", "2");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_RANK is set but DGS_WORLD_SIZE is not"),
            std::string::npos);
  ::unsetenv("DGS_RANK");
  set("DGS_WORLD_SIZE", "4");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_WORLD_SIZE is set but DGS_RANK is not"),
            std::string::npos);
}

// torchrun inside srun: every process of a node sees the node's SLURM_PROCID;
// torchrun's RANK and WORLD_SIZE are the process's own.
TEST_F(LaunchEnvironment, TorchrunsRankComesBeforeTheLauncherAroundIt) {
  set("SLURM_PROCID", "1");
  set("SLURM_NTASKS", "2");
  set("PMI_RANK", "1");
  set("PMI_SIZE", "2");
  set("RANK", "6");
  set("WORLD_SIZE", "8");
  EXPECT_EQ(detect_launch().source, "PMI_RANK/PMI_SIZE");  // RANK of something else
  set("PMIX_RANK", "1");
  EXPECT_TRUE(launched_by_mpi());
  set("TORCHELASTIC_RUN_ID", "job-7");
  const LaunchInfo info = detect_launch();
  EXPECT_EQ(info.rank, 6);
  EXPECT_EQ(info.size, 8);
  EXPECT_EQ(info.source, "RANK/WORLD_SIZE");
  // Its processes inherit srun's PMIx variables but are not MPI ranks: the
  // environment bootstrap, not MPI's.
  EXPECT_FALSE(launched_by_mpi());
}

// The local rank comes from the launcher that gave the rank, never from
// another one around it; without one, the GPU follows the rank.
TEST_F(LaunchEnvironment, TheLocalRankIsTheSameLaunchersAndPicksTheGpu) {
  set("SLURM_PROCID", "5");
  set("SLURM_NTASKS", "8");
  set("SLURM_LOCALID", "1");
  set("OMPI_COMM_WORLD_LOCAL_RANK", "2");
  LaunchInfo info = detect_launch();
  EXPECT_EQ(info.source, "SLURM_PROCID/SLURM_NTASKS");
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(local_gpu(info, 4), 1);
  set("OMPI_COMM_WORLD_RANK", "6");
  set("OMPI_COMM_WORLD_SIZE", "8");
  EXPECT_EQ(detect_launch().local_rank, 2);
  set("PMI_RANK", "0");  // under MPICH's hydra
  set("PMI_SIZE", "8");
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  EXPECT_EQ(detect_launch().local_rank, -1);
  set("MPI_LOCALRANKID", "3");
  EXPECT_EQ(detect_launch().local_rank, 3);
  // torchrun inside srun: its LOCAL_RANK, not the node's SLURM_LOCALID.
  set("TORCHELASTIC_RUN_ID", "job-7");
  set("RANK", "7");
  set("WORLD_SIZE", "8");
  set("LOCAL_RANK", "3");
  info = detect_launch();
  EXPECT_EQ(info.rank, 7);
  EXPECT_EQ(info.local_rank, 3);
  EXPECT_EQ(local_gpu(info, 2), 1);
  // Set by hand without DGS_LOCAL_RANK: no local rank, and the rank decides.
  set("DGS_RANK", "6");
  set("DGS_WORLD_SIZE", "8");
  info = detect_launch();
  EXPECT_EQ(info.local_rank, -1);
  EXPECT_EQ(local_gpu(info, 4), 2);
  EXPECT_EQ(local_gpu(info, 0), 0);
  set("DGS_LOCAL_RANK", "5");
  EXPECT_EQ(local_gpu(detect_launch(), 4), 1);
  set("DGS_LOCAL_RANK", "8");
  EXPECT_NE(
      error_of([] { find_launch(); }).find("DGS_LOCAL_RANK='8' is not a rank inside the world"),
      std::string::npos);
  set("DGS_LOCAL_RANK", "-1");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_LOCAL_RANK='-1'"), std::string::npos);
}

TEST_F(LaunchEnvironment, GarbageAndRanksOutsideTheWorldAreRefused) {
  set("DGS_RANK", "one");
  set("DGS_WORLD_SIZE", "2");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_RANK='one'"), std::string::npos);
  set("DGS_RANK", "2");
  EXPECT_NE(error_of([] { find_launch(); }).find("is not a rank inside the world"),
            std::string::npos);
  // Only digits (and a minus sign, refused by its range): strtol alone
  // takes leading blanks and a plus sign.
  set("DGS_RANK", " 1");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_RANK=' 1'"), std::string::npos);
  set("DGS_RANK", "1");
  set("DGS_WORLD_SIZE", "+2");
  EXPECT_NE(error_of([] { find_launch(); }).find("DGS_WORLD_SIZE='+2'"), std::string::npos);
  set("DGS_WORLD_SIZE", "99999999999999999999");
  EXPECT_NE(error_of([] { find_launch(); }).find("is not a rank or size"), std::string::npos);
  set("DGS_WORLD_SIZE", "2");
  set("DGS_RANK", "1");
  set("DGS_RENDEZVOUS", "tcp:localhost:http");
  EXPECT_NE(error_of([] { make_bootstrap(1s); }).find("'http' is not a TCP port"),
            std::string::npos);
  set("DGS_RENDEZVOUS", "tcp:localhost:70000");
  EXPECT_NE(error_of([] { make_bootstrap(1s); }).find("'70000' is not a TCP port"),
            std::string::npos);
  set("DGS_RENDEZVOUS", "tcp:[::1]");
  EXPECT_NE(error_of([] { make_bootstrap(1s); }).find("needs tcp:host:port"), std::string::npos);
  set("DGS_RENDEZVOUS", "file:");
  EXPECT_NE(error_of([] { make_bootstrap(1s); }).find("file bootstrap: the path is empty"),
            std::string::npos);
  set("DGS_RENDEZVOUS", "udp:localhost:7000");
  EXPECT_NE(error_of([] { make_bootstrap(1s); }).find("neither file:<path> nor tcp:<host>:<port>"),
            std::string::npos);
}

std::string tcp_failure(const std::string& host, int port) {
  try {
    make_tcp_bootstrap(1, 2, host, port, 300ms);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::timeout);
    return e.what();
  }
  return "connected";
}

// A rank that cannot reach rank 0 says why in its timeout: the name not
// found, or the connection refused (nothing listens on the port).
TEST(TcpBootstrap, ATimeoutSaysWhyRankZeroWasNotReached) {
  const std::string unknown = tcp_failure("no-such-host.invalid", 29500);
  EXPECT_NE(unknown.find("name lookup"), std::string::npos) << unknown;
  // Port 1 (tcpmux) listens nowhere these tests run.
  const std::string refused = tcp_failure("127.0.0.1", 1);
  EXPECT_NE(refused.find("Connection refused"), std::string::npos) << refused;
  const std::string bracketed = tcp_failure("[::1]", 1);
  EXPECT_EQ(bracketed.find("name lookup"), std::string::npos) << bracketed;
}

// Ranks given by hand are checked before any file is written or any port
// opened.
TEST(Bootstraps, ARankOutsideTheWorldIsRefused) {
  for (const auto& [rank, size] : {std::pair{2, 2}, std::pair{-1, 2}, std::pair{0, 0}}) {
    for (const bool tcp : {false, true}) {
      try {
        if (tcp) {
          make_tcp_bootstrap(rank, size, "127.0.0.1", 29500, 1s);
        } else {
          make_file_bootstrap(rank, size, "/nonexistent/dgs-test", 1s);
        }
        ADD_FAILURE() << "rank " << rank << " of " << size << " was taken";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        const std::string want = std::string(tcp ? "tcp" : "file") + " bootstrap: rank " +
                                 std::to_string(rank) + " of " + std::to_string(size) +
                                 " is not a rank inside the world";
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      }
    }
  }
}

// A fresh directory for one test's rendezvous files, removed afterwards.
class RendezvousDir {
 public:
  RendezvousDir() {
    std::string pattern = ::testing::TempDir() + "dgs_rendezvous_XXXXXX";
    dir_ = ::mkdtemp(pattern.data()) != nullptr ? pattern : "";
    EXPECT_FALSE(dir_.empty()) << "mkdtemp failed";
  }
  ~RendezvousDir() {
    for (const std::string& f : files()) std::remove((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name != "." && name != "..") out.push_back(name);
      }
      ::closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  void touch(const std::string& name, const std::string& content = "") const {
    std::FILE* f = std::fopen(path(name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(content.data(), 1, content.size(), f);
    std::fclose(f);
  }

 private:
  std::string dir_;
};

// What `call` throws: its code and message.
std::pair<ErrorCode, std::string> thrown(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  return {ErrorCode::invalid_argument, "no error"};
}

// Three ranks in threads, two broadcasts each: every rank gets rank 0's
// bytes, and no file is left.
TEST(FileBootstrap, RanksInThreadsGetRankZerosBytesAndNoFileIsLeft) {
  RendezvousDir dir;
  std::vector<std::array<std::uint64_t, 2>> got(3);
  std::vector<std::string> errors(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      try {
        auto b = make_file_bootstrap(r, 3, dir.path("job"), 20s);
        for (int n = 0; n < 2; ++n) {
          std::uint64_t value = r == 0 ? 1000u + static_cast<unsigned>(n) : 7u;
          b->broadcast(&value, sizeof value);
          got[r][n] = value;
        }
      } catch (const Error& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(got[r][0], 1000u) << "rank " << r;
    EXPECT_EQ(got[r][1], 1001u) << "rank " << r;
  }
  EXPECT_TRUE(dir.files().empty()) << dir.files().front();
}

// Rank 0 that gives up waiting for a rank removes its files.
TEST(FileBootstrap, RankZeroThatTimesOutLeavesNoFile) {
  RendezvousDir dir;
  auto b = make_file_bootstrap(0, 2, dir.path("job"), 200ms);
  std::uint64_t value = 5;
  const auto [code, what] = thrown([&] { b->broadcast(&value, sizeof value); });
  EXPECT_EQ(code, ErrorCode::timeout);
  EXPECT_NE(what.find("no sign of rank 1 to read"), std::string::npos) << what;
  EXPECT_TRUE(dir.files().empty()) << dir.files().front();
}

// Files an earlier run left behind are named, not read as this run's.
TEST(FileBootstrap, FilesAnEarlierRunLeftAreRefusedOrNeverTaken) {
  RendezvousDir dir;
  std::uint64_t value = 5;
  // Rank 0 finds an acknowledgement it did not ask for: it refuses, and
  // leaves the file (another job's, maybe) alone.
  dir.touch("job.0.ack1", "1\n");
  auto zero = make_file_bootstrap(0, 2, dir.path("job"), 1s);
  auto [code, what] = thrown([&] { zero->broadcast(&value, sizeof value); });
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(what.find("job.0.ack1 exists before rank 0 wrote"), std::string::npos) << what;
  EXPECT_EQ(dir.files(), std::vector<std::string>{"job.0.ack1"});
  // So does a rank whose own acknowledgement is there already.
  auto one = make_file_bootstrap(1, 2, dir.path("job"), 1s);
  std::tie(code, what) = thrown([&] { one->broadcast(&value, sizeof value); });
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(what.find("job.0.ack1 exists before rank 1 read"), std::string::npos) << what;
  std::remove(dir.path("job.0.ack1").c_str());

  // A message left behind, whole and of the right size, and no rank 0: rank
  // 1 reads it, but nobody removes it, so rank 1 never returns its bytes.
  std::string stale(16, '\0');
  stale[0] = 8;
  stale[8] = 42;
  dir.touch("job.0", stale);
  one = make_file_bootstrap(1, 2, dir.path("job"), 300ms);
  value = 5;
  std::tie(code, what) = thrown([&] { one->broadcast(&value, sizeof value); });
  EXPECT_EQ(code, ErrorCode::timeout);
  EXPECT_NE(what.find("left by an earlier run"), std::string::npos) << what;
  EXPECT_EQ(dir.files(), std::vector<std::string>{"job.0"});  // its acknowledgement removed
  // And rank 0, coming up now, refuses to write over it.
  zero = make_file_bootstrap(0, 2, dir.path("job"), 1s);
  std::tie(code, what) = thrown([&] { zero->broadcast(&value, sizeof value); });
  EXPECT_EQ(code, ErrorCode::io);
  EXPECT_NE(what.find("job.0 exists before rank 0 wrote"), std::string::npos) << what;
}

// A connection that is not a dgs rank (a port scanner sending junk) is
// closed and skipped; the ranks still meet.
TEST(TcpBootstrap, AStrangerIsSkippedAndTheRanksStillMeet) {
  const int port = 33000 - static_cast<int>(::getpid() % 1000);
  std::uint64_t at_zero = 77, at_one = 0;
  std::string zero_error, one_error;
  std::thread zero([&] {
    try {
      make_tcp_bootstrap(0, 2, "127.0.0.1", port, 20s)->broadcast(&at_zero, 8);
    } catch (const Error& e) {
      zero_error = e.what();
    }
  });
  // The stranger connects first (retrying until rank 0 listens).
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int stranger = -1;
  for (int tries = 0; tries < 2000 && stranger < 0; ++tries) {
    stranger = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(stranger, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(stranger);
      stranger = -1;
      std::this_thread::sleep_for(5ms);
    }
  }
  ASSERT_GE(stranger, 0) << "rank 0 never listened on port " << port;
  const char junk[8] = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T'};
  EXPECT_EQ(::send(stranger, junk, sizeof junk, MSG_NOSIGNAL), 8);
  try {
    make_tcp_bootstrap(1, 2, "127.0.0.1", port, 20s)->broadcast(&at_one, 8);
  } catch (const Error& e) {
    one_error = e.what();
  }
  zero.join();
  ::close(stranger);
  EXPECT_EQ(zero_error, "");
  EXPECT_EQ(one_error, "");
  EXPECT_EQ(at_one, 77u);
}

#if defined(DGS_TEST_NCCL)
// A bootstrap that holds a rank and broadcasts nothing: the options are
// checked before any NCCL id is made or broadcast.
class NoBootstrap final : public Bootstrap {
 public:
  int rank() const noexcept override { return 1; }
  int size() const noexcept override { return 2; }
  const char* name() const noexcept override { return "none"; }
  void broadcast(void*, std::size_t) override { ADD_FAILURE() << "broadcast before the checks"; }
};

TEST(NcclOptions, OptionsOutOfRangeAreRefusedByName) {
  NoBootstrap bootstrap;
  const std::pair<const char*, void (*)(NcclOptions&)> cases[] = {
      {"max_ctas = 0", [](NcclOptions& o) { o.max_ctas = 0; }},
      {"init_timeout and send_timeout must be positive",
       [](NcclOptions& o) { o.send_timeout = std::chrono::milliseconds(0); }},
      {"server rank 2 outside a world of 2", [](NcclOptions& o) { o.server_rank = 2; }},
  };
  for (const auto& [want, spoil] : cases) {
    NcclOptions options;
    spoil(options);
    try {
      make_nccl_transport(bootstrap, options);
      ADD_FAILURE() << "took options with " << want;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}
#endif

}  // namespace
}  // namespace dgs
