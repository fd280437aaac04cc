// The backend interface the runtime calls its kernels through. Two
// implementations: host (kernels/*_host.cpp) and cuda (kernels/*.cu). The
// runtime never knows which; buffers are opaque memory of the backend's kind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dgs/backend.h"
#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "kernels/select_host.h"
#include "kernels/server_host.h"
#include "kernels/worker_host.h"

namespace dgs {
namespace detail {

/// A worker's kernels, with the workspace sized once for its plan's capacity.
class WorkerKernels {
 public:
  virtual ~WorkerKernels() = default;
  /// The plan of the following steps (called when the keep ratio changes),
  /// ordered on `stream` before them (the steps' stream). After the first it
  /// neither allocates nor waits for the device.
  virtual void set_plan(const SelectionPlan& plan, Stream stream) = 0;
  /// One step into the push buffer (see host::worker_step).
  virtual void step(const host::StepParams& params, const float* grad, const float* weights,
                    const host::WorkerState& state, void* message, Stream stream) = 0;
  /// Statistics of the last step (may wait for it).
  virtual host::SelectionStats last_stats(Stream stream) = 0;
  /// The last step's selection (waits for it).
  virtual host::CaptureUse last_capture_use(Stream) { return {}; }
  /// Room for a dense reply (dense_reply_layout(model).bytes) inside the
  /// kernels' selection workspace, which holds nothing from one step to the
  /// next: a worker receives its dense replies there (after the step that
  /// pushed has finished) and applies and folds them on the steps' stream
  /// before the next step. Null where the kernels hold no such workspace;
  /// the worker then allocates its own.
  virtual void* dense_reply_room() { return nullptr; }
  virtual void apply_reply(void* reply, const MessageLayout& layout, float* weights,
                           bool record_change, Stream stream) = 0;
  virtual void fold(const void* reply, const MessageLayout& layout, float beta, float* residual,
                    Stream stream) = 0;
  virtual void evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                                Stream stream) = 0;
};

/// A server's kernels.
class ServerKernels {
 public:
  virtual ~ServerKernels() = default;
  /// Validates a received message (waits for the result); `header` becomes
  /// its header as received (blank when it is shorter than one), read in the
  /// same wait.
  virtual Verdict validate(const void* message, std::size_t bytes, MessageHeader& header,
                           Stream stream) = 0;
  /// W -= s for a push that validate passed; `header` is the header validate
  /// returned for it, so it is not read back from the message (no host
  /// synchronisation: it can be graph-captured; a captured rbgs apply reads
  /// the segment table of the last ratio validated or applied, so it holds
  /// for pushes at the ratio it was captured at).
  virtual void apply(const void* message, const MessageHeader& header, float* model,
                     Stream stream) = 0;
  /// A sync round: W = W - (s_1 + ... + s_count) * (1 / count), each
  /// coordinate's sum taken from 0 in the order given (worker id), over
  /// `count` >= 1 validated pushes.
  virtual void apply_round(const host::RoundPush* pushes, std::uint32_t count, float* model,
                           Stream stream) = 0;
  virtual void sparse_reply(const float* model, float* replica, const host::ReplyInfo& info,
                            void* reply, Stream stream) = 0;
  /// The last sparse reply's selection (waits for it).
  virtual host::CaptureUse last_capture_use(Stream) { return {}; }
  /// Makes `reply`, a dense reply buffer whose values already hold the model
  /// to send (the server keeps W, and the shared replica of sync mode, inside
  /// such buffers), a dense reply: writes its header on the stream. `replica`,
  /// when not null, becomes a copy of those values.
  virtual void dense_reply(void* reply, float* replica, const host::ReplyInfo& info,
                           Stream stream) = 0;
};

}  // namespace detail

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const noexcept = 0;
  virtual MemoryKind memory() const noexcept = 0;

  virtual void* allocate(std::size_t bytes) = 0;
  virtual void release(void* pointer) noexcept = 0;
  virtual void zero(void* pointer, std::size_t bytes, Stream stream) = 0;
  /// Copy within the backend's memory.
  virtual void copy(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;
  /// Copies to / from host memory; returns when the copy is complete.
  virtual void download(void* host_dst, const void* src, std::size_t bytes, Stream stream) = 0;
  virtual void upload(void* dst, const void* host_src, std::size_t bytes, Stream stream) = 0;
  virtual void synchronize(Stream stream) = 0;
  /// Throws dgs::Error (invalid_argument) naming `what` when `pointer` is not
  /// memory this backend's kernels can use (a host pointer given to the cuda
  /// backend, say).
  virtual void check_pointer(const void* pointer, const char* what) const = 0;

  virtual std::unique_ptr<detail::WorkerKernels> worker_kernels(const Segments& segments,
                                                                const MessageLayout& layout,
                                                                const Config& config) = 0;
  virtual std::unique_ptr<detail::ServerKernels> server_kernels(const Segments& model,
                                                                const Config& config) = 0;
};

namespace detail {

/// Memory of a backend, released on destruction.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, std::size_t bytes)
      : backend_(&backend), data_(bytes ? backend.allocate(bytes) : nullptr), bytes_(bytes) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = other.backend_;
      data_ = other.data_;
      bytes_ = other.bytes_;
      other.data_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void reset() noexcept {
    if (data_ != nullptr) backend_->release(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data() const noexcept { return data_; }
  template <typename T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  std::size_t bytes() const noexcept { return bytes_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

/// The host backend (always available).
std::shared_ptr<Backend> make_host_backend();
/// The cuda backend; throws when built without it or no GPU is usable.
std::shared_ptr<Backend> make_cuda_backend(int device);
/// Whether this build holds kernels for the current device's architecture
/// (creates that device's context, and no other).
bool cuda_kernels_run() noexcept;

}  // namespace detail
}  // namespace dgs
