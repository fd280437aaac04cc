// The MPI transport's messages, under mpirun -np 3: messages cut into pieces
// (a piece of 1000 bytes, so that small messages have several) arrive whole
// and in order, a receive into a smaller buffer reports the sender's size,
// keeps what fits and leaves no piece behind, two senders' pieces never mix
// in an any-source receive, and a message larger than an MPI count can say
// (2^31 bytes and more) arrives whole through the default transport, and a
// peer that does not take a message within the send timeout fails.
//
//   mpirun -np 3 dgs_mpi_transport_check [--no-large]
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dgs/error.h"
#include "dgs/mpi.h"
#include "net/mpi_transport.h"

namespace {

using std::chrono::milliseconds;

// A failure stops the whole job at once: after one, the ranks' messages no
// longer pair up, and every later receive would wait out its timeout.
void expect(bool ok, const std::string& what) {
  if (ok) return;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::printf("rank %d: FAILED: %s\nRESULT FAILED\n", rank, what.c_str());
  std::fflush(stdout);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

// Bytes that differ with their position and the message, so a piece put at
// the wrong offset, or another message's piece, is seen.
unsigned char pattern(std::uint64_t i, std::uint64_t seed) {
  return static_cast<unsigned char>(
      ((i + 1) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull) >> 56);
}

std::vector<unsigned char> message(std::size_t bytes, std::uint64_t seed) {
  std::vector<unsigned char> m(bytes);
  for (std::size_t i = 0; i < bytes; ++i) m[i] = pattern(i, seed);
  return m;
}

// The first byte where `got` differs from the message, or -1.
long long first_difference(const unsigned char* got, std::size_t bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes; ++i) {
    if (got[i] != pattern(i, seed)) return static_cast<long long>(i);
  }
  return -1;
}

constexpr unsigned char kPoison = 0xEE;
constexpr std::size_t kPiece = 1000;

// Receives a message from `peer` into a buffer of `room` bytes (plus poisoned
// slack) and checks it: the sender's size, the kept bytes, the slack intact.
void expect_message(dgs::Transport& t, int peer, std::size_t room, std::size_t size,
                    std::uint64_t seed, const std::string& what) {
  std::vector<unsigned char> buffer(room + 16, kPoison);
  const dgs::Receipt r = t.recv(peer, buffer.data(), room, milliseconds(30000));
  expect(r.status == dgs::Receipt::Status::message && r.peer == peer,
         what + ": no message from " + std::to_string(peer) + " (" + r.error + ")");
  expect(r.bytes == size,
         what + ": " + std::to_string(r.bytes) + " bytes reported, sent " + std::to_string(size));
  const std::size_t kept = std::min(room, size);
  const long long at = first_difference(buffer.data(), kept, seed);
  expect(at < 0, what + ": byte " + std::to_string(at) + " differs");
  bool slack = true;
  for (std::size_t i = kept; i < buffer.size(); ++i) slack = slack && buffer[i] == kPoison;
  expect(slack, what + ": bytes past the " + std::to_string(kept) + " kept were written");
}

void pieces(int rank) {
  auto t = dgs::detail::make_mpi_transport(dgs::MemoryKind::host, 0, kPiece);
  const std::vector<std::size_t> sizes = {
      0, 1, kPiece - 1, kPiece, kPiece + 1, 2 * kPiece, 3 * kPiece - 1, 3 * kPiece, 3 * kPiece + 1};
  if (rank == 1) {
    for (std::size_t s : sizes) t->send(0, message(s, s).data(), s);
    // Into smaller buffers: the rest of each must not be read as a message.
    t->send(0, message(2500, 77).data(), 2500);
    t->send(0, message(10, 78).data(), 10);
    t->send(0, message(3000, 79).data(), 3000);
    t->send(0, message(1000, 80).data(), 1000);
  }
  if (rank == 0) {
    for (std::size_t s : sizes) {
      expect_message(*t, 1, s, s, s, "a message of " + std::to_string(s) + " bytes");
    }
    expect_message(*t, 1, 1500, 2500, 77, "2500 bytes into 1500");
    expect_message(*t, 1, 10, 10, 78, "the message after it");
    expect_message(*t, 1, 0, 3000, 79, "3000 bytes into none");
    expect_message(*t, 1, 1000, 1000, 80, "the message after it");
    unsigned char none = 0;
    const dgs::Receipt r = t->recv(1, &none, 1, milliseconds(50));
    expect(r.status == dgs::Receipt::Status::timeout, "a piece was left behind");
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Ranks 1 and 2 each send messages of several pieces at once; rank 0 takes
// them in arrival order. Each must be whole, from one sender, in its order.
void two_senders(int rank) {
  auto t = dgs::detail::make_mpi_transport(dgs::MemoryKind::host, 0, kPiece);
  constexpr int kMessages = 20;
  constexpr std::size_t kBytes = 4 * kPiece + 500;
  if (rank == 1 || rank == 2) {
    for (int m = 0; m < kMessages; ++m) {
      const std::uint64_t seed = static_cast<std::uint64_t>(rank) * 1000 + m;
      t->send(0, message(kBytes, seed).data(), kBytes);
    }
  }
  if (rank == 0) {
    int next[3] = {0, 0, 0};
    std::vector<unsigned char> buffer(kBytes);
    for (int n = 0; n < 2 * kMessages; ++n) {
      const dgs::Receipt r = t->recv_any({1, 2}, buffer.data(), kBytes, milliseconds(30000));
      if (r.status != dgs::Receipt::Status::message || (r.peer != 1 && r.peer != 2)) {
        expect(false, "message " + std::to_string(n) + " of the two senders did not arrive");
        break;
      }
      const std::uint64_t seed = static_cast<std::uint64_t>(r.peer) * 1000 + next[r.peer]++;
      expect(r.bytes == kBytes,
             "a message of the two senders has " + std::to_string(r.bytes) + " bytes");
      const long long at = first_difference(buffer.data(), kBytes, seed);
      expect(at < 0, "message " + std::to_string(next[r.peer] - 1) + " of rank " +
                         std::to_string(r.peer) + ": byte " + std::to_string(at) + " differs");
    }
    expect(next[1] == kMessages && next[2] == kMessages, "not every message arrived");
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Past what an MPI count can say: 2^31 + 4097 bytes, rank 2 to rank 1.
void larger_than_an_mpi_count(int rank) {
  auto t = dgs::make_mpi_transport(dgs::MemoryKind::host);
  const std::size_t bytes = (std::size_t{1} << 31) + 4097;
  const std::uint64_t seed = 31;
  if (rank == 2) t->send(1, message(bytes, seed).data(), bytes);
  if (rank == 1) {
    std::vector<unsigned char> buffer(bytes, kPoison);
    const dgs::Receipt r = t->recv(2, buffer.data(), bytes, milliseconds(120000));
    expect(r.status == dgs::Receipt::Status::message && r.bytes == bytes,
           "a message of 2^31 + 4097 bytes: status " + std::to_string(static_cast<int>(r.status)) +
               ", " + std::to_string(r.bytes) + " bytes (" + r.error + ")");
    const long long at = first_difference(buffer.data(), bytes, seed);
    expect(at < 0, "a message of 2^31 + 4097 bytes: byte " + std::to_string(at) + " differs");
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace

// A message its peer does not take within the send timeout fails that
// peer: rank 0 sends 4 MiB (past any eager limit) to rank 2, which posts its
// receive only 3 s later, with a send timeout of 500 ms. The send throws
// after about the timeout, saying so; a receive from rank 2 then reports it
// failed and a second send throws; rank 2 still gets the whole message, from
// rank 0's copy (rank 0's buffer was overwritten at once), and what it sends
// back is dropped.
void a_peer_that_does_not_take_its_message(int rank) {
  auto t = dgs::detail::make_mpi_transport(dgs::MemoryKind::host, 0, dgs::detail::kMpiPieceBytes,
                                           milliseconds(500));
  constexpr std::size_t kBytes = std::size_t{4} << 20;
  if (rank == 0) {
    std::vector<unsigned char> m = message(kBytes, 31);
    const auto start = std::chrono::steady_clock::now();
    std::string said;
    try {
      t->send(2, m.data(), m.size());
    } catch (const dgs::Error& e) {
      said = e.what();
    }
    const auto failed_after = std::chrono::steady_clock::now() - start;
    expect(said.find("not taken within the send timeout of 500 ms") != std::string::npos,
           "a send its peer did not take did not fail naming the timeout: '" + said + "'");
    expect(failed_after < std::chrono::milliseconds(2000), "the send failed after more than 2 s");
    std::fill(m.begin(), m.end(), 0);  // the copy is what MPI still sends
    std::vector<unsigned char> buffer(16);
    const dgs::Receipt r = t->recv_any({2}, buffer.data(), buffer.size(), milliseconds(100));
    expect(r.status == dgs::Receipt::Status::peer_failed && r.peer == 2,
           "a receive did not report the peer that failed");
    bool thrown = false;
    try {
      t->send(2, m.data(), 16);
    } catch (const dgs::Error& e) {
      thrown = e.code() == dgs::ErrorCode::transport &&
               std::string(e.what()).find("which failed") != std::string::npos;
    }
    expect(thrown, "a send to a failed peer did not throw naming the failure");
    // What the failed peer still sends is dropped, not delivered.
    const dgs::Receipt after = t->recv_any({2}, buffer.data(), buffer.size(), milliseconds(5000));
    expect(after.status == dgs::Receipt::Status::timeout,
           "a message from a failed peer was delivered (status " +
               std::to_string(static_cast<int>(after.status)) + ")");
  } else if (rank == 2) {
    std::this_thread::sleep_for(std::chrono::seconds(3));
    expect_message(*t, 0, kBytes, kBytes, 31, "the late receiver");
    const std::vector<unsigned char> m = message(16, 32);
    t->send(0, m.data(), m.size());
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char** argv) {
  try {
    dgs::MpiSession mpi(&argc, &argv);
    if (mpi.size() < 3) {
      std::printf("RESULT needs 3 ranks, got %d\n", mpi.size());
      return 1;
    }
    bool large = true;
    for (int i = 1; i < argc; ++i) large = large && std::strcmp(argv[i], "--no-large") != 0;
    const int rank = mpi.rank();
    pieces(rank);
    two_senders(rank);
    if (large) larger_than_an_mpi_count(rank);
    a_peer_that_does_not_take_its_message(rank);
    // A piece size MPI cannot send is refused by name.
    bool refused = false;
    try {
      dgs::detail::make_mpi_transport(dgs::MemoryKind::host, 0, std::size_t{1} << 31);
    } catch (const dgs::Error& e) {
      refused = std::string(e.what()).find("piece") != std::string::npos;
    }
    expect(refused, "a piece of 2^31 bytes was not refused");
    MPI_Barrier(MPI_COMM_WORLD);  // every rank got here without a failure
    if (rank == 0) std::printf("RESULT ok\n");
    return 0;
  } catch (const std::exception& e) {
    // The other ranks may wait for this one: stop them all.
    std::printf("RESULT error: %s\n", e.what());
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
