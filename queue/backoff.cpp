#include "queue/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace warmstart::queue {

Duration backoff_delay(const BackoffOptions& options, int attempt, double unit) {
  const double max_ms = static_cast<double>(options.max.count());
  double ms = static_cast<double>(options.initial.count());
  // Grow step by step and stop at the cap: no overflow for attempt = 100.
  for (int i = 1; i < attempt && ms < max_ms; ++i) ms *= options.multiplier;
  // Cap before the jitter so that capped retries of a burst still spread out.
  ms = std::min(ms, max_ms);
  unit = std::clamp(unit, 0.0, 1.0);
  ms *= 1.0 + options.jitter * (2.0 * unit - 1.0);
  ms = std::clamp(ms, 0.0, max_ms);
  return Duration(static_cast<Duration::rep>(std::llround(ms)));
}

Duration Backoff::delay(int attempt) {
  // 53 random bits -> a uniform double in [0, 1), identical on every platform
  // (std::uniform_real_distribution's algorithm is not specified).
  double unit = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  return backoff_delay(options_, attempt, unit);
}

}  // namespace warmstart::queue
