// Host reference of the server operations (DESIGN.md sections 4 and 6):
// validation of a push, applying it, and answering with a sparsified model
// difference or the dense model. The CUDA kernels are tested against these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dgs/config.h"
#include "dgs/message.h"
#include "dgs/plan.h"
#include "dgs/segments.h"
#include "kernels/select_host.h"
#include "kernels/worker_host.h"

namespace dgs::host {

/// Sender id the server writes into its replies.
inline constexpr std::uint32_t kServerSender = 0xFFFFFFFFu;

/// What a server accepts: derived once from the model and the job's Config.
struct PushRules {
  PushRules(const Segments& model, const Config& config);

  Config config;
  Segments segments;             ///< selection segments
  MessageLayout layout;          ///< the push buffer every worker uses
  std::uint32_t max_ratio_code;  ///< encode_ratio(config.max_ratio())

  /// The plan a push at `ratio_code` was selected with.
  SelectionPlan plan_at(std::uint32_t ratio_code) const;
};

/// Checks a message received by the server (push, hello or bye), in the order
/// of RejectReason: the header, then the index region (lowest failing slot;
/// at one slot range, then order, then segment), then the values (lowest
/// non-finite slot). Reads only; never throws for a bad message.
Verdict validate_push(const void* message, std::size_t bytes, const PushRules& rules);

/// The header half of validate_push. For an accepted push with indices or
/// blocks, `plan` receives the plan at the message's ratio (for the entries).
Verdict validate_push_header(const MessageHeader& header, std::size_t bytes, const PushRules& rules,
                             SelectionPlan* plan);

/// W -= s for an accepted push. Each coordinate appears once in a message, so
/// the order of the entries does not matter.
void apply_push(const void* message, const PushRules& rules, float* model);

/// Sync mode: acc += s for an accepted push (pushes of a round are added in
/// worker-id order).
void accumulate_push(const void* message, const PushRules& rules, float* accumulator);

/// Sync mode: W = W - acc * (1 / contributors), product rounded first.
void apply_average(const float* accumulator, std::uint32_t contributors, float* model,
                   std::uint64_t p);

/// A push a sync round holds, with the header its validation returned.
struct RoundPush {
  const void* message;
  MessageHeader header;
};

/// A sync round: `accumulator` (resized to P) zeroed, every push added into it
/// in the order given, then apply_average with `count` contributors.
void apply_round(const RoundPush* pushes, std::uint32_t count, const PushRules& rules, float* model,
                 std::vector<float>& accumulator);

struct ReplyInfo {
  std::uint64_t step = 0;           ///< echoed from the push being answered
  std::uint64_t model_version = 0;  ///< the server's version after the push
};

/// The header of a reply (count and ratio_code left for the caller).
MessageHeader make_reply_header(MessageKind kind, const MessageLayout& layout,
                                const ReplyInfo& info);

/// The sparse reply: D = W - R, d = topk(D) at the reply plan, R += d (with d
/// as it goes on the wire), d written to `reply` (sparse layout). Returns the
/// selection statistics. `scratch.values` holds D (P floats).
SelectionStats write_sparse_reply(const float* model, float* replica, const Segments& segments,
                                  const SelectionPlan& plan, const ReplyInfo& info, void* reply,
                                  const MessageLayout& layout, Scratch& scratch);

/// The dense reply: W written to `reply` (dense float32 layout); the replica,
/// when given, becomes W.
void write_dense_reply(const float* model, float* replica, const ReplyInfo& info, void* reply,
                       const MessageLayout& layout);

/// Makes `reply`, a dense float32 layout whose values already hold the model
/// to send, a dense reply: writes its header; the replica, when given,
/// becomes a copy of those values.
void finish_dense_reply(void* reply, float* replica, const ReplyInfo& info,
                        const MessageLayout& layout);

}  // namespace dgs::host
