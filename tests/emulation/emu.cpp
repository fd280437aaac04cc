// The CPU emulation's runtime: fibers for a block's threads, the block
// barrier and warp exchanges, and the CUDA runtime calls dgs makes (memory,
// streams, stream capture and graphs). See include/dgs_emu/emu.h.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

// The scheduler's own context (the fibers belong to the Block objects, which
// later blocks reuse).
#if defined(__x86_64__)
void* g_scheduler_sp = nullptr;
#else
ucontext_t g_scheduler_context;
#endif
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

struct ThreadSlot {
  Thread thread;
  Wait wait = Wait::none;
  unsigned int wait_generation = 0;
  Fiber* fiber = nullptr;  // the fiber running this thread, once started
};

// A resident block: its threads, their fibers, its warps and (while another
// block runs) a copy of its shared memory. The objects are kept and reused
// by the blocks that come after.
struct Block {
  uint3 index{};  // blockIdx
  unsigned int threads = 0;
  unsigned int live = 0;     // threads that have not returned
  unsigned int arrived = 0;  // threads waiting at the barrier
  unsigned int generation = 0;
  unsigned int started = 0;      // threads started, in the order they run in
  unsigned int position = 0;     // in that order, the thread running now
  unsigned int fibers_used = 0;  // fibers of `fibers` in use
  bool reverse = false;
  double priority = 0;  // with blocks interleaved, the highest runs
  bool cut = false;     // a thread ended the round at an interleave point
  std::function<void()>* body = nullptr;
  WarpState warps[kMaxThreads / 32];
  ThreadSlot slots[kMaxThreads];
  Fiber fibers[kMaxThreads];
  unsigned char count_flags[kMaxThreads];  // __syncthreads_count's predicates
  // Its copy of the grid's __shared__ variables (g_grid_shared), made when another
  // block took the shared memory over: the first `saved` of them.
  std::vector<std::vector<unsigned char>> shared;
  std::size_t saved = 0;
};

namespace {

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
// it waits (at __syncthreads or a warp exchange, or, with blocks interleaved,
// after a global atomic or a fence) or returns, then the next one that can
// run in this round takes over, switching fiber to fiber. At the end of a
// round the scheduler starts the next one, of this block or another.

// The first position from `from` on, in this round, whose thread can run
// (or has not started); b.threads when none.
unsigned int next_in_round(const Block& b, unsigned int from) {
  for (unsigned int i = from; i < b.threads; ++i) {
    const ThreadSlot& slot = b.slots[thread_at(b, i)];
    if (slot.fiber == nullptr || runnable(slot, b)) return i;
  }
  return b.threads;
}

// Makes the thread at `position` current: a thread not started yet runs on
// `reuse`, or else on a new fiber. Returns the thread's fiber.
Fiber* take(Block& b, unsigned int position, Fiber* reuse = nullptr) {
  b.position = position;
  ThreadSlot& slot = b.slots[thread_at(b, position)];
  g_thread = &slot.thread;
  if (slot.fiber == nullptr) {
    if (b.started != position) fatal("threads started out of order");
    ++b.started;
    if (reuse != nullptr) {
      slot.fiber = reuse;
    } else {
      slot.fiber = &b.fibers[b.fibers_used++];
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
  Block& b = *g_thread->block;
  for (;;) {
    const Thread* thread = g_thread;
    (*b.body)();
    b.slots[thread->linear].wait = Wait::done;
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

// SplitMix64 over `state`.
std::uint64_t split_mix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The shuffled order's draws, one stream for the process.
std::uint64_t next_draw() {
  static std::uint64_t state = order_setting().seed;
  return split_mix(state);
}

// DGS_EMU_RESIDENT=N or N:SEED (N from 1 to 8): blocks of a grid resident
// at once, and the seed of the interleaving's draws (by default the order's
// seed, DGS_EMU_ORDER's, 1 unless shuffle:SEED names one).
constexpr int kMaxResident = 8;
struct ResidentSetting {
  int blocks = 1;
  std::uint64_t seed = 0;
};

const ResidentSetting& resident_from_environment() {
  static const ResidentSetting setting = [] {
    ResidentSetting s;
    s.seed = order_setting().seed;
    const char* v = std::getenv("DGS_EMU_RESIDENT");
    if (v == nullptr) return s;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    bool ok = end != v && n >= 1 && n <= kMaxResident;
    if (ok && *end == ':') {
      const char* seed = end + 1;
      s.seed = std::strtoull(seed, &end, 10);
      ok = end != seed;
    }
    if (!ok || *end != '\0')
      fatal("DGS_EMU_RESIDENT must be N or N:SEED, N a whole number of blocks from 1 to 8");
    s.blocks = static_cast<int>(n);
    return s;
  }();
  return setting;
}

int g_resident = 0;  // set_resident_blocks; 0: the environment's

// The interleaving's draws: a stream of their own, so that the order's draws
// are the same with one block resident as before blocks could interleave.
std::uint64_t next_pick() {
  static std::uint64_t state = resident_from_environment().seed ^ 0x5DEECE66Dull;
  return split_mix(state);
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

// The __shared__ variables the running grid has used so far, in the order
// of their first use (SharedVariable::use). Only the host thread running a
// grid (under g_execute) touches these.
struct SharedRegion {
  unsigned char* address;
  std::size_t bytes;
};
std::vector<SharedRegion> g_grid_shared;

bool is_shared(const void* p) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  for (const SharedRegion& r : g_grid_shared) {
    const auto a = reinterpret_cast<std::uintptr_t>(r.address);
    if (at >= a && at < a + r.bytes) return true;
  }
  return false;
}

// The block whose shared memory the __shared__ variables hold now.
Block* g_shared_owner = nullptr;

// Gives the shared memory to `b`: the block that held it keeps a copy (if it
// has threads left), and `b` gets its own back, or 0x5A where it has none
// (it has not run yet, or another block used a variable first since).
void own_shared(Block& b) {
  if (g_shared_owner == &b) return;
  if (g_shared_owner != nullptr && g_shared_owner->live > 0) {
    Block& o = *g_shared_owner;
    o.shared.resize(g_grid_shared.size());
    for (std::size_t i = 0; i < g_grid_shared.size(); ++i)
      o.shared[i].assign(g_grid_shared[i].address,
                         g_grid_shared[i].address + g_grid_shared[i].bytes);
    o.saved = g_grid_shared.size();
  }
  for (std::size_t i = 0; i < g_grid_shared.size(); ++i) {
    if (i < b.saved) {
      std::memcpy(g_grid_shared[i].address, b.shared[i].data(), g_grid_shared[i].bytes);
    } else {
      std::memset(g_grid_shared[i].address, 0x5A, g_grid_shared[i].bytes);
    }
  }
  g_shared_owner = &b;
}

// Readies `b` to run block number `n` of the grid running now.
void start_block(Block& b, unsigned long long n, std::function<void()>* body) {
  const dim3 grid = g_grid.grid_dim, dim = g_grid.block_dim;
  const unsigned int threads = dim.x * dim.y * dim.z;
  b.index = {static_cast<unsigned int>(n % grid.x), static_cast<unsigned int>(n / grid.x % grid.y),
             static_cast<unsigned int>(n / grid.x / grid.y)};
  b.threads = threads;
  b.live = threads;
  b.arrived = 0;
  b.generation = 0;
  b.started = 0;
  b.position = 0;
  b.fibers_used = 0;
  b.reverse = reverse_threads();
  b.body = body;
  b.saved = 0;
  b.priority = static_cast<double>(next_pick() >> 11) * 0x1.0p-53;  // in [0, 1)
  b.cut = false;
  if (g_shared_owner == &b) g_shared_owner = nullptr;  // what it holds was the last block's
  std::memset(b.count_flags, 0, threads);
  for (unsigned int w = 0; w < (threads + 31) / 32; ++w) b.warps[w].arrived = b.warps[w].ready = 0;
  for (unsigned int t = 0; t < threads; ++t) {
    ThreadSlot& slot = b.slots[t];
    slot.thread.thread_idx = {t % dim.x, (t / dim.x) % dim.y, t / (dim.x * dim.y)};
    slot.thread.linear = t;
    slot.thread.block = &b;
    slot.wait = Wait::none;
    slot.fiber = nullptr;
  }
}

// Runs one round of `b`'s threads: each switch to the first thread that can
// run starts one; the last thread of the round to run switches back here.
void run_round(Block& b) {
  own_shared(b);
  g_grid.block_idx = b.index;
  const unsigned int first = next_in_round(b, 0);
  if (first == b.threads) {
    unsigned int at_barrier = 0, at_warp = 0;
    for (unsigned int t = 0; t < b.threads; ++t) {
      at_barrier += b.slots[t].wait == Wait::barrier;
      at_warp += b.slots[t].wait == Wait::warp;
    }
    const std::string what =
        "deadlock in block (" + std::to_string(b.index.x) + ", " + std::to_string(b.index.y) +
        ", " + std::to_string(b.index.z) + "): " + std::to_string(at_barrier) +
        " threads wait at __syncthreads and " + std::to_string(at_warp) +
        " in a warp exchange whose other lanes never arrive, " +
        std::to_string(b.threads - b.live) + " of " + std::to_string(b.threads) + " returned";
    fatal(what.c_str());
  }
  switch_fiber(nullptr, take(b, first));
  g_thread = nullptr;
}

// The blocks that run a grid (DGS_EMU_RESIDENT of them at most at once).
std::vector<std::unique_ptr<Block>> g_blocks;

}  // namespace

void set_resident_blocks(int blocks) {
  if (blocks < 1 || blocks > kMaxResident) fatal("set_resident_blocks: 1 to 8 blocks");
  g_resident = blocks;
}
int resident_blocks() {
  return g_resident != 0 ? g_resident : resident_from_environment().blocks;
}

void yield() {
  Block& b = *g_thread->block;
  pass_on(b, *b.slots[g_thread->linear].fiber, false);
}

// One global atomic or fence in eight, drawn, ends the block's round at
// once and sends it below every other resident block (run_grid): the thread,
// and the block's threads that have not run in this round, go on only once
// the blocks above it have finished or fallen below it in turn. One in
// eight keeps the histograms' flushes, thousands of atomics a tile, from
// switching blocks at every one.
void interleave_point(const void* address) {
  if (g_thread == nullptr || (address != nullptr && is_shared(address))) return;
  if (next_pick() % 8 != 0) return;
  Block& b = *g_thread->block;
  b.cut = true;
  switch_fiber(b.slots[g_thread->linear].fiber, nullptr);
}

unsigned char* block_count_flags() {
  return g_thread->block->count_flags;
}

void sync_block() {
  Block& b = *g_thread->block;
  const unsigned int generation = b.generation;
  if (++b.arrived == b.live) {
    release_barrier(b);
    return;
  }
  ThreadSlot& slot = b.slots[g_thread->linear];
  slot.wait = Wait::barrier;
  slot.wait_generation = generation;
  yield();
}

std::uint64_t warp_exchange(unsigned int mask, std::uint64_t value, std::uint64_t arg,
                            Combine combine) {
  const unsigned int lane = g_thread->linear & 31u;
  const unsigned int bit = 1u << lane;
  if ((mask & bit) == 0) fatal("a warp intrinsic was called by a lane outside its mask");
  Block& b = *g_thread->block;
  WarpState& w = b.warps[g_thread->linear >> 5];
  w.value[lane] = value;
  w.arg[lane] = arg;
  w.arrived |= bit;
  if ((w.arrived & mask) == mask) {
    for (unsigned int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) w.result[l] = combine(w.value, w.arg, mask, l);
    w.arrived &= ~mask;
    w.ready |= mask;
  } else {
    ThreadSlot& slot = b.slots[g_thread->linear];
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

std::atomic<std::uint64_t> g_blocking_calls{0};

// Every call that could synchronise the device, or allocates, comes here
// (and is counted: blocking_calls).
cudaError_t refuse_if_capturing() {
  ++g_blocking_calls;
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  if (g_global_captures == 0) return cudaSuccess;
  for (cudaStream_t s : g_capturing) s->invalidated = true;
  return fail(cudaErrorStreamCaptureUnsupported);
}

bool device_range_ok(const void* p, std::size_t bytes) {
  return bytes == 0 || inside_allocation(p, bytes);
}

}  // namespace

std::uint64_t blocking_calls() {
  return g_blocking_calls.load();
}

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

namespace {
std::mutex g_fault_mutex;
std::uint64_t g_fault_countdown = 0;  // launches until the armed fault; 0: none
const char* g_faulted_kernel = nullptr;
}  // namespace

void fail_launch(std::uint64_t n) {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  g_fault_countdown = n;
  g_faulted_kernel = nullptr;
}

const char* failed_launch() {
  std::lock_guard<std::mutex> lock(g_fault_mutex);
  return g_faulted_kernel;
}

cudaError_t run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                     const char* kernel, std::function<void()> body) {
  const unsigned long long threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535 ||
      shared_bytes > 48 * 1024)
    return fail(cudaErrorInvalidConfiguration);
  {
    std::lock_guard<std::mutex> lock(g_fault_mutex);
    if (g_fault_countdown > 0 && --g_fault_countdown == 0) {
      g_faulted_kernel = kernel;
      return fail(cudaErrorLaunchOutOfResources);
    }
  }
  return enqueue(stream, [grid, block, body = std::move(body)]() mutable {
    ++g_grid_serial;
    g_grid_shared.clear();
    g_grid.grid_dim = grid;
    g_grid.block_dim = block;
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
    // The blocks start in the order asked; up to DGS_EMU_RESIDENT of them
    // are resident at once. Among those, the one with the highest priority
    // runs (drawn at its start, in [0, 1)), round after round, until it
    // finishes or falls below all the others: at an interleave point (one
    // global atomic or fence in eight) or, one round in sixteen, at the end
    // of a round. A block stopped right after raising a counter thus tends to
    // stay stopped while the others run to their end, as a probabilistic
    // concurrency test schedules threads: a block that counts on another's
    // writes being done once the counter says so then reads what is not
    // there yet.
    unsigned long long started = 0;
    const auto start_next = [&](Block& b) {
      const unsigned long long i = started++;
      start_block(b,
                  order == Order::reverse   ? blocks - 1 - i
                  : order == Order::shuffle ? shuffled[i]
                                            : i,
                  &body);
    };
    const auto resident =
        static_cast<std::size_t>(std::min<unsigned long long>(resident_blocks(), blocks));
    while (g_blocks.size() < resident) g_blocks.push_back(std::make_unique<Block>());
    std::vector<Block*> running;
    for (std::size_t r = 0; r < resident; ++r) {
      start_next(*g_blocks[r]);
      running.push_back(g_blocks[r].get());
    }
    g_interleaving = resident > 1;
    double lowest = 0;
    while (!running.empty()) {
      std::size_t pick = 0;
      for (std::size_t r = 1; r < running.size(); ++r)
        if (running[r]->priority > running[pick]->priority) pick = r;
      Block& b = *running[pick];
      run_round(b);
      if (b.live > 0) {
        if (running.size() > 1 && (b.cut || next_pick() % 16 == 0)) b.priority = --lowest;
        b.cut = false;
        continue;
      }
      if (started < blocks) {
        start_next(b);
      } else {
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(pick));
        g_interleaving = running.size() > 1;  // nothing left to interleave with
      }
    }
    g_interleaving = false;
    g_shared_owner = nullptr;
    for (std::size_t r = 0; r < resident; ++r) g_blocks[r]->body = nullptr;
  });
}

SharedVariable::SharedVariable(void* address, std::size_t bytes)
    : address_(static_cast<unsigned char*>(address)), bytes_(bytes) {}

void SharedVariable::first_use() {
  grid_ = g_grid_serial;
  std::memset(address_, 0x5A, bytes_);
  g_grid_shared.push_back({address_, bytes_});
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
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorInvalidDeviceFunction:
      return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoKernelImageForDevice:
      return "cudaErrorNoKernelImageForDevice";
    case cudaErrorUnsupportedPtxVersion:
      return "cudaErrorUnsupportedPtxVersion";
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
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorInvalidDeviceFunction:
      return "invalid device function";
    case cudaErrorNoKernelImageForDevice:
      return "no kernel image is available for execution on the device";
    case cudaErrorUnsupportedPtxVersion:
      return "the provided PTX was compiled with an unsupported toolchain.";
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
    case cudaDevAttrComputeCapabilityMajor:  // as the H100 the kernels are written for
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
  }
  return fail(cudaErrorInvalidValue);
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* kernel) {
  if (attributes == nullptr || kernel == nullptr) return fail(cudaErrorInvalidValue);
  attributes->maxThreadsPerBlock = dgs_emu::kMaxThreads;
  attributes->numRegs = 0;
  return cudaSuccess;
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

namespace {
std::mutex g_pinned_mutex;
std::map<std::uintptr_t, std::size_t> g_pinned;  // cudaMallocHost's blocks: start, bytes

bool pinned(const void* p, std::size_t bytes) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  auto it = g_pinned.upper_bound(at);
  if (it == g_pinned.begin()) return false;
  --it;
  return at + bytes <= it->first + it->second;
}
}  // namespace

cudaError_t cudaMallocHost(void** pointer, std::size_t bytes) {
  if (pointer == nullptr) return fail(cudaErrorInvalidValue);
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  *pointer = bytes == 0 ? nullptr : std::malloc(bytes);
  if (bytes != 0 && *pointer == nullptr) return fail(cudaErrorMemoryAllocation);
  if (*pointer != nullptr) {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned[reinterpret_cast<std::uintptr_t>(*pointer)] = bytes;
  }
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* pointer) {
  if (cudaError_t e = dgs_emu::refuse_if_capturing(); e != cudaSuccess) return e;
  {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned.erase(reinterpret_cast<std::uintptr_t>(pointer));
  }
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
  if (bytes > 0 && ((kind == cudaMemcpyHostToDevice && !pinned(src, bytes)) ||
                    (kind == cudaMemcpyDeviceToHost && !pinned(dst, bytes)))) {
    ++dgs_emu::g_blocking_calls;  // the driver stages pageable memory
  }
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

struct CUevent_st {};  // work runs when it is enqueued: an event has nothing to keep

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (event == nullptr || (flags & ~cudaEventDisableTiming) != 0) {
    return dgs_emu::fail(cudaErrorInvalidValue);
  }
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event == nullptr) return dgs_emu::fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (event == nullptr) return dgs_emu::fail(cudaErrorInvalidResourceHandle);
  return dgs_emu::enqueue(stream, [] {});  // in a capture, a node of its own
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (event == nullptr) return dgs_emu::fail(cudaErrorInvalidResourceHandle);
  return dgs_emu::refuse_if_capturing();  // what it waits for has run
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (event == nullptr) return dgs_emu::fail(cudaErrorInvalidResourceHandle);
  return cudaSuccess;  // what it follows has run
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
