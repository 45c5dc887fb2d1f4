#include "common/time.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace warmstart {

namespace {
// The longest duration parse_duration accepts: 100 years. A longer one would
// overflow a steady_clock time point (int64 nanoseconds) once added to now.
constexpr std::chrono::milliseconds kMaxDuration{100LL * 365 * 24 * 3600 * 1000};
}  // namespace

std::int64_t unix_ms_now() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string rfc3339(std::int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  int ms = static_cast<int>(unix_ms % 1000);
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  bool all_digits = true;
  for (char c : text) all_digits = all_digits && std::isdigit(static_cast<unsigned char>(c));
  if (all_digits) {
    if (text.size() > 12) return std::nullopt;
    const std::chrono::milliseconds d = std::chrono::seconds(std::stoll(std::string(text)));
    if (d > kMaxDuration) return std::nullopt;
    return d;
  }
  std::int64_t total_ms = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (i == start || i - start > 12) return std::nullopt;
    std::int64_t n = std::stoll(std::string(text.substr(start, i - start)));
    std::size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    std::int64_t factor = 0;
    if (unit == "ms")
      factor = 1;
    else if (unit == "s")
      factor = 1000;
    else if (unit == "m")
      factor = 60'000;
    else if (unit == "h")
      factor = 3'600'000;
    else if (unit == "d")
      factor = 86'400'000;
    else
      return std::nullopt;
    // n has at most 12 digits and factor at most 8.64e7: compare before
    // multiplying (the product can pass int64).
    const std::int64_t max_ms = kMaxDuration.count();
    if (n > (max_ms - total_ms) / factor) return std::nullopt;
    total_ms += n * factor;
  }
  return std::chrono::milliseconds(total_ms);
}

}  // namespace warmstart
