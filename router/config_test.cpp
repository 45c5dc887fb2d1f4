#include "router/config.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

using namespace warmstart::router;
using namespace std::chrono_literals;

namespace {
std::string write_temp(const std::string& text) {
  char name[] = "/tmp/warmstart-config-XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(name) << text;
  return name;
}
}  // namespace

TEST_CASE("config file overrides defaults", "[unit][config]") {
  auto path = write_temp(R"(
[router]
id = "host-a"
concurrency = 8
queues = ["default", "gpu"]
image_allowlist = ["tools/*"]
lease_timeout = "45s"
stop_grace = 3
[snapshots]
max_bytes = "2g"
ttl = "12h"
)");
  RouterConfig c;
  load_config_file(path, c);
  std::remove(path.c_str());
  CHECK(c.router_id == "host-a");
  CHECK(c.concurrency == 8);
  CHECK(c.queues == std::vector<std::string>{"default", "gpu"});
  CHECK(c.lease_timeout == 45s);
  CHECK(c.stop_grace == 3s);
  CHECK(c.snapshot_max_bytes == (2LL << 30));
  CHECK(c.snapshot_ttl == 12h);
  CHECK(c.base_image == "warmstart-worker:latest");  // untouched default
  CHECK_NOTHROW(validate(c));
}

TEST_CASE("config errors name the key and the reason", "[unit][config]") {
  auto path = write_temp("[router]\nlease_timeout = \"soon\"\n");
  RouterConfig c;
  try {
    load_config_file(path, c);
    FAIL("expected an error");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("router.lease_timeout") && Catch::Contains("soon"));
  }
  std::remove(path.c_str());

  RouterConfig host_net;
  host_net.network_mode = "host";
  CHECK_THROWS_WITH(validate(host_net), Catch::Contains("never allowed"));

  RouterConfig no_starts;
  CHECK(no_starts.start_concurrency == 8);
  no_starts.start_concurrency = 0;
  CHECK_THROWS_WITH(validate(no_starts), Catch::Contains("start_concurrency"));
}

TEST_CASE("unknown and removed keys are errors, never ignored", "[unit][config]") {
  RouterConfig c;
  auto typo = write_temp("[router]\nconcurency = 8\n");
  CHECK_THROWS_WITH(load_config_file(typo, c),
                    Catch::Contains("router.concurency") && Catch::Contains("unknown key"));
  std::remove(typo.c_str());
  auto removed = write_temp("[snapshots]\nmax_depth = 32\n");
  CHECK_THROWS_WITH(load_config_file(removed, c),
                    Catch::Contains("snapshots.max_depth") && Catch::Contains("flattened"));
  std::remove(removed.c_str());
}

TEST_CASE("docker host forms", "[unit][config]") {
  CHECK(docker_socket_path("unix:///var/run/docker.sock") == "/var/run/docker.sock");
  CHECK(docker_socket_path("/tmp/d.sock") == "/tmp/d.sock");
  CHECK_THROWS_WITH(docker_socket_path("tcp://10.0.0.1:2375"), Catch::Contains("only unix"));
}

TEST_CASE("state_dir and snapshot hygiene keys", "[unit][config]") {
  auto path = write_temp(R"(
[router]
state_dir = "/srv/warmstart/state"
[snapshots]
exclude = ["/root/.netrc", "/home/*/.ssh/id_*"]
strip_git_credentials = false
)");
  RouterConfig c;
  CHECK_FALSE(c.snapshot_exclude);  // the documented default list applies
  CHECK(c.snapshot_strip_git_credentials);
  load_config_file(path, c);
  std::remove(path.c_str());
  CHECK(c.state_dir == "/srv/warmstart/state");
  REQUIRE(c.snapshot_exclude);
  CHECK(*c.snapshot_exclude == std::vector<std::string>{"/root/.netrc", "/home/*/.ssh/id_*"});
  CHECK_FALSE(c.snapshot_strip_git_credentials);
  CHECK_NOTHROW(validate(c));

  RouterConfig relative;
  relative.state_dir = "state";
  CHECK_THROWS_WITH(validate(relative), Catch::Contains("state_dir"));
  RouterConfig root_excluded;
  root_excluded.snapshot_exclude = std::vector<std::string>{"/"};
  CHECK_THROWS_WITH(validate(root_excluded), Catch::Contains("snapshots.exclude"));
  RouterConfig not_absolute;
  not_absolute.snapshot_exclude = std::vector<std::string>{"tmp"};
  CHECK_THROWS_WITH(validate(not_absolute), Catch::Contains("snapshots.exclude"));

  ::setenv("WARMSTART_STATE_DIR", "/from/env", 1);
  RouterConfig env;
  apply_environment(env);
  ::unsetenv("WARMSTART_STATE_DIR");
  CHECK(env.state_dir == "/from/env");
  CHECK(default_state_dir().front() == '/');
}

TEST_CASE("[limits]: ceilings and container caps, with safe defaults", "[unit][config]") {
  RouterConfig defaults;
  CHECK(defaults.job_limits.memory_mb == 8192);
  CHECK(defaults.job_limits.pids == 1024);
  CHECK(defaults.container_caps.log_max_size == "10m");
  CHECK_NOTHROW(validate(defaults));

  auto path = write_temp(R"(
[limits]
memory = "2g"
cpus = 1.5
pids = 256
timeout = "2h"
log_tail = "128k"
log_max_size = "5m"
log_max_files = 2
nofile = 2048
)");
  RouterConfig c;
  load_config_file(path, c);
  std::remove(path.c_str());
  CHECK(c.job_limits.memory_mb == 2048);
  CHECK(c.job_limits.cpus == 1.5);
  CHECK(c.job_limits.pids == 256);
  CHECK(c.job_limits.timeout_s == 7200);
  CHECK(c.log_tail_bytes == 128 * 1024);
  CHECK(c.container_caps.log_max_size == "5m");
  CHECK(c.container_caps.log_max_files == 2);
  CHECK(c.container_caps.nofile == 2048);
  CHECK_NOTHROW(validate(c));
}

TEST_CASE("[limits]: unknown keys and out-of-range values are refused", "[unit][config]") {
  auto load = [](const std::string& text) {
    auto path = write_temp(text);
    RouterConfig c;
    try {
      load_config_file(path, c);
      validate(c);
    } catch (...) {
      std::remove(path.c_str());
      throw;
    }
    std::remove(path.c_str());
  };
  CHECK_THROWS_WITH(load("[limits]\nmemroy = \"1g\""),
                    Catch::Contains("limits.memroy: unknown key"));
  CHECK_THROWS_WITH(load("[limits]\npids = 0"), Catch::Contains("limits.pids"));
  CHECK_THROWS_WITH(load("[limits]\nmemory = \"99999999999t\""), Catch::Contains("not a size"));
  CHECK_THROWS_WITH(load("[limits]\nlog_max_size = \"lots\""), Catch::Contains("log_max_size"));
  CHECK_THROWS_WITH(load("[limits]\nnofile = 1"), Catch::Contains("limits.nofile"));
}

TEST_CASE("a config nested past toml++'s bound is an error, not a crash", "[unit][config]") {
  auto path = write_temp("a = " + std::string(100000, '[') + std::string(100000, ']') + "\n");
  RouterConfig c;
  CHECK_THROWS_AS(load_config_file(path, c), std::invalid_argument);
  std::remove(path.c_str());
}

TEST_CASE("deeply dotted keys are refused before toml++ sees them", "[unit][config]") {
  // 100k parts overflow toml++'s recursive table destructor (found by hand, toml++ 3.3).
  std::string key = "a";
  for (int i = 0; i < 100000; ++i) key += ".b";
  auto path = write_temp(key + " = 1\n");
  RouterConfig c;
  CHECK_THROWS_WITH(load_config_file(path, c), Catch::Contains("dotted keys nested too deep"));
  std::remove(path.c_str());
  // Dots in strings and comments do not count.
  auto fine = write_temp("# " + std::string(10000, '.') + "\n[router]\nbase_image = \"" +
                         std::string(10000, '.') + "\"\n");
  CHECK_NOTHROW(load_config_file(fine, c));
  std::remove(fine.c_str());
}
