// Start-up rendezvous without MPI: the launcher's environment for rank and
// size, and a shared file or a TCP connection to rank 0 for the bytes rank 0
// hands out.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dgs/bootstrap.h"
#include "dgs/error.h"
#include "net/deadline.h"

namespace dgs {
namespace {

using Clock = std::chrono::steady_clock;

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

// `text` as a whole number in [low, high], or an error naming `name` and
// what the number is (`what`).
int parse_int(const std::string& name, const char* text, long low = 0, long high = 1 << 24,
              const char* what = "a rank or size") {
  // Digits, with a minus sign at most (strtol alone would also take
  // leading blanks and a plus sign).
  const bool digits = (text[0] >= '0' && text[0] <= '9') || text[0] == '-';
  char* end = nullptr;
  errno = 0;
  const long v = digits ? std::strtol(text, &end, 10) : 0;
  if (!digits || end == text || *end != '\0' || errno == ERANGE || v < low || v > high) {
    throw Error(ErrorCode::invalid_argument,
                "dgs bootstrap: " + name + "='" + text + "' is not " + what);
  }
  return static_cast<int>(v);
}

[[noreturn]] void timed_out(const std::string& what, std::chrono::milliseconds timeout) {
  throw Error(ErrorCode::timeout,
              "dgs bootstrap: " + what + " within " + std::to_string(timeout.count()) + " ms");
}

std::string errno_text() {
  return std::strerror(errno);
}

// ---------------------------------------------------------------------------

bool exists(const std::string& file) {
  return ::access(file.c_str(), F_OK) == 0;
}

// Writes all of `bytes` to `fd`; false with errno set on failure.
bool write_fd(int fd, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

// The files of one broadcast, removed when it ends, however it ends (rank 0's
// own: its message, the temporary file, the ranks' acknowledgements).
class RemoveOnExit {
 public:
  explicit RemoveOnExit(std::vector<std::string> files) : files_(std::move(files)) {}
  ~RemoveOnExit() {
    for (const std::string& f : files_) std::remove(f.c_str());
  }
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;

 private:
  std::vector<std::string> files_;
};

// Broadcast n writes `path.n`; rank r > 0 reads it, writes `path.n.ackR`
// and waits until rank 0, having seen every acknowledgement, removes them
// and the file. Only then is what it read known to be this run's: a file an
// earlier run left behind is read as well, but nobody removes it.
class FileBootstrap final : public Bootstrap {
 public:
  FileBootstrap(int rank, int size, std::string path, std::chrono::milliseconds timeout)
      : rank_(rank), size_(size), path_(std::move(path)), timeout_(timeout) {}

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char* name() const noexcept override { return "file"; }

  void broadcast(void* data, std::size_t bytes) override {
    const std::string file = path_ + "." + std::to_string(sequence_++);
    if (rank_ == 0) {
      // The acknowledgements first, then the message: a rank that sees the
      // message gone sees its acknowledgement gone too.
      std::vector<std::string> ours;
      for (int r = 1; r < size_; ++r) ours.push_back(ack_of(file, r));
      ours.push_back(file + ".tmp");
      ours.push_back(file);
      for (const std::string& f : ours) {
        if (exists(f)) {
          fail(f, "exists before rank 0 wrote " + file +
                      ": left by an earlier run that did not finish, or another job uses this "
                      "path (remove " +
                      path_ + ".* or give each job its own DGS_RENDEZVOUS path)");
        }
      }
      const RemoveOnExit cleanup(std::move(ours));
      publish(file, data, bytes);
      for (int r = 1; r < size_; ++r)
        wait_for(ack_of(file, r), "rank " + std::to_string(r) + " to read " + file);
    } else {
      const std::string ack = ack_of(file, rank_);
      if (exists(ack)) {
        fail(ack, "exists before rank " + std::to_string(rank_) + " read " + file +
                      ": left by an earlier run that did not finish (remove " + path_ +
                      ".* or give each job its own DGS_RENDEZVOUS path)");
      }
      wait_for(file, "rank 0 to write " + file);
      read_message(file, data, bytes);
      // Rank 0 waits for this: if it cannot be written, say so here, not
      // as rank 0's timeout.
      const std::string line = std::to_string(rank_) + "\n";
      write_file(ack, {{line.data(), line.size()}});
      const bool taken = await(file, false);
      // Rank 0 removed it with the file, unless this rank came after rank 0
      // had given up and cleaned up: then it must not stay for the next run.
      std::remove(ack.c_str());
      if (!taken) {
        timed_out("rank 0 to take rank " + std::to_string(rank_) + "'s reading of " + file +
                      " (not removed: rank 0 is late, or the file was left by an earlier run)",
                  timeout_);
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& file, const std::string& what) const {
    throw Error(ErrorCode::io, "dgs file bootstrap (rank " + std::to_string(rank_) + " of " +
                                   std::to_string(size_) + "): " + file + " " + what);
  }

  static std::string ack_of(const std::string& file, int rank) {
    return file + ".ack" + std::to_string(rank);
  }

  // Writes `pieces` to a new file `path`, or removes it and throws saying
  // why (a full disk shows here, not as a short file).
  void write_file(const std::string& path,
                  std::initializer_list<std::pair<const void*, std::size_t>> pieces) const {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail(path, "cannot be created: " + errno_text());
    bool ok = true;
    for (const auto& [data, bytes] : pieces) ok = ok && write_fd(fd, data, bytes);
    std::string error = ok ? "" : errno_text();
    if (::close(fd) != 0 && ok) {
      ok = false;
      error = errno_text();
    }
    if (!ok) {
      std::remove(path.c_str());
      fail(path, "cannot be written: " + error);
    }
  }

  void publish(const std::string& file, const void* data, std::size_t bytes) const {
    const std::string temp = file + ".tmp";
    const std::uint64_t size = bytes;
    write_file(temp, {{&size, sizeof size}, {data, bytes}});
    if (std::rename(temp.c_str(), file.c_str()) != 0)
      fail(file, "cannot be created: " + errno_text());
  }

  void read_message(const std::string& file, void* data, std::size_t bytes) const {
    const int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) fail(file, "cannot be read: " + errno_text());
    std::vector<char> content;
    char chunk[4096];
    for (;;) {
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const std::string error = errno_text();
        ::close(fd);
        fail(file, "cannot be read: " + error);
      }
      if (n == 0) break;
      content.insert(content.end(), chunk, chunk + n);
    }
    ::close(fd);
    std::uint64_t size = 0;
    if (content.size() < 8) fail(file, "is truncated");
    std::memcpy(&size, content.data(), 8);
    if (size != bytes || content.size() != 8 + bytes) {
      fail(file, "holds " + std::to_string(size) + " bytes, expected " + std::to_string(bytes));
    }
    std::memcpy(data, content.data() + 8, bytes);
  }

  // Waits until `file` exists (present) or is gone; false past the timeout.
  bool await(const std::string& file, bool present) const {
    const auto deadline = detail::deadline_after(timeout_);
    while (exists(file) != present) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  void wait_for(const std::string& file, const std::string& what) const {
    if (!await(file, true)) timed_out("no sign of " + what, timeout_);
  }

  int rank_, size_;
  std::string path_;
  std::chrono::milliseconds timeout_;
  int sequence_ = 0;
};

// ---------------------------------------------------------------------------

class Socket {
 public:
  explicit Socket(int fd = -1) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Whether `fd` is ready before the deadline; once past it, still one look
// without waiting (what is ready then counts).
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{fd, events, 0};
    const int wait =
        left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1000));
    const int r = ::poll(&p, 1, wait);
    if (r > 0) return true;
    if ((r < 0 && errno != EINTR) || left.count() <= 0) return false;
  }
}

// `peer` names the other end in errors ("rank 0 at host:port", "rank 2").
void write_all(int fd, const void* data, std::size_t bytes, Clock::time_point deadline,
               const std::string& peer) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (bytes > 0) {
    if (!wait_fd(fd, POLLOUT, deadline))
      throw Error(ErrorCode::timeout, "dgs tcp bootstrap: send to " + peer + " timed out");
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(ErrorCode::transport,
                  "dgs tcp bootstrap: send to " + peer + " failed: " + errno_text());
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void read_all(int fd, void* data, std::size_t bytes, Clock::time_point deadline,
              const std::string& peer) {
  auto* p = static_cast<unsigned char*>(data);
  while (bytes > 0) {
    if (!wait_fd(fd, POLLIN, deadline))
      throw Error(ErrorCode::timeout, "dgs tcp bootstrap: receive from " + peer + " timed out");
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw Error(ErrorCode::transport, "dgs tcp bootstrap: connection to " + peer + " " +
                                            (n == 0 ? "closed by it" : "failed: " + errno_text()));
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

constexpr std::uint32_t kHello = 0x44475342;  // "BSGD"

// Connects to one address of rank 0, waiting at most until `deadline` (a
// blocking connect to an address that drops packets would wait minutes);
// on failure returns no socket and says why in `why`.
Socket connect_to(const addrinfo& a, Clock::time_point deadline, std::string& why) {
  Socket s(::socket(a.ai_family, a.ai_socktype, a.ai_protocol));
  if (s.fd() < 0) {
    why = "socket: " + errno_text();
    return Socket();
  }
  const int flags = ::fcntl(s.fd(), F_GETFL, 0);
  if (flags < 0 || ::fcntl(s.fd(), F_SETFL, flags | O_NONBLOCK) != 0) {
    why = "fcntl: " + errno_text();
    return Socket();
  }
  if (::connect(s.fd(), a.ai_addr, a.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      why = errno_text();
      return Socket();
    }
    if (!wait_fd(s.fd(), POLLOUT, deadline)) {
      why = "no answer (connect timed out)";
      return Socket();
    }
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
      why = std::strerror(error);
      return Socket();
    }
  }
  if (::fcntl(s.fd(), F_SETFL, flags) != 0) {
    why = "fcntl: " + errno_text();
    return Socket();
  }
  // With nothing listening yet on a port of the ephemeral range, Linux can
  // connect a socket to itself (the same address at both ends).
  sockaddr_storage mine{}, theirs{};
  socklen_t mine_length = sizeof mine, theirs_length = sizeof theirs;
  if (::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&mine), &mine_length) == 0 &&
      ::getpeername(s.fd(), reinterpret_cast<sockaddr*>(&theirs), &theirs_length) == 0 &&
      mine_length == theirs_length && std::memcmp(&mine, &theirs, mine_length) == 0) {
    why = "connected to itself (nothing listens on the port yet)";
    return Socket();
  }
  return s;
}

class TcpBootstrap final : public Bootstrap {
 public:
  TcpBootstrap(int rank, int size, const std::string& host, int port,
               std::chrono::milliseconds timeout)
      : rank_(rank), size_(size), timeout_(timeout) {
    const auto deadline = detail::deadline_after(timeout);
    const std::string where = host + ":" + std::to_string(port);
    if (rank == 0) {
      Socket listener(::socket(AF_INET6, SOCK_STREAM, 0));
      bool v6 = listener.fd() >= 0;
      if (!v6) listener = Socket(::socket(AF_INET, SOCK_STREAM, 0));
      if (listener.fd() < 0) fail("socket", where);
      const int one = 1, zero = 0;
      ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      int bound;
      if (v6) {
        ::setsockopt(listener.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_any;
        a.sin6_port = htons(static_cast<std::uint16_t>(port));
        bound = ::bind(listener.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
      } else {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        bound = ::bind(listener.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
      }
      if (bound != 0) fail("bind", where);
      if (::listen(listener.fd(), size) != 0) fail("listen", where);
      peers_.resize(static_cast<std::size_t>(size));
      for (int connected = 0; connected < size - 1;) {
        if (!wait_fd(listener.fd(), POLLIN, deadline)) {
          timed_out("only " + std::to_string(connected) + " of " + std::to_string(size - 1) +
                        " ranks connected to " + where,
                    timeout);
        }
        Socket s(::accept(listener.fd(), nullptr, nullptr));
        if (s.fd() < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          fail("accept", where);
        }
        // A stranger (a port scanner, a health check, a rank of another job)
        // is closed and skipped; a rank says hello at once, so it gets a few
        // seconds, not the whole deadline.
        std::uint32_t hello[2] = {0, 0};
        try {
          read_all(s.fd(), hello, sizeof hello,
                   std::min(deadline, Clock::now() + std::chrono::seconds(5)),
                   "a connection to " + where);
        } catch (const Error&) {
          continue;
        }
        if (hello[0] != kHello) continue;
        const auto r = static_cast<int>(hello[1]);
        if (r <= 0 || r >= size || peers_[r].fd() >= 0) {
          throw Error(
              ErrorCode::transport,
              "dgs tcp bootstrap: rank 0 of " + std::to_string(size) + " at " + where +
                  ": a dgs rank " + std::to_string(hello[1]) +
                  (r <= 0 || r >= size ? " outside the world" : " that had connected already") +
                  " connected (two jobs on one port?)");
        }
        peers_[r] = std::move(s);
        ++connected;
      }
    } else {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      // An IPv6 address may come in brackets ([::1]), as in URLs.
      const std::string name = host.size() > 2 && host.front() == '[' && host.back() == ']'
                                   ? host.substr(1, host.size() - 2)
                                   : host;
      std::string why = "not tried";
      for (;;) {
        addrinfo* found = nullptr;
        const int looked =
            ::getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &found);
        if (looked != 0) {
          why = std::string("name lookup: ") + ::gai_strerror(looked);
        } else {
          for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
            // Rank 0 may not listen yet: each try waits a few seconds at most.
            const auto until = std::min(deadline, Clock::now() + std::chrono::seconds(5));
            Socket s = connect_to(*a, until, why);
            if (s.fd() >= 0) {
              server_ = std::move(s);
              break;
            }
          }
          ::freeaddrinfo(found);
        }
        if (server_.fd() >= 0) break;
        if (Clock::now() > deadline) {
          timed_out("could not connect to rank 0 at " + where + " (last try: " + why + ")",
                    timeout);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      const std::uint32_t hello[2] = {kHello, static_cast<std::uint32_t>(rank)};
      write_all(server_.fd(), hello, sizeof hello, deadline, "rank 0 at " + where);
      where_ = where;
    }
  }

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  const char* name() const noexcept override { return "tcp"; }

  void broadcast(void* data, std::size_t bytes) override {
    const auto deadline = detail::deadline_after(timeout_);
    const std::uint64_t size = bytes;
    if (rank_ == 0) {
      for (int r = 1; r < size_; ++r) {
        const std::string peer = "rank " + std::to_string(r);
        write_all(peers_[r].fd(), &size, 8, deadline, peer);
        write_all(peers_[r].fd(), data, bytes, deadline, peer);
      }
    } else {
      const std::string peer = "rank 0 at " + where_;
      std::uint64_t got = 0;
      read_all(server_.fd(), &got, 8, deadline, peer);
      if (got != bytes) {
        throw Error(ErrorCode::transport, "dgs tcp bootstrap: rank 0 sent " + std::to_string(got) +
                                              " bytes, rank " + std::to_string(rank_) +
                                              " expected " + std::to_string(bytes));
      }
      read_all(server_.fd(), data, bytes, deadline, peer);
    }
  }

 private:
  [[noreturn]] static void fail(const char* call, const std::string& where) {
    throw Error(ErrorCode::transport, std::string("dgs tcp bootstrap: ") + call + " on " + where +
                                          " failed: " + errno_text());
  }

  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::vector<Socket> peers_;
  Socket server_;
  std::string where_;  // rank 0's address (ranks > 0)
};

}  // namespace

std::optional<LaunchInfo> find_launch() {
  // Set by hand, half of the pair is a mistake, not a reason to look at
  // another launcher's variables.
  const bool dgs_rank = env("DGS_RANK") != nullptr;
  if (dgs_rank != (env("DGS_WORLD_SIZE") != nullptr)) {
    throw Error(ErrorCode::invalid_argument,
                std::string("dgs bootstrap: ") + (dgs_rank ? "DGS_RANK" : "DGS_WORLD_SIZE") +
                    " is set but " + (dgs_rank ? "DGS_WORLD_SIZE" : "DGS_RANK") +
                    " is not; set both, or neither");
  }
  // Each launcher's rank, world size and local rank variables.
  struct Names {
    const char* rank;
    const char* size;
    const char* local;
  };
  const Names torchrun = {"RANK", "WORLD_SIZE", "LOCAL_RANK"};
  std::vector<Names> launchers = {{"DGS_RANK", "DGS_WORLD_SIZE", "DGS_LOCAL_RANK"}};
  // torchrun, when it started this process, is the innermost launcher: its
  // RANK/WORLD_SIZE come before those of an srun or mpirun around it.
  if (env("TORCHELASTIC_RUN_ID") != nullptr) launchers.push_back(torchrun);
  launchers.insert(launchers.end(),
                   {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                    {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
                    {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
                    torchrun});
  for (const Names& names : launchers) {
    const char* rank = env(names.rank);
    const char* size = env(names.size);
    if (rank == nullptr || size == nullptr) continue;
    LaunchInfo info;
    info.rank = parse_int(names.rank, rank);
    info.size = parse_int(names.size, size);
    info.source = std::string(names.rank) + "/" + names.size;
    if (info.size < 1 || info.rank >= info.size) {
      throw Error(ErrorCode::invalid_argument, "dgs bootstrap: " + info.source + " = " +
                                                   std::string(rank) + "/" + size +
                                                   " is not a rank inside the world");
    }
    if (const char* local = env(names.local)) {
      info.local_rank = parse_int(names.local, local, 0, info.size - 1, "a rank inside the world");
    }
    return info;
  }
  return std::nullopt;
}

int local_gpu(const LaunchInfo& launch, int devices) noexcept {
  if (devices < 1) return 0;
  const int rank = launch.local_rank >= 0 ? launch.local_rank : std::max(launch.rank, 0);
  return rank % devices;
}

LaunchInfo detect_launch() {
  if (std::optional<LaunchInfo> info = find_launch()) return *info;
  throw Error(ErrorCode::invalid_argument,
              "dgs bootstrap: no rank and world size in the environment; set DGS_RANK and "
              "DGS_WORLD_SIZE (or launch with mpirun, srun or torchrun)");
}

bool launched_by_mpi() noexcept {
  // torchrun's processes inherit the variables of an mpirun or srun around
  // it, but torchrun started them: they are not MPI ranks.
  if (env("TORCHELASTIC_RUN_ID") != nullptr) return false;
  return env("OMPI_COMM_WORLD_SIZE") != nullptr || env("PMI_SIZE") != nullptr ||
         env("PMIX_RANK") != nullptr || env("MPI_LOCALNRANKS") != nullptr;
}

namespace {

void check_rank(const char* who, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) {
    throw Error(ErrorCode::invalid_argument,
                std::string("dgs ") + who + " bootstrap: rank " + std::to_string(rank) + " of " +
                    std::to_string(size) + " is not a rank inside the world");
  }
}

}  // namespace

std::unique_ptr<Bootstrap> make_file_bootstrap(int rank, int size, const std::string& path,
                                               std::chrono::milliseconds timeout) {
  check_rank("file", rank, size);
  if (path.empty()) {
    throw Error(ErrorCode::invalid_argument,
                "dgs file bootstrap: the path is empty (a path every rank sees, unique to the "
                "job: /shared/dir/job-42)");
  }
  return std::make_unique<FileBootstrap>(rank, size, path, timeout);
}

std::unique_ptr<Bootstrap> make_tcp_bootstrap(int rank, int size, const std::string& host, int port,
                                              std::chrono::milliseconds timeout) {
  check_rank("tcp", rank, size);
  if (port <= 0 || port > 65535) {
    throw Error(ErrorCode::invalid_argument,
                "dgs tcp bootstrap: port " + std::to_string(port) + " is not a TCP port");
  }
  return std::make_unique<TcpBootstrap>(rank, size, host, port, timeout);
}

#if !defined(DGS_HAVE_MPI)
std::unique_ptr<Bootstrap> make_mpi_bootstrap(std::chrono::milliseconds) {
  throw Error(ErrorCode::invalid_argument,
              "dgs: built without MPI (configure with -DDGS_WITH_MPI=ON for the MPI bootstrap)");
}
#endif

std::unique_ptr<Bootstrap> make_bootstrap(std::chrono::milliseconds timeout) {
#if defined(DGS_HAVE_MPI)
  if (launched_by_mpi()) return make_mpi_bootstrap(timeout);
#endif
  const LaunchInfo info = detect_launch();
  const char* rendezvous = env("DGS_RENDEZVOUS");
  if (rendezvous == nullptr) {
    throw Error(ErrorCode::invalid_argument,
                "dgs bootstrap: rank " + std::to_string(info.rank) + " of " +
                    std::to_string(info.size) + " (from " + info.source +
                    ") needs DGS_RENDEZVOUS=file:/shared/path or tcp:host:port");
  }
  const std::string r = rendezvous;
  if (r.rfind("file:", 0) == 0)
    return make_file_bootstrap(info.rank, info.size, r.substr(5), timeout);
  if (r.rfind("tcp:", 0) == 0) {
    const std::string address = r.substr(4);
    const auto colon = address.rfind(':');
    // tcp:[::1] has colons but no port.
    if (colon == std::string::npos || colon == 0 || address.back() == ']') {
      throw Error(ErrorCode::invalid_argument,
                  "dgs bootstrap: DGS_RENDEZVOUS='" + r + "' needs tcp:host:port");
    }
    return make_tcp_bootstrap(info.rank, info.size, address.substr(0, colon),
                              parse_int("DGS_RENDEZVOUS='" + r + "' port",
                                        address.substr(colon + 1).c_str(), 1, 65535, "a TCP port"),
                              timeout);
  }
  throw Error(ErrorCode::invalid_argument, "dgs bootstrap: DGS_RENDEZVOUS='" + r +
                                               "' is neither file:<path> nor tcp:<host>:<port>");
}

}  // namespace dgs
