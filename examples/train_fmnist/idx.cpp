#include "idx.h"

#include <zlib.h>

#include <sys/stat.h>
#include <cstdio>

#include "dgs/error.h"

namespace fmnist {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw dgs::Error(dgs::ErrorCode::io, path + ": " + what);
}

// The whole (decompressed) content of a file; gzip is detected by zlib.
std::vector<unsigned char> slurp(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) fail(path, "cannot open it");
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 16];
  int n;
  while ((n = gzread(file, chunk, sizeof chunk)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
  int code = Z_OK;
  const char* message = n < 0 ? gzerror(file, &code) : nullptr;
  gzclose(file);
  if (n < 0) fail(path, std::string("is not readable as gzip or raw data: ") + message);
  return bytes;
}

std::uint32_t big_endian(const std::vector<unsigned char>& b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}

std::string hex(std::uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08X", v);
  return text;
}

}  // namespace

Images read_images(const std::string& path) {
  const std::vector<unsigned char> b = slurp(path);
  if (b.size() < 16)
    fail(path,
         "is truncated: " + std::to_string(b.size()) + " bytes, an IDX image header needs 16");
  const std::uint32_t magic = big_endian(b, 0);
  if (magic != 0x00000803u) {
    fail(path, "magic " + hex(magic) + " is not an IDX file of unsigned-byte images (0x00000803)" +
                   (magic == 0x00000801u ? "; this is a label file" : ""));
  }
  Images images;
  images.count = static_cast<int>(big_endian(b, 4));
  images.rows = static_cast<int>(big_endian(b, 8));
  images.cols = static_cast<int>(big_endian(b, 12));
  if (images.count <= 0 || images.rows <= 0 || images.cols <= 0 || images.rows > 4096 ||
      images.cols > 4096) {
    fail(path, "implausible dimensions " + std::to_string(images.count) + " x " +
                   std::to_string(images.rows) + " x " + std::to_string(images.cols));
  }
  const std::size_t pixels = static_cast<std::size_t>(images.count) * images.rows * images.cols;
  if (b.size() != 16 + pixels) {
    fail(path, std::string(b.size() < 16 + pixels ? "is truncated" : "has trailing bytes") +
                   ": the header promises " + std::to_string(images.count) + " images of " +
                   std::to_string(images.rows) + " x " + std::to_string(images.cols) + " (" +
                   std::to_string(16 + pixels) + " bytes), the file has " +
                   std::to_string(b.size()));
  }
  images.pixels.resize(pixels);
  for (std::size_t i = 0; i < pixels; ++i)
    images.pixels[i] = static_cast<float>(b[16 + i]) / 255.0f;
  return images;
}

std::vector<std::uint8_t> read_labels(const std::string& path, int classes) {
  const std::vector<unsigned char> b = slurp(path);
  if (b.size() < 8)
    fail(path, "is truncated: " + std::to_string(b.size()) + " bytes, an IDX label header needs 8");
  const std::uint32_t magic = big_endian(b, 0);
  if (magic != 0x00000801u) {
    fail(path, "magic " + hex(magic) + " is not an IDX file of unsigned-byte labels (0x00000801)" +
                   (magic == 0x00000803u ? "; this is an image file" : ""));
  }
  const std::uint32_t count = big_endian(b, 4);
  if (b.size() != 8 + std::size_t{count}) {
    fail(path,
         std::string(b.size() < 8 + std::size_t{count} ? "is truncated" : "has trailing bytes") +
             ": the header promises " + std::to_string(count) + " labels, the file holds " +
             std::to_string(b.size() - 8));
  }
  std::vector<std::uint8_t> labels(b.begin() + 8, b.end());
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= classes) {
      fail(path, "label " + std::to_string(labels[i]) + " at position " + std::to_string(i) +
                     " is not below the " + std::to_string(classes) + " classes");
    }
  }
  return labels;
}

namespace {

std::string find(const std::string& directory, const std::string& stem) {
  for (const char* suffix : {"", ".gz"}) {
    const std::string path = directory + "/" + stem + suffix;
    struct stat info;
    if (::stat(path.c_str(), &info) == 0) return path;
  }
  throw dgs::Error(dgs::ErrorCode::io, directory + "/" + stem +
                                           "[.gz] not found; install the Debian package "
                                           "dataset-fashion-mnist or pass --data DIR");
}

}  // namespace

Dataset load(const std::string& directory) {
  Dataset d;
  d.train_images = read_images(find(directory, "train-images-idx3-ubyte"));
  d.train_labels = read_labels(find(directory, "train-labels-idx1-ubyte"));
  d.test_images = read_images(find(directory, "t10k-images-idx3-ubyte"));
  d.test_labels = read_labels(find(directory, "t10k-labels-idx1-ubyte"));
  if (static_cast<std::size_t>(d.train_images.count) != d.train_labels.size() ||
      static_cast<std::size_t>(d.test_images.count) != d.test_labels.size()) {
    throw dgs::Error(dgs::ErrorCode::io,
                     directory + ": " + std::to_string(d.train_images.count) +
                         " training images but " + std::to_string(d.train_labels.size()) +
                         " labels, " + std::to_string(d.test_images.count) + " test images but " +
                         std::to_string(d.test_labels.size()) + " labels");
  }
  if (d.train_images.rows != d.test_images.rows || d.train_images.cols != d.test_images.cols) {
    throw dgs::Error(dgs::ErrorCode::io, directory + ": training and test images differ in size");
  }
  return d;
}

}  // namespace fmnist
