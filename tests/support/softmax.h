// A synthetic softmax-regression problem: labels from a random linear teacher
// with noise; the model is a C x D weight matrix and C biases (two segments).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "dgs/segments.h"

namespace dgs::test {

class SoftmaxProblem {
 public:
  static constexpr int kClasses = 10;
  static constexpr int kFeatures = 100;

  explicit SoftmaxProblem(int samples = 4096, std::uint64_t seed = 5)
      : x_(static_cast<std::size_t>(samples) * kFeatures), y_(samples) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> teacher(kClasses * kFeatures);
    for (float& t : teacher) t = normal(rng);
    for (float& v : x_) v = normal(rng);
    for (int n = 0; n < samples; ++n) {
      int best = 0;
      float best_score = -1e30f;
      for (int c = 0; c < kClasses; ++c) {
        float score = 2.0f * normal(rng);  // label noise
        for (int d = 0; d < kFeatures; ++d)
          score += teacher[c * kFeatures + d] * x_[n * kFeatures + d];
        if (score > best_score) {
          best_score = score;
          best = c;
        }
      }
      y_[n] = best;
    }
  }

  static Segments segments() { return Segments({kClasses * kFeatures, kClasses}); }
  static std::uint64_t parameters() { return kClasses * kFeatures + kClasses; }
  int samples() const { return static_cast<int>(y_.size()); }

  /// Mean cross-entropy gradient over samples first, first + stride, ... (batch of them).
  void gradient(const float* w, int first, int stride, int batch, float* g) const {
    std::fill(g, g + parameters(), 0.0f);
    float* gbias = g + kClasses * kFeatures;
    double p[kClasses];
    for (int b = 0; b < batch; ++b) {
      const int n = (first + b * stride) % samples();
      probabilities(w, n, p);
      for (int c = 0; c < kClasses; ++c) {
        const float delta = static_cast<float>((p[c] - (c == y_[n] ? 1.0 : 0.0)) / batch);
        for (int d = 0; d < kFeatures; ++d) g[c * kFeatures + d] += delta * x_[n * kFeatures + d];
        gbias[c] += delta;
      }
    }
  }

  /// Mean cross-entropy over the whole data set.
  double loss(const float* w) const {
    double total = 0.0;
    double p[kClasses];
    for (int n = 0; n < samples(); ++n) {
      probabilities(w, n, p);
      total -= std::log(std::max(p[y_[n]], 1e-300));
    }
    return total / samples();
  }

 private:
  void probabilities(const float* w, int n, double* p) const {
    const float* bias = w + kClasses * kFeatures;
    double top = -1e300;
    for (int c = 0; c < kClasses; ++c) {
      double s = bias[c];
      for (int d = 0; d < kFeatures; ++d) s += double(w[c * kFeatures + d]) * x_[n * kFeatures + d];
      p[c] = s;
      top = std::max(top, s);
    }
    double sum = 0.0;
    for (int c = 0; c < kClasses; ++c) sum += (p[c] = std::exp(p[c] - top));
    for (int c = 0; c < kClasses; ++c) p[c] /= sum;
  }

  std::vector<float> x_;
  std::vector<int> y_;
};

}  // namespace dgs::test
