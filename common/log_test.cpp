#include "common/log.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;

TEST_CASE("a log line is one JSON object: ts, level, msg, then the fields", "[unit][log]") {
  const std::string line =
      log::format(log::Level::warn, "job \"x\" failed", {{"job", "x"}, {"attempt", 2}});
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.rfind("{\"ts\":\"", 0) == 0);
  auto j = nlohmann::json::parse(line);
  CHECK(j.size() == 5);
  CHECK(j["level"] == "warn");
  CHECK(j["msg"] == "job \"x\" failed");
  CHECK(j["job"] == "x");
  CHECK(j["attempt"] == 2);
  CHECK(j["ts"].get<std::string>().size() == 24);  // 2026-11-22T01:47:41.123Z
}

TEST_CASE("a log field named like a base key replaces it, and bad UTF-8 is replaced",
          "[unit][log]") {
  auto j = nlohmann::json::parse(
      log::format(log::Level::info, "m", {{"msg", "from the field"}, {"x", "\xff"}}));
  CHECK(j.size() == 4);
  CHECK(j["msg"] == "from the field");
  CHECK(j["x"] == "\xEF\xBF\xBD");
  auto bare = nlohmann::json::parse(log::format(log::Level::error, "\xfe", nullptr));
  CHECK(bare.size() == 3);
  CHECK(bare["msg"] == "\xEF\xBF\xBD");
}
