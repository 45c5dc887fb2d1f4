#include "api/job_body.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using nlohmann::json;

TEST_CASE("job bodies: the contract's example is accepted", "[unit]") {
  const json job = json::parse(R"({
    "id": "build-42:main", "queue": "default", "cmd": ["sh", "-c", "make test"],
    "env": {"KEY": "value"}, "snapshot": {"key": "repo-42/branch-main", "reuse": true, "commit": true},
    "timeout_s": 1800, "max_attempts": 1, "concurrency_key": "repo-42",
    "resources": {"memory_mb": 1024, "cpus": 1.5, "pids": 512}, "labels": {"team": "x"}})");
  CHECK_FALSE(job_body_problem(job));
}

TEST_CASE("job bodies: each problem is named", "[unit]") {
  auto problem = [](const char* text) { return job_body_problem(json::parse(text)).value_or(""); };
  CHECK(problem(R"([1])") == "job must be a JSON object");
  CHECK(problem(R"({})") == "job.cmd must be a non-empty array of strings");
  CHECK(problem(R"({"cmd": []})") == "job.cmd must be a non-empty array of strings");
  CHECK(problem(R"({"cmd": ["a", 1]})") == "job.cmd must be a non-empty array of strings");
  CHECK(problem(R"({"cmd": ["a"], "id": "a/b"})") == "job.id must match [A-Za-z0-9._:-]{1,128}");
  CHECK(problem(R"({"cmd": ["a"], "id": ""})") == "job.id must match [A-Za-z0-9._:-]{1,128}");
  CHECK(problem(R"({"cmd": ["a"], "env": {"A": 1}})") == "job.env must be an object of strings");
  CHECK(problem(R"({"cmd": ["a"], "timeout_s": 0})") == "job.timeout_s must be a positive integer");
  CHECK(problem(R"({"cmd": ["a"], "snapshot": {"reuse": true}})") ==
        "job.snapshot.key must be a non-empty string");
  CHECK(problem(R"({"cmd": ["a"], "privileged": true})") == "job.privileged is not allowed");
  CHECK(problem(R"({"cmd": ["a"], "binds": ["/:/host"]})") == "job.binds is not allowed");
  CHECK(problem(R"({"cmd": ["a"], "network_mode": "host"})") == "job.network_mode is not allowed");
  CHECK(problem(R"({"cmd": ["a"], "resources": {"cpus": -1}})") ==
        "job.resources.cpus must be a positive number");
}
