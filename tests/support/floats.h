// Floats in a backend's memory (device memory on the cuda backend), written
// and read from the host through the backend's checked copies: a test's
// models and gradients on either backend.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <vector>

#include "runtime/backend.h"

namespace dgs::test {

class Floats {
 public:
  /// n zeros.
  Floats(Backend& backend, std::size_t n) : backend_(&backend), n_(n), buffer_(backend, bytes()) {
    backend.zero(buffer_.data(), bytes(), nullptr);
    backend.synchronize(nullptr);
  }
  Floats(Backend& backend, const std::vector<float>& values) : Floats(backend, values.size()) {
    assign(values);
  }

  float* data() const noexcept { return buffer_.as<float>(); }
  std::vector<float> host() const {
    std::vector<float> out(n_);
    backend_->download(out.data(), data(), bytes(), nullptr);
    return out;
  }
  void assign(const std::vector<float>& values) {
    if (values.size() != n_) throw std::invalid_argument("Floats::assign: wrong size");
    backend_->upload(data(), values.data(), bytes(), nullptr);
  }

 private:
  std::size_t bytes() const noexcept { return n_ * sizeof(float); }

  Backend* backend_;
  std::size_t n_;
  detail::Buffer buffer_;
};

}  // namespace dgs::test
