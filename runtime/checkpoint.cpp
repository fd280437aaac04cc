#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dgs/config.h"
#include "dgs/error.h"

namespace dgs::detail {
namespace {

constexpr char kMagic[8] = {'D', 'G', 'S', 'C', 'K', 'P', 'T', '1'};
constexpr std::uint32_t kFormatVersion = 1;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorCode::io, "dgs checkpoint " + path + ": " + what);
}

std::string system_error() {
  return std::strerror(errno);
}

void append(std::vector<unsigned char>& out, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  out.insert(out.end(), p, p + bytes);
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t hash) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void CheckpointWriter::add(const std::string& name, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  sections_.emplace_back(name, std::vector<unsigned char>(p, p + bytes));
}

void CheckpointWriter::write(const std::string& path) const {
  std::vector<unsigned char> head;
  append(head, kMagic, sizeof kMagic);
  append(head, &kFormatVersion, sizeof kFormatVersion);
  const auto kind_length = static_cast<std::uint32_t>(kind_.size());
  append(head, &kind_length, sizeof kind_length);
  append(head, kind_.data(), kind_.size());

  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(temp.c_str(), "wb");
  if (file == nullptr) fail(path, "cannot create " + temp + ": " + system_error());
  std::uint64_t hash = fnv1a64(head.data(), head.size());
  bool ok = std::fwrite(head.data(), 1, head.size(), file) == head.size();
  for (const auto& [name, data] : sections_) {
    std::vector<unsigned char> entry;
    const auto name_length = static_cast<std::uint32_t>(name.size());
    const std::uint64_t size = data.size();
    append(entry, &name_length, sizeof name_length);
    append(entry, name.data(), name.size());
    append(entry, &size, sizeof size);
    hash = fnv1a64(entry.data(), entry.size(), hash);
    hash = fnv1a64(data.data(), data.size(), hash);
    ok = ok && std::fwrite(entry.data(), 1, entry.size(), file) == entry.size();
    ok = ok && std::fwrite(data.data(), 1, data.size(), file) == data.size();
  }
  ok = ok && std::fwrite(&hash, 1, sizeof hash, file) == sizeof hash;
  ok = ok && std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;
  const std::string error = ok ? "" : system_error();
  std::fclose(file);
  if (!ok) {
    std::remove(temp.c_str());
    fail(path, "cannot write " + temp + ": " + error);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string rename_error = system_error();
    std::remove(temp.c_str());
    fail(path, "cannot rename " + temp + " over it: " + rename_error);
  }
  // Make the rename itself durable.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

CheckpointReader::CheckpointReader(const std::string& path, const std::string& kind) : path_(path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) fail(path, "cannot open: " + system_error());
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 16];
  std::size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0)
    bytes.insert(bytes.end(), chunk, chunk + n);
  const bool read_error = std::ferror(file) != 0;
  std::fclose(file);
  if (read_error) fail(path, "read error");

  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    fail(path, "not a dgs checkpoint (bad magic)");
  }
  if (bytes.size() < sizeof kMagic + 8 + 8)
    fail(path, "truncated (" + std::to_string(bytes.size()) + " bytes)");
  std::uint32_t version;
  std::memcpy(&version, bytes.data() + 8, 4);
  if (version != kFormatVersion) {
    fail(path, "format version " + std::to_string(version) + ", this build reads version " +
                   std::to_string(kFormatVersion));
  }
  const std::size_t body = bytes.size() - 8;
  std::uint64_t stored;
  std::memcpy(&stored, bytes.data() + body, 8);
  if (fnv1a64(bytes.data(), body) != stored) {
    fail(path, "checksum mismatch: the file is truncated or corrupt");
  }
  std::size_t at = 12;
  auto take = [&](void* dst, std::size_t count) {
    if (at + count > body) fail(path, "truncated section table");
    std::memcpy(dst, bytes.data() + at, count);
    at += count;
  };
  std::uint32_t kind_length;
  take(&kind_length, 4);
  std::string found(kind_length, '\0');
  take(found.data(), kind_length);
  if (found != kind) fail(path, "written by a " + found + ", not a " + kind);
  while (at < body) {
    std::uint32_t name_length;
    take(&name_length, 4);
    std::string name(name_length, '\0');
    take(name.data(), name_length);
    std::uint64_t size;
    take(&size, 8);
    if (size > body - at) fail(path, "section " + name + " runs past the end");
    sections_[name] =
        std::vector<unsigned char>(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                                   bytes.begin() + static_cast<std::ptrdiff_t>(at + size));
    at += size;
  }
}

const std::vector<unsigned char>& CheckpointReader::section(const std::string& name) const {
  const auto it = sections_.find(name);
  if (it == sections_.end()) fail(path_, "has no section '" + name + "'");
  return it->second;
}

void CheckpointReader::read(const std::string& name, void* data, std::size_t bytes) const {
  const auto& s = section(name);
  if (s.size() != bytes) {
    fail(path_, "section '" + name + "' holds " + std::to_string(s.size()) + " bytes, expected " +
                    std::to_string(bytes) + " (a checkpoint of another model or config?)");
  }
  if (bytes) std::memcpy(data, s.data(), bytes);
}

std::uint64_t CheckpointReader::u64(const std::string& name) const {
  std::uint64_t value;
  read(name, &value, sizeof value);
  return value;
}

std::string config_settings(const Config& c) {
  // Shortest round-trip text, whatever the program's locale (a decimal
  // comma, or grouped digits, would make the same settings differ).
  auto text = [](auto v) {
    char out[48];
    const std::to_chars_result r = std::to_chars(out, out + sizeof out, v);
    return std::string(out, r.ptr);
  };
  std::string warmup;
  for (double r : c.warmup_ratios) warmup += (warmup.empty() ? "" : ",") + text(r);
  const std::pair<const char*, std::string> fields[] = {
      {"ratio", text(c.ratio)},
      {"server_ratio", text(c.server_ratio)},
      {"momentum", text(c.momentum)},
      {"weight_decay", text(c.weight_decay)},
      {"clip_norm", text(c.clip_norm)},
      {"factor_masking", text(c.factor_masking ? 1 : 0)},
      {"gmc_lambda", text(c.gmc_lambda)},
      {"seed", text(c.seed)},
      {"dense_below", text(c.dense_below)},
      {"global_selection", text(c.global_selection ? 1 : 0)},
      {"threshold_capacity", text(c.threshold_capacity)},
      {"threshold_sample", text(c.threshold_sample)},
      {"schedule", to_string(c.schedule)},
      {"warmup_ratios", warmup},
      {"warmup_steps", text(c.warmup_steps)},
  };
  std::string out;
  for (const auto& [name, value] : fields) out += std::string(name) + "=" + value + "\n";
  return out;
}

namespace {

std::vector<std::pair<std::string, std::string>> settings_lines(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) lines.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return lines;
}

}  // namespace

bool setting_used(const std::string& name, const Config& c) {
  const bool sparse = c.method != Method::dense;
  if (name == "momentum") {
    return c.method == Method::dgc || c.method == Method::samomentum || c.method == Method::gmc ||
           c.method == Method::gmc_plus;
  }
  if (name == "factor_masking") return c.method == Method::dgc;
  if (name == "gmc_lambda") return c.method == Method::gmc_plus;
  if (name == "seed") return sparse && c.compressor != Compressor::topk;
  if (name == "threshold_capacity" || name == "threshold_sample")
    return sparse && c.compressor == Compressor::threshold;
  if (name == "dense_below" || name == "global_selection" || name == "schedule") return sparse;
  if (name == "warmup_ratios" || name == "warmup_steps")
    return sparse && c.schedule == RatioSchedule::warmup;
  return true;  // the ratios, weight decay, clipping: every method
}

void check_settings(const CheckpointReader& in, const Config& config, const std::string& path) {
  if (!in.has("settings")) return;
  const auto& saved = in.section("settings");
  const std::string want = config_settings(config);
  const std::string got(saved.begin(), saved.end());
  if (got == want) return;
  std::string differ;
  const auto mine = settings_lines(want);
  const auto theirs = settings_lines(got);
  // A setting newer than the file: the file was written with its default.
  const auto defaults = settings_lines(config_settings(Config{}));
  for (const auto& [name, value] : mine) {
    // A setting the method or compressor never reads may differ: the state
    // does not depend on it (gd's momentum, topk's seed, ...).
    if (!setting_used(name, config)) continue;
    std::string other = "(none)";
    for (const auto& [n, v] : defaults) {
      if (n == name) other = v;
    }
    for (const auto& [n, v] : theirs) {
      if (n == name) other = v;
    }
    if (other != value) {
      differ += (differ.empty() ? "" : ", ") + name + " " + other + " (this object: " + value + ")";
    }
  }
  for (const auto& [n, v] : theirs) {
    const bool known =
        std::any_of(mine.begin(), mine.end(), [&](const auto& f) { return f.first == n; });
    if (!known)
      differ +=
          (differ.empty() ? "" : ", ") + n + " " + v + " (a setting this version does not know)";
  }
  if (differ.empty()) return;  // only settings the file predates, at their defaults
  throw Error(ErrorCode::io,
              "dgs checkpoint " + path + ": written for another configuration: " + differ);
}

}  // namespace dgs::detail
