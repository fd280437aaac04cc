// Tests of the CPU emulation itself (docs/emulation.md): the warp intrinsics,
// barriers and CUB calls give CUDA's results, and the runtime refuses what
// CUDA refuses. Built like the kernels: launches rewritten, emu.h in front.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

namespace {

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// Throws (the test fails there) when a CUDA call of DeviceArray fails.
void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(call) + ": " + cudaGetErrorString(status));
  }
}

// n values of T in device memory, freed at the end of the scope.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t n) : n_(n) { check(cudaMalloc(&data_, bytes()), "cudaMalloc"); }
  explicit DeviceArray(const std::vector<T>& values) : DeviceArray(values.size()) {
    check(cudaMemcpy(data_, values.data(), bytes(), cudaMemcpyHostToDevice),
          "cudaMemcpy to device");
  }
  ~DeviceArray() { EXPECT_EQ(cudaFree(data_), cudaSuccess) << "cudaFree"; }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const noexcept { return data_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    check(cudaMemcpy(out.data(), data_, bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return out;
  }

 private:
  std::size_t n_;
  T* data_ = nullptr;
};

// Every lane of a 64-thread block: five exchanges of its value.
__global__ void warp_kernel(const unsigned* in, unsigned* out) {
  const unsigned t = threadIdx.x;
  const unsigned v = in[t];
  unsigned* o = out + t * 6;
  o[0] = __shfl_sync(0xFFFFFFFFu, v, static_cast<int>((t + 5) % 32));
  o[1] = __shfl_up_sync(0xFFFFFFFFu, v, 3);
  o[2] = __shfl_down_sync(0xFFFFFFFFu, v, 3, 16);
  o[3] = __shfl_xor_sync(0xFFFFFFFFu, v, 5);
  o[4] = __ballot_sync(0xFFFFFFFFu, v % 3 == 0);
  o[5] = __shfl_sync(0xFFFFFFFFu, v, 2, 8);
}

TEST(Emulation, WarpIntrinsicsGiveCudasResults) {
  std::mt19937 rng(1);
  std::vector<unsigned> in(64);
  for (auto& v : in) v = rng();
  const DeviceArray<unsigned> d_in(in);
  const DeviceArray<unsigned> d_out(in.size() * 6);
  warp_kernel<<<1, 64>>>(d_in.get(), d_out.get());
  CUDA_OK(cudaGetLastError());
  const std::vector<unsigned> out = d_out.host();
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned warp = t & ~31u, lane = t & 31u;
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; ++l) ballot |= (in[warp + l] % 3 == 0 ? 1u : 0u) << l;
    const unsigned seg16 = lane & ~15u;
    EXPECT_EQ(out[t * 6 + 0], in[warp + (lane + 5) % 32]) << t;
    EXPECT_EQ(out[t * 6 + 1], lane < 3 ? in[t] : in[t - 3]) << t;
    EXPECT_EQ(out[t * 6 + 2], (lane - seg16) + 3 < 16 ? in[t + 3] : in[t]) << t;
    EXPECT_EQ(out[t * 6 + 3], in[warp + (lane ^ 5u)]) << t;
    EXPECT_EQ(out[t * 6 + 4], ballot) << t;
    EXPECT_EQ(out[t * 6 + 5], in[warp + (lane & ~7u) + 2]) << t;
  }
}

// Each thread writes its slot, waits, then reads its neighbour's; then a
// block scan of the values read.
__global__ void barrier_scan_kernel(const unsigned long long* in, unsigned long long* out) {
  using Scan = cub::BlockScan<unsigned long long, 256>;
  __shared__ unsigned long long slots[256];
  __shared__ typename Scan::TempStorage scan;
  const unsigned t = threadIdx.x;
  slots[t] = in[blockIdx.x * 256 + t];
  __syncthreads();
  const unsigned long long neighbour = slots[(t + 1) % 256];
  unsigned long long exclusive, total;
  Scan(scan).ExclusiveSum(neighbour, exclusive, total);
  __syncthreads();
  unsigned long long inclusive;
  Scan(scan).InclusiveSum(neighbour, inclusive);
  unsigned long long* o = out + (blockIdx.x * 256 + t) * 4;
  o[0] = neighbour;
  o[1] = exclusive;
  o[2] = total;
  o[3] = inclusive;
}

TEST(Emulation, BarriersAndBlockScansGiveCudasResults) {
  constexpr int kBlocks = 3;
  std::mt19937_64 rng(2);
  std::vector<unsigned long long> in(kBlocks * 256);
  for (auto& v : in) v = rng() >> 8;
  const DeviceArray<unsigned long long> d_in(in);
  const DeviceArray<unsigned long long> d_out(in.size() * 4);
  barrier_scan_kernel<<<kBlocks, 256>>>(d_in.get(), d_out.get());
  CUDA_OK(cudaGetLastError());
  const std::vector<unsigned long long> out = d_out.host();
  for (int b = 0; b < kBlocks; ++b) {
    unsigned long long total = 0;
    for (int t = 0; t < 256; ++t) total += in[b * 256 + t];
    unsigned long long sum = 0;
    for (int t = 0; t < 256; ++t) {
      const unsigned long long want = in[b * 256 + (t + 1) % 256];
      const unsigned long long* o = &out[(b * 256 + t) * 4];
      EXPECT_EQ(o[0], want) << b << " " << t;
      EXPECT_EQ(o[1], sum) << b << " " << t;
      EXPECT_EQ(o[2], total) << b << " " << t;
      sum += want;
      EXPECT_EQ(o[3], sum) << b << " " << t;
    }
  }
}

// Three counts in a row with different predicates: each call returns its
// own. Then the threads from 100 up return, and the rest count again: only
// the threads that call take part (the returned ones' last predicate, true,
// is not counted).
__global__ void count_kernel(const unsigned* in, int* out) {
  const unsigned v = in[blockIdx.x * blockDim.x + threadIdx.x];
  int* o = out + (blockIdx.x * blockDim.x + threadIdx.x) * 4;
  o[0] = __syncthreads_count(v & 1u);
  o[1] = __syncthreads_count(v & 2u);
  o[2] = __syncthreads_count(threadIdx.x < v % 97u || threadIdx.x >= 100);
  if (threadIdx.x >= 100) return;
  o[3] = __syncthreads_count(v & 4u);
}

TEST(Emulation, SyncthreadsCountCountsEachCallsPredicates) {
  constexpr int kBlocks = 2, kThreads = 160;
  std::mt19937 rng(5);
  std::vector<unsigned> in(kBlocks * kThreads);
  for (auto& v : in) v = rng();
  const DeviceArray<unsigned> d_in(in);
  const DeviceArray<int> d_out(in.size() * 4);
  count_kernel<<<kBlocks, kThreads>>>(d_in.get(), d_out.get());
  CUDA_OK(cudaGetLastError());
  const std::vector<int> out = d_out.host();
  for (int b = 0; b < kBlocks; ++b) {
    int want[4] = {0, 0, 0, 0};
    for (int t = 0; t < kThreads; ++t) {
      const unsigned v = in[b * kThreads + t];
      want[0] += (v & 1u) != 0;
      want[1] += (v & 2u) != 0;
      want[2] += static_cast<unsigned>(t) < v % 97u || t >= 100;
      want[3] += t < 100 && (v & 4u) != 0;
    }
    for (int t = 0; t < kThreads; ++t) {
      for (int c = 0; c < (t < 100 ? 4 : 3); ++c) {
        EXPECT_EQ(out[(b * kThreads + t) * 4 + c], want[c]) << b << " " << t << " " << c;
      }
    }
  }
}

// Each block notes when it ran.
__global__ void order_kernel(unsigned* turn, unsigned* ran) {
  if (threadIdx.x == 0) ran[atomicAdd(turn, 1u)] = blockIdx.x;
}

// The blocks run in the order DGS_EMU_ORDER names: forward, reverse, or
// (shuffle) a permutation that is neither.
TEST(Emulation, BlocksRunInTheOrderAsked) {
  if (dgs_emu::resident_blocks() > 1) GTEST_SKIP() << "blocks interleave (DGS_EMU_RESIDENT)";
  constexpr unsigned kBlocks = 64;
  const DeviceArray<unsigned> turn(std::vector<unsigned>{0});
  const DeviceArray<unsigned> ran(kBlocks);
  order_kernel<<<kBlocks, 32>>>(turn.get(), ran.get());
  CUDA_OK(cudaGetLastError());
  const std::vector<unsigned> order = ran.host();
  std::vector<unsigned> forward(kBlocks), reverse(kBlocks);
  for (unsigned b = 0; b < kBlocks; ++b) forward[b] = b, reverse[b] = kBlocks - 1 - b;
  const char* v = std::getenv("DGS_EMU_ORDER");
  const std::string asked = v == nullptr ? "forward" : v;
  if (asked == "forward") {
    EXPECT_EQ(order, forward);
  } else if (asked == "reverse") {
    EXPECT_EQ(order, reverse);
  } else {
    std::vector<unsigned> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, forward) << "every block once";
    EXPECT_NE(order, forward);
    EXPECT_NE(order, reverse);
  }
}

TEST(Emulation, RadixSortIsStableOnItsBitRange) {
  std::mt19937 rng(3);
  std::vector<unsigned> keys(1000);
  for (auto& k : keys) k = rng();
  const DeviceArray<unsigned> d_in(keys);
  const DeviceArray<unsigned> d_out(keys.size());
  std::size_t temp_bytes = 0;
  CUDA_OK(cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, d_in.get(), d_out.get(),
                                         static_cast<int>(keys.size()), 4, 9));
  const DeviceArray<unsigned char> temp(temp_bytes);
  CUDA_OK(cub::DeviceRadixSort::SortKeys(temp.get(), temp_bytes, d_in.get(), d_out.get(),
                                         static_cast<int>(keys.size()), 4, 9));
  std::vector<unsigned> want = keys;
  std::stable_sort(want.begin(), want.end(),
                   [](unsigned a, unsigned b) { return ((a >> 4) & 31u) < ((b >> 4) & 31u); });
  EXPECT_EQ(d_out.host(), want);
}

// The thread after t that does not return at once.
__host__ __device__ unsigned staying_after(unsigned t) {
  unsigned next = (t + 1) % 256;
  while (next % 3 == 0) next = (next + 1) % 256;
  return next;
}

// Every third thread returns at once (its fiber runs on to the next thread),
// the first and the last among them, so the last thread of each order
// releases the first barrier by returning; the others meet at three
// barriers, each time reading what the next staying thread wrote before it.
__global__ void early_return_kernel(const unsigned* in, unsigned* out) {
  __shared__ unsigned slots[256];
  const unsigned t = threadIdx.x;
  if (t % 3 == 0) return;
  slots[t] = in[blockIdx.x * 256 + t];
  __syncthreads();
  const unsigned next = staying_after(t);
  const unsigned a = slots[next];
  __syncthreads();
  slots[t] = a * 3u + t;
  __syncthreads();
  out[blockIdx.x * 256 + t] = slots[next];
}

TEST(Emulation, ThreadsThatReturnEarlyLeaveTheBarriersToTheOthers) {
  constexpr int kBlocks = 2;
  std::mt19937 rng(4);
  std::vector<unsigned> in(kBlocks * 256);
  for (auto& v : in) v = rng();
  const DeviceArray<unsigned> d_in(in);
  const DeviceArray<unsigned> d_out(in.size());
  CUDA_OK(cudaMemset(d_out.get(), 0xEE, d_out.bytes()));
  early_return_kernel<<<kBlocks, 256>>>(d_in.get(), d_out.get());
  CUDA_OK(cudaGetLastError());
  const std::vector<unsigned> out = d_out.host();
  for (unsigned b = 0; b < kBlocks; ++b) {
    for (unsigned t = 0; t < 256; ++t) {
      const unsigned next = staying_after(t);
      const unsigned want =
          t % 3 == 0 ? 0xEEEEEEEEu : in[b * 256 + staying_after(next)] * 3u + next;
      EXPECT_EQ(out[b * 256 + t], want) << b << " " << t;
    }
  }
}

// Thread 0 waits at the barrier; the rest of its warp waits for lane 0 in a
// warp exchange: neither can go on.
__global__ void deadlock_kernel() {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
}

// Each block reads its shared words before any thread writes them, then
// writes them: what the next block reads is the runtime's fill, not what
// this block left.
__global__ void shared_fill_kernel(unsigned* out) {
  __shared__ unsigned words[4];
  __shared__ unsigned char flag;
  if (threadIdx.x < 4) out[blockIdx.x * 5 + threadIdx.x] = words[threadIdx.x];
  if (threadIdx.x == 4) out[blockIdx.x * 5 + 4] = flag;
  __syncthreads();
  if (threadIdx.x < 4) words[threadIdx.x] = blockIdx.x + 1;
  if (threadIdx.x == 4) flag = 1;
}

TEST(Emulation, EachBlocksSharedMemoryStartsFilled) {
  constexpr int kBlocks = 3;
  const DeviceArray<unsigned> d_out(kBlocks * 5);
  for (int launch = 0; launch < 2; ++launch) {  // the first launch of a kernel too
    CUDA_OK(cudaMemset(d_out.get(), 0, d_out.bytes()));
    shared_fill_kernel<<<kBlocks, 32>>>(d_out.get());
    CUDA_OK(cudaGetLastError());
    const std::vector<unsigned> out = d_out.host();
    for (int i = 0; i < kBlocks * 5; ++i) {
      EXPECT_EQ(out[i], i % 5 == 4 ? 0x5Au : 0x5A5A5A5Au) << "launch " << launch << ", word " << i;
    }
  }
}

// Sets how many blocks are resident at once for one test, then restores it.
class Resident {
 public:
  explicit Resident(int blocks) : before_(dgs_emu::resident_blocks()) {
    dgs_emu::set_resident_blocks(blocks);
  }
  ~Resident() { dgs_emu::set_resident_blocks(before_); }
  Resident(const Resident&) = delete;
  Resident& operator=(const Resident&) = delete;

 private:
  int before_;
};

// Each block writes its part and raises a counter; the block that raises it
// last sums every part. `write_first` false is the bug: the counter goes up
// before the part is written, so the last block may sum a part not yet there.
__global__ void hand_off_kernel(bool write_first, unsigned* counter, unsigned* parts,
                                unsigned* total) {
  if (threadIdx.x != 0) return;
  bool last;
  if (write_first) {
    parts[blockIdx.x] = blockIdx.x + 1;
    __threadfence();
    last = atomicAdd(counter, 1u) + 1 == gridDim.x;
  } else {
    last = atomicAdd(counter, 1u) + 1 == gridDim.x;
    parts[blockIdx.x] = blockIdx.x + 1;
  }
  if (!last) return;
  unsigned sum = 0;
  for (unsigned b = 0; b < gridDim.x; ++b) sum += parts[b];
  *total = sum;
}

// The hand-off between blocks through a counter: with one block resident
// the bug above never shows (each block finishes before the next starts);
// with four, blocks run between another's atomic and its next store, and
// the last block sums a part that is not there yet.
TEST(Emulation, InterleavedBlocksCatchACounterRaisedBeforeTheWrite) {
  constexpr unsigned kBlocks = 64, kWant = kBlocks * (kBlocks + 1) / 2;
  const DeviceArray<unsigned> counter(1), parts(kBlocks), total(1);
  const auto wrong_totals = [&](bool write_first) {
    int wrong = 0;
    for (int launch = 0; launch < 32; ++launch) {
      check(cudaMemset(counter.get(), 0, counter.bytes()), "cudaMemset");
      check(cudaMemset(parts.get(), 0, parts.bytes()), "cudaMemset");
      hand_off_kernel<<<kBlocks, 32>>>(write_first, counter.get(), parts.get(), total.get());
      check(cudaGetLastError(), "hand_off_kernel");
      wrong += total.host()[0] != kWant;
    }
    return wrong;
  };
  {
    const Resident one(1);
    EXPECT_EQ(wrong_totals(true), 0);
    EXPECT_EQ(wrong_totals(false), 0) << "one block at a time hides the bug";
  }
  const Resident four(4);
  EXPECT_EQ(wrong_totals(true), 0);
  EXPECT_GT(wrong_totals(false), 0) << "interleaved blocks show it";
}

// Each block fills its shared words, then, ten times over, lets the other
// blocks run (an atomic on global memory, noting which block took the turn)
// and checks that its words are still its own; __syncthreads_count counts
// its own threads' predicates.
__global__ void resident_kernel(unsigned* turns, unsigned* log, unsigned* errors) {
  __shared__ unsigned words[64];
  const unsigned t = threadIdx.x;
  words[t] = blockIdx.x * 1000 + t;
  __syncthreads();
  for (int round = 0; round < 10; ++round) {
    if (t == 0) log[atomicAdd(turns, 1u)] = blockIdx.x;
    const int count = __syncthreads_count(t < blockIdx.x + 1);
    if (words[(t + 1) % 64] != blockIdx.x * 1000 + (t + 1) % 64) atomicAdd(errors, 1u);
    if (count != static_cast<int>(blockIdx.x) + 1) atomicAdd(errors, 1u);
    __syncthreads();
  }
}

TEST(Emulation, InterleavedBlocksKeepTheirOwnSharedMemory) {
  constexpr unsigned kBlocks = 12, kRounds = 10;
  const Resident four(4);
  const DeviceArray<unsigned> turns(std::vector<unsigned>{0}), errors(std::vector<unsigned>{0});
  const DeviceArray<unsigned> log(kBlocks * kRounds);
  resident_kernel<<<kBlocks, 64>>>(turns.get(), log.get(), errors.get());
  CUDA_OK(cudaGetLastError());
  EXPECT_EQ(errors.host()[0], 0u);
  // Some block took a turn while another had turns still to take.
  const std::vector<unsigned> order = log.host();
  bool interleaved = false;
  for (unsigned i = 0; i + kRounds <= order.size(); i += kRounds) {
    for (unsigned j = i; j < i + kRounds; ++j) interleaved |= order[j] != order[i];
  }
  EXPECT_TRUE(interleaved);
  std::vector<unsigned> turns_of(kBlocks);
  for (unsigned b : order) ++turns_of[b];
  EXPECT_EQ(turns_of, std::vector<unsigned>(kBlocks, kRounds));
}

TEST(EmulationDeathTest, ADeadlockedBlockIsReportedByName) {
  EXPECT_DEATH(
      {
        deadlock_kernel<<<dim3(2, 1, 1), 32>>>();
        (void)cudaDeviceSynchronize();
      },
      // Block 0 runs first, or block 1 in reverse order (DGS_EMU_ORDER).
      "deadlock in block \\([01], 0, 0\\): 1 threads wait at __syncthreads and 31 in a warp "
      "exchange");
}

__global__ void set_kernel(unsigned* out, unsigned v) {
  if (threadIdx.x == 0) out[blockIdx.x] = v;
}
template <int Slot>
__global__ void slot_kernel(unsigned* out, unsigned v) {
  if (threadIdx.x == 0) out[Slot] = v;
}

// A test's fault (dgs_emu::fail_launch): the nth launch from then fails
// without running, as a launch out of resources, and names its kernel
// (without template arguments); the launches around it run.
TEST(Emulation, AnArmedLaunchFailsWithoutRunningAndIsNamed) {
  DeviceArray<unsigned> out(std::vector<unsigned>{0, 0});
  dgs_emu::fail_launch(2);
  set_kernel<<<1, 32>>>(out.get(), 1);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(dgs_emu::failed_launch(), nullptr);
  slot_kernel<1><<<1, 32>>>(out.get(), 2);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  ASSERT_NE(dgs_emu::failed_launch(), nullptr);
  EXPECT_STREQ(dgs_emu::failed_launch(), "slot_kernel");
  slot_kernel<0><<<1, 32>>>(out.get(), 3);  // the fault fired once
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(out.host(), (std::vector<unsigned>{3, 0}));  // slot_kernel<1> did not run
  dgs_emu::fail_launch(1);
  dgs_emu::fail_launch(0);  // disarmed
  set_kernel<<<1, 32>>>(out.get(), 4);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(dgs_emu::failed_launch(), nullptr);
  EXPECT_EQ(out.host(), (std::vector<unsigned>{4, 0}));
}

// dgs_emu::blocking_calls counts what may allocate or wait for the device,
// and nothing else: launches, memsets, copies from pinned memory and events
// recorded and queried are free.
TEST(Emulation, BlockingCallsAreCountedAndNothingElse) {
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto counted = [](auto&& call) {
    const std::uint64_t before = dgs_emu::blocking_calls();
    call();
    return dgs_emu::blocking_calls() - before;
  };
  unsigned* d = nullptr;
  void* pinned = nullptr;
  std::vector<unsigned> pageable(4, 1u);
  cudaEvent_t event = nullptr;
  EXPECT_EQ(counted([&] { CUDA_OK(cudaMalloc(&d, 16)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaMallocHost(&pinned, 16)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming)); }),
            0u);
  EXPECT_EQ(counted([&] {
              set_kernel<<<1, 32, 0, stream>>>(d, 1);
              CUDA_OK(cudaMemsetAsync(d, 0, 16, stream));
              CUDA_OK(cudaMemcpyAsync(d, pinned, 16, cudaMemcpyHostToDevice, stream));
              CUDA_OK(cudaMemcpyAsync(pinned, d, 16, cudaMemcpyDeviceToHost, stream));
              CUDA_OK(cudaEventRecord(event, stream));
              CUDA_OK(cudaEventQuery(event));
            }),
            0u);
  EXPECT_EQ(counted([&] {
              CUDA_OK(cudaMemcpyAsync(d, pageable.data(), 16, cudaMemcpyHostToDevice, stream));
            }),
            1u);
  EXPECT_EQ(counted([&] {
              CUDA_OK(cudaMemcpyAsync(pageable.data(), d, 16, cudaMemcpyDeviceToHost, stream));
            }),
            1u);
  EXPECT_EQ(counted([&] {
              CUDA_OK(cudaMemcpyAsync(d, static_cast<char*>(pinned) + 8, 8, cudaMemcpyHostToDevice,
                                      stream));
            }),
            0u)
      << "a range inside a pinned block";
  EXPECT_EQ(counted([&] { CUDA_OK(cudaEventSynchronize(event)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaStreamSynchronize(stream)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaMemset(d, 0, 16)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaEventDestroy(event)); }), 0u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaFreeHost(pinned)); }), 1u);
  EXPECT_EQ(counted([&] { CUDA_OK(cudaFree(d)); }), 1u);
  CUDA_OK(cudaStreamDestroy(stream));
}

TEST(Emulation, TheRuntimeRefusesWhatCudaRefuses) {
  // A launch larger than a block may be.
  deadlock_kernel<<<1, 2048>>>();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once, then cleared

  // Fresh memory holds 0x5A bytes, not zeros; copies stay inside allocations.
  unsigned char* d = nullptr;
  CUDA_OK(cudaMalloc(&d, 100));
  std::vector<unsigned char> host(100, 0);
  CUDA_OK(cudaMemcpy(host.data(), d, 100, cudaMemcpyDeviceToHost));
  EXPECT_EQ(host, std::vector<unsigned char>(100, 0x5A));
  EXPECT_EQ(cudaMemcpy(host.data(), d + 1, 300, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(d + 50, 0, 300), cudaErrorInvalidValue);
  (void)cudaGetLastError();

  // Inside a global-mode capture: no allocation, no synchronous copy, and the
  // capture is invalidated.
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();

  // A valid capture replays its work each launch.
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(cudaMemsetAsync(d, 7, 10, stream));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_OK(cudaMemcpy(host.data(), d, 100, cudaMemcpyDeviceToHost));
  EXPECT_EQ(host[0], 0x5A);  // recorded, not run
  CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemcpy(host.data(), d, 100, cudaMemcpyDeviceToHost));
  EXPECT_EQ(host[9], 7);
  EXPECT_EQ(host[10], 0x5A);
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));

  // A relaxed capture refuses nothing, and destroying its stream mid-capture
  // leaves no global capture behind.
  CUDA_OK(cudaStreamCreate(&stream));
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  CUDA_OK(cudaMalloc(&p, 16));
  CUDA_OK(cudaFree(p));
  CUDA_OK(cudaStreamDestroy(stream));
  CUDA_OK(cudaMalloc(&p, 16));
  CUDA_OK(cudaFree(p));
  CUDA_OK(cudaFree(d));
}

}  // namespace
