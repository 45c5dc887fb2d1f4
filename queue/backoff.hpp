// Retry backoff: exponential, bounded, with jitter; deterministic for a seed
// so tests can pin exact delays.
#pragma once
#include "common/net.hpp"

#include <cstdint>
#include <random>

namespace warmstart::queue {

struct BackoffOptions {
  Duration initial = 1s;    // delay before the first retry (attempt 1 failed)
  Duration max = 5min;      // no delay exceeds this
  double multiplier = 2.0;  // growth per further attempt
  double jitter = 0.2;      // +-fraction of the delay, spreads retries of a burst
};

// The delay after `attempt` (1-based) failed, for a uniform random `unit` in
// [0, 1): initial * multiplier^(attempt-1), scaled by 1 + jitter*(2*unit-1),
// capped at max. Pure.
Duration backoff_delay(const BackoffOptions& options, int attempt, double unit);

class Backoff {
 public:
  explicit Backoff(BackoffOptions options = {}, std::uint64_t seed = std::random_device{}())
      : options_(options), rng_(seed) {}
  Duration delay(int attempt);
  const BackoffOptions& options() const { return options_; }

 private:
  BackoffOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace warmstart::queue
