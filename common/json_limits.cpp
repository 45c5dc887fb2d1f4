#include "common/json_limits.hpp"

#include <utility>
#include <vector>

namespace warmstart {

std::size_t json_nesting_depth(std::string_view text, std::size_t stop_after) {
  std::size_t depth = 0;
  std::size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > stop_after) return deepest;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

std::optional<nlohmann::json> parse_bounded(std::string_view text, const JsonLimits& limits,
                                            std::string* reason) {
  auto refuse = [reason](std::string why) -> std::optional<nlohmann::json> {
    if (reason != nullptr) *reason = std::move(why);
    return std::nullopt;
  };
  if (text.size() > limits.max_bytes) {
    return refuse("is " + std::to_string(text.size()) + " bytes; the limit is " +
                  std::to_string(limits.max_bytes));
  }
  if (json_nesting_depth(text, limits.max_depth) > limits.max_depth) {
    return refuse("is nested deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return refuse("is not valid JSON");
  return value;
}

bool json_depth_within(const nlohmann::json& value, std::size_t max_depth) {
  // (node, its depth); scalars are never pushed.
  std::vector<std::pair<const nlohmann::json*, std::size_t>> pending;
  if (value.is_structured()) pending.emplace_back(&value, 1);
  while (!pending.empty()) {
    const auto [node, depth] = pending.back();
    pending.pop_back();
    if (depth > max_depth) return false;
    for (const auto& child : *node) {
      if (child.is_structured()) pending.emplace_back(&child, depth + 1);
    }
  }
  return true;
}

std::string dump_lossy(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace warmstart
