// The cuda backend: the runtime's kernel interface over the CUDA kernels.
// Everything is asynchronous on the caller's stream except what must return a
// host value (validation, threshold statistics, downloads).
#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dgs/error.h"
#include "kernels/cuda_check.h"
#include "kernels/kernels.cuh"
#include "kernels/select.cuh"
#include "runtime/backend.h"

namespace dgs::detail {
namespace {

using cuda::EmitArgs;
using cuda::KeySource;
using cuda::SegmentInfo;
using cuda::UpdateArgs;

const float* selected_from(Method method, const host::WorkerState& s) {
  switch (method) {
    case Method::gd:
    case Method::gmc:
    case Method::gmc_plus:
      return s.residual;
    case Method::dgc:
      return s.accumulator;
    case Method::samomentum:
      return s.momentum;
    case Method::dense:
      break;
  }
  return nullptr;
}

class CudaWorkerKernels final : public WorkerKernels {
 public:
  CudaWorkerKernels(const Segments& segments, const MessageLayout& layout, const Config& config)
      : segments_(segments), layout_(layout), config_(config) {
    if (config.method != Method::dense) {
      // The first candidate list has room for a dense reply between steps.
      selector_ =
          std::make_unique<cuda::Selector>(segments, layout.capacity, layout.index_type,
                                           config.compressor, dense_reply_layout(segments).bytes);
    }
    if (config.clip_norm > 0.0f) {
      // The chunks' squared norms, then the scale (a float after them).
      const std::uint64_t chunks = detail::norm_chunks(layout.model_size);
      void* p = nullptr;
      detail::device_malloc(&p, chunks * sizeof(double) + sizeof(double),
                            "the gradient clipping workspace (8 bytes per " +
                                std::to_string(detail::kNormChunk) + " parameters)");
      clip_.reset(p);
      clip_scale_ = reinterpret_cast<float*>(static_cast<double*>(p) + chunks);
    }
  }

  void* dense_reply_room() override { return selector_ ? selector_->room() : nullptr; }

  void set_plan(const SelectionPlan& plan, Stream stream) override {
    if (selector_) selector_->set_plan(plan, config_.threshold_sample, stream);
  }

  void step(const host::StepParams& params, const float* grad, const float* weights,
            const host::WorkerState& state, void* message, Stream stream) override {
    auto* msg = static_cast<unsigned char*>(message);
    UpdateArgs a;
    a.method = params.method;
    a.grad = grad;
    a.weights = weights;
    a.lr = params.lr;
    a.momentum = params.momentum;
    a.weight_decay = params.weight_decay;
    if (params.clip_norm > 0.0f) {
      cuda::launch_clip_scale(grad, layout_.model_size, params.clip_norm,
                              static_cast<double*>(clip_.get()), clip_scale_, stream);
      a.clip_scale = clip_scale_;
    }
    a.residual = state.residual;
    a.momentum_buffer = state.momentum;
    a.accumulator = state.accumulator;
    a.selected = selected_from(params.method, state);
    a.mask = state.mask;
    MessageHeader header = host::make_push_header(params, layout_);
    if (params.method == Method::dense) {
      cuda::launch_dense_push(a, layout_.model_size, msg, layout_, stream);
      header.compressor = Compressor::topk;
      header.count = layout_.model_size;
      header.ratio_code = 0xFFFFFFFFu;
      cuda::launch_write_header(header, msg, nullptr, stream);
      return;
    }
    const SelectionPlan& plan = selector_->plan();
    header.compressor = plan.compressor;
    header.ratio_code = plan.ratio_code;
    EmitArgs e;
    e.method = params.method;
    e.lr = params.lr;
    e.factor_masking = params.factor_masking;
    e.residual = state.residual;
    e.momentum_buffer = state.momentum;
    e.accumulator = state.accumulator;
    e.sent = selected_from(params.method, state);
    e.mask = state.mask;
    e.message = msg;
    e.layout = layout_;
    const std::size_t mask_bytes = host::mask_words(layout_.model_size) * sizeof(std::uint32_t);
    if (plan.compressor == Compressor::rbgs) {
      cuda::launch_update(a, selector_->all_tiles(), selector_->all_tile_count(),
                          selector_->segment_table(), cuda::FusedHistogram{},
                          selector_->multiprocessors(), stream);
      if (state.mask != nullptr) DGS_CUDA_TRY(cudaMemsetAsync(state.mask, 0, mask_bytes, stream));
      cuda::launch_emit_blocks(e, selector_->segment_table(),
                               static_cast<std::uint32_t>(segments_.count()), plan.total_capacity(),
                               params.seed, params.step, stream);
      header.count = plan.total_capacity();
      cuda::launch_write_header(header, msg, nullptr, stream);
      return;
    }
    const cuda::FusedHistogram fused = selector_->fused_histogram();
    if (fused.active) selector_->begin(stream);
    cuda::launch_update(a, selector_->all_tiles(), selector_->all_tile_count(),
                        selector_->segment_table(), fused, selector_->multiprocessors(), stream);
    KeySource keys;
    keys.kind =
        plan.compressor == Compressor::randk ? KeySource::Kind::randk : KeySource::Kind::values;
    keys.x = selected_from(params.method, state);
    keys.seed = params.seed;
    keys.step = params.step;
    selector_->run(keys, fused.active, stream);
    if (state.mask != nullptr) DGS_CUDA_TRY(cudaMemsetAsync(state.mask, 0, mask_bytes, stream));
    cuda::launch_emit(e, selector_->indices(), selector_->count(), plan.total_capacity(), header,
                      stream);
  }

  host::SelectionStats last_stats(Stream stream) override {
    if (!selector_) {
      host::SelectionStats s;
      s.selected = s.target = layout_.model_size;
      return s;
    }
    if (selector_->plan().compressor == Compressor::rbgs) {
      host::SelectionStats s;
      s.selected = s.target = selector_->plan().total_capacity();
      return s;
    }
    return selector_->stats(stream);
  }

  host::CaptureUse last_capture_use(Stream stream) override {
    return selector_ ? selector_->captures(stream) : host::CaptureUse{};
  }

  void apply_reply(void* reply, const MessageLayout& layout, float* weights, bool record_change,
                   Stream stream) override {
    cuda::launch_apply_reply(static_cast<unsigned char*>(reply), layout, weights, record_change,
                             stream);
  }

  void fold(const void* reply, const MessageLayout& layout, float beta, float* residual,
            Stream stream) override {
    cuda::launch_fold(static_cast<const unsigned char*>(reply), layout, beta, residual, stream);
  }

  void evaluation_point(const float* weights, const float* residual, float lambda, float* x,
                        Stream stream) override {
    cuda::launch_evaluation_point(weights, residual, lambda, x, layout_.model_size, stream);
  }

 private:
  Segments segments_;
  MessageLayout layout_;
  Config config_;
  std::unique_ptr<cuda::Selector> selector_;
  struct DeviceFree {
    void operator()(void* p) const noexcept { cudaFree(p); }
  };
  std::unique_ptr<void, DeviceFree> clip_;  // clipping: the chunk sums, then the scale
  float* clip_scale_ = nullptr;
};

class CudaServerKernels final : public ServerKernels {
 public:
  CudaServerKernels(const Segments& model, const Config& config)
      : rules_(model, config),
        reply_plan_(reply_plan(rules_.segments, config)),
        reply_layout_(sparse_reply_layout(model, config)),
        dense_layout_(dense_reply_layout(model)) {
    try {
      // A server whose every reply is dense never selects: no selector,
      // none of its workspace (8 B per parameter).
      if (!replies_are_dense(model, config)) {
        selector_ =
            std::make_unique<cuda::Selector>(rules_.segments, reply_plan_.total_capacity(),
                                             reply_layout_.index_type, reply_plan_.compressor);
        selector_->set_plan(reply_plan_, config.threshold_sample);
      }
      multiprocessors_ = detail::multiprocessor_count();
      detail::device_malloc(&check_, sizeof(cuda::EntryCheck), "the push check's result");
      DGS_CUDA_TRY(cudaMallocHost(&staged_, sizeof(Staged)));
      // A sync server's rounds hold at most one push per worker: their room
      // is made here, so a round allocates nothing.
      if (config.mode == Mode::sync) reserve_round(config.workers);
    } catch (...) {
      release();  // the destructor does not run for a constructor that throws
      throw;
    }
  }

  ~CudaServerKernels() override { release(); }

  // One host round trip for the usual push: its header comes down together
  // with the check of its entries against the segment table of the last
  // push (a dense payload needs none). That check's verdict stands when the
  // header passes and names the table's ratio; a push at another ratio (a
  // schedule moved it) is checked again once its header is known.
  Verdict validate(const void* message, std::size_t bytes, MessageHeader& header,
                   Stream stream) override {
    const auto* msg = static_cast<const unsigned char*>(message);
    const MessageLayout& layout = rules_.layout;
    const bool dense = layout.payload == PayloadLayout::dense;
    const bool speculated = bytes == layout.bytes && (dense || push_table_ != nullptr);
    header = blank_header();
    if (speculated) {
      DGS_CUDA_TRY(cudaMemcpyAsync(&staged_->header, msg, sizeof(MessageHeader),
                                   cudaMemcpyDeviceToHost, stream));
      check_entries(msg, dense, stream);
      header = staged_->header;
    } else if (bytes >= kHeaderBytes) {
      header = download<MessageHeader>(msg, stream);
    }
    SelectionPlan plan;
    Verdict v = host::validate_push_header(header, bytes, rules_, &plan);
    if (!v.ok() || header.kind != MessageKind::push) return v;
    if (!speculated || (!dense && push_table_code_ != plan.ratio_code)) {
      if (!dense) table_for(plan, stream);
      check_entries(msg, dense, stream);
    }
    const cuda::EntryCheck result = staged_->check;
    if (result.index_failure != ~0ull) {
      v.reason = static_cast<RejectReason>(result.index_failure & 0xFF);
      v.position = result.index_failure >> 8;
      v.value = read_index_at(msg, v.position, stream);
      switch (v.reason) {
        case RejectReason::index_range:
          v.expected = layout.model_size;
          break;
        case RejectReason::index_order:
          v.expected = read_index_at(msg, v.position - 1, stream);
          break;
        case RejectReason::index_segment: {
          std::size_t l = 0;
          while (v.position >= plan.first[l + 1]) ++l;
          v.expected = l;
          break;
        }
        case RejectReason::block_start:
          v.expected = rules_.segments.size(v.position);
          break;
        default:
          break;
      }
      return v;
    }
    if (result.value_failure != ~0ull) {
      v.reason = RejectReason::value;
      v.position = result.value_failure;
      const std::size_t width = value_bytes(layout.value_type);
      std::uint32_t raw = 0;
      DGS_CUDA_TRY(cudaMemcpyAsync(&raw, msg + layout.values_offset + v.position * width, width,
                                   cudaMemcpyDeviceToHost, stream));
      DGS_CUDA_TRY(cudaStreamSynchronize(stream));
      const float value = layout.value_type == WireValue::f32 ? ::dgs::detail::bits_float(raw)
                          : layout.value_type == WireValue::bf16
                              ? ::dgs::detail::bf16_to_float(static_cast<std::uint16_t>(raw))
                              : ::dgs::detail::f16_to_float(static_cast<std::uint16_t>(raw));
      v.value = ::dgs::detail::float_bits(value);
    }
    return v;
  }

  void apply(const void* message, const MessageHeader& header, float* model,
             Stream stream) override {
    apply_or_accumulate(message, header, model, false, stream);
  }
  // Index-list pushes: one pass over their entries (sparse_round_kernel);
  // dense pushes: one pass over W and the pushes (dense_round_kernel); no
  // accumulator for either. rbgs pushes: an accumulator of P floats,
  // zeroed, the pushes added in order, then the average over all of W. The
  // room is the sync server's (made with it); a larger round grows it.
  void apply_round(const host::RoundPush* pushes, std::uint32_t count, float* model,
                   Stream stream) override {
    if (count == 0) throw Error(ErrorCode::invalid_argument, "dgs cuda apply_round: no pushes");
    const MessageLayout& layout = rules_.layout;
    const float inverse = 1.0f / static_cast<float>(count);
    reserve_round(count);
    if (layout.payload != PayloadLayout::blocks) {
      const bool sparse = layout.payload == PayloadLayout::sparse;
      round_pushes_host_.resize(count);
      for (std::uint32_t k = 0; k < count; ++k) {
        round_pushes_host_[k] = static_cast<const unsigned char*>(pushes[k].message);
      }
      // From pageable memory: staged before the call returns, so the next
      // round may refill the vector; read in stream order by the kernel.
      DGS_CUDA_TRY(cudaMemcpyAsync(round_pushes_, round_pushes_host_.data(), count * sizeof(void*),
                                   cudaMemcpyHostToDevice, stream));
      if (sparse) {
        cuda::launch_sparse_round(round_pushes_, count, layout, inverse, model, round_cursors_,
                                  round_blocks_, stream);
      } else {
        cuda::launch_dense_round(round_pushes_, count, layout, inverse, model, stream);
      }
      return;
    }
    DGS_CUDA_TRY(cudaMemsetAsync(accumulator_, 0, layout.model_size * sizeof(float), stream));
    for (std::uint32_t k = 0; k < count; ++k) {
      apply_or_accumulate(pushes[k].message, pushes[k].header, accumulator_, true, stream);
    }
    cuda::launch_average(accumulator_, inverse, model, layout.model_size, stream);
  }

  void sparse_reply(const float* model, float* replica, const host::ReplyInfo& info, void* reply,
                    Stream stream) override {
    if (!selector_) {
      throw Error(ErrorCode::internal,
                  "dgs cuda server: a sparse reply where every reply is dense (method dense, or "
                  "a reply ratio that keeps every coordinate)");
    }
    KeySource keys;
    keys.kind = KeySource::Kind::difference;
    keys.w = model;
    keys.r = replica;
    selector_->run(keys, false, stream);
    MessageHeader h = host::make_reply_header(MessageKind::sparse_reply, reply_layout_, info);
    h.count = reply_plan_.total_capacity();
    h.ratio_code = reply_plan_.ratio_code;
    cuda::launch_emit_reply(model, replica, selector_->indices(), reply_plan_.total_capacity(),
                            static_cast<unsigned char*>(reply), reply_layout_, h, stream);
  }

  host::CaptureUse last_capture_use(Stream stream) override {
    return selector_ ? selector_->captures(stream) : host::CaptureUse{};
  }

  void dense_reply(void* reply, float* replica, const host::ReplyInfo& info,
                   Stream stream) override {
    auto* msg = static_cast<unsigned char*>(reply);
    const std::size_t bytes = dense_layout_.model_size * sizeof(float);
    if (replica != nullptr) {
      DGS_CUDA_TRY(cudaMemcpyAsync(replica, msg + dense_layout_.values_offset, bytes,
                                   cudaMemcpyDeviceToDevice, stream));
    }
    MessageHeader h = host::make_reply_header(MessageKind::dense_reply, dense_layout_, info);
    h.count = dense_layout_.model_size;
    h.ratio_code = 0xFFFFFFFFu;
    cuda::launch_write_header(h, msg, nullptr, stream);
  }

 private:
  // Frees every allocation (the destructor, or a constructor that throws).
  void release() noexcept {
    cudaFree(accumulator_);
    cudaFree(round_pushes_);
    cudaFree(round_cursors_);
    cudaFree(check_);
    cudaFreeHost(staged_);
    if (push_table_ != nullptr) cudaFree(push_table_);
  }

  template <typename T>
  static T download(const void* src, Stream stream) {
    T value;
    DGS_CUDA_TRY(cudaMemcpyAsync(&value, src, sizeof value, cudaMemcpyDeviceToHost, stream));
    DGS_CUDA_TRY(cudaStreamSynchronize(stream));
    return value;
  }

  // Checks the entries of `msg` against the current push table (none for a
  // dense payload) and waits for the result in staged_->check.
  void check_entries(const unsigned char* msg, bool dense, Stream stream) {
    cuda::launch_check_entries(msg, rules_.layout, dense ? nullptr : push_table_,
                               static_cast<std::uint32_t>(rules_.segments.count()),
                               !dense && push_table_fixed_, check_, stream);
    DGS_CUDA_TRY(cudaMemcpyAsync(&staged_->check, check_, sizeof(cuda::EntryCheck),
                                 cudaMemcpyDeviceToHost, stream));
    DGS_CUDA_TRY(cudaStreamSynchronize(stream));
  }

  std::uint64_t read_index_at(const unsigned char* msg, std::uint64_t slot, Stream stream) const {
    if (rules_.layout.index_type == IndexType::u64) {
      return download<std::uint64_t>(msg + kHeaderBytes + slot * 8, stream);
    }
    return download<std::uint32_t>(msg + kHeaderBytes + slot * 4, stream);
  }

  // The segment table of the push plan at a ratio code, uploaded on `stream`
  // when it changes: in stream order after the kernels that read the last one,
  // without the device-wide wait of a synchronous copy. The copy is from
  // pageable memory, which the runtime stages before cudaMemcpyAsync returns,
  // so the host table may be rewritten at once: an rbgs sync round whose
  // pushes have different ratios changes it between its accumulate launches,
  // each of which reads the table uploaded just before it.
  const SegmentInfo* table_for(const SelectionPlan& plan, Stream stream) {
    if (push_table_ != nullptr && push_table_code_ == plan.ratio_code) return push_table_;
    const Segments& s = rules_.segments;
    std::vector<SegmentInfo>& info = push_table_host_;
    info.resize(s.count());
    for (std::size_t l = 0; l < s.count(); ++l) info[l] = cuda::segment_info(s, plan, l);
    if (push_table_ == nullptr)
      detail::device_malloc(&push_table_, info.size() * sizeof(SegmentInfo),
                            "the push plan's segment table");
    DGS_CUDA_TRY(cudaMemcpyAsync(push_table_, info.data(), info.size() * sizeof(SegmentInfo),
                                 cudaMemcpyHostToDevice, stream));
    push_table_code_ = plan.ratio_code;
    push_table_fixed_ = rules_.layout.payload == PayloadLayout::sparse && plan.fixed_count();
    return push_table_;
  }

  // Room for rounds of `count` pushes: their device pointers and, for index
  // lists, each block's cursors; for rbgs pushes, the accumulator.
  void reserve_round(std::uint32_t count) {
    const MessageLayout& layout = rules_.layout;
    if (layout.payload == PayloadLayout::blocks) {
      if (accumulator_ == nullptr) {
        detail::device_malloc(&accumulator_, layout.model_size * sizeof(float),
                              "the sync round's accumulator (4 B per parameter)");
      }
      return;
    }
    if (count <= round_room_) return;
    DGS_CUDA_TRY(cudaFree(round_pushes_));
    DGS_CUDA_TRY(cudaFree(round_cursors_));
    round_pushes_ = nullptr;
    round_cursors_ = nullptr;
    round_room_ = 0;
    detail::device_malloc(&round_pushes_, count * sizeof(void*), "the sync round's pushes");
    if (layout.payload == PayloadLayout::sparse) {
      round_blocks_ = cuda::sparse_round_grid(multiprocessors_);
      detail::device_malloc(&round_cursors_,
                            std::size_t{round_blocks_} * count * sizeof(std::uint64_t),
                            "the sync round's cursors");
    }
    round_room_ = count;
  }

  // A blocks payload needs the segment table of its ratio: validate's
  // header names it, so nothing is read back from the device.
  void apply_or_accumulate(const void* message, const MessageHeader& header, float* target,
                           bool accumulate, Stream stream) {
    const MessageLayout& layout = rules_.layout;
    const SegmentInfo* table = nullptr;
    if (layout.payload == PayloadLayout::blocks) {
      const SelectionPlan plan = rules_.plan_at(header.ratio_code);
      if (header.kind != MessageKind::push || header.count != plan.total_capacity()) {
        throw Error(ErrorCode::invalid_argument,
                    "dgs cuda apply: the header given is not a validated rbgs push's (count " +
                        std::to_string(header.count) + ", its ratio's plan holds " +
                        std::to_string(plan.total_capacity()) + ")");
      }
      table = table_for(plan, stream);
    }
    cuda::launch_apply_push(static_cast<const unsigned char*>(message), layout, table,
                            static_cast<std::uint32_t>(rules_.segments.count()), target, accumulate,
                            stream);
  }

  host::PushRules rules_;
  SelectionPlan reply_plan_;
  MessageLayout reply_layout_;
  MessageLayout dense_layout_;
  std::unique_ptr<cuda::Selector> selector_;  // null when every reply is dense
  // What validate brings down, in page-locked memory so both copies are
  // asynchronous and one synchronisation waits for them.
  struct Staged {
    MessageHeader header;
    cuda::EntryCheck check;
  };
  cuda::EntryCheck* check_ = nullptr;
  Staged* staged_ = nullptr;
  SegmentInfo* push_table_ = nullptr;
  std::vector<SegmentInfo> push_table_host_;
  std::uint32_t push_table_code_ = 0;
  bool push_table_fixed_ = false;  // the table's plan has fixed counts (sparse payloads)
  int multiprocessors_ = 0;
  // A sync round: the pushes' device pointers and each block's cursors
  // (room for round_room_ pushes), or the accumulator of rbgs pushes.
  const unsigned char** round_pushes_ = nullptr;
  std::vector<const unsigned char*> round_pushes_host_;
  std::uint64_t* round_cursors_ = nullptr;
  std::uint32_t round_room_ = 0;
  unsigned round_blocks_ = 0;  // sparse_round_kernel's grid
  float* accumulator_ = nullptr;
};

__global__ void probe_kernel() {}

// Empty when this build holds kernels the current device can run; otherwise
// why not and how to build them. (Without an image for the device's
// architecture, every launch would fail with "no kernel image is
// available".) It creates the current device's context, as any CUDA work
// would, and no other.
std::string kernels_missing() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return "no current device";
  }
  cudaFuncAttributes attributes{};
  const cudaError_t found =
      cudaFuncGetAttributes(&attributes, reinterpret_cast<const void*>(probe_kernel));
  cudaGetLastError();
  // Only what says the image is missing counts; any other answer is left to
  // the launches, which name their errors.
  if (found != cudaErrorNoKernelImageForDevice && found != cudaErrorInvalidDeviceFunction &&
      found != cudaErrorUnsupportedPtxVersion) {
    return "";
  }
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  cudaGetLastError();
  const std::string arch = std::to_string(major) + std::to_string(minor);
  return "this build has no kernels for device " + std::to_string(device) +
         " (compute capability " + std::to_string(major) + "." + std::to_string(minor) + ": " +
         cudaGetErrorString(found) + "); build dgs for it: -DCMAKE_CUDA_ARCHITECTURES=" + arch +
         " (scripts: CUDA_ARCHS=" + arch + " or CUDA_ARCHS=native)";
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      throw Error(ErrorCode::cuda, "dgs cuda backend: no CUDA device is available");
    }
    if (device < 0 || device >= count) {
      throw Error(ErrorCode::invalid_argument, "dgs cuda backend: device " +
                                                   std::to_string(device) + " does not exist (" +
                                                   std::to_string(count) + " present)");
    }
    DGS_CUDA_TRY(cudaSetDevice(device));
    const std::string missing = kernels_missing();
    if (!missing.empty()) throw Error(ErrorCode::cuda, "dgs cuda backend: " + missing);
  }

  BackendKind kind() const noexcept override { return BackendKind::cuda; }
  MemoryKind memory() const noexcept override { return MemoryKind::device; }

  void* allocate(std::size_t bytes) override {
    DGS_CUDA_TRY(cudaSetDevice(device_));
    void* p = nullptr;
    detail::device_malloc(&p, bytes,
                          "a buffer of the cuda backend on device " + std::to_string(device_));
    return p;
  }
  void release(void* pointer) noexcept override { cudaFree(pointer); }
  void zero(void* pointer, std::size_t bytes, Stream stream) override {
    DGS_CUDA_TRY(cudaMemsetAsync(pointer, 0, bytes, stream));
  }
  void copy(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    if (bytes) DGS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  }
  void download(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    if (bytes) DGS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    DGS_CUDA_TRY(cudaStreamSynchronize(stream));
  }
  void upload(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    if (bytes) DGS_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    DGS_CUDA_TRY(cudaStreamSynchronize(stream));
  }
  void synchronize(Stream stream) override { DGS_CUDA_TRY(cudaStreamSynchronize(stream)); }
  void check_pointer(const void* pointer, const char* what) const override {
    cudaPointerAttributes attributes;
    const cudaError_t status = cudaPointerGetAttributes(&attributes, pointer);
    if (status != cudaSuccess) cudaGetLastError();
    const bool usable =
        pointer != nullptr && status == cudaSuccess &&
        (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged);
    if (!usable) {
      throw Error(ErrorCode::invalid_argument,
                  std::string("dgs cuda backend: ") + what +
                      (pointer == nullptr ? " is null"
                                          : " is not device memory (the cuda backend needs "
                                            "pointers from cudaMalloc or cudaMallocManaged)"));
    }
  }

  std::unique_ptr<WorkerKernels> worker_kernels(const Segments& segments,
                                                const MessageLayout& layout,
                                                const Config& config) override {
    DGS_CUDA_TRY(cudaSetDevice(device_));
    return std::make_unique<CudaWorkerKernels>(segments, layout, config);
  }
  std::unique_ptr<ServerKernels> server_kernels(const Segments& model,
                                                const Config& config) override {
    DGS_CUDA_TRY(cudaSetDevice(device_));
    return std::make_unique<CudaServerKernels>(model, config);
  }

 private:
  int device_;
};

}  // namespace

std::shared_ptr<Backend> make_cuda_backend(int device) {
  return std::make_shared<CudaBackend>(device);
}

bool cuda_kernels_run() noexcept {
  try {
    return kernels_missing().empty();
  } catch (...) {
    return false;
  }
}

}  // namespace dgs::detail
