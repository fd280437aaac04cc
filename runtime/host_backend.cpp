// The host backend: the reference kernels on host memory.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "dgs/error.h"
#include "runtime/backend.h"

namespace dgs::detail {
namespace {

class HostWorkerKernels final : public WorkerKernels {
 public:
  HostWorkerKernels(const Segments& segments, const MessageLayout& layout)
      : segments_(segments), layout_(layout) {}

  void set_plan(const SelectionPlan& plan, Stream) override { plan_ = plan; }

  void step(const host::StepParams& params, const float* grad, const float* weights,
            const host::WorkerState& state, void* message, Stream) override {
    stats_ = host::worker_step(params, segments_, plan_, grad, weights, state, message, layout_,
                               scratch_);
  }

  host::SelectionStats last_stats(Stream) override { return stats_; }

  void apply_reply(void* reply, const MessageLayout& layout, float* weights, bool record_change,
                   Stream) override {
    host::apply_reply(reply, layout, weights, record_change);
  }

  void fold(const void* reply, const MessageLayout& layout, float beta, float* residual,
            Stream) override {
    host::fold_global_momentum(reply, layout, beta, residual);
  }

  void evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                        Stream) override {
    host::evaluation_point(weights, residual, lambda, x, layout_.model_size);
  }

 private:
  Segments segments_;
  MessageLayout layout_;
  SelectionPlan plan_;
  host::Scratch scratch_;
  host::SelectionStats stats_;
};

class HostServerKernels final : public ServerKernels {
 public:
  HostServerKernels(const Segments& model, const Config& config)
      : rules_(model, config),
        reply_plan_(reply_plan(rules_.segments, config)),
        reply_layout_(sparse_reply_layout(model, config)),
        dense_layout_(dense_reply_layout(model)) {}

  Verdict validate(const void* message, std::size_t bytes, MessageHeader& header, Stream) override {
    header = bytes >= kHeaderBytes ? read_header(message) : blank_header();
    return host::validate_push(message, bytes, rules_);
  }
  // The message is in host memory: its header is read where it lies.
  void apply(const void* message, const MessageHeader&, float* model, Stream) override {
    host::apply_push(message, rules_, model);
  }
  void apply_round(const host::RoundPush* pushes, std::uint32_t count, float* model,
                   Stream) override {
    host::apply_round(pushes, count, rules_, model, accumulator_);
  }
  void sparse_reply(const float* model, float* replica, const host::ReplyInfo& info, void* reply,
                    Stream) override {
    host::write_sparse_reply(model, replica, rules_.segments, reply_plan_, info, reply,
                             reply_layout_, scratch_);
  }
  void dense_reply(void* reply, float* replica, const host::ReplyInfo& info, Stream) override {
    host::finish_dense_reply(reply, replica, info, dense_layout_);
  }

 private:
  host::PushRules rules_;
  SelectionPlan reply_plan_;
  MessageLayout reply_layout_;
  MessageLayout dense_layout_;
  host::Scratch scratch_;
  std::vector<float> accumulator_;  // a sync round's sums (P floats once a round ran)
};

class HostBackend final : public Backend {
 public:
  BackendKind kind() const noexcept override { return BackendKind::host; }
  MemoryKind memory() const noexcept override { return MemoryKind::host; }

  void* allocate(std::size_t bytes) override {
    // 64-byte aligned, like device allocations are (at least) 256-byte aligned.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p == nullptr) {
      throw Error(ErrorCode::internal,
                  "dgs host backend: cannot allocate " + std::to_string(bytes) + " bytes");
    }
    return p;
  }
  void release(void* pointer) noexcept override { std::free(pointer); }
  void zero(void* pointer, std::size_t bytes, Stream) override { std::memset(pointer, 0, bytes); }
  void copy(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void upload(void* dst, const void* src, std::size_t bytes, Stream) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void synchronize(Stream) override {}
  void check_pointer(const void* pointer, const char* what) const override {
    if (pointer == nullptr) {
      throw Error(ErrorCode::invalid_argument,
                  std::string("dgs host backend: ") + what + " is null");
    }
  }

  std::unique_ptr<WorkerKernels> worker_kernels(const Segments& segments,
                                                const MessageLayout& layout,
                                                const Config&) override {
    return std::make_unique<HostWorkerKernels>(segments, layout);
  }
  std::unique_ptr<ServerKernels> server_kernels(const Segments& model,
                                                const Config& config) override {
    return std::make_unique<HostServerKernels>(model, config);
  }
};

}  // namespace

std::shared_ptr<Backend> make_host_backend() {
  return std::make_shared<HostBackend>();
}

}  // namespace dgs::detail
