#include "common/time.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace std::chrono_literals;

TEST_CASE("parse_duration accepts the CLI's forms", "[unit][time]") {
  CHECK(parse_duration("30m") == std::chrono::milliseconds(30min));
  CHECK(parse_duration("1h30m") == std::chrono::milliseconds(90min));
  CHECK(parse_duration("45") == std::chrono::milliseconds(45s));
  CHECK(parse_duration("1500ms") == 1500ms);
  CHECK(parse_duration("2d") == std::chrono::milliseconds(48h));
}

TEST_CASE("parse_duration rejects malformed input", "[unit][time]") {
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("m"));
  CHECK_FALSE(parse_duration("10x"));
  CHECK_FALSE(parse_duration("-5s"));
  CHECK_FALSE(parse_duration("5 s"));
}

TEST_CASE("parse_duration refuses what does not fit: no overflow", "[unit][time]") {
  // Found by fuzz_job_spec (fuzz/corpus/job_spec/duration_overflow):
  // 222222222223 * 86400000 overflowed int64 (undefined behaviour).
  CHECK_FALSE(parse_duration("222222222223d"));
  CHECK_FALSE(parse_duration("999999999999h999999999999h"));
  CHECK_FALSE(parse_duration("999999999999"));  // seconds: past 100 years
  const std::chrono::milliseconds hundred_years = std::chrono::hours(24) * 36500;
  CHECK(parse_duration("36500d") == hundred_years);
  CHECK_FALSE(parse_duration("36500d1ms"));
  CHECK(parse_duration("3153600000") == hundred_years);  // seconds
}

TEST_CASE("rfc3339 formats UTC with milliseconds", "[unit][time]") {
  CHECK(rfc3339(0) == "1970-01-01T00:00:00.000Z");
  CHECK(rfc3339(1'795'312'061'123) == "2026-11-22T01:47:41.123Z");
  CHECK(rfc3339(-1) == "1969-12-31T23:59:59.999Z");
  CHECK(rfc3339(1'709'251'199'000) == "2024-02-29T23:59:59.000Z");  // leap day
  CHECK(rfc3339(1'735'689'599'999) == "2024-12-31T23:59:59.999Z");
  CHECK(rfc3339(1'735'689'600'000) == "2025-01-01T00:00:00.000Z");
  CHECK(rfc3339(253'402'300'799'000) == "9999-12-31T23:59:59.000Z");
}
