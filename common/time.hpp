#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace warmstart {

// Wall-clock time as Unix milliseconds (records and events store these).
std::int64_t unix_ms_now();
// RFC 3339 UTC with milliseconds, e.g. "2026-11-22T01:47:41.123Z".
std::string rfc3339(std::int64_t unix_ms);
inline std::string rfc3339_now() {
  return rfc3339(unix_ms_now());
}

// Parses durations such as "30m", "1h30m", "45s", "1500ms", "2d" or a bare number
// of seconds. Returns nullopt on malformed input.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

}  // namespace warmstart
