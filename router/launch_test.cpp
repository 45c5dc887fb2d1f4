#include "router/launch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

using namespace warmstart::router;

namespace {
bool has_env(const warmstart::container::ContainerSpec& s, const std::string& kv) {
  return std::find(s.env.begin(), s.env.end(), kv) != s.env.end();
}
bool has_env_key(const warmstart::container::ContainerSpec& s, const std::string& key) {
  return std::any_of(s.env.begin(), s.env.end(),
                     [&](const std::string& e) { return e.rfind(key + "=", 0) == 0; });
}
}  // namespace

TEST_CASE("launch spec carries labels, worker env and secure defaults", "[unit][launch]") {
  LaunchRequest r;
  r.router_id = "r1";
  r.job_id = "job:42";
  r.attempt = 2;
  r.image = "warmstart-snapshot/abc:g3";
  r.from_snapshot = true;
  r.snapshot_key = "repo-42/main";
  r.commit_on_success = true;
  r.cmd = {"sh", "-c", "make"};
  r.env = {{"TOKEN", "s3cret"}, {"WARMSTART_SNAPSHOT_REUSE", "0"}};
  r.resources.memory_bytes = 512 << 20;
  auto spec = make_container_spec(r);

  CHECK(spec.name == "warmstart-job_c42-2");
  CHECK(spec.labels.at("warmstart.managed") == "true");
  CHECK(spec.labels.at("warmstart.job") == "job:42");
  CHECK(spec.labels.at("warmstart.router") == "r1");
  CHECK(spec.labels.at("warmstart.attempt") == "2");
  CHECK(spec.labels.at("warmstart.snapshot.key") == "repo-42/main");
  CHECK(has_env(spec, "WARMSTART_JOB_ID=job:42"));
  CHECK(has_env(spec, "WARMSTART_ATTEMPT=2"));
  CHECK(has_env(spec, "WARMSTART_SNAPSHOT_KEY=repo-42/main"));
  CHECK(has_env(spec, "WARMSTART_SNAPSHOT_REUSE=1"));  // the job cannot override it
  CHECK(has_env(spec, "WARMSTART_SNAPSHOT_COMMIT=1"));
  CHECK(has_env(spec, "TOKEN=s3cret"));
  CHECK(spec.network_mode == "none");
  CHECK(spec.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(spec.security_opt == std::vector<std::string>{"no-new-privileges"});
  CHECK(spec.resources.memory_bytes == 512 << 20);
  CHECK(spec.resources.memory_swap_bytes == 512 << 20);  // no swap on top
}

TEST_CASE("every container gets a bounded log and an open-files limit", "[unit][launch]") {
  LaunchRequest r;
  r.job_id = "j";
  r.image = "warmstart-worker:latest";
  auto defaults = make_container_spec(r);
  CHECK(defaults.log.type == "json-file");
  CHECK(defaults.log.options.at("max-size") == "10m");
  CHECK(defaults.log.options.at("max-file") == "3");
  REQUIRE(defaults.ulimits.size() == 1);
  CHECK(defaults.ulimits[0].name == "nofile");
  CHECK(defaults.ulimits[0].soft == 16384);
  CHECK(defaults.ulimits[0].hard == 16384);

  r.caps.log_max_size = "1m";
  r.caps.log_max_files = 1;
  r.caps.nofile = 256;
  auto capped = make_container_spec(r);
  CHECK(capped.log.options.at("max-size") == "1m");
  CHECK(capped.log.options.at("max-file") == "1");
  CHECK(capped.ulimits[0].soft == 256);
}

TEST_CASE("container names are unique per job id", "[unit][launch]") {
  // Ids differing only in ':' and '_' must not share a container name.
  CHECK(container_name("a:b", 1) == "warmstart-a_cb-1");
  CHECK(container_name("a_b", 1) == "warmstart-a__b-1");
  CHECK(container_name("a_cb", 1) == "warmstart-a__cb-1");
  CHECK(container_name("a.b-c", 2) == "warmstart-a.b-c-2");
}

TEST_CASE("fallback launch: no reuse variable, commit still on", "[unit][launch]") {
  LaunchRequest r;
  r.job_id = "j";
  r.image = "warmstart-worker:latest";
  r.snapshot_key = "k";
  r.from_snapshot = false;
  r.commit_on_success = true;
  auto spec = make_container_spec(r);
  CHECK_FALSE(has_env_key(spec, "WARMSTART_SNAPSHOT_REUSE"));
  CHECK(has_env(spec, "WARMSTART_SNAPSHOT_COMMIT=1"));
}

TEST_CASE("no snapshot key: no snapshot variables or label", "[unit][launch]") {
  LaunchRequest r;
  r.job_id = "j";
  r.image = "img";
  r.env = {{"WARMSTART_SNAPSHOT_KEY", "spoof"}};
  auto spec = make_container_spec(r);
  CHECK_FALSE(has_env_key(spec, "WARMSTART_SNAPSHOT_KEY"));
  CHECK(spec.labels.count("warmstart.snapshot.key") == 0);
}
