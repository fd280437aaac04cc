// A 784-128-10 perceptron in plain C++: the demo's model where there is no GPU.
#include <algorithm>
#include <cmath>
#include <random>

#include "model.h"

namespace fmnist {
namespace {

constexpr int kHidden = 128;
constexpr int kClasses = 10;

class Mlp final : public Model {
 public:
  explicit Mlp(const Dataset& data)
      : data_(data), inputs_(data.train_images.rows * data.train_images.cols) {}

  dgs::Segments segments() const override {
    const auto d = static_cast<std::uint64_t>(inputs_);
    return dgs::Segments({kHidden * d, kHidden, kClasses * kHidden, kClasses});
  }

  void initialize(std::vector<float>& p, std::uint64_t seed) const override {
    p.assign(segments().total(), 0.0f);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> w1(0.0f, std::sqrt(2.0f / inputs_));
    std::normal_distribution<float> w2(0.0f, std::sqrt(1.0f / kHidden));
    for (int i = 0; i < kHidden * inputs_; ++i) p[i] = w1(rng);
    float* second = p.data() + kHidden * inputs_ + kHidden;
    for (int i = 0; i < kClasses * kHidden; ++i) second[i] = w2(rng);
  }

  void gradient(const float* p, const std::vector<int>& ids, float* g) override {
    std::fill(g, g + segments().total(), 0.0f);
    const float scale = 1.0f / static_cast<float>(ids.size());
    double loss = 0.0;
    for (int id : ids) {
      const float* x = data_.train_images.pixels.data() + static_cast<std::size_t>(id) * inputs_;
      forward(p, x);
      const int label = data_.train_labels[id];
      loss -= std::log(std::max(prob_[label], 1e-30f));
      backward(p, x, label, scale, g);
    }
    loss_ += loss * scale;
    ++batches_;
  }

  double take_loss(std::uint64_t& batches) override {
    batches = batches_;
    const double loss = loss_;
    loss_ = 0.0;
    batches_ = 0;
    return loss;
  }

  void evaluate(const float* p, double& accuracy, double& loss) override {
    const Images& test = data_.test_images;
    int correct = 0;
    double total = 0.0;
    for (int n = 0; n < test.count; ++n) {
      const float* x = test.pixels.data() + static_cast<std::size_t>(n) * inputs_;
      forward(p, x);
      const int label = data_.test_labels[n];
      total -= std::log(std::max(prob_[label], 1e-30f));
      correct += std::max_element(prob_, prob_ + kClasses) - prob_ == label ? 1 : 0;
    }
    accuracy = static_cast<double>(correct) / test.count;
    loss = total / test.count;
  }

 private:
  // Fills hidden_ (ReLU activations) and prob_ (softmax) for one sample.
  void forward(const float* p, const float* x) {
    const float* w1 = p;
    const float* b1 = w1 + kHidden * inputs_;
    const float* w2 = b1 + kHidden;
    const float* b2 = w2 + kClasses * kHidden;
    for (int j = 0; j < kHidden; ++j) {
      const float* row = w1 + j * inputs_;
      float s = b1[j];
      for (int d = 0; d < inputs_; ++d) s += row[d] * x[d];
      hidden_[j] = s > 0.0f ? s : 0.0f;
    }
    float top = -1e30f;
    for (int c = 0; c < kClasses; ++c) {
      float s = b2[c];
      for (int j = 0; j < kHidden; ++j) s += w2[c * kHidden + j] * hidden_[j];
      prob_[c] = s;
      top = std::max(top, s);
    }
    float sum = 0.0f;
    for (float& v : prob_) sum += (v = std::exp(v - top));
    for (float& v : prob_) v /= sum;
  }

  // Accumulates the gradient of one sample (scaled) after forward().
  void backward(const float* p, const float* x, int label, float scale, float* g) {
    const float* w2 = p + kHidden * inputs_ + kHidden;
    float* gw1 = g;
    float* gb1 = gw1 + kHidden * inputs_;
    float* gw2 = gb1 + kHidden;
    float* gb2 = gw2 + kClasses * kHidden;
    float dz[kClasses];
    for (int c = 0; c < kClasses; ++c) dz[c] = (prob_[c] - (c == label ? 1.0f : 0.0f)) * scale;
    float dh[kHidden] = {};
    for (int c = 0; c < kClasses; ++c) {
      gb2[c] += dz[c];
      for (int j = 0; j < kHidden; ++j) {
        gw2[c * kHidden + j] += dz[c] * hidden_[j];
        dh[j] += dz[c] * w2[c * kHidden + j];
      }
    }
    for (int j = 0; j < kHidden; ++j) {
      if (hidden_[j] <= 0.0f) continue;
      gb1[j] += dh[j];
      float* row = gw1 + j * inputs_;
      for (int d = 0; d < inputs_; ++d) row[d] += dh[j] * x[d];
    }
  }

  const Dataset& data_;
  int inputs_;
  float hidden_[kHidden];
  float prob_[kClasses];
  double loss_ = 0.0;
  std::uint64_t batches_ = 0;
};

}  // namespace

std::unique_ptr<Model> make_mlp(const Dataset& data) {
  return std::make_unique<Mlp>(data);
}

}  // namespace fmnist
