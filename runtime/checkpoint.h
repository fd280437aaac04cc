// Checkpoint files: named sections, a version and a checksum; written
// atomically (temp file, fsync, rename).
//
//   bytes 0-7    "DGSCKPT1"
//   bytes 8-11   format version (uint32, 1)
//   then         the kind ("server" or "worker"): uint32 length + bytes
//   then         sections: uint32 name length, name, uint64 size, data
//   last 8 bytes FNV-1a 64 of everything before them
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dgs {
struct Config;
}

namespace dgs::detail {

class CheckpointWriter {
 public:
  explicit CheckpointWriter(std::string kind) : kind_(std::move(kind)) {}
  /// Adds a section (the data is copied).
  void add(const std::string& name, const void* data, std::size_t bytes);
  void add_u64(const std::string& name, std::uint64_t value) { add(name, &value, sizeof value); }
  /// Writes the file atomically; throws dgs::Error (io) naming the path.
  void write(const std::string& path) const;

 private:
  std::string kind_;
  std::vector<std::pair<std::string, std::vector<unsigned char>>> sections_;
};

class CheckpointReader {
 public:
  /// Reads and verifies the whole file; throws dgs::Error (io) saying what is
  /// wrong: missing, truncated, not a checkpoint, another version, corrupt,
  /// or written by another kind of object.
  CheckpointReader(const std::string& path, const std::string& kind);

  bool has(const std::string& name) const { return sections_.count(name) > 0; }
  /// Copies a section of exactly `bytes` bytes; throws when missing or of another size.
  void read(const std::string& name, void* data, std::size_t bytes) const;
  std::uint64_t u64(const std::string& name) const;
  const std::vector<unsigned char>& section(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, std::vector<unsigned char>> sections_;
};

/// The configuration a saved state depends on beyond a checkpoint's
/// fingerprint (which holds the model, method, compressor, mode, workers,
/// ratios' bounds and wire values): one "name=value" line per field, written
/// to the "settings" section.
std::string config_settings(const Config& config);
/// Refuses (dgs::Error, io) a checkpoint whose "settings" differ from
/// `config`'s in a field the state depends on (setting_used), naming each
/// with both values. A file written before the section existed passes.
void check_settings(const CheckpointReader& in, const Config& config, const std::string& path);

/// Whether the state of a worker or server of `config` depends on the setting
/// `name` (a line of config_settings): settings its method and compressor
/// never read may differ between a checkpoint and the restoring object.
bool setting_used(const std::string& name, const Config& config);

std::uint64_t fnv1a64(const void* data, std::size_t bytes,
                      std::uint64_t hash = 0xcbf29ce484222325ull) noexcept;

}  // namespace dgs::detail
