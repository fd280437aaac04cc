// The demo's CNN on cuDNN and cuBLAS (see cnn.h). Layout NCHW, float32.
#include <cublas_v2.h>
#include <cudnn.h>

#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "cnn.h"
#include "dgs/error.h"

namespace fmnist {
namespace {

void cuda_ok(cudaError_t s, const char* call) {
  if (s != cudaSuccess) {
    throw dgs::Error(dgs::ErrorCode::cuda, std::string("train_fmnist CNN: ") + call +
                                               " failed: " + cudaGetErrorString(s));
  }
}
void cudnn_ok(cudnnStatus_t s, const char* call) {
  if (s != CUDNN_STATUS_SUCCESS) {
    throw dgs::Error(dgs::ErrorCode::cuda, std::string("train_fmnist CNN: ") + call +
                                               " failed: " + cudnnGetErrorString(s));
  }
}
void cublas_ok(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw dgs::Error(dgs::ErrorCode::cuda, std::string("train_fmnist CNN: ") + call +
                                               " failed with cuBLAS status " +
                                               std::to_string(int(s)));
  }
}
#define CUDA_OK(call) cuda_ok((call), #call)
#define CUDNN_OK(call) cudnn_ok((call), #call)
#define CUBLAS_OK(call) cublas_ok((call), #call)

constexpr int kSide = 28, kPixels = kSide * kSide;
constexpr int kC1 = 16, kC2 = 32, kKernel = 5, kPad = 2;
constexpr int kFlat = kC2 * 7 * 7;  // 1568
constexpr int kHidden = 128, kClasses = 10;
constexpr int kEvalBatch = 1000;

// Offsets of the tensors in the flat parameter vector.
constexpr std::size_t kConv1W = 0;
constexpr std::size_t kConv1B = kConv1W + kC1 * 1 * kKernel * kKernel;
constexpr std::size_t kConv2W = kConv1B + kC1;
constexpr std::size_t kConv2B = kConv2W + kC2 * kC1 * kKernel * kKernel;
constexpr std::size_t kFc1W = kConv2B + kC2;
constexpr std::size_t kFc1B = kFc1W + std::size_t{kHidden} * kFlat;
constexpr std::size_t kFc2W = kFc1B + kHidden;
constexpr std::size_t kFc2B = kFc2W + kClasses * kHidden;
constexpr std::size_t kParameters = kFc2B + kClasses;

// --- small kernels -----------------------------------------------------------

__global__ void gather_kernel(const float* images, const int* ids, int batch, float* x) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < batch * kPixels;
       i += gridDim.x * blockDim.x) {
    x[i] = images[static_cast<std::size_t>(ids[i / kPixels]) * kPixels + i % kPixels];
  }
}

__global__ void gather_labels_kernel(const unsigned char* labels, const int* ids, int batch,
                                     int* y) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b < batch) y[b] = labels[ids[b]];
}

__global__ void bias_kernel(float* y, const float* bias, int rows, int cols, bool relu) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols;
       i += gridDim.x * blockDim.x) {
    const float v = y[i] + bias[i % cols];
    y[i] = relu && v < 0.0f ? 0.0f : v;
  }
}

// dh = dh * (h > 0), with h the post-ReLU activation.
__global__ void relu_backward_kernel(float* dh, const float* h, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    if (h[i] <= 0.0f) dh[i] = 0.0f;
  }
}

__global__ void column_sum_kernel(const float* d, int rows, int cols, float* out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int r = 0; r < rows; ++r) s += d[r * cols + c];
  out[c] = s;
}

// Softmax cross-entropy per sample: dz = (p - onehot) / batch; loss and
// correct predictions accumulated in double.
__global__ void softmax_kernel(const float* z, const int* labels, int batch, float* dz,
                               double* loss, double* correct) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const float* row = z + b * kClasses;
  float top = row[0];
  int best = 0;
  for (int c = 1; c < kClasses; ++c) {
    if (row[c] > top) {
      top = row[c];
      best = c;
    }
  }
  float e[kClasses], sum = 0.0f;
  for (int c = 0; c < kClasses; ++c) sum += (e[c] = expf(row[c] - top));
  const int y = labels[b];
  atomicAdd(loss, static_cast<double>(-logf(fmaxf(e[y] / sum, 1e-30f))) / batch);
  if (correct != nullptr && best == y) atomicAdd(correct, 1.0);
  if (dz != nullptr) {
    for (int c = 0; c < kClasses; ++c)
      dz[b * kClasses + c] = (e[c] / sum - (c == y ? 1.0f : 0.0f)) / batch;
  }
}

unsigned blocks(int n) {
  return static_cast<unsigned>(std::min((n + 255) / 256, 4096));
}

// --- the data set on the device, shared by every model of the process -----

struct DeviceData {
  float* train = nullptr;
  float* test = nullptr;
  unsigned char* train_labels = nullptr;
  unsigned char* test_labels = nullptr;
};

std::shared_ptr<DeviceData> device_data(const Dataset& data) {
  static std::mutex mutex;
  static std::map<const Dataset*, std::weak_ptr<DeviceData>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto hit = cache[&data].lock()) return hit;
  auto d = std::shared_ptr<DeviceData>(new DeviceData, [](DeviceData* p) {
    cudaFree(p->train);
    cudaFree(p->test);
    cudaFree(p->train_labels);
    cudaFree(p->test_labels);
    delete p;
  });
  auto put = [](void** dst, const void* src, std::size_t bytes) {
    CUDA_OK(cudaMalloc(dst, bytes));
    CUDA_OK(cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice));
  };
  put(reinterpret_cast<void**>(&d->train), data.train_images.pixels.data(),
      data.train_images.pixels.size() * 4);
  put(reinterpret_cast<void**>(&d->test), data.test_images.pixels.data(),
      data.test_images.pixels.size() * 4);
  put(reinterpret_cast<void**>(&d->train_labels), data.train_labels.data(),
      data.train_labels.size());
  put(reinterpret_cast<void**>(&d->test_labels), data.test_labels.data(), data.test_labels.size());
  cache[&data] = d;
  return d;
}

// --- descriptors and activations for one batch size ------------------------

class Layers {
 public:
  Layers(cudnnHandle_t cudnn, int batch) : cudnn_(cudnn), batch_(batch) {
    tensor(x_d_, 1, kSide);
    tensor(c1_d_, kC1, kSide);
    tensor(p1_d_, kC1, kSide / 2);
    tensor(c2_d_, kC2, kSide / 2);
    tensor(p2_d_, kC2, kSide / 4);
    bias(b1_d_, kC1);
    bias(b2_d_, kC2);
    CUDNN_OK(cudnnCreateFilterDescriptor(&w1_d_));
    CUDNN_OK(cudnnSetFilter4dDescriptor(w1_d_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, kC1, 1, kKernel,
                                        kKernel));
    CUDNN_OK(cudnnCreateFilterDescriptor(&w2_d_));
    CUDNN_OK(cudnnSetFilter4dDescriptor(w2_d_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, kC2, kC1,
                                        kKernel, kKernel));
    CUDNN_OK(cudnnCreateConvolutionDescriptor(&conv_d_));
    CUDNN_OK(cudnnSetConvolution2dDescriptor(conv_d_, kPad, kPad, 1, 1, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_OK(cudnnCreatePoolingDescriptor(&pool_d_));
    CUDNN_OK(cudnnSetPooling2dDescriptor(pool_d_, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2, 2,
                                         0, 0, 2, 2));
    CUDNN_OK(cudnnCreateActivationDescriptor(&relu_d_));
    CUDNN_OK(
        cudnnSetActivationDescriptor(relu_d_, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    choose_algorithms();
    const std::size_t b = static_cast<std::size_t>(batch);
    for (float** p :
         {&x, &c1, &r1, &p1, &c2, &r2, &p2, &h, &z, &dz, &dh, &dp2, &dr2, &dc2, &dp1, &dr1, &dc1}) {
      *p = nullptr;
    }
    alloc(&x, b * kPixels);
    alloc(&c1, b * kC1 * kPixels);
    alloc(&r1, b * kC1 * kPixels);
    alloc(&p1, b * kC1 * kPixels / 4);
    alloc(&c2, b * kC2 * kPixels / 4);
    alloc(&r2, b * kC2 * kPixels / 4);
    alloc(&p2, b * kFlat);
    alloc(&h, b * kHidden);
    alloc(&z, b * kClasses);
    alloc(&dz, b * kClasses);
    alloc(&dh, b * kHidden);
    alloc(&dp2, b * kFlat);
    alloc(&dr2, b * kC2 * kPixels / 4);
    alloc(&dc2, b * kC2 * kPixels / 4);
    alloc(&dp1, b * kC1 * kPixels / 4);
    alloc(&dr1, b * kC1 * kPixels);
    alloc(&dc1, b * kC1 * kPixels);
    CUDA_OK(cudaMalloc(&ids, b * sizeof(int)));
    CUDA_OK(cudaMalloc(&labels, b * sizeof(int)));
    CUDA_OK(cudaMalloc(&workspace_, std::max<std::size_t>(workspace_bytes_, 1)));
  }

  ~Layers() {
    for (void* p : owned_) cudaFree(p);
    cudaFree(ids);
    cudaFree(labels);
    cudaFree(workspace_);
    for (auto d : {x_d_, c1_d_, p1_d_, c2_d_, p2_d_, b1_d_, b2_d_}) cudnnDestroyTensorDescriptor(d);
    cudnnDestroyFilterDescriptor(w1_d_);
    cudnnDestroyFilterDescriptor(w2_d_);
    cudnnDestroyConvolutionDescriptor(conv_d_);
    cudnnDestroyPoolingDescriptor(pool_d_);
    cudnnDestroyActivationDescriptor(relu_d_);
  }

  // Forward from x to the logits z.
  void forward(cublasHandle_t blas, const float* p, cudaStream_t stream) {
    const float one = 1.0f, zero = 0.0f;
    CUDNN_OK(cudnnConvolutionForward(cudnn_, &one, x_d_, x, w1_d_, p + kConv1W, conv_d_, fwd1_,
                                     workspace_, workspace_bytes_, &zero, c1_d_, c1));
    CUDNN_OK(cudnnAddTensor(cudnn_, &one, b1_d_, p + kConv1B, &one, c1_d_, c1));
    CUDNN_OK(cudnnActivationForward(cudnn_, relu_d_, &one, c1_d_, c1, &zero, c1_d_, r1));
    CUDNN_OK(cudnnPoolingForward(cudnn_, pool_d_, &one, c1_d_, r1, &zero, p1_d_, p1));
    CUDNN_OK(cudnnConvolutionForward(cudnn_, &one, p1_d_, p1, w2_d_, p + kConv2W, conv_d_, fwd2_,
                                     workspace_, workspace_bytes_, &zero, c2_d_, c2));
    CUDNN_OK(cudnnAddTensor(cudnn_, &one, b2_d_, p + kConv2B, &one, c2_d_, c2));
    CUDNN_OK(cudnnActivationForward(cudnn_, relu_d_, &one, c2_d_, c2, &zero, c2_d_, r2));
    CUDNN_OK(cudnnPoolingForward(cudnn_, pool_d_, &one, c2_d_, r2, &zero, p2_d_, p2));
    // h = relu(p2 W1^T + b1): column-major h^T[128 x B] = W1[128 x 1568] p2^T.
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, kHidden, batch_, kFlat, &one, p + kFc1W,
                          kFlat, p2, kFlat, &zero, h, kHidden));
    bias_kernel<<<blocks(batch_ * kHidden), 256, 0, stream>>>(h, p + kFc1B, batch_, kHidden, true);
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, kClasses, batch_, kHidden, &one,
                          p + kFc2W, kHidden, h, kHidden, &zero, z, kClasses));
    bias_kernel<<<blocks(batch_ * kClasses), 256, 0, stream>>>(z, p + kFc2B, batch_, kClasses,
                                                               false);
    CUDA_OK(cudaGetLastError());
  }

  // Backward from dz (already written) into the gradient g.
  void backward(cublasHandle_t blas, const float* p, float* g, cudaStream_t stream) {
    const float one = 1.0f, zero = 0.0f;
    // Dense layers: dW = dY^T X, db = column sums, dX = dY W.
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, kHidden, kClasses, batch_, &one, h,
                          kHidden, dz, kClasses, &zero, g + kFc2W, kHidden));
    column_sum_kernel<<<1, 256, 0, stream>>>(dz, batch_, kClasses, g + kFc2B);
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, kHidden, batch_, kClasses, &one,
                          p + kFc2W, kHidden, dz, kClasses, &zero, dh, kHidden));
    relu_backward_kernel<<<blocks(batch_ * kHidden), 256, 0, stream>>>(dh, h, batch_ * kHidden);
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, kFlat, kHidden, batch_, &one, p2, kFlat,
                          dh, kHidden, &zero, g + kFc1W, kFlat));
    column_sum_kernel<<<1, 256, 0, stream>>>(dh, batch_, kHidden, g + kFc1B);
    CUBLAS_OK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, kFlat, batch_, kHidden, &one, p + kFc1W,
                          kFlat, dh, kHidden, &zero, dp2, kFlat));
    CUDA_OK(cudaGetLastError());
    // Second convolution block.
    CUDNN_OK(cudnnPoolingBackward(cudnn_, pool_d_, &one, p2_d_, p2, p2_d_, dp2, c2_d_, r2, &zero,
                                  c2_d_, dr2));
    CUDNN_OK(cudnnActivationBackward(cudnn_, relu_d_, &one, c2_d_, r2, c2_d_, dr2, c2_d_, c2, &zero,
                                     c2_d_, dc2));
    CUDNN_OK(cudnnConvolutionBackwardBias(cudnn_, &one, c2_d_, dc2, &zero, b2_d_, g + kConv2B));
    CUDNN_OK(cudnnConvolutionBackwardFilter(cudnn_, &one, p1_d_, p1, c2_d_, dc2, conv_d_,
                                            bwd_filter2_, workspace_, workspace_bytes_, &zero,
                                            w2_d_, g + kConv2W));
    CUDNN_OK(cudnnConvolutionBackwardData(cudnn_, &one, w2_d_, p + kConv2W, c2_d_, dc2, conv_d_,
                                          bwd_data2_, workspace_, workspace_bytes_, &zero, p1_d_,
                                          dp1));
    // First convolution block (no gradient for the input).
    CUDNN_OK(cudnnPoolingBackward(cudnn_, pool_d_, &one, p1_d_, p1, p1_d_, dp1, c1_d_, r1, &zero,
                                  c1_d_, dr1));
    CUDNN_OK(cudnnActivationBackward(cudnn_, relu_d_, &one, c1_d_, r1, c1_d_, dr1, c1_d_, c1, &zero,
                                     c1_d_, dc1));
    CUDNN_OK(cudnnConvolutionBackwardBias(cudnn_, &one, c1_d_, dc1, &zero, b1_d_, g + kConv1B));
    CUDNN_OK(cudnnConvolutionBackwardFilter(cudnn_, &one, x_d_, x, c1_d_, dc1, conv_d_,
                                            bwd_filter1_, workspace_, workspace_bytes_, &zero,
                                            w1_d_, g + kConv1W));
  }

  int batch() const { return batch_; }

  float *x, *c1, *r1, *p1, *c2, *r2, *p2, *h, *z, *dz, *dh, *dp2, *dr2, *dc2, *dp1, *dr1, *dc1;
  int* ids = nullptr;
  int* labels = nullptr;

 private:
  void tensor(cudnnTensorDescriptor_t& d, int channels, int side) {
    CUDNN_OK(cudnnCreateTensorDescriptor(&d));
    CUDNN_OK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, batch_, channels,
                                        side, side));
  }
  void bias(cudnnTensorDescriptor_t& d, int channels) {
    CUDNN_OK(cudnnCreateTensorDescriptor(&d));
    CUDNN_OK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, channels, 1, 1));
  }
  void alloc(float** p, std::size_t n) {
    CUDA_OK(cudaMalloc(p, n * sizeof(float)));
    owned_.push_back(*p);
  }

  // The fastest algorithm the heuristics offer within 256 MB of workspace.
  void choose_algorithms() {
    constexpr std::size_t kLimit = std::size_t{256} << 20;
    int found = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[8];
    auto pick_fwd = [&](cudnnTensorDescriptor_t in, cudnnFilterDescriptor_t w,
                        cudnnTensorDescriptor_t out, cudnnConvolutionFwdAlgo_t& algo) {
      CUDNN_OK(cudnnGetConvolutionForwardAlgorithm_v7(cudnn_, in, w, conv_d_, out, 8, &found, fwd));
      for (int i = 0; i < found; ++i) {
        if (fwd[i].status == CUDNN_STATUS_SUCCESS && fwd[i].memory <= kLimit) {
          algo = fwd[i].algo;
          workspace_bytes_ = std::max(workspace_bytes_, fwd[i].memory);
          return;
        }
      }
      throw dgs::Error(dgs::ErrorCode::cuda,
                       "train_fmnist CNN: no usable cuDNN forward convolution");
    };
    pick_fwd(x_d_, w1_d_, c1_d_, fwd1_);
    pick_fwd(p1_d_, w2_d_, c2_d_, fwd2_);
    cudnnConvolutionBwdFilterAlgoPerf_t bf[8];
    auto pick_filter = [&](cudnnTensorDescriptor_t in, cudnnTensorDescriptor_t dout,
                           cudnnFilterDescriptor_t w, cudnnConvolutionBwdFilterAlgo_t& algo) {
      CUDNN_OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_, in, dout, conv_d_, w, 8,
                                                             &found, bf));
      for (int i = 0; i < found; ++i) {
        if (bf[i].status == CUDNN_STATUS_SUCCESS && bf[i].memory <= kLimit) {
          algo = bf[i].algo;
          workspace_bytes_ = std::max(workspace_bytes_, bf[i].memory);
          return;
        }
      }
      throw dgs::Error(dgs::ErrorCode::cuda,
                       "train_fmnist CNN: no usable cuDNN filter-gradient algorithm");
    };
    pick_filter(x_d_, c1_d_, w1_d_, bwd_filter1_);
    pick_filter(p1_d_, c2_d_, w2_d_, bwd_filter2_);
    cudnnConvolutionBwdDataAlgoPerf_t bd[8];
    CUDNN_OK(cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_, w2_d_, c2_d_, conv_d_, p1_d_, 8,
                                                         &found, bd));
    bool ok = false;
    for (int i = 0; i < found && !ok; ++i) {
      if (bd[i].status == CUDNN_STATUS_SUCCESS && bd[i].memory <= kLimit) {
        bwd_data2_ = bd[i].algo;
        workspace_bytes_ = std::max(workspace_bytes_, bd[i].memory);
        ok = true;
      }
    }
    if (!ok)
      throw dgs::Error(dgs::ErrorCode::cuda,
                       "train_fmnist CNN: no usable cuDNN data-gradient algorithm");
  }

  cudnnHandle_t cudnn_;
  int batch_;
  cudnnTensorDescriptor_t x_d_, c1_d_, p1_d_, c2_d_, p2_d_, b1_d_, b2_d_;
  cudnnFilterDescriptor_t w1_d_, w2_d_;
  cudnnConvolutionDescriptor_t conv_d_;
  cudnnPoolingDescriptor_t pool_d_;
  cudnnActivationDescriptor_t relu_d_;
  cudnnConvolutionFwdAlgo_t fwd1_, fwd2_;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter1_, bwd_filter2_;
  cudnnConvolutionBwdDataAlgo_t bwd_data2_;
  std::size_t workspace_bytes_ = 0;
  void* workspace_ = nullptr;
  std::vector<void*> owned_;
};

class Cnn final : public Model {
 public:
  Cnn(const Dataset& data, cudaStream_t stream)
      : data_(data), device_(device_data(data)), stream_(stream) {
    if (data.train_images.rows != kSide || data.train_images.cols != kSide) {
      throw dgs::Error(dgs::ErrorCode::invalid_argument,
                       "train_fmnist CNN: expects 28 x 28 images");
    }
    CUDNN_OK(cudnnCreate(&cudnn_));
    CUDNN_OK(cudnnSetStream(cudnn_, stream));
    CUBLAS_OK(cublasCreate(&blas_));
    CUBLAS_OK(cublasSetStream(blas_, stream));
    CUDA_OK(cudaMalloc(&sums_, 2 * sizeof(double)));
    CUDA_OK(cudaMemsetAsync(sums_, 0, 2 * sizeof(double), stream));
  }
  ~Cnn() override {
    train_.reset();
    eval_.reset();
    cudaFree(sums_);
    cublasDestroy(blas_);
    cudnnDestroy(cudnn_);
  }

  dgs::Segments segments() const override {
    return dgs::Segments({kConv1B - kConv1W, kConv2W - kConv1B, kConv2B - kConv2W, kFc1W - kConv2B,
                          kFc1B - kFc1W, kFc2W - kFc1B, kFc2B - kFc2W, kParameters - kFc2B});
  }

  void initialize(std::vector<float>& p, std::uint64_t seed) const override {
    p.assign(kParameters, 0.0f);
    std::mt19937_64 rng(seed);
    auto fill = [&](std::size_t at, std::size_t n, float fan_in) {
      std::normal_distribution<float> d(0.0f, std::sqrt(2.0f / fan_in));
      for (std::size_t i = 0; i < n; ++i) p[at + i] = d(rng);
    };
    fill(kConv1W, kConv1B - kConv1W, kKernel * kKernel);
    fill(kConv2W, kConv2B - kConv2W, kC1 * kKernel * kKernel);
    fill(kFc1W, kFc1B - kFc1W, kFlat);
    fill(kFc2W, kFc2B - kFc2W, kHidden);
  }

  void gradient(const float* p, const std::vector<int>& ids, float* g) override {
    const int batch = static_cast<int>(ids.size());
    if (!train_ || train_->batch() != batch) train_ = std::make_unique<Layers>(cudnn_, batch);
    Layers& l = *train_;
    CUDA_OK(cudaMemcpyAsync(l.ids, ids.data(), ids.size() * sizeof(int), cudaMemcpyHostToDevice,
                            stream_));
    gather_kernel<<<blocks(batch * kPixels), 256, 0, stream_>>>(device_->train, l.ids, batch, l.x);
    gather_labels_kernel<<<blocks(batch), 256, 0, stream_>>>(device_->train_labels, l.ids, batch,
                                                             l.labels);
    l.forward(blas_, p, stream_);
    softmax_kernel<<<blocks(batch), 256, 0, stream_>>>(l.z, l.labels, batch, l.dz, sums_, nullptr);
    CUDA_OK(cudaGetLastError());
    l.backward(blas_, p, g, stream_);
    // The ids buffer is reused next step: the copy from `ids` must be done.
    CUDA_OK(cudaStreamSynchronize(stream_));
    ++batches_;
  }

  double take_loss(std::uint64_t& batches) override {
    double sums[2];
    CUDA_OK(cudaMemcpyAsync(sums, sums_, sizeof sums, cudaMemcpyDeviceToHost, stream_));
    CUDA_OK(cudaMemsetAsync(sums_, 0, 2 * sizeof(double), stream_));
    CUDA_OK(cudaStreamSynchronize(stream_));
    batches = batches_;
    batches_ = 0;
    return sums[0];
  }

  void evaluate(const float* p, double& accuracy, double& loss) override {
    if (!eval_) eval_ = std::make_unique<Layers>(cudnn_, kEvalBatch);
    Layers& l = *eval_;
    const int count = data_.test_images.count / kEvalBatch * kEvalBatch;
    double* totals = nullptr;
    CUDA_OK(cudaMalloc(&totals, 2 * sizeof(double)));
    CUDA_OK(cudaMemsetAsync(totals, 0, 2 * sizeof(double), stream_));
    std::vector<int> ids(kEvalBatch);
    for (int first = 0; first < count; first += kEvalBatch) {
      for (int b = 0; b < kEvalBatch; ++b) ids[b] = first + b;
      CUDA_OK(cudaMemcpyAsync(l.ids, ids.data(), ids.size() * sizeof(int), cudaMemcpyHostToDevice,
                              stream_));
      gather_kernel<<<blocks(kEvalBatch * kPixels), 256, 0, stream_>>>(device_->test, l.ids,
                                                                       kEvalBatch, l.x);
      gather_labels_kernel<<<blocks(kEvalBatch), 256, 0, stream_>>>(device_->test_labels, l.ids,
                                                                    kEvalBatch, l.labels);
      l.forward(blas_, p, stream_);
      softmax_kernel<<<blocks(kEvalBatch), 256, 0, stream_>>>(l.z, l.labels, kEvalBatch, nullptr,
                                                              totals, totals + 1);
      CUDA_OK(cudaGetLastError());
      CUDA_OK(cudaStreamSynchronize(stream_));
    }
    double host[2];
    CUDA_OK(cudaMemcpy(host, totals, sizeof host, cudaMemcpyDeviceToHost));
    cudaFree(totals);
    const int chunks = count / kEvalBatch;
    loss = host[0] / chunks;
    accuracy = host[1] / count;
  }

 private:
  const Dataset& data_;
  std::shared_ptr<DeviceData> device_;
  cudaStream_t stream_;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::unique_ptr<Layers> train_, eval_;
  double* sums_ = nullptr;
  std::uint64_t batches_ = 0;
};

}  // namespace

std::unique_ptr<Model> make_cnn(const Dataset& data, cudaStream_t stream) {
  return std::make_unique<Cnn>(data, stream);
}

}  // namespace fmnist
