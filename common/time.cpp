#include "common/time.hpp"

#include <algorithm>
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
  // The calendar arithmetic of <chrono>, digits written by hand: every log
  // line and event carries one, and gmtime_r + snprintf showed in profiles.
  using namespace std::chrono;
  const sys_time<milliseconds> t{milliseconds(unix_ms)};
  const sys_days day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<milliseconds> tod{t - day};
  int y = static_cast<int>(ymd.year());
  y = std::clamp(y, 0, 9999);  // four digits
  std::string out = "0000-00-00T00:00:00.000Z";
  auto put = [&out](std::size_t at, unsigned value, int width) {
    for (int i = width - 1; i >= 0; --i, value /= 10)
      out[at + i] = static_cast<char>('0' + value % 10);
  };
  put(0, static_cast<unsigned>(y), 4);
  put(5, static_cast<unsigned>(ymd.month()), 2);
  put(8, static_cast<unsigned>(ymd.day()), 2);
  put(11, static_cast<unsigned>(tod.hours().count()), 2);
  put(14, static_cast<unsigned>(tod.minutes().count()), 2);
  put(17, static_cast<unsigned>(tod.seconds().count()), 2);
  put(20, static_cast<unsigned>(tod.subseconds().count()), 3);
  return out;
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
