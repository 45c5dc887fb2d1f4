#include "queue/job.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::queue;
using nlohmann::json;

namespace {
JobSpec full_spec() {
  JobSpec s;
  s.id = "job-1";
  s.queue = "gpu";
  s.image = "worker:2";
  s.cmd = {"sh", "-c", "make test"};
  s.env = {{"KEY", "value"}};
  s.snapshot = SnapshotSpec{"repo-42/branch-main", true, false};
  s.timeout_s = 60;
  s.max_attempts = 3;
  s.concurrency_key = "repo-42";
  s.resources = {256, 0.5, 64};
  s.labels = {{"team", "x"}};
  return s;
}
}  // namespace

TEST_CASE("JobState names round-trip", "[unit][job]") {
  for (JobState s : kAllStates) CHECK(parse_state(to_string(s)) == s);
  CHECK_FALSE(parse_state("done"));
  CHECK(to_string(JobState::timed_out) == "timed_out");
  CHECK(is_terminal(JobState::cancelled));
  CHECK_FALSE(is_terminal(JobState::scheduled));
}

TEST_CASE("JobSpec JSON round-trips and matches DESIGN.md's field names", "[unit][job]") {
  JobSpec s = full_spec();
  json j = s.to_json();
  CHECK(j == json::parse(R"({"id": "job-1", "queue": "gpu", "image": "worker:2",
      "cmd": ["sh", "-c", "make test"], "env": {"KEY": "value"},
      "snapshot": {"key": "repo-42/branch-main", "reuse": true, "commit": false},
      "timeout_s": 60, "max_attempts": 3, "concurrency_key": "repo-42",
      "resources": {"memory_mb": 256, "cpus": 0.5, "pids": 64}, "labels": {"team": "x"}})"));
  CHECK(JobSpec::from_json(j) == s);
}

TEST_CASE("JobSpec defaults fill what the JSON leaves out", "[unit][job]") {
  JobSpec s = JobSpec::from_json(json::parse(R"({"id": "a", "cmd": ["true"]})"));
  CHECK(s.queue == "default");
  CHECK(s.image.empty());
  CHECK_FALSE(s.snapshot);
  CHECK(s.timeout_s == 0);  // the router's default_timeout applies
  CHECK(s.max_attempts == 1);
  CHECK(s.resources == ResourceSpec{1024, 1.0, 512});
  json j = s.to_json();
  CHECK_FALSE(j.contains("image"));
  CHECK_FALSE(j.contains("snapshot"));
  CHECK_FALSE(j.contains("concurrency_key"));
  CHECK_FALSE(j.contains("timeout_s"));
  CHECK_THROWS_WITH(JobSpec::from_json(json::parse(R"({"id": "a"})")), "cmd is missing");
}

TEST_CASE("JobRecord JSON has exactly the contract's fields", "[unit][job]") {
  JobRecord r;
  r.id = "job-1";
  r.state = JobState::succeeded;
  r.attempts = 2;
  r.created_at = 1'795'312'061'123;
  r.started_at = 1'795'312'062'000;
  r.finished_at = 1'795'312'063'500;
  r.exit_code = 0;
  r.image = "warmstart-snap:abc";
  r.from_snapshot = true;
  r.container_id = "c0ffee";
  r.router_id = "router-a";
  r.host = "host-a";
  r.affinity_host = "host-b";
  r.spec = full_spec();
  r.log_tail = "ok\n";
  json j = r.to_json();
  CHECK(j["affinity"] == "miss");
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"affinity",
                                         "affinity_host",
                                         "attempts",
                                         "container_id",
                                         "created_at",
                                         "error",
                                         "exit_code",
                                         "finished_at",
                                         "from_snapshot",
                                         "host",
                                         "id",
                                         "image",
                                         "log_tail",
                                         "router_id",
                                         "snapshot_error",
                                         "snapshot_fallback",
                                         "spec",
                                         "started_at",
                                         "state",
                                         "waiting_for_key",
                                         "waiting_for_snapshot"});
  CHECK(j["created_at"] == "2026-11-22T01:47:41.123Z");
  CHECK(j["finished_at"] == "2026-11-22T01:47:43.500Z");
  CHECK(j["error"].is_null());
  CHECK(j["state"] == "succeeded");
  CHECK(JobRecord::from_json(j) == r);
}

TEST_CASE("JobRecord JSON uses null for what has not happened", "[unit][job]") {
  JobRecord r;
  r.id = "q";
  r.created_at = 0;
  r.spec.id = "q";
  r.spec.cmd = {"true"};
  json j = r.to_json();
  CHECK(j["started_at"].is_null());
  CHECK(j["finished_at"].is_null());
  CHECK(j["exit_code"].is_null());
  CHECK(j["image"].is_null());
  CHECK(j["container_id"].is_null());
  CHECK(j["router_id"].is_null());
  CHECK(j["from_snapshot"] == false);
  CHECK(JobRecord::from_json(j) == r);
}

TEST_CASE("a job hash with garbage fields reads as a record, never throws", "[unit][job]") {
  const std::string deep_spec = std::string(100000, '[') + std::string(100000, ']');
  std::unordered_map<std::string_view, std::string_view> fields = {
      {"id", "j1"},
      {"state", "no-such-state"},
      {"attempts", "99999999999999999999"},
      {"exit_code", "4294967296"},
      {"created_at", "12x"},
      {"spec", deep_spec},
      {"queue", "q"}};
  JobRecord r = JobRecord::from_hash(fields);
  CHECK(r.id == "j1");
  CHECK(r.state == JobState::failed);
  CHECK(r.attempts == 0);
  CHECK_FALSE(r.exit_code);
  CHECK(r.created_at == 0);
  CHECK(r.spec.id == "j1");
  CHECK(r.spec.queue == "q");
  CHECK(r.spec.cmd.empty());
}

TEST_CASE("a record read back from JSON refuses out-of-range numbers", "[unit][job]") {
  auto j = json::parse(R"({"id": "a", "state": "queued", "attempts": 1e300,
                           "created_at": "2026-01-01T00:00:00Z", "spec": {"id": "a", "cmd": ["x"]}})");
  CHECK_THROWS_AS(JobRecord::from_json(j), std::invalid_argument);
}

TEST_CASE("keep_tail keeps the last bytes and never starts inside a UTF-8 sequence",
          "[unit][job]") {
  CHECK(keep_tail("short", 10) == "short");
  CHECK(keep_tail("0123456789", 4) == "6789");
  // "é" is 0xC3 0xA9: a cut at its second byte moves on past it.
  CHECK(keep_tail("ab\xC3\xA9xy", 3) == "xy");
  CHECK(keep_tail("ab\xC3\xA9xy", 4) == "\xC3\xA9xy");
  CHECK(keep_tail("", 0).empty());
}
