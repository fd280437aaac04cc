// Moves backend buffers over a transport, staging them through host memory
// when the backend's memory is device memory but the transport's is not
// (an MPI library without CUDA support, say).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "dgs/error.h"
#include "dgs/transport.h"
#include "runtime/backend.h"

namespace dgs::detail {

class Channel {
 public:
  Channel(Backend& backend, Transport& transport, Stream stream)
      : backend_(&backend),
        transport_(&transport),
        stream_(stream),
        staged_(backend.memory() != transport.memory()) {
    if (backend.memory() == MemoryKind::host && transport.memory() == MemoryKind::device) {
      throw Error(ErrorCode::invalid_argument,
                  std::string("the ") + transport.name() +
                      " transport moves device buffers but the backend is the host backend");
    }
  }

  void send(int peer, const void* buffer, std::size_t bytes) {
    if (staged_) {
      host_.resize(bytes);
      backend_->download(host_.data(), buffer, bytes, stream_);
      transport_->send(peer, host_.data(), bytes);
    } else {
      backend_->synchronize(stream_);  // the kernels that wrote the buffer
      transport_->send(peer, buffer, bytes);
    }
  }

  Receipt recv(int peer, void* buffer, std::size_t bytes, std::chrono::milliseconds timeout) {
    if (!staged_) return transport_->recv(peer, buffer, bytes, timeout);
    host_.resize(bytes);
    Receipt r = transport_->recv(peer, host_.data(), bytes, timeout);
    if (r.status == Receipt::Status::message) upload(buffer, bytes, r.bytes);
    return r;
  }

  Receipt recv_any(const std::vector<int>& peers, void* buffer, std::size_t bytes,
                   std::chrono::milliseconds timeout) {
    if (!staged_) return transport_->recv_any(peers, buffer, bytes, timeout);
    host_.resize(bytes);
    Receipt r = transport_->recv_any(peers, host_.data(), bytes, timeout);
    if (r.status == Receipt::Status::message) upload(buffer, bytes, r.bytes);
    return r;
  }

  Transport& transport() const noexcept { return *transport_; }

 private:
  void upload(void* buffer, std::size_t room, std::size_t received) {
    backend_->upload(buffer, host_.data(), std::min(room, received), stream_);
  }

  Backend* backend_;
  Transport* transport_;
  Stream stream_;
  bool staged_;
  std::vector<unsigned char> host_;
};

}  // namespace dgs::detail
