// Reading the IDX files of (Fashion-)MNIST, plain or gzip-compressed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fmnist {

struct Images {
  int count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<float> pixels;  ///< count * rows * cols, scaled to [0, 1]
};

/// Reads an IDX image file (magic 0x00000803). Throws dgs::Error (io) naming
/// the file and what is wrong: missing, not IDX, wrong type, truncated.
Images read_images(const std::string& path);
/// Reads an IDX label file (magic 0x00000801); labels must be below `classes`.
std::vector<std::uint8_t> read_labels(const std::string& path, int classes = 10);

struct Dataset {
  Images train_images, test_images;
  std::vector<std::uint8_t> train_labels, test_labels;
};

/// Loads train-{images,labels}-idx*-ubyte[.gz] and t10k-... from `directory`;
/// checks that images and labels agree in number.
Dataset load(const std::string& directory);

}  // namespace fmnist
