// The dgs wire format (DESIGN.md section 5).
//
// Every message is one fixed-size buffer: a 64-byte header, an index region,
// then a value region. Fixed sizes let both sides post their transfers
// without first exchanging lengths; the real entry count is in the header.
//
//   offset  bytes  field          notes
//   0       4      magic          0x4D534744, the bytes "DGSM"
//   4       2      version        kWireVersion (2)
//   6       1      kind           MessageKind
//   7       1      layout         PayloadLayout
//   8       1      compressor     Compressor that selected the entries
//   9       1      value_type     WireValue of the value region
//   10      1      index_type     IndexType of the index region
//   11      1      nonce          hello: the join's (1-255), echoed by its answer; else 0
//   12      4      sender         worker id (pushes) or the server's id (replies)
//   16      8      model_size     P, elements of the model
//   24      8      count          entries present, <= capacity
//   32      8      capacity       entries the buffer has room for
//   40      8      step           worker step of the push (echoed in its reply)
//   48      8      model_version  push: version of the worker's model; reply: server version
//   56      4      lr             learning rate of the step (float32; 0 in replies)
//   60      4      ratio_code     keep ratio, rho = (ratio_code + 1) / 2^32
//
// All fields little-endian. The index region starts at byte 64 and holds
// index_slots entries of the index type (uint32 when P < 2^32, else uint64):
// the selected coordinates in strictly increasing order for the sparse
// layout, one block start per segment (relative to the segment) for the
// blocks layout (rbgs), nothing for the dense layout. The value region
// starts at the next multiple of 16 bytes and holds capacity values; the
// total size is rounded up to a multiple of 16 bytes. Entry j of a message
// is (indices[j], values[j]); slots at and beyond count are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dgs/config.h"
#include "dgs/segments.h"

namespace dgs {

inline constexpr std::uint32_t kMessageMagic = 0x4D534744u;  // "DGSM" in memory order
/// 2: byte 11 is the join nonce (1: a reserved byte, always 0).
inline constexpr std::uint16_t kWireVersion = 2;
inline constexpr std::size_t kHeaderBytes = 64;
inline constexpr std::size_t kRegionAlignment = 16;

enum class MessageKind : std::uint8_t {
  push = 1,          ///< worker -> server: a compressed update s (applied as W -= s)
  sparse_reply = 2,  ///< server -> worker: sparse model difference d (w += d)
  dense_reply = 3,   ///< server -> worker: the whole model W (w = W)
  hello = 4,         ///< worker -> server: join (or rejoin); answered densely
  bye = 5,           ///< worker -> server: leave; not answered
  reject = 6,        ///< server -> worker: the push was rejected; no entries, the
                     ///< verdict follows the header as four uint64 (reason, position,
                     ///< value, expected)
};

enum class PayloadLayout : std::uint8_t {
  sparse = 0,  ///< capacity indices, then capacity values
  dense = 1,   ///< no indices; P values, entry j is coordinate j
  blocks = 2,  ///< one block start per segment, then capacity values (rbgs)
};

enum class IndexType : std::uint8_t { none = 0, u32 = 1, u64 = 2 };

/// The 64-byte header, field for field as it is on the wire.
struct MessageHeader {
  std::uint32_t magic;
  std::uint16_t version;
  MessageKind kind;
  PayloadLayout layout;
  Compressor compressor;
  WireValue value_type;
  IndexType index_type;
  std::uint8_t nonce;  ///< a hello's join nonce, echoed by the answer to it; 0 elsewhere
  std::uint32_t sender;
  std::uint64_t model_size;
  std::uint64_t count;
  std::uint64_t capacity;
  std::uint64_t step;
  std::uint64_t model_version;
  float lr;
  std::uint32_t ratio_code;
};
static_assert(sizeof(MessageHeader) == kHeaderBytes, "the wire header is 64 bytes");

/// Where the regions of a message buffer are.
struct MessageLayout {
  PayloadLayout payload = PayloadLayout::sparse;
  IndexType index_type = IndexType::none;
  WireValue value_type = WireValue::f32;
  std::uint64_t model_size = 0;
  std::uint64_t capacity = 0;       ///< value slots
  std::uint64_t index_slots = 0;    ///< capacity (sparse), segments (blocks), 0 (dense)
  std::uint64_t values_offset = 0;  ///< byte offset of the value region
  std::uint64_t bytes = 0;          ///< whole buffer
};

std::size_t index_bytes(IndexType type) noexcept;
std::size_t value_bytes(WireValue type) noexcept;
/// uint32 indices when P < 2^32, else uint64.
IndexType index_type_for(std::uint64_t model_size) noexcept;

MessageLayout sparse_layout(std::uint64_t model_size, std::uint64_t capacity, WireValue values);
MessageLayout dense_layout(std::uint64_t model_size, WireValue values);
MessageLayout block_layout(std::uint64_t model_size, std::uint64_t segments, std::uint64_t capacity,
                           WireValue values);

/// The push buffer of a worker: dense for Method::dense, blocks for rbgs,
/// sparse otherwise, sized for Config::max_ratio().
MessageLayout push_layout(const Segments& model, const Config& config);
/// The sparse reply buffer of the server (exact topk at the reply ratio).
/// Where every reply is dense (replies_are_dense) it only carries heads and
/// rejections: one slot, 96 bytes.
MessageLayout sparse_reply_layout(const Segments& model, const Config& config);
/// The dense reply buffer: P float32 values, always (a model refresh is exact).
MessageLayout dense_reply_layout(const Segments& model);
/// True when the server answers every push densely: Method::dense (ASGD sends
/// W), or a reply ratio at which a sparse reply selects every coordinate.
bool replies_are_dense(const Segments& model, const Config& config);

/// Copy the header out of / into the first 64 bytes of a host buffer.
MessageHeader read_header(const void* message) noexcept;
void write_header(void* message, const MessageHeader& header) noexcept;
/// A header with magic and version set and every other field zero.
MessageHeader blank_header() noexcept;

/// Host accessors of a message's index and value slots.
std::uint64_t read_index(const void* message, const MessageLayout& layout, std::uint64_t slot);
float read_value(const void* message, const MessageLayout& layout, std::uint64_t slot);
void write_index(void* message, const MessageLayout& layout, std::uint64_t slot,
                 std::uint64_t index);
/// Writes the value rounded to the layout's value type; returns what was
/// stored, as float (what the receiver will read).
float write_value(void* message, const MessageLayout& layout, std::uint64_t slot, float value);

/// Why a message was rejected. Header checks come first, in this order; then
/// the entries, reporting the lowest failing position.
enum class RejectReason : std::uint8_t {
  none = 0,
  size,           ///< buffer size differs from the expected layout
  magic,          ///< magic is not kMessageMagic
  version,        ///< unknown wire version
  kind,           ///< a kind the receiver does not accept
  nonce,          ///< a join nonce in a message other than a hello
  sender,         ///< sender id out of range (or not the transport peer)
  model_size,     ///< P differs from the receiver's model
  layout,         ///< payload layout differs from the configured one
  compressor,     ///< compressor differs from the configured one
  value_type,     ///< wire value type differs from the configured one
  index_type,     ///< index type differs from the one P implies
  capacity,       ///< capacity differs from the receiver's buffer capacity
  count,          ///< count > capacity, or not the count the ratio implies
  ratio,          ///< ratio code above the configured maximum
  index_range,    ///< an index >= P
  index_order,    ///< indices not strictly increasing (a duplicate, or unsorted)
  index_segment,  ///< a fixed-count entry outside the segment its slot belongs to
  block_start,    ///< an rbgs block start >= its segment size
  value,          ///< a value is NaN or infinite
  model_version,  ///< a push from a model other than the one the server last sent that worker
  round,          ///< sync: a push whose step is not the round's number (the server's version)
};

/// The field a reason refers to ("magic", "count", "indices", "values", ...).
const char* field_name(RejectReason reason) noexcept;

/// Outcome of validating a message.
struct Verdict {
  RejectReason reason = RejectReason::none;
  std::uint64_t position = 0;  ///< entry slot, for the per-entry reasons
  std::uint64_t value = 0;     ///< the offending value (field value, index, or value bits)
  std::uint64_t expected = 0;  ///< what was expected: the field value, the bound, the previous
                               ///< index (index_order) or the segment (index_segment)

  bool ok() const noexcept { return reason == RejectReason::none; }
  /// "push from worker 3 rejected: indices[17] = 900 is not below model_size 800".
  std::string describe(std::uint32_t sender) const;
};

/// The verdict a reject message carries right after its header, as four
/// little-endian uint64 (reason, position, value, expected): 32 bytes, for
/// which every reply buffer has room.
void write_reject_verdict(void* message, const Verdict& verdict) noexcept;
Verdict read_reject_verdict(const void* message) noexcept;

}  // namespace dgs
