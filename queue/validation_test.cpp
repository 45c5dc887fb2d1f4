#include "queue/validation.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::queue;

namespace {
// The reason a job is rejected for, or "ok".
std::string verdict(const std::string& text) {
  Validated v = validate_job_text(text);
  return v.ok() ? "ok" : v.reason;
}
}  // namespace

TEST_CASE("a minimal job is valid and gets a unique id", "[unit][validation]") {
  Validated a = validate_job_text(R"({"cmd": ["true"]})");
  Validated b = validate_job_text(R"({"cmd": ["true"]})");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(is_valid_job_id(a.spec->id));
  CHECK(a.spec->id.rfind("j-", 0) == 0);
  CHECK(a.spec->id != b.spec->id);
  CHECK(a.id == a.spec->id);
}

TEST_CASE("the full DESIGN.md example validates", "[unit][validation]") {
  Validated v = validate_job_text(R"({ "id": "repo-42:build.7", "queue": "default",
    "image": "worker:latest", "cmd": ["sh", "-c", "make test"], "env": {"KEY": "value"},
    "snapshot": {"key": "repo-42/branch-main", "reuse": true, "commit": true},
    "timeout_s": 1800, "max_attempts": 1, "concurrency_key": "repo-42",
    "resources": {"memory_mb": 1024, "cpus": 1.0, "pids": 512}, "labels": {"team": "x"} })");
  REQUIRE(v.ok());
  CHECK(v.spec->id == "repo-42:build.7");
  CHECK(v.spec->snapshot->key == "repo-42/branch-main");
}

TEST_CASE("schema violations are rejected with a one-line reason", "[unit][validation]") {
  CHECK(verdict("{") == "job is not valid JSON");
  CHECK(verdict("[1]") == "a job must be a JSON object");
  CHECK(verdict(R"({})") == "cmd is missing");
  CHECK(verdict(R"({"cmd": []})") == "cmd must be a non-empty array of strings");
  CHECK(verdict(R"({"cmd": "ls"})") == "cmd must be a non-empty array of strings");
  CHECK(verdict(R"({"cmd": ["ls", 1]})") == "cmd must be a non-empty array of strings");
  CHECK(verdict(R"({"cmd": [""]})") == "cmd[0] must not be empty");
  CHECK(verdict(R"({"cmd": ["ls"], "id": "a b"})") == "id must match [A-Za-z0-9._:-]{1,128}");
  CHECK(verdict(R"({"cmd": ["ls"], "id": "a_b"})") == "ok");  // '_' is in the documented pattern
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"key": "k", "prewarm": true}})") == "ok");
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"key": "k", "prewarm": true, "commit": false}})") ==
        "snapshot.prewarm needs snapshot.commit");
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"key": "k", "prewarm": 1}})") ==
        "snapshot.prewarm must be true or false");
  CHECK(verdict(R"({"cmd": ["ls"], "id": ""})") == "id must match [A-Za-z0-9._:-]{1,128}");
  CHECK(verdict(R"({"cmd": ["ls"], "id": ")" + std::string(129, 'a') + "\"}") ==
        "id must match [A-Za-z0-9._:-]{1,128}");
  CHECK(verdict(R"({"cmd": ["ls"], "id": ")" + std::string(128, 'a') + "\"}") == "ok");
  CHECK(verdict(R"({"cmd": ["ls"], "env": {"1A": "x"}})") ==
        "env key \"1A\" must match [A-Za-z_][A-Za-z0-9_]*");
  CHECK(verdict(R"({"cmd": ["ls"], "env": {"A-B": "x"}})") ==
        "env key \"A-B\" must match [A-Za-z_][A-Za-z0-9_]*");
  CHECK(verdict(R"({"cmd": ["ls"], "env": {"_A1": "x"}})") == "ok");
  CHECK(verdict(R"({"cmd": ["ls"], "env": {"A": 1}})") == "env.A must be a string");
  CHECK(verdict(R"({"cmd": ["ls"], "timeout_s": 0})") == "timeout_s must be in 1..2592000, got 0");
  CHECK(verdict(R"({"cmd": ["ls"], "timeout_s": "30m"})") == "timeout_s must be an integer");
  CHECK(verdict(R"({"cmd": ["ls"], "max_attempts": 0})") ==
        "max_attempts must be in 1..100, got 0");
  CHECK(verdict(R"({"cmd": ["ls"], "max_attempts": 101})") ==
        "max_attempts must be in 1..100, got 101");
  CHECK(verdict(R"({"cmd": ["ls"], "max_attempts": 100})") == "ok");
  CHECK(verdict(R"({"cmd": ["ls"], "resources": {"memory_mb": 1}})") ==
        "memory_mb must be in 6..1048576, got 1");
  CHECK(verdict(R"({"cmd": ["ls"], "resources": {"cpus": 0}})") ==
        "resources.cpus must be in 0.01..1024");
  CHECK(verdict(R"({"cmd": ["ls"], "resources": {"pids": -1}})") ==
        "pids must be in 1..4194304, got -1");
  CHECK(verdict(R"({"cmd": ["ls"], "resources": {"gpus": 1}})") ==
        "unknown field \"resources.gpus\"");
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"reuse": true}})") == "snapshot.key is missing");
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"key": "a b"}})") ==
        "snapshot.key must match [A-Za-z0-9._:/@+_-]{1,256}");
  CHECK(verdict(R"({"cmd": ["ls"], "snapshot": {"key": "k", "reuse": "yes"}})") ==
        "snapshot.reuse must be true or false");
  CHECK(verdict(R"({"cmd": ["ls"], "labels": {"warmstart.job": "x"}})") ==
        "label keys starting with warmstart. are reserved");
  CHECK(verdict(R"({"cmd": ["ls"], "colour": "red"})") == "unknown field \"colour\"");
  CHECK(verdict(R"({"cmd": ["ls"], "image": "a b"})") == "image must not contain whitespace");
  CHECK(verdict(R"({"cmd": ["ls"], "queue": "q/1"})") == "queue must match [A-Za-z0-9._:-]{1,128}");
}

TEST_CASE("privilege requests are rejected with a reason", "[unit][validation]") {
  CHECK(verdict(R"({"cmd": ["ls"], "privileged": true})") ==
        "privileged containers are not allowed");
  CHECK(verdict(R"({"cmd": ["ls"], "binds": ["/:/host"]})") ==
        "host binds and mounts are not allowed");
  CHECK(verdict(R"({"cmd": ["ls"], "network_mode": "host"})") == "host network is not allowed");
  CHECK(verdict(R"({"cmd": ["ls"], "network_mode": "bridge"})") ==
        "network_mode is set by the router's configuration, not by a job");
  CHECK(verdict(R"({"cmd": ["ls"], "cap_add": ["SYS_ADMIN"]})") ==
        "adding capabilities is not allowed");
  CHECK(verdict(R"({"cmd": ["ls"], "HostConfig": {}})") == "HostConfig is not allowed in a job");
  // Asking for nothing is not a privilege request, but still not a job field.
  CHECK(verdict(R"({"cmd": ["ls"], "privileged": false})") == "unknown field \"privileged\"");
}

TEST_CASE("the payload size limit applies to the JSON text", "[unit][validation]") {
  ValidationOptions small;
  small.max_payload_bytes = 100;
  std::string big = R"({"cmd": ["echo", ")" + std::string(200, 'x') + "\"]}";
  Validated v = validate_job_text(big, small);
  CHECK_FALSE(v.ok());
  CHECK(v.reason == "job is " + std::to_string(big.size()) + " bytes; the limit is 100");
  CHECK(validate_job_text(big).ok());  // default limit: 256 KiB
  std::string huge = R"({"cmd": ["echo", ")" + std::string(300 * 1024, 'x') + "\"]}";
  CHECK_THAT(validate_job_text(huge).reason, Catch::EndsWith("the limit is 262144"));
}

TEST_CASE("a rejected job still reports its id when readable", "[unit][validation]") {
  Validated v = validate_job_text(R"({"id": "bad-1", "cmd": []})");
  CHECK_FALSE(v.ok());
  CHECK(v.id == "bad-1");
}

TEST_CASE("ids accept '_' as documented: a webhook named ci_push gets valid ids",
          "[unit][validation]") {
  CHECK(is_valid_job_id("wh-ci_push-d_1"));
  CHECK(is_valid_job_id("_"));
  CHECK_FALSE(is_valid_job_id("a/b"));
  CHECK_FALSE(is_valid_job_id("a b"));
}

TEST_CASE("a deeply nested job is refused without recursion (issue 12)", "[unit][validation]") {
  // 800 KB of nested arrays in an unknown field: dump() of it overflowed the stack.
  const std::string deep = std::string(400 * 1024, '[') + std::string(400 * 1024, ']');
  const std::string text = R"({"cmd": ["true"], "x": )" + deep + "}";
  ValidationOptions roomy;
  roomy.max_payload_bytes = 1 << 20;
  CHECK(validate_job_text(text, roomy).reason == "job is nested deeper than 64 levels");
  // The same document built in code (not from text) is refused the same way.
  nlohmann::json job = {{"cmd", {"true"}}};
  nlohmann::json* cursor = &job["x"];
  for (int i = 0; i < 400 * 1024; ++i) {
    *cursor = nlohmann::json::array({nullptr});
    cursor = &(*cursor)[0];
  }
  CHECK(validate_job(job, roomy).reason == "job is nested deeper than 64 levels");
}

TEST_CASE("a job built in code with invalid UTF-8 is refused, not thrown", "[unit][validation]") {
  nlohmann::json job = {{"cmd", {"echo", std::string("\xff")}}};
  CHECK(validate_job(job).reason == "job strings must be valid UTF-8");
}

TEST_CASE("operator ceilings: over one is refused naming the limit", "[unit][validation]") {
  ValidationOptions capped;
  capped.limits = JobLimits{2048, 2.0, 256, 3600};
  auto verdict_capped = [&](const std::string& text) {
    Validated v = validate_job_text(text, capped);
    return v.ok() ? "ok" : v.reason;
  };
  CHECK(verdict_capped(R"({"cmd": ["ls"], "resources": {"pids": 4194304}})") ==
        "resources.pids 4194304 is over the operator's ceiling limits.pids = 256");
  CHECK(verdict_capped(R"({"cmd": ["ls"], "resources": {"memory_mb": 1024000}})") ==
        "resources.memory_mb 1024000 is over the operator's ceiling limits.memory = 2048 MiB");
  CHECK(verdict_capped(R"({"cmd": ["ls"], "resources": {"cpus": 2.5}})") ==
        "resources.cpus 2.5 is over the operator's ceiling limits.cpus = 2");
  CHECK(verdict_capped(R"({"cmd": ["ls"], "timeout_s": 7200})") ==
        "timeout_s 7200 is over the operator's ceiling limits.timeout = 3600 s");
  CHECK(verdict_capped(R"({"cmd": ["ls"], "resources": {"memory_mb": 2048, "pids": 256}})") ==
        "ok");
  // Without ceilings only the absolute ranges apply.
  CHECK(verdict(R"({"cmd": ["ls"], "resources": {"pids": 4194304}})") == "ok");
}

TEST_CASE("operator ceilings below the defaults lower a job that asks for nothing",
          "[unit][validation]") {
  ValidationOptions capped;
  capped.limits = JobLimits{512, 0.5, 100, 600};
  Validated v = validate_job_text(R"({"cmd": ["ls"]})", capped);
  REQUIRE(v.ok());
  CHECK(v.spec->resources.memory_mb == 512);
  CHECK(v.spec->resources.cpus == 0.5);
  CHECK(v.spec->resources.pids == 100);
  // No timeout named: 0 stays "the router's default_timeout", which the router
  // caps at limits.timeout (router/job_executor.cpp effective_timeout_s).
  CHECK(v.spec->timeout_s == 0);
  // What went through to_json() (the queue re-validates it) stays valid.
  CHECK(validate_job(v.spec->to_json(), capped).ok());
}

TEST_CASE("published limits round-trip and refuse garbage", "[unit][validation]") {
  JobLimits limits{2048, 1.5, 64, 60};
  CHECK(limits_from_json(limits_to_json(limits)) == limits);
  CHECK_FALSE(limits_from_json(nlohmann::json::parse(R"({"memory_mb": 1})")));
  CHECK_FALSE(limits_from_json(
      nlohmann::json::parse(R"({"memory_mb": 1, "cpus": 0, "pids": 1, "timeout_s": 1})")));
  CHECK_FALSE(limits_from_json(nlohmann::json::parse("[]")));
}
