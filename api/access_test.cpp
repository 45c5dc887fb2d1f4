#include "api/access.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using nlohmann::json;

TEST_CASE("front door: Host names a loopback listener answers to", "[unit]") {
  FrontDoor door({"127.0.0.1:8080", {}, {}});
  CHECK(door.loopback_listener());
  for (const char* ok : {"127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1", "localhost.",
                         "[::1]", "[::1]:8080", "127.1.2.3:8080"}) {
    INFO(ok);
    CHECK(door.host_allowed(ok));
  }
  for (const char* bad :
       {"", "evil.example", "evil.example:8080", "localhost.evil.example", "10.0.0.1",
        "127.0.0.1.nip.io", "::1", "[::1", "127.0.0.1:80x", "a b", "127.0.0.1:"}) {
    INFO(bad);
    CHECK_FALSE(door.host_allowed(bad));
  }
}

TEST_CASE("front door: other listeners and configured names", "[unit]") {
  FrontDoor specific({"10.1.2.3:8080", {"Warmstart.Example.com"}, {}});
  CHECK_FALSE(specific.loopback_listener());
  CHECK(specific.host_allowed("10.1.2.3:8080"));
  CHECK(specific.host_allowed("warmstart.example.com"));
  CHECK(specific.host_allowed("WARMSTART.example.com:443"));
  CHECK_FALSE(specific.host_allowed("localhost"));
  CHECK_FALSE(specific.host_allowed("10.1.2.4"));
  CHECK_FALSE(specific.host_allowed("example.com"));

  FrontDoor any({"0.0.0.0:8080", {}, {}});
  CHECK(any.host_allowed("192.168.1.5:8080"));
  CHECK(any.host_allowed("[fe80::1]"));
  CHECK_FALSE(any.host_allowed("rebound.example"));

  CHECK_THROWS_AS(FrontDoor({"name:80", {}, {}}), std::invalid_argument);
  CHECK_THROWS_AS(FrontDoor({"127.0.0.1:80", {"has:port"}, {}}), std::invalid_argument);
  CHECK_THROWS_AS(FrontDoor({"127.0.0.1:80", {}, {"ops.example.com"}}), std::invalid_argument);
  CHECK(is_loopback_listen("127.0.0.1:0"));
  CHECK(is_loopback_listen("[::1]:80"));
  CHECK(is_loopback_listen("localhost:80"));
  CHECK_FALSE(is_loopback_listen("0.0.0.0:80"));
  CHECK_FALSE(is_loopback_listen("[::]:80"));
}

TEST_CASE("front door: Origin must be this very origin or a configured one", "[unit]") {
  FrontDoor door({"127.0.0.1:8080", {"ws.example.com"}, {"https://ops.example.com/"}});
  CHECK(door.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
  CHECK(door.origin_allowed("http://localhost:8080", "localhost:8080"));
  CHECK(door.origin_allowed("https://ws.example.com", "ws.example.com"));
  CHECK(door.origin_allowed("https://OPS.example.com", "127.0.0.1:8080"));
  // Another port on the same host is another origin (another local app).
  CHECK_FALSE(door.origin_allowed("http://127.0.0.1:3000", "127.0.0.1:8080"));
  CHECK_FALSE(door.origin_allowed("http://localhost:8080", "127.0.0.1:8080"));
  CHECK_FALSE(door.origin_allowed("null", "127.0.0.1:8080"));
  CHECK_FALSE(door.origin_allowed("http://evil.example", "evil.example"));  // host not allowed
  CHECK_FALSE(door.origin_allowed("ftp://127.0.0.1:8080", "127.0.0.1:8080"));
  CHECK_FALSE(door.origin_allowed("", "127.0.0.1:8080"));
}

TEST_CASE("JSON media types", "[unit]") {
  CHECK(is_json_media_type("application/json"));
  CHECK(is_json_media_type("Application/JSON; charset=utf-8"));
  CHECK(is_json_media_type(" application/json ;charset=UTF-8"));
  CHECK_FALSE(is_json_media_type("text/plain"));
  CHECK_FALSE(is_json_media_type("application/json-seq"));
  CHECK_FALSE(is_json_media_type("application/x-www-form-urlencoded"));
  CHECK_FALSE(is_json_media_type(""));
}

TEST_CASE("snapshot key namespaces", "[unit]") {
  const json keyed = {{"cmd", {"true"}}, {"snapshot", {{"key", "ci/app/main"}}}};
  CHECK_FALSE(snapshot_key_problem(keyed, std::nullopt));
  CHECK_FALSE(snapshot_key_problem(keyed, std::string("ci/")));
  CHECK(snapshot_key_problem(keyed, std::string("team-b/")));
  const json exact = {{"cmd", {"true"}}, {"snapshot", {{"key", "ci/"}}}};
  CHECK(snapshot_key_problem(exact, std::string("ci/")));  // the prefix alone is no key
  const json cold = {{"cmd", {"true"}}};
  CHECK_FALSE(snapshot_key_problem(cold, std::string("ci/")));
}

TEST_CASE("job summaries keep env names, drop values and the log tail", "[unit]") {
  const json record = {{"id", "j"},
                       {"state", "running"},
                       {"log_tail", "token=abc"},
                       {"spec", {{"cmd", {"true"}}, {"env", {{"B", "2"}, {"A", "secret"}}}}}};
  const json summary = job_summary(record);
  CHECK(summary["id"] == "j");
  CHECK_FALSE(summary.contains("log_tail"));
  CHECK_FALSE(summary["spec"].contains("env"));
  CHECK(summary["spec"]["env_keys"] == json::array({"A", "B"}));
  CHECK(summary["spec"]["cmd"] == json::array({"true"}));
  CHECK(summary.dump().find("secret") == std::string::npos);
}
