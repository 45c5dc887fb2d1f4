// A fleet on one Redis (issue 13): two routers on two private engines (each
// with its own trust key, so its own engine ID), the fleet view through the
// CLI and HTTP, the start-up check of a host identity, and a router killed
// for good whose jobs the other one finishes.
#include "api/testing_prometheus.hpp"
#include "e2e/cli_runner.hpp"
#include "queue/job.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <thread>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Two routers of one fleet: one key prefix, engine 1 and engine 2.
RouterProcessOptions fleet_member(const std::string& prefix, const std::string& socket,
                                  int concurrency, const std::string& router_toml = "") {
  RouterProcessOptions o;
  o.key_prefix = prefix;
  o.docker_socket = socket;
  o.concurrency = concurrency;
  o.router_toml = router_toml;
  return o;
}

json routers_json(const RouterProcess& via) {
  auto r = run_cli(via, {"routers", "--json"});
  INFO("routers: " << r.err);
  REQUIRE(r.exit_code == 0);
  return r.json();
}

json router_in(const json& routers, const std::string& id) {
  for (const auto& r : routers) {
    if (r.value("id", "") == id) return r;
  }
  return nullptr;
}

std::string engine_id_of(const std::string& socket) {
  return run_coro([&]() -> awaitable<std::string> {
    container::DockerClientOptions o;
    o.socket_path = socket;
    auto docker = container::DockerClient::create(co_await net::this_coro::executor, o);
    auto info = co_await docker->info();
    co_return info.id;
  });
}

// Removes the snapshots a router committed under host identity `host_id`
// (the engine must be left clean).
struct SnapshotCleanup {
  const RouterProcess& router;
  std::string host_id;
  ~SnapshotCleanup() {
    try {
      auto listed = run_cli(router, {"snapshots", "list", "--json", "--host-id", host_id});
      if (listed.exit_code != 0) {
        WARN("snapshot cleanup: list failed: " << listed.err);
        return;
      }
      for (const auto& e : listed.json()) {
        auto rm = run_cli(router, {"snapshots", "rm", e["key"], "--host-id", host_id});
        if (rm.exit_code != 0) WARN("snapshot cleanup: rm " << e["key"] << ": " << rm.err);
      }
    } catch (...) {
      WARN("snapshot cleanup failed");
    }
  }
};

}  // namespace

TEST_CASE("fleet: the two test engines report different engine IDs", "[e2e][fleet]") {
  const std::string one = engine_id_of(docker_socket());
  const std::string two = engine_id_of(docker_socket_2());
  INFO("engine 1 " << one << ", engine 2 " << two);
  CHECK_FALSE(one.empty());
  CHECK_FALSE(two.empty());
  CHECK(one != two);
}

TEST_CASE("fleet: two routers on two engines are listed by warmstart routers and GET /v1/routers",
          "[e2e][fleet]") {
  const std::string prefix = "ws-" + unique_name("fleet") + ":";
  RouterProcess a(fleet_member(prefix, docker_socket(), 2, "lease_timeout = \"3s\""));
  RouterProcess b(fleet_member(prefix, docker_socket_2(), 3, "lease_timeout = \"3s\""));

  json routers = routers_json(a);
  INFO("routers: " << routers.dump());
  REQUIRE(routers.size() == 2);
  const json ra = router_in(routers, a.router_id());
  const json rb = router_in(routers, b.router_id());
  REQUIRE(ra.is_object());
  REQUIRE(rb.is_object());
  CHECK(ra["status"] == "live");
  CHECK(rb["status"] == "live");
  CHECK(ra["engine_id"] == engine_id_of(docker_socket()));
  CHECK(rb["engine_id"] == engine_id_of(docker_socket_2()));
  CHECK(ra["host_id"] == ra["engine_id"]);  // the default identity
  CHECK(ra["capacity"] == 2);
  CHECK(rb["capacity"] == 3);
  CHECK(ra["docker_host"] == "unix://" + docker_socket());
  CHECK_FALSE(ra["host_name"].get<std::string>().empty());
  CHECK_FALSE(ra["version"].get<std::string>().empty());
  CHECK(ra.contains("snapshot_count"));
  CHECK(ra.contains("snapshot_bytes"));
  CHECK(ra["last_seen_ago_ms"].get<std::int64_t>() < 3000);

  // The table form names both.
  auto table = run_cli(a, {"routers"});
  REQUIRE(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::Contains(a.router_id()) && Catch::Contains(b.router_id()));

  // HTTP: the same list, bearer auth like every /v1 endpoint.
  auto listed = b.call(boost::beast::http::verb::get, "/v1/routers");
  REQUIRE(listed.status == 200);
  const json body = json::parse(listed.body);
  CHECK(body["routers"].size() == 2);
  auto anonymous = api::testing::http_call(b.port(), boost::beast::http::verb::get, "/v1/routers");
  CHECK(anonymous.status == 401);

  // Running counts move with the jobs.
  const std::string id = cli_enqueue(a, {"--", "sleep", "3"});
  CHECK(eventually(
      [&] {
        json now = routers_json(a);
        return router_in(now, a.router_id())["running"].get<int>() +
                   router_in(now, b.router_id())["running"].get<int>() ==
               1;
      },
      20s));
  auto w = run_cli(a, {"wait", id, "--timeout", "60s"}, 70s);
  CHECK(w.exit_code == 0);

  // A router stopped for good shows as lost once its lease has passed.
  b.stop();
  CHECK(eventually([&] { return router_in(routers_json(a), b.router_id())["status"] == "lost"; },
                   10s));
  CHECK(router_in(routers_json(a), a.router_id())["status"] == "live");
}

TEST_CASE("fleet: a router whose host_id a live router of another engine claims exits non-zero",
          "[e2e][fleet]") {
  const std::string prefix = "ws-" + unique_name("fleet") + ":";
  RouterProcess a(fleet_member(prefix, docker_socket(), 1, "host_id = \"rack-1\""));

  // The same identity on engine 2: refused at start, before it touches the
  // snapshot registry, with the reason on stderr.
  const fs::path dir = fs::path(run_dir()) / unique_name("twin");
  fs::create_directories(dir / "state");
  const std::string config = (dir / "router.toml").string();
  std::ofstream(config) << "[router]\nkey_prefix = \"" << prefix << "\"\nlisten = \"\"\n"
                        << "host_id = \"rack-1\"\nbase_image = \"" << base_image() << "\"\n"
                        << "state_dir = \"" << (dir / "state").string() << "\"\n";
  std::vector<std::string> env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                  "WARMSTART_KEY_PREFIX=" + prefix};
  const std::string log = (dir / "router.log").string();
  const pid_t twin = spawn_logged(
      {warmstart_binary_path(), "router", "--config", config, "--redis", redis_url(),
       "--docker-host", "unix://" + docker_socket_2(), "--router-id", unique_name("twin")},
      env, log);
  int status = 0;
  bool exited = false;
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until) {
    if (::waitpid(twin, &status, WNOHANG) == twin) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  if (!exited) {
    ::kill(twin, SIGKILL);
    ::waitpid(twin, &status, 0);
  }
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  INFO("twin router output:\n" << output);
  REQUIRE(exited);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK_THAT(output, Catch::Contains("host identity \"rack-1\" is claimed by live router \"" +
                                     a.router_id() + "\""));
  CHECK(a.alive());
  // Nothing of the twin in the fleet view.
  CHECK(routers_json(a).size() == 1);

  // The identity names the snapshot namespace: the CLI finds A's snapshot
  // under --host-id rack-1, not under the engine's ID.
  SnapshotCleanup cleanup{a, "rack-1"};
  const std::string job =
      cli_enqueue(a, {"--snapshot-key", "fleet-k1", "--", "sh", "-c", "echo warm > /work/state"});
  REQUIRE(run_cli(a, {"wait", job, "--timeout", "60s"}, 70s).exit_code == 0);
  auto named = run_cli(a, {"snapshots", "list", "--json", "--host-id", "rack-1"});
  INFO("snapshots list: " << named.out << named.err);
  REQUIRE(named.exit_code == 0);
  REQUIRE(named.json().size() == 1);
  CHECK(named.json()[0]["key"] == "fleet-k1");
  auto by_engine = run_cli(a, {"snapshots", "list", "--json"});
  REQUIRE(by_engine.exit_code == 0);
  CHECK(by_engine.json().empty());
  // The next heartbeat (every lease / 3 = 10 s here) counts it.
  CHECK(eventually([&] { return router_in(routers_json(a), a.router_id())["snapshot_count"] == 1; },
                   15s));
}

TEST_CASE(
    "fleet: one of two routers killed with jobs running and queued - the other finishes "
    "every job within lease + a few seconds",
    "[e2e][fleet]") {
  const std::string prefix = "ws-" + unique_name("fleet") + ":";
  const std::string lease = "lease_timeout = \"3s\"";
  RouterProcess a(fleet_member(prefix, docker_socket(), 2, lease));
  RouterProcess b(fleet_member(prefix, docker_socket_2(), 2, lease));

  // Four long jobs fill both routers (each claims at most its 2 free slots),
  // then two more wait in the queue. "Long" leaves room for slow CLI calls
  // (a sanitizer build) between the start and the kill.
  constexpr int kLongS = 8;
  std::vector<std::string> long_jobs, queued_jobs;
  for (int i = 0; i < 4; ++i) {
    long_jobs.push_back(cli_enqueue(a, {"--", "sleep", std::to_string(kLongS)}));
  }
  std::map<std::string, std::string> ran_on;  // job -> router id at start
  REQUIRE(eventually(
      [&] {
        for (const auto& id : long_jobs) {
          auto rec = cli_status(a, id);
          if (rec.value("state", "") != "running") return false;
          ran_on[id] = rec.value("router_id", "");
        }
        return true;
      },
      60s));
  for (int i = 0; i < 2; ++i) queued_jobs.push_back(cli_enqueue(a, {"--", "echo", "queued"}));
  std::vector<std::string> on_a;
  for (const auto& [id, router] : ran_on) {
    if (router == a.router_id()) on_a.push_back(id);
  }
  REQUIRE(on_a.size() == 2);
  for (const auto& id : queued_jobs) CHECK(cli_status(a, id)["state"] == "queued");

  // Router A dies for good: no drain, no clean-up, its containers keep running
  // on engine 1 (B never sees them: they are on another engine).
  ::kill(a.pid(), SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  const std::int64_t killed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();
  REQUIRE(eventually([&] { return !a.alive(); }, 5s));

  std::vector<std::string> all = long_jobs;
  all.insert(all.end(), queued_jobs.begin(), queued_jobs.end());
  for (const auto& id : all) {
    auto w = run_cli(b, {"wait", id, "--timeout", "60s"}, 70s);
    INFO("job " << id << ": " << w.err << "\nrouter B log:\n" << b.log_tail());
    REQUIRE(w.exit_code == 0);
  }
  const double all_done_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  for (const auto& id : on_a) {
    auto rec = cli_status(b, id);
    INFO("job " << id << ": " << rec.dump());
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["router_id"] == b.router_id());
    // Re-started on B within lease (3 s) + B's own long jobs ahead of it in
    // its slots + a few seconds of claim and housekeeping rounds.
    const std::int64_t restarted_after_ms =
        queue::JobRecord::from_json(rec).started_at.value_or(0) - killed_ms;
    WARN("job of the killed router restarted on the other after " << restarted_after_ms << " ms");
    CHECK(restarted_after_ms <= 3000 + kLongS * 1000 + 5000);
  }
  WARN("every job succeeded " << all_done_s << " s after the kill");
  CHECK(all_done_s <= 3 + kLongS + kLongS + 5);
  CHECK(eventually([&] { return router_in(routers_json(b), a.router_id())["status"] == "lost"; },
                   10s));
}

namespace {

struct AffinityRun {
  int warm = 0;                  // of the warm rounds' jobs: started from a snapshot
  int hits = 0;                  // record says affinity "hit"
  int jobs = 0;                  // jobs of the warm rounds
  std::int64_t max_wait_ms = 0;  // longest queued -> started of those jobs
  double seconds = 0;            // wall time of the warm rounds
  std::int64_t metric_hits = 0;  // warmstart_affinity_total{result="hit"}, both routers
};

std::int64_t affinity_hits_metric(const RouterProcess& router) {
  auto r = router.call(boost::beast::http::verb::get, "/metrics");
  if (r.status != 200) return -1;
  auto m = api::testing::parse_exposition(r.body);
  return static_cast<std::int64_t>(
      m.value("warmstart_affinity_total", "warmstart_affinity_total", {{"result", "hit"}}));
}

// Two routers (concurrency 4 each) on the two engines: 8 snapshot keys, one
// cold round, then `rounds` rounds of one job per key, each round waited for.
AffinityRun run_affinity_rounds(const std::string& affinity_wait, int rounds) {
  const std::string prefix = "ws-" + unique_name("affinity") + ":";
  const std::string toml = "affinity_wait = \"" + affinity_wait + "\"";
  RouterProcess a(fleet_member(prefix, docker_socket(), 4, toml));
  RouterProcess b(fleet_member(prefix, docker_socket_2(), 4, toml));
  SnapshotCleanup clean_a{a, engine_id_of(docker_socket())};
  SnapshotCleanup clean_b{b, engine_id_of(docker_socket_2())};
  auto round = [&](int n) {
    std::vector<std::string> ids;
    for (int k = 0; k < 8; ++k) {
      // Alternate the routers the CLI talks to: enqueue is the same Redis either way.
      const RouterProcess& via = (k % 2 == 0) ? a : b;
      ids.push_back(
          cli_enqueue(via, {"--snapshot-key", "aff-k" + std::to_string(k), "--", "sh", "-c",
                            "echo round" + std::to_string(n) + " >> /work/rounds"}));
    }
    for (const auto& id : ids) {
      auto w = run_cli(a, {"wait", id, "--timeout", "120s"}, 130s);
      INFO("job " << id << ": " << w.err << "\nA:\n" << a.log_tail() << "\nB:\n" << b.log_tail());
      REQUIRE(w.exit_code == 0);
    }
    return ids;
  };
  round(0);  // cold: each key commits on whichever host ran it
  AffinityRun out;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> warm_ids;
  for (int n = 1; n <= rounds; ++n) {
    auto ids = round(n);
    warm_ids.insert(warm_ids.end(), ids.begin(), ids.end());
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& id : warm_ids) {
    const auto rec = queue::JobRecord::from_json(cli_status(a, id));
    ++out.jobs;
    out.warm += rec.from_snapshot;
    out.hits += rec.affinity() == "hit";
    out.max_wait_ms =
        std::max(out.max_wait_ms, rec.started_at.value_or(rec.created_at) - rec.created_at);
    CHECK_FALSE(rec.host.empty());
  }
  // The metric (refreshed every few seconds) counts the same hits.
  eventually(
      [&] {
        out.metric_hits = affinity_hits_metric(a) + affinity_hits_metric(b);
        return out.metric_hits >= out.hits;
      },
      15s);
  return out;
}

}  // namespace

TEST_CASE(
    "fleet: with snapshot affinity at least 90 percent of repeat jobs start warm on two hosts "
    "(no affinity is the baseline)",
    "[e2e][fleet][affinity]") {
  const AffinityRun with = run_affinity_rounds("10s", 3);
  const AffinityRun without = run_affinity_rounds("0s", 3);
  WARN("affinity_wait 10s: " << with.warm << "/" << with.jobs << " warm, " << with.hits
                             << " affinity hits, longest wait " << with.max_wait_ms << " ms, "
                             << with.seconds << " s; without affinity: " << without.warm << "/"
                             << without.jobs << " warm, longest wait " << without.max_wait_ms
                             << " ms, " << without.seconds << " s");
  REQUIRE(with.jobs == 24);
  CHECK(with.warm * 10 >= with.jobs * 9);
  CHECK(with.hits * 10 >= with.jobs * 9);
  CHECK(with.metric_hits == with.hits);
  // 8 jobs on 8 free slots: no job waited for a host (let alone affinity_wait).
  CHECK(with.max_wait_ms < 10000);
  CHECK(without.hits == 0);  // no hints are written with affinity off
}

TEST_CASE(
    "fleet: a job whose snapshot host is busy runs on the other host after affinity_wait and "
    "one routed to a lost host does not wait for it",
    "[e2e][fleet][affinity]") {
  const std::string prefix = "ws-" + unique_name("affinity") + ":";
  const std::string toml = "affinity_wait = \"4s\"\nlease_timeout = \"1s\"";
  RouterProcess a(fleet_member(prefix, docker_socket(), 1, toml));
  // Declared before the clean-ups: a RouterProcess deletes its key prefix
  // (the fleet's, here) when it goes, so both clean-ups must run before.
  std::optional<RouterProcess> b;
  SnapshotCleanup clean_a{a, engine_id_of(docker_socket())};
  // Alone, A makes the snapshot of key "busy".
  const std::string first =
      cli_enqueue(a, {"--snapshot-key", "busy", "--", "sh", "-c", "echo a > /work/a"});
  REQUIRE(run_cli(a, {"wait", first, "--timeout", "60s"}, 70s).exit_code == 0);
  b.emplace(fleet_member(prefix, docker_socket_2(), 2, toml));
  std::optional<SnapshotCleanup> clean_b;
  clean_b.emplace(*b, engine_id_of(docker_socket_2()));

  // The next job of the key goes to A (a hit) and keeps A's only slot busy.
  const std::string hog = cli_enqueue(*b, {"--snapshot-key", "busy", "--", "sleep", "8"});
  REQUIRE(eventually([&] { return cli_status(a, hog)["state"] == "running"; }, 30s));
  // One more waits affinity_wait for A, then B runs it cold.
  const std::string moved = cli_enqueue(*b, {"--snapshot-key", "busy", "--", "true"});
  REQUIRE(run_cli(*b, {"wait", moved, "--timeout", "60s"}, 70s).exit_code == 0);
  const auto rec = queue::JobRecord::from_json(cli_status(*b, moved));
  INFO(rec.to_json().dump());
  CHECK(rec.router_id == b->router_id());
  CHECK(rec.affinity() == "miss");
  CHECK_FALSE(rec.from_snapshot);
  const std::int64_t waited = rec.started_at.value_or(0) - rec.created_at;
  WARN("busy host: started on the other host after " << waited << " ms (affinity_wait 4 s)");
  CHECK(waited >= 4000);
  CHECK(waited <= 4000 + 3000);
  REQUIRE(run_cli(a, {"wait", hog, "--timeout", "60s"}, 70s).exit_code == 0);
  const auto hog_rec = queue::JobRecord::from_json(cli_status(a, hog));
  CHECK(hog_rec.router_id == a.router_id());
  CHECK(hog_rec.affinity() == "hit");
  CHECK(hog_rec.from_snapshot);

  // The hint names A again (its commit came last). A dies: a job routed to it
  // does not wait affinity_wait for a host that is gone.
  ::kill(a.pid(), SIGKILL);
  REQUIRE(eventually([&] { return !a.alive(); }, 5s));
  const std::string after = cli_enqueue(*b, {"--snapshot-key", "busy", "--", "true"});
  REQUIRE(run_cli(*b, {"wait", after, "--timeout", "60s"}, 70s).exit_code == 0);
  const auto rec2 = queue::JobRecord::from_json(cli_status(*b, after));
  INFO(rec2.to_json().dump());
  CHECK(rec2.router_id == b->router_id());
  const std::int64_t waited2 = rec2.started_at.value_or(0) - rec2.created_at;
  WARN("lost host: routed to " << (rec2.affinity_host.empty() ? "none" : rec2.affinity_host)
                               << ", started on the other host after " << waited2 << " ms");
  CHECK(waited2 < 4000);
  CHECK(rec2.from_snapshot);  // B's own snapshot of the key (from "moved")
}
