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
