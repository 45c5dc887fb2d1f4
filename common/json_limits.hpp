// Bounded JSON: every document that comes from outside the process (HTTP
// bodies, webhook payloads, stream entries, job records, engine replies) is
// checked for size and nesting depth on its raw text before nlohmann builds a
// DOM. nlohmann's parser is iterative, but dump(), ==, copies and most walks
// recurse once per level: 800 KB of "[[[[..." would overflow the stack there.
// After parse_bounded() every later recursive operation is at most max_depth deep.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace warmstart {

struct JsonLimits {
  std::size_t max_bytes = 1 << 20;  // longer text is refused unparsed
  std::size_t max_depth = 64;       // arrays and objects nested deeper are refused
};

// Depth of the deepest array/object of `text` (0 for a scalar), counted on the
// raw bytes in one pass; it stops counting once `stop_after` is exceeded. Exact
// for valid JSON; for invalid JSON it is some number (the parser refuses it anyway).
std::size_t json_nesting_depth(std::string_view text, std::size_t stop_after);

// Parses `text` when it is within `limits`; otherwise nullopt and `reason` says
// why, worded to follow a subject ("job " + reason): "is 2000000 bytes; the limit
// is 1048576", "is nested deeper than 64 levels", "is not valid JSON".
std::optional<nlohmann::json> parse_bounded(std::string_view text, const JsonLimits& limits,
                                            std::string* reason = nullptr);

// True when no array/object of `value` is nested deeper than `max_depth`.
// Iterative: safe on any DOM, e.g. one built by code from unbounded input.
bool json_depth_within(const nlohmann::json& value, std::size_t max_depth);

// dump() that never throws on invalid UTF-8 (bytes are replaced by U+FFFD):
// for output of text that came from outside (job logs, errors).
std::string dump_lossy(const nlohmann::json& value, int indent = -1);

}  // namespace warmstart
