// Every documented key of [router] and [snapshots] (deploy/router.example.toml)
// reaches the component it changes: a non-default value in, the option out.
// The keys the dispatcher itself reads (concurrency, default_timeout,
// reconcile_interval, stop_grace, orphan_grace, log_tail_bytes, allowlist,
// base_image) have behaviour tests in dispatcher_test.cpp.
#include "router/wiring.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

using namespace warmstart;
using namespace warmstart::router;

TEST_CASE("wiring: each key lands in its component's options", "[unit][config]") {
  RouterConfig c;
  c.redis_url = "redis://user:pw@127.0.0.2:6390/3";
  c.docker_host = "unix:///run/other.sock";
  c.key_prefix = "tenant:";
  c.queues = {"gpu", "default"};
  c.lease_timeout = 45s;
  c.concurrency_key_limit = 3;
  c.log_tail_bytes = 1234;
  c.docker_timeout = 7s;
  c.concurrency = 50;
  c.snapshot_ttl = 2h;
  c.snapshot_max_count = 7;
  c.snapshot_max_bytes = 1 << 20;
  c.snapshot_work_dir = "/srv/ws";
  c.host_id = "rack-3.box-7";

  auto q = queue_options(c);
  CHECK(q.redis.url.host == "127.0.0.2");
  CHECK(q.redis.url.port == 6390);
  CHECK(q.redis.url.db == 3);
  CHECK(q.redis.url.user == "user");
  CHECK(q.key_prefix == "tenant:");
  CHECK(q.queues == std::vector<std::string>{"gpu", "default"});
  CHECK(q.lease_timeout == 45s);
  CHECK(q.concurrency_key_limit == 3);
  CHECK(q.log_tail_max_bytes == 1234);

  auto d = docker_options(c);
  CHECK(d.socket_path == "/run/other.sock");
  CHECK(d.request_timeout == 7s);
  CHECK(d.max_cached_connections >= 58);

  auto s = snapshot_options(c);
  CHECK(s.registry.key_prefix == "tenant:snapshots:");
  CHECK(s.eviction.ttl == 2h);
  CHECK(s.eviction.max_count == 7);
  CHECK(s.eviction.max_bytes == (1 << 20));
  CHECK(s.work_dir == "/srv/ws");
  CHECK(s.host_id == "rack-3.box-7");

  CHECK_THROWS_WITH(redis_options("rediss://127.0.0.1:6379/0"), Catch::Contains("TLS"));
}

TEST_CASE("wiring: every key the example config documents is one the loader reads",
          "[unit][config]") {
  std::ifstream in(std::string(WARMSTART_SOURCE_DIR) + "/deploy/router.example.toml");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  // "# key = value" lines under [router], [snapshots] and [redis].
  std::regex line(R"(^# ([a-z_]+) = )");
  std::string section;
  std::set<std::string> documented;
  std::istringstream lines(text.str());
  for (std::string l; std::getline(lines, l);) {
    if (!l.empty() && l[0] == '[') section = l;
    std::smatch m;
    if (std::regex_search(l, m, line) &&
        (section == "[router]" || section == "[snapshots]" || section == "[redis]")) {
      documented.insert(section + m[1].str());
    }
  }
  REQUIRE(documented.size() >= 20);
  for (const auto& key : documented) {
    const auto split = key.find(']');
    const std::string table = key.substr(1, split - 1);
    const std::string name = key.substr(split + 1);
    // Each documented key is accepted by the strict loader (an unknown one throws).
    char path[] = "/tmp/warmstart-wiring-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    std::ofstream(path) << "[" << table << "]\n"
                        << name << " = " << [&]() -> std::string {
      if (name == "queues" || name == "image_allowlist" || name == "exclude") return "[\"x\"]";
      if (name == "strip_git_credentials") return "true";
      if (name == "concurrency" || name == "concurrency_key_limit" || name == "max_count" ||
          name == "log_tail_bytes" || name == "replicas_ack" || name == "start_concurrency")
        return "2";
      if (name == "max_bytes") return "\"1g\"";
      if (name.find("timeout") != std::string::npos || name.find("interval") != std::string::npos ||
          name.find("grace") != std::string::npos || name == "ttl" || name == "drain_deadline" ||
          name == "affinity_wait" || name == "coalesce_wait")
        return "\"5s\"";
      return "\"x\"";
    }() << "\n";
    RouterConfig c;
    INFO("[" << table << "] " << name);
    CHECK_NOTHROW(load_config_file(path, c));
    std::remove(path);
  }
}
