#include "dgs/config.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "dgs/error.h"

namespace dgs {
namespace {

[[noreturn]] void reject(const char* field, const std::string& why) {
  throw Error(ErrorCode::invalid_config, std::string("dgs::Config: ") + field + " " + why, field);
}

std::string show(double value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

void check_ratio(const char* field, double value) {
  if (!(value > 0.0 && value <= 1.0)) {
    reject(field,
           "= " + show(value) + " is outside (0, 1]: it is the kept fraction of each segment");
  }
}

template <typename Enum>
bool enum_below(Enum value, int limit) {
  return static_cast<int>(value) < limit;
}

}  // namespace

void Config::validate() const {
  if (!enum_below(method, 6))
    reject("method", "= " + std::to_string(int(method)) + " is not a Method");
  if (!enum_below(compressor, 4)) {
    reject("compressor", "= " + std::to_string(int(compressor)) + " is not a Compressor");
  }
  if (!enum_below(mode, 2)) reject("mode", "= " + std::to_string(int(mode)) + " is not a Mode");
  if (!enum_below(wire_values, 3)) {
    reject("wire_values", "= " + std::to_string(int(wire_values)) + " is not a WireValue");
  }
  if (!enum_below(schedule, 3)) {
    reject("schedule", "= " + std::to_string(int(schedule)) + " is not a RatioSchedule");
  }
  if (workers == 0) reject("workers", "= 0: a server needs at least one worker");
  check_ratio("ratio", ratio);
  if (server_ratio != 0.0) check_ratio("server_ratio", server_ratio);
  if (!(momentum >= 0.0f && momentum < 1.0f)) {
    reject("momentum", "= " + show(momentum) + " is outside [0, 1)");
  }
  if (!(clip_norm >= 0.0f && std::isfinite(clip_norm))) {
    reject("clip_norm", "= " + show(clip_norm) + " is not a finite value >= 0 (0: no clipping)");
  }
  if (!(weight_decay >= 0.0f && std::isfinite(weight_decay))) {
    reject("weight_decay", "= " + show(weight_decay) + " is not a finite value >= 0");
  }
  if (!(gmc_lambda >= 0.0f && gmc_lambda <= 1.0f)) {
    reject("gmc_lambda", "= " + show(gmc_lambda) + " is outside [0, 1]");
  }
  if (!(threshold_capacity >= 1.0 && threshold_capacity <= 1024.0)) {
    reject("threshold_capacity", "= " + show(threshold_capacity) +
                                     " is outside [1, 1024]: it multiplies k_l to give the "
                                     "segment's capacity");
  }
  if (threshold_sample < 16 || threshold_sample > 65536) {
    reject("threshold_sample", "= " + std::to_string(threshold_sample) + " is outside [16, 65536]");
  }
  if (schedule == RatioSchedule::warmup) {
    if (warmup_ratios.empty()) reject("warmup_ratios", "is empty but schedule is warmup");
    for (double r : warmup_ratios) check_ratio("warmup_ratios", r);
    if (warmup_steps == 0)
      reject("warmup_steps", "= 0 but schedule is warmup: give steps per stage");
  } else if (!warmup_ratios.empty()) {
    reject("warmup_ratios",
           std::string("is set but schedule is ") + to_string(schedule) + ", which ignores it");
  } else if (warmup_steps != 0) {
    reject("warmup_steps", "= " + std::to_string(warmup_steps) + " is set but schedule is " +
                               to_string(schedule) + ", which ignores it");
  }
  if (global_selection && dense_below != 0) {
    reject("dense_below", "= " + std::to_string(dense_below) +
                              " with global_selection, which selects over the whole model as "
                              "one segment: no tensor is left to send whole; set one of them");
  }
}

double Config::max_ratio() const {
  double m = ratio;
  if (schedule == RatioSchedule::warmup) {
    for (double r : warmup_ratios) m = std::max(m, r);
  }
  return m;
}

double Config::reply_ratio() const {
  return server_ratio == 0.0 ? ratio : server_ratio;
}

double Config::ratio_at(std::uint64_t step, float lr, float first_lr) const {
  switch (schedule) {
    case RatioSchedule::constant:
      return ratio;
    case RatioSchedule::lr_proportional: {
      if (!(first_lr > 0.0f)) return ratio;  // no positive lr yet: nothing to scale by
      const double r = ratio * static_cast<double>(lr) / static_cast<double>(first_lr);
      // Never above the buffer's ratio; the smallest wire ratio keeps one entry per segment.
      return std::clamp(r, 0x1p-32, ratio);
    }
    case RatioSchedule::warmup: {
      const std::uint64_t stage = step / warmup_steps;
      return stage < warmup_ratios.size() ? warmup_ratios[stage] : ratio;
    }
  }
  return ratio;
}

const char* to_string(Method method) noexcept {
  switch (method) {
    case Method::dense:
      return "dense";
    case Method::gd:
      return "gd";
    case Method::dgc:
      return "dgc";
    case Method::samomentum:
      return "samomentum";
    case Method::gmc:
      return "gmc";
    case Method::gmc_plus:
      return "gmc+";
  }
  return "?";
}

const char* to_string(Compressor compressor) noexcept {
  switch (compressor) {
    case Compressor::topk:
      return "topk";
    case Compressor::threshold:
      return "threshold";
    case Compressor::randk:
      return "randk";
    case Compressor::rbgs:
      return "rbgs";
  }
  return "?";
}

const char* to_string(Mode mode) noexcept {
  switch (mode) {
    case Mode::async:
      return "async";
    case Mode::sync:
      return "sync";
  }
  return "?";
}

const char* to_string(WireValue value) noexcept {
  switch (value) {
    case WireValue::f32:
      return "f32";
    case WireValue::bf16:
      return "bf16";
    case WireValue::f16:
      return "f16";
  }
  return "?";
}

const char* to_string(RatioSchedule schedule) noexcept {
  switch (schedule) {
    case RatioSchedule::constant:
      return "constant";
    case RatioSchedule::lr_proportional:
      return "lr_proportional";
    case RatioSchedule::warmup:
      return "warmup";
  }
  return "?";
}

namespace {

template <typename Enum, int N>
Enum parse_enum(std::string_view name, const char* what, const Enum (&values)[N]) {
  std::string accepted;
  for (Enum v : values) {
    if (name == to_string(v)) return v;
    accepted += accepted.empty() ? "" : ", ";
    accepted += to_string(v);
  }
  throw Error(ErrorCode::invalid_argument, std::string("unknown ") + what + " '" +
                                               std::string(name) +
                                               "'; expected one of: " + accepted);
}

}  // namespace

Method parse_method(std::string_view name) {
  static constexpr Method all[] = {Method::dense,      Method::gd,  Method::dgc,
                                   Method::samomentum, Method::gmc, Method::gmc_plus};
  return parse_enum(name, "method", all);
}

Compressor parse_compressor(std::string_view name) {
  static constexpr Compressor all[] = {Compressor::topk, Compressor::threshold, Compressor::randk,
                                       Compressor::rbgs};
  return parse_enum(name, "compressor", all);
}

Mode parse_mode(std::string_view name) {
  static constexpr Mode all[] = {Mode::async, Mode::sync};
  return parse_enum(name, "mode", all);
}

WireValue parse_wire_value(std::string_view name) {
  static constexpr WireValue all[] = {WireValue::f32, WireValue::bf16, WireValue::f16};
  return parse_enum(name, "wire value type", all);
}

bool has_error_feedback(Method method) noexcept {
  return method == Method::gd || method == Method::gmc || method == Method::gmc_plus;
}

}  // namespace dgs
