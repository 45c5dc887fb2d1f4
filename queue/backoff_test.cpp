#include "queue/backoff.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::queue;

TEST_CASE("backoff_delay grows exponentially from the initial delay", "[unit][backoff]") {
  BackoffOptions o;  // 1 s, x2, cap 5 min, jitter 0.2
  CHECK(backoff_delay(o, 1, 0.5) == 1000ms);
  CHECK(backoff_delay(o, 2, 0.5) == 2000ms);
  CHECK(backoff_delay(o, 3, 0.5) == 4000ms);
  CHECK(backoff_delay(o, 9, 0.5) == 256000ms);
  CHECK(backoff_delay(o, 10, 0.5) == 300000ms);   // capped
  CHECK(backoff_delay(o, 100, 0.5) == 300000ms);  // no overflow
}

TEST_CASE("jitter spreads the delay by +-jitter and never passes the cap", "[unit][backoff]") {
  BackoffOptions o;
  CHECK(backoff_delay(o, 1, 0.0) == 800ms);
  CHECK(backoff_delay(o, 1, 1.0) == 1200ms);
  CHECK(backoff_delay(o, 2, 0.25) == 1800ms);
  CHECK(backoff_delay(o, 20, 1.0) == 300000ms);
  CHECK(backoff_delay(o, 20, 0.0) == 240000ms);
  o.jitter = 0;
  CHECK(backoff_delay(o, 1, 0.0) == 1000ms);
  CHECK(backoff_delay(o, 1, 0.99) == 1000ms);
}

TEST_CASE("Backoff is deterministic for a seed and bounded", "[unit][backoff]") {
  BackoffOptions o;
  o.initial = 100ms;
  o.max = 10s;
  Backoff a(o, 42);
  Backoff b(o, 42);
  Backoff c(o, 43);
  bool differs = false;
  for (int attempt = 1; attempt <= 100; ++attempt) {
    Duration da = a.delay(attempt);
    CHECK(da == b.delay(attempt));
    differs = differs || da != c.delay(attempt);
    double nominal = std::min(100.0 * std::pow(2.0, attempt - 1), 10000.0);
    CHECK(da.count() >= static_cast<long>(nominal * 0.8) - 1);
    CHECK(da <= 10s);
  }
  CHECK(differs);
}
