// The CPU emulation's runtime: fibers for a block's threads, the block
// barrier and warp exchanges, and the CUDA runtime calls dgs makes (memory,
// streams, stream capture and graphs). See include/dgs_emu/emu.h.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime_api.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#else
#include <ucontext.h>
#endif

// Built with -fsanitize=address (DGS_CUDA_EMULATION_ASAN): ASan is told of
// every fiber switch, a reused fiber stack starts unpoisoned, and the bytes an
// allocation is rounded up by are poisoned, so a kernel's access outside its
// buffers, or outside a __shared__ array, is reported where it happens.
#if defined(__SANITIZE_ADDRESS__)
#define DGS_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define DGS_EMU_ASAN 0
#endif

namespace dgs_emu {

Thread* g_thread = nullptr;
Grid g_grid{};

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "dgs CUDA emulation: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

[[noreturn]] void fail_block_scan_size(int expected_threads) {
  const std::string what =
      "cub::BlockScan for " + std::to_string(expected_threads) + " threads used in a block of " +
      std::to_string(g_grid.block_dim.x * g_grid.block_dim.y * g_grid.block_dim.z);
  fatal(what.c_str());
}

namespace {

// ---- fibers --------------------------------------------------------------
constexpr std::size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the
// current stack, stores its pointer in *save and continues on `next`.
extern "C" void dgs_emu_switch(void** save, void* next);
extern "C" void dgs_emu_trampoline();
asm(R"(
  .pushsection .text
  .globl dgs_emu_switch
  .type dgs_emu_switch, @function
dgs_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size dgs_emu_switch, .-dgs_emu_switch
  .globl dgs_emu_trampoline
  .type dgs_emu_trampoline, @function
dgs_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size dgs_emu_trampoline, .-dgs_emu_trampoline
  .popsection
)");
#endif

struct Fiber {
  char* stack = nullptr;  // kStackBytes above a guard page
  void* asan_fake_stack = nullptr;
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t context;
#endif
};

// The scheduler's own context and the fibers' stacks (reused by every
// block; one block runs at a time in the process).
#if defined(__x86_64__)
void* g_scheduler_sp = nullptr;
#else
ucontext_t g_scheduler_context;
#endif
Fiber g_fibers[kMaxThreads];
#if DGS_EMU_ASAN
// The stack of the host thread running the grid now (the scheduler's).
const void* g_scheduler_bottom = nullptr;
std::size_t g_scheduler_size = 0;
void* g_scheduler_fake_stack = nullptr;
bool g_from_scheduler = false;  // the last switch left the scheduler

// Completes a switch into a context with fake stack `fake`; a switch out of
// the scheduler tells where the scheduler's stack is.
void finish_switch(void* fake) {
  if (g_from_scheduler) {
    __sanitizer_finish_switch_fiber(fake, &g_scheduler_bottom, &g_scheduler_size);
  } else {
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
  }
}
#endif

void fiber_main(void* arg);

char* make_stack() {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fatal("cannot map a fiber stack");
  if (mprotect(p, page, PROT_NONE) != 0) fatal("cannot protect a fiber stack's guard page");
  return static_cast<char*>(p) + page;
}

void start_fiber(Fiber& f) {
  if (f.stack == nullptr) f.stack = make_stack();
#if DGS_EMU_ASAN
  // The previous fiber on this stack never returned: its frames' redzones
  // are still poisoned.
  __asan_unpoison_memory_region(f.stack, kStackBytes);
  f.asan_fake_stack = nullptr;
#endif
#if defined(__x86_64__)
  auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStackBytes) & ~std::uintptr_t{15};
  auto* frame = reinterpret_cast<std::uint64_t*>(top) - 8;
  std::uint32_t control[2] = {_mm_getcsr(), 0};
  std::uint16_t x87;
  asm volatile("fnstcw %0" : "=m"(x87));
  control[1] = x87;
  std::memcpy(&frame[0], control, 8);
  frame[1] = 0;                                             // r15
  frame[2] = 0;                                             // r14
  frame[3] = reinterpret_cast<std::uint64_t>(&fiber_main);  // r13: the function
  frame[4] = reinterpret_cast<std::uint64_t>(&f);           // r12: its argument
  frame[5] = 0;                                             // rbx
  frame[6] = 0;                                             // rbp
  frame[7] = reinterpret_cast<std::uint64_t>(&dgs_emu_trampoline);
  f.sp = frame;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  // makecontext passes int arguments: the pointer goes in two halves.
  const auto bits = reinterpret_cast<std::uintptr_t>(&f);
  makecontext(&f.context, reinterpret_cast<void (*)()>(+[](unsigned lo, unsigned hi) {
    fiber_main(reinterpret_cast<void*>((std::uintptr_t{hi} << 32) | lo));
  }),
              2, static_cast<unsigned>(bits), static_cast<unsigned>(bits >> 32));
#endif
}

// Switches from `from` to `to`, each a fiber or nullptr for the scheduler
// (the host thread running the grid), and returns when something switches
// back to `from`. `finished`: `from` will not run again (ASan can drop its
// fake stack).
void switch_fiber(Fiber* from, Fiber* to, bool finished = false) {
#if DGS_EMU_ASAN
  void** fake = finished ? nullptr : from ? &from->asan_fake_stack : &g_scheduler_fake_stack;
  g_from_scheduler = from == nullptr;
  if (to == nullptr) {
    __sanitizer_start_switch_fiber(fake, g_scheduler_bottom, g_scheduler_size);
  } else {
    __sanitizer_start_switch_fiber(fake, to->stack, kStackBytes);
  }
#else
  (void)finished;
#endif
#if defined(__x86_64__)
  dgs_emu_switch(from ? &from->sp : &g_scheduler_sp, to ? to->sp : g_scheduler_sp);
#else
  swapcontext(from ? &from->context : &g_scheduler_context,
              to ? &to->context : &g_scheduler_context);
#endif
#if DGS_EMU_ASAN
  finish_switch(from ? from->asan_fake_stack : g_scheduler_fake_stack);
#endif
}

}  // namespace

// ---- blocks --------------------------------------------------------------
enum class Wait { none, barrier, warp, done };

struct WarpState {
  unsigned int arrived = 0;  // lanes that deposited and wait
  unsigned int ready = 0;    // lanes whose result is computed
  std::uint64_t value[32];
  std::uint64_t arg[32];
  std::uint64_t result[32];
};

struct Block {
  unsigned int threads = 0;
  unsigned int live = 0;     // threads that have not returned
  unsigned int arrived = 0;  // threads waiting at the barrier
  unsigned int generation = 0;
  unsigned int started = 0;   // threads started, in the order they run in
  unsigned int position = 0;  // in that order, the thread running now
  unsigned int fibers = 0;    // fibers of g_fibers in use
  bool reverse = false;
  std::function<void()>* body = nullptr;
  WarpState warps[kMaxThreads / 32];
};

namespace {

struct ThreadSlot {
  Thread thread;
  Wait wait = Wait::none;
  unsigned int wait_generation = 0;
  Fiber* fiber = nullptr;  // the fiber running this thread, once started
};

Block g_block;
ThreadSlot g_slots[kMaxThreads];

void release_barrier(Block& b) {
  b.arrived = 0;
  ++b.generation;
}

// The thread that runs `order` th (last first in reverse order).
unsigned int thread_at(const Block& b, unsigned int order) {
  return b.reverse ? b.threads - 1 - order : order;
}

bool runnable(const ThreadSlot& slot, const Block& b) {
  switch (slot.wait) {
    case Wait::none:
      return true;
    case Wait::barrier:
      return b.generation != slot.wait_generation;
    case Wait::warp: {
      const unsigned int lane = slot.thread.linear & 31u;
      return (b.warps[slot.thread.linear >> 5].ready >> lane) & 1u;
    }
    case Wait::done:
      return false;
  }
  return false;
}

// A block runs in rounds over its threads, in order: each thread runs until
// it waits (at __syncthreads or a warp exchange) or returns, then the next
// one that can run in this round takes over, switching fiber to fiber. At the
// end of a round the scheduler starts the next one from the first thread.

// The first position from `from` on, in this round, whose thread can run
// (or has not started); b.threads when none.
unsigned int next_in_round(const Block& b, unsigned int from) {
  for (unsigned int i = from; i < b.threads; ++i) {
    const ThreadSlot& slot = g_slots[thread_at(b, i)];
    if (slot.fiber == nullptr || runnable(slot, b)) return i;
  }
  return b.threads;
}

// Makes the thread at `position` current: a thread not started yet runs on
// `reuse`, or else on a new fiber. Returns the thread's fiber.
Fiber* take(Block& b, unsigned int position, Fiber* reuse = nullptr) {
  b.position = position;
  ThreadSlot& slot = g_slots[thread_at(b, position)];
  g_thread = &slot.thread;
  if (slot.fiber == nullptr) {
    if (b.started != position) fatal("threads started out of order");
    ++b.started;
    if (reuse != nullptr) {
      slot.fiber = reuse;
    } else {
      slot.fiber = &g_fibers[b.fibers++];
      start_fiber(*slot.fiber);
    }
  } else {
    slot.wait = Wait::none;
  }
  return slot.fiber;
}

// The running thread (on fiber `f`) waits or has returned: the next thread
// of this round runs, or the scheduler starts the next round.
void pass_on(Block& b, Fiber& f, bool finished) {
  const unsigned int next = next_in_round(b, b.position + 1);
  switch_fiber(&f, next < b.threads ? take(b, next) : nullptr, finished);
}

// A fiber runs its thread, and while threads return without waiting, the
// threads after it, which have not started (the first round): most blocks'
// threads never meet, and one fiber then runs them all, with no switch. A
// thread that waits keeps its fiber.
void fiber_main(void* arg) {
#if DGS_EMU_ASAN
  finish_switch(nullptr);
#endif
  Fiber& f = *static_cast<Fiber*>(arg);
  Block& b = g_block;
  for (;;) {
    const Thread* thread = g_thread;
    (*b.body)();
    g_slots[thread->linear].wait = Wait::done;
    --b.live;
    if (b.arrived > 0 && b.arrived == b.live) release_barrier(b);
    if (b.started == b.threads || b.started != b.position + 1) break;
    take(b, b.position + 1, &f);
  }
  pass_on(b, f, true);
  fatal("a finished fiber was resumed");
}

// DGS_EMU_ORDER=reverse runs the blocks of a grid, and the threads of a block
// between two meeting points, last first. A kernel that reads what another
// thread wrote without a barrier between, or that depends on the order blocks
// run in, then sees different data in one of the two orders.
// DGS_EMU_ORDER=shuffle (or shuffle:SEED) runs each grid's blocks in a
// random order, and each block's threads forward or reverse at random: the
// block that finishes last, for one, is then neither the first nor the last.
enum class Order { forward, reverse, shuffle };

struct OrderSetting {
  Order order = Order::forward;
  std::uint64_t seed = 1;
};

const OrderSetting& order_setting() {
  static const OrderSetting setting = [] {
    OrderSetting s;
    const char* v = std::getenv("DGS_EMU_ORDER");
    if (v == nullptr || std::strcmp(v, "forward") == 0) return s;
    if (std::strcmp(v, "reverse") == 0) {
      s.order = Order::reverse;
      return s;
    }
    if (std::strncmp(v, "shuffle", 7) == 0 && (v[7] == '\0' || v[7] == ':')) {
      s.order = Order::shuffle;
      if (v[7] == ':') s.seed = std::strtoull(v + 8, nullptr, 10);
      return s;
    }
    fatal("DGS_EMU_ORDER must be forward, reverse, shuffle or shuffle:SEED");
  }();
  return setting;
}

// The shuffled order's draws (SplitMix64), one stream for the process.
std::uint64_t next_draw() {
  static std::uint64_t state = order_setting().seed;
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool reverse_threads() {
  switch (order_setting().order) {
    case Order::forward:
      return false;
    case Order::reverse:
      return true;
    case Order::shuffle:
      return (next_draw() & 1u) != 0;
  }
  return false;
}

// Every __shared__ variable a kernel has declared so far (SharedVariable).
struct SharedRegion {
  void* address;
  std::size_t bytes;
};
std::mutex g_shared_mutex;
std::vector<SharedRegion> g_shared;

void poison_shared() {
  std::lock_guard<std::mutex> lock(g_shared_mutex);
  for (const SharedRegion& r : g_shared) std::memset(r.address, 0x5A, r.bytes);
}

void run_block(unsigned int threads) {
  poison_shared();
  Block& b = g_block;
  b.threads = threads;
  b.live = threads;
  b.arrived = 0;
  b.generation = 0;
  b.started = 0;
  b.position = 0;
  b.fibers = 0;
  b.reverse = reverse_threads();
  for (unsigned int w = 0; w < (threads + 31) / 32; ++w) b.warps[w].arrived = b.warps[w].ready = 0;
  const dim3 dim = g_grid.block_dim;
  for (unsigned int t = 0; t < threads; ++t) {
    ThreadSlot& slot = g_slots[t];
    slot.thread.thread_idx = {t % dim.x, (t / dim.x) % dim.y, t / (dim.x * dim.y)};
    slot.thread.linear = t;
    slot.thread.block = &b;
    slot.wait = Wait::none;
    slot.fiber = nullptr;
  }
  // Each switch to the first thread that can run starts a round; the last
  // thread of the round to run switches back here.
  while (b.live > 0) {
    const unsigned int first = next_in_round(b, 0);
    if (first == threads) {
      unsigned int at_barrier = 0, at_warp = 0;
      for (unsigned int t = 0; t < threads; ++t) {
        at_barrier += g_slots[t].wait == Wait::barrier;
        at_warp += g_slots[t].wait == Wait::warp;
      }
      const std::string what =
          "deadlock in block (" + std::to_string(g_grid.block_idx.x) + ", " +
          std::to_string(g_grid.block_idx.y) + ", " + std::to_string(g_grid.block_idx.z) +
          "): " + std::to_string(at_barrier) + " threads wait at __syncthreads and " +
          std::to_string(at_warp) + " in a warp exchange whose other lanes never arrive, " +
          std::to_string(threads - b.live) + " of " + std::to_string(threads) + " returned";
      fatal(what.c_str());
    }
    switch_fiber(nullptr, take(b, first));
  }
  g_thread = nullptr;
}

}  // namespace

void yield() {
  pass_on(g_block, *g_slots[g_thread->linear].fiber, false);
}

void sync_block() {
  Block& b = *g_thread->block;
  const unsigned int generation = b.generation;
  if (++b.arrived == b.live) {
    release_barrier(b);
    return;
  }
  ThreadSlot& slot = g_slots[g_thread->linear];
  slot.wait = Wait::barrier;
  slot.wait_generation = generation;
  yield();
}

std::uint64_t warp_exchange(unsigned int mask, std::uint64_t value, std::uint64_t arg,
                            Combine combine) {
  const unsigned int lane = g_thread->linear & 31u;
  const unsigned int bit = 1u << lane;
  if ((mask & bit) == 0) fatal("a warp intrinsic was called by a lane outside its mask");
  WarpState& w = g_thread->block->warps[g_thread->linear >> 5];
  w.value[lane] = value;
  w.arg[lane] = arg;
  w.arrived |= bit;
  if ((w.arrived & mask) == mask) {
    for (unsigned int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) w.result[l] = combine(w.value, w.arg, mask, l);
    w.arrived &= ~mask;
    w.ready |= mask;
  } else {
    ThreadSlot& slot = g_slots[g_thread->linear];
    slot.wait = Wait::warp;
    yield();
  }
  w.ready &= ~bit;
  return w.result[lane];
}

namespace {
unsigned int width_of(std::uint64_t arg) {
  const auto width = static_cast<unsigned int>(arg >> 32);
  return width == 0 || width > 32 || (width & (width - 1)) != 0 ? 32 : width;
}
}  // namespace

std::uint64_t combine_shfl(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                           unsigned int lane) {
  const unsigned int width = width_of(a[lane]);
  const unsigned int src = static_cast<unsigned int>(a[lane]) & (width - 1);
  return v[(lane & ~(width - 1)) + src];
}
std::uint64_t combine_shfl_up(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                              unsigned int lane) {
  const unsigned int width = width_of(a[lane]);
  const unsigned int delta = static_cast<unsigned int>(a[lane]);
  return (lane & (width - 1)) >= delta ? v[lane - delta] : v[lane];
}
std::uint64_t combine_shfl_down(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                                unsigned int lane) {
  const unsigned int width = width_of(a[lane]);
  const unsigned int delta = static_cast<unsigned int>(a[lane]);
  return (lane & (width - 1)) + delta < width ? v[lane + delta] : v[lane];
}
std::uint64_t combine_shfl_xor(const std::uint64_t* v, const std::uint64_t* a, unsigned int,
                               unsigned int lane) {
  const unsigned int width = width_of(a[lane]);
  const unsigned int src = lane ^ (static_cast<unsigned int>(a[lane]) & 31u);
  return (src & ~(width - 1)) == (lane & ~(width - 1)) ? v[src] : v[lane];
}
std::uint64_t combine_ballot(const std::uint64_t* v, const std::uint64_t*, unsigned int mask,
                             unsigned int) {
  std::uint64_t bits = 0;
  for (unsigned int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && v[l] != 0) bits |= 1ull << l;
  return bits;
}
std::uint64_t combine_none(const std::uint64_t*, const std::uint64_t*, unsigned int, unsigned int) {
  return 0;
}

}  // namespace dgs_emu

// ---- the runtime -------------------------------------------------------------
struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  CUgraph_st* graph = nullptr;
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace dgs_emu {
namespace {

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

cudaError_t fail(cudaError_t error) {
  t_last_error = error;
  return error;
}

std::mutex g_execute;  // one grid or stream operation at a time, process-wide

struct Allocation {
  std::size_t bytes;
  bool managed;
};
std::mutex g_memory_mutex;
std::map<std::uintptr_t, Allocation> g_allocations;
std::size_t g_used = 0;

std::size_t memory_limit() {
  static const std::size_t limit = [] {
    const char* v = std::getenv("DGS_EMU_MEMORY_GIB");
    const std::size_t gib = v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : 6;
    return gib << 30;
  }();
  return limit;
}

int multiprocessors() {
  static const int count = [] {
    const char* v = std::getenv("DGS_EMU_SMS");
    return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : 2;
  }();
  return count;
}

// The allocation holding address `at`, or null. Call with g_memory_mutex held.
const std::pair<const std::uintptr_t, Allocation>* allocation_at(std::uintptr_t at) {
  auto it = g_allocations.upper_bound(at);
  if (it == g_allocations.begin()) return nullptr;
  --it;
  return at < it->first + it->second.bytes ? &*it : nullptr;
}

// Whether [p, p + bytes) lies inside one allocation.
bool inside_allocation(const void* p, std::size_t bytes) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  const auto* a = allocation_at(at);
  return a != nullptr && at + bytes <= a->first + a->second.bytes;
}

// Captures in global mode in progress: while there is one, calls that could
// synchronise the device are refused, as the CUDA runtime refuses them.
std::mutex g_capture_mutex;
int g_global_captures = 0;
std::vector<cudaStream_t> g_capturing;

cudaError_t refuse_if_capturing() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  if (g_global_captures == 0) return cudaSuccess;
  for (cudaStream_t s : g_capturing) s->invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported);
}

bool device_range_ok(const void* p, std::size_t bytes) {
  return bytes == 0 || inside_allocation(p, bytes);
}

}  // namespace

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  if (stream != nullptr && stream->capturing) {
    if (stream->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    stream->graph->work.push_back(std::move(work));
    return cudaSuccess;
  }
  {
    std::lock_guard<std::mutex> lock(g_capture_mutex);
    if (stream == nullptr && g_global_captures > 0) {
      for (cudaStream_t s : g_capturing) s->invalidated = true;
      return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream during a capture
    }
  }
  std::lock_guard<std::mutex> lock(g_execute);
  work();
  return cudaSuccess;
}

cudaError_t run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                     std::function<void()> body) {
  const unsigned long long threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535 ||
      shared_bytes > 48 * 1024)
    return fail(cudaErrorInvalidConfiguration);
  return enqueue(stream, [grid, block, body = std::move(body)]() mutable {
    g_block.body = &body;
    g_grid.grid_dim = grid;
    g_grid.block_dim = block;
    const auto threads_per_block = block.x * block.y * block.z;
    const unsigned long long blocks = static_cast<unsigned long long>(grid.x) * grid.y * grid.z;
    const Order order = order_setting().order;
    std::vector<unsigned long long> shuffled;
    if (order == Order::shuffle) {
      shuffled.resize(blocks);
      for (unsigned long long i = 0; i < blocks; ++i) shuffled[i] = i;
      for (unsigned long long i = blocks; i > 1; --i) {
        std::swap(shuffled[i - 1], shuffled[next_draw() % i]);
      }
    }
    for (unsigned long long i = 0; i < blocks; ++i) {
      const unsigned long long n = order == Order::reverse   ? blocks - 1 - i
                                   : order == Order::shuffle ? shuffled[i]
                                                             : i;
      g_grid.block_idx = {static_cast<unsigned int>(n % grid.x),
                          static_cast<unsigned int>(n / grid.x % grid.y),
                          static_cast<unsigned int>(n / grid.x / grid.y)};
      run_block(threads_per_block);
    }
    g_block.body = nullptr;
  });
}

SharedVariable::SharedVariable(void* address, std::size_t bytes) {
  std::memset(address, 0x5A, bytes);
  std::lock_guard<std::mutex> lock(g_shared_mutex);
  g_shared.push_back({address, bytes});
}

}  // namespace dgs_emu

using dgs_emu::fail;

cudaError_t cudaGetLastError() {
  const cudaError_t e = dgs_emu::t_last_error;
  dgs_emu::t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  return dgs_emu::t_last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError:
      return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInitializationError:
      return "initialization error";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
  }
  return "unknown error";
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = dgs_emu::t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  dgs_emu::t_device = device;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr || device != 0) return fail(cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = dgs_emu::multiprocessors();
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = dgs_emu::kMaxThreads;
      return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}
cudaError_t cudaDeviceSynchronize() {
  return dgs_emu::refuse_if_capturing();
}

cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
  *total_bytes = dgs_emu::memory_limit();
  *free_bytes = *total_bytes - dgs_emu::g_used;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel,
                                                          int block_size, std::size_t) {
  if (blocks == nullptr || kernel == nullptr || block_size <= 0 ||
      block_size > dgs_emu::kMaxThreads)
    return fail(cudaErrorInvalidValue);
  *blocks = block_size <= 256 ? 2 : 1;
  return cudaSuccess;
}

namespace {
cudaError_t allocate(void** pointer, std::size_t bytes, bool managed) {
  if (pointer == nullptr) return fail(cudaErrorInvalidValue);
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  *pointer = nullptr;
  if (bytes == 0) return cudaSuccess;
  const std::size_t rounded = (bytes + 255) & ~std::size_t{255};
  {
    std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
    if (rounded > dgs_emu::memory_limit() - dgs_emu::g_used) return fail(cudaErrorMemoryAllocation);
    dgs_emu::g_used += rounded;
  }
  void* p = std::aligned_alloc(256, rounded);
  if (p == nullptr) {
    std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
    dgs_emu::g_used -= rounded;
    return fail(cudaErrorMemoryAllocation);
  }
  // Fresh device memory is not zero: code that reads it before writing it
  // shows up as a mismatch instead of passing by luck.
  std::memset(p, 0x5A, rounded);
#if DGS_EMU_ASAN
  __asan_poison_memory_region(static_cast<char*>(p) + bytes, rounded - bytes);
#endif
  std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
  dgs_emu::g_allocations[reinterpret_cast<std::uintptr_t>(p)] = {rounded, managed};
  *pointer = p;
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMalloc(void** pointer, std::size_t bytes) {
  return allocate(pointer, bytes, false);
}
cudaError_t cudaMallocManaged(void** pointer, std::size_t bytes, unsigned int) {
  return allocate(pointer, bytes, true);
}

cudaError_t cudaFree(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  std::size_t rounded = 0;
  {
    std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
    auto it = dgs_emu::g_allocations.find(reinterpret_cast<std::uintptr_t>(pointer));
    if (it == dgs_emu::g_allocations.end()) return fail(cudaErrorInvalidValue);
    rounded = it->second.bytes;
    dgs_emu::g_used -= rounded;
    dgs_emu::g_allocations.erase(it);
  }
  std::lock_guard<std::mutex> lock(dgs_emu::g_execute);  // no grid is using it now
#if DGS_EMU_ASAN
  __asan_unpoison_memory_region(pointer, rounded);
#else
  (void)rounded;
#endif
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** pointer, std::size_t bytes) {
  if (pointer == nullptr) return fail(cudaErrorInvalidValue);
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  *pointer = bytes == 0 ? nullptr : std::malloc(bytes);
  return bytes != 0 && *pointer == nullptr ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}
cudaError_t cudaFreeHost(void* pointer) {
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  std::free(pointer);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* pointer) {
  if (attributes == nullptr) return fail(cudaErrorInvalidValue);
  *attributes = {cudaMemoryTypeUnregistered, -2, nullptr, nullptr};
  std::lock_guard<std::mutex> lock(dgs_emu::g_memory_mutex);
  const auto* a = dgs_emu::allocation_at(reinterpret_cast<std::uintptr_t>(pointer));
  if (a == nullptr) return cudaSuccess;
  attributes->type = a->second.managed ? cudaMemoryTypeManaged : cudaMemoryTypeDevice;
  attributes->device = 0;
  attributes->devicePointer = const_cast<void*>(pointer);
  attributes->hostPointer = a->second.managed ? const_cast<void*>(pointer) : nullptr;
  return cudaSuccess;
}

namespace {
// Device-side ranges of a copy must lie inside allocations, as the GPU
// would otherwise fault.
cudaError_t check_copy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (bytes > 0 && (dst == nullptr || src == nullptr)) return fail(cudaErrorInvalidValue);
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind > cudaMemcpyDefault) return fail(cudaErrorInvalidMemcpyDirection);
  if ((dst_device && !dgs_emu::device_range_ok(dst, bytes)) ||
      (src_device && !dgs_emu::device_range_ok(src, bytes)))
    return fail(cudaErrorInvalidValue);
  return cudaSuccess;
}
}  // namespace

// The synchronous forms are the asynchronous ones on the legacy stream,
// refused first inside any global capture (they would synchronise).
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (cudaError_t e = check_copy(dst, src, bytes, kind); e != cudaSuccess) return e;
  return dgs_emu::enqueue(stream, [dst, src, bytes]() {
    if (bytes > 0) std::memmove(dst, src, bytes);
  });
}
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (cudaError_t e = check_copy(dst, src, bytes, kind); e != cudaSuccess) return e;
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream) {
  if (!dgs_emu::device_range_ok(dst, bytes)) return fail(cudaErrorInvalidValue);
  return dgs_emu::enqueue(stream, [dst, value, bytes]() {
    if (bytes > 0) std::memset(dst, value, bytes);
  });
}
cudaError_t cudaMemset(void* dst, int value, std::size_t bytes) {
  if (!dgs_emu::device_range_ok(dst, bytes)) return fail(cudaErrorInvalidValue);
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  return cudaMemsetAsync(dst, value, bytes, nullptr);
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  if (stream == nullptr) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  return cudaStreamCreate(stream);
}
namespace {
// Ends a stream's capture (a global one stops counting) and hands back what
// it recorded.
CUgraph_st* stop_capture(cudaStream_t stream) {
  {
    std::lock_guard<std::mutex> lock(dgs_emu::g_capture_mutex);
    auto& c = dgs_emu::g_capturing;
    const auto at = std::remove(c.begin(), c.end(), stream);
    if (at != c.end()) --dgs_emu::g_global_captures;
    c.erase(at, c.end());
  }
  stream->capturing = false;
  CUgraph_st* captured = stream->graph;
  stream->graph = nullptr;
  return captured;
}
}  // namespace

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (stream == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (stream->capturing) delete stop_capture(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  // Work runs when it is enqueued; only a capture makes this an error.
  return dgs_emu::refuse_if_capturing();
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (stream == nullptr || stream->capturing) return fail(cudaErrorInvalidValue);
  stream->capturing = true;
  stream->invalidated = false;
  stream->graph = new CUgraph_st;
  if (mode == cudaStreamCaptureModeGlobal) {
    std::lock_guard<std::mutex> lock(dgs_emu::g_capture_mutex);
    ++dgs_emu::g_global_captures;
    dgs_emu::g_capturing.push_back(stream);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (stream == nullptr || graph == nullptr || !stream->capturing)
    return fail(cudaErrorInvalidValue);
  CUgraph_st* captured = stop_capture(stream);
  if (stream->invalidated) {
    delete captured;
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = captured;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (exec == nullptr || graph == nullptr) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (exec == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (stream != nullptr && stream->capturing) return fail(cudaErrorStreamCaptureUnsupported);
  for (auto& work : exec->work)
    if (cudaError_t e = dgs_emu::enqueue(stream, work); e != cudaSuccess) return e;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
