#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dgs/error.h"
#include "idx.h"

namespace {

std::vector<unsigned char> be32(std::uint32_t v) {
  return {static_cast<unsigned char>(v >> 24), static_cast<unsigned char>(v >> 16),
          static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
}

std::vector<unsigned char> image_file(std::uint32_t magic, std::uint32_t count, std::uint32_t rows,
                                      std::uint32_t cols, std::size_t pixels) {
  std::vector<unsigned char> b;
  for (auto v : {magic, count, rows, cols}) {
    const auto w = be32(v);
    b.insert(b.end(), w.begin(), w.end());
  }
  for (std::size_t i = 0; i < pixels; ++i) b.push_back(static_cast<unsigned char>(i * 7));
  return b;
}

std::vector<unsigned char> label_file(std::uint32_t count, std::vector<unsigned char> labels) {
  std::vector<unsigned char> b = be32(0x801);
  const auto c = be32(count);
  b.insert(b.end(), c.begin(), c.end());
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

class Idx : public ::testing::Test {
 protected:
  std::string dir = ::testing::TempDir();
  std::string write(const std::string& name, const std::vector<unsigned char>& bytes,
                    bool gzip = false) {
    const std::string path = dir + name;
    if (gzip) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()),
                 static_cast<std::streamsize>(bytes.size()));
    }
    return path;
  }
  void expect_error(const std::function<void()>& f, const std::string& words) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one saying '" << words << "'";
    } catch (const dgs::Error& e) {
      EXPECT_EQ(e.code(), dgs::ErrorCode::io);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  }
};

TEST_F(Idx, ReadsImagesPlainAndGzipped) {
  for (bool gzip : {false, true}) {
    const auto path = write(gzip ? "img.gz" : "img", image_file(0x803, 3, 2, 2, 12), gzip);
    const fmnist::Images images = fmnist::read_images(path);
    EXPECT_EQ(images.count, 3);
    EXPECT_EQ(images.rows, 2);
    EXPECT_EQ(images.cols, 2);
    ASSERT_EQ(images.pixels.size(), 12u);
    EXPECT_FLOAT_EQ(images.pixels[5], 35.0f / 255.0f);
  }
}

TEST_F(Idx, SaysWhatIsWrongWithABadFile) {
  expect_error([&] { fmnist::read_images(write("a", image_file(0x801, 3, 2, 2, 12))); },
               "this is a label file");
  expect_error([&] { fmnist::read_images(write("b", image_file(0x803, 3, 2, 2, 11))); },
               "is truncated: the header promises 3 images of 2 x 2 (28 bytes), the file has 27");
  expect_error([&] { fmnist::read_images(write("c", image_file(0x803, 3, 2, 2, 13))); },
               "has trailing bytes");
  expect_error([&] { fmnist::read_images(write("d", {1, 2, 3})); }, "is truncated: 3 bytes");
  expect_error([&] { fmnist::read_images(dir + "missing"); }, "cannot open");
  expect_error(
      [&] {
        fmnist::read_labels(write("e", label_file(3, {1, 2})));
      },
      "the header promises 3 labels, the file holds 2");
  expect_error(
      [&] {
        fmnist::read_labels(write("f", label_file(2, {1, 12})));
      },
      "label 12 at position 1 is not below the 10 classes");
  expect_error([&] { fmnist::read_labels(write("g", image_file(0x803, 1, 1, 1, 1))); },
               "this is an image file");
}

TEST_F(Idx, LoadChecksThatImagesAndLabelsAgree) {
  const std::string d = dir + "set";
  std::filesystem::create_directories(d);
  dir = d + "/";
  write("train-images-idx3-ubyte.gz", image_file(0x803, 4, 2, 2, 16), true);
  write("train-labels-idx1-ubyte", label_file(4, {0, 1, 2, 3}));
  write("t10k-images-idx3-ubyte", image_file(0x803, 2, 2, 2, 8));
  write("t10k-labels-idx1-ubyte", label_file(3, {0, 1, 2}));
  expect_error([&] { fmnist::load(d); }, "2 test images but 3 labels");
  write("t10k-labels-idx1-ubyte", label_file(2, {0, 1}));
  const fmnist::Dataset data = fmnist::load(d);
  EXPECT_EQ(data.train_images.count, 4);
  EXPECT_EQ(data.test_labels.size(), 2u);
  expect_error([&] { fmnist::load(d + "/nowhere"); }, "dataset-fashion-mnist");
}

}  // namespace
