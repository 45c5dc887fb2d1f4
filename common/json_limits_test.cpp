#include "common/json_limits.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using nlohmann::json;

namespace {
std::string nested_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}
}  // namespace

TEST_CASE("json_nesting_depth counts arrays and objects, not brackets in strings",
          "[unit][json_limits]") {
  CHECK(json_nesting_depth("1", 64) == 0);
  CHECK(json_nesting_depth(R"("[[[[")", 64) == 0);
  CHECK(json_nesting_depth(R"({"a": [1, {"b": []}]})", 64) == 4);
  CHECK(json_nesting_depth(R"(["\"[[[", [[]]])", 64) == 3);
  CHECK(json_nesting_depth(R"(["\\", [[]]])", 64) == 3);    // an escaped backslash ends the escape
  CHECK(json_nesting_depth(nested_arrays(100), 10) == 11);  // stops counting past the limit
}

TEST_CASE("parse_bounded refuses oversize and deep text before parsing", "[unit][json_limits]") {
  std::string reason;
  JsonLimits limits{100, 4};
  CHECK_FALSE(parse_bounded(std::string(101, ' '), limits, &reason));
  CHECK(reason == "is 101 bytes; the limit is 100");
  CHECK_FALSE(parse_bounded(nested_arrays(5), limits, &reason));
  CHECK(reason == "is nested deeper than 4 levels");
  CHECK_FALSE(parse_bounded("{\"a\":", limits, &reason));
  CHECK(reason == "is not valid JSON");
  auto ok = parse_bounded(nested_arrays(4), limits, &reason);
  REQUIRE(ok);
  CHECK(ok->dump() == nested_arrays(4));
}

TEST_CASE("parse_bounded survives the 800 KB nested body of issue 12", "[unit][json_limits]") {
  const std::string body = R"({"cmd": ["true"], "x": )" + nested_arrays(400 * 1024) + "}";
  std::string reason;
  CHECK_FALSE(parse_bounded(body, JsonLimits{}, &reason));
  CHECK(reason == "is nested deeper than 64 levels");
}

TEST_CASE("json_depth_within walks a DOM without recursion", "[unit][json_limits]") {
  CHECK(json_depth_within(json(1), 0));
  CHECK(json_depth_within(json::parse(R"({"a": [1, {"b": []}]})"), 4));
  CHECK_FALSE(json_depth_within(json::parse(R"({"a": [1, {"b": []}]})"), 3));
  // Deep enough that a recursive walk (or dump()) would overflow the stack.
  json deep = json::array();
  json* cursor = &deep;
  for (int i = 0; i < 200000; ++i) {
    cursor->push_back(json::array());
    cursor = &cursor->back();
  }
  CHECK_FALSE(json_depth_within(deep, 64));
}

TEST_CASE("dump_lossy replaces invalid UTF-8 instead of throwing", "[unit][json_limits]") {
  json j = {{"log_tail", std::string("ok \xff")}};
  CHECK_THROWS(j.dump());
  CHECK(dump_lossy(j) == "{\"log_tail\":\"ok \xef\xbf\xbd\"}");
}
