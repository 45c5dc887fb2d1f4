// Faults as test cases, against the real services (issue: router core, "Done
// means"): dockerd stopped, Redis shut down and restarted, a cancel message
// lost, two routers sharing a concurrency key, the router's default timeout.
#include "common/redis_test_server.hpp"
#include "common/time.hpp"
#include "e2e/cli_runner.hpp"
#include "queue/job.hpp"

#include <catch2/catch.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <set>
#include <thread>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// scripts/dev-services stop-dockerd | start-dockerd on the run's engine.
void dockerd(const std::string& what) {
  const std::string cmd = std::string(WARMSTART_E2E_SOURCE_DIR) + "/scripts/dev-services " + what +
                          " " + run_dir() + " >>" + run_dir() + "/dockerd-restarts.log 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

// Brings the engine back even when the test fails half-way: the rest of the
// suite (and the router's own clean-up) needs it.
struct EngineBack {
  bool stopped = false;
  ~EngineBack() {
    if (stopped)
      std::system((std::string(WARMSTART_E2E_SOURCE_DIR) +
                   "/scripts/dev-services "
                   "start-dockerd " +
                   run_dir() + " >/dev/null 2>&1")
                      .c_str());
  }
};

int readyz(const RouterProcess& router) {
  try {
    return api::testing::http_call(router.port(), boost::beast::http::verb::get, "/readyz").status;
  } catch (const std::exception&) {
    return -1;
  }
}

std::string state_of(const RouterProcess& router, const std::string& id) {
  auto r = run_cli(router, {"status", id, "--json"});
  return r.exit_code == 0 ? r.json().value("state", "") : "";
}

void wait_running(const RouterProcess& router, const std::string& id) {
  INFO("router log:\n" << router.log_tail());
  REQUIRE(eventually(
      [&] {
        auto r = run_cli(router, {"status", id, "--json"});
        return r.exit_code == 0 && r.json()["state"] == "running" &&
               r.json()["container_id"].is_string();
      },
      60s));
}

// The router's "job run ended" log lines of one job.
std::vector<json> runs_of(const RouterProcess& router, const std::string& id) {
  std::vector<json> out;
  std::istringstream lines(router.log());
  for (std::string line; std::getline(lines, line);) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_object() && j.value("msg", "") == "job run ended" && j.value("job", "") == id) {
      out.push_back(j);
    }
  }
  return out;
}

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// One Redis command on a server of the test's own (hiredis, blocking).
std::string redis_command(int port, const std::vector<std::string>& args) {
  redisContext* c = redisConnect("127.0.0.1", port);
  REQUIRE((c != nullptr && c->err == 0));
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.c_str());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
  std::string out = reply != nullptr && reply->str != nullptr ? reply->str : "";
  const bool error = reply == nullptr || reply->type == REDIS_REPLY_ERROR;
  if (reply != nullptr) freeReplyObject(reply);
  redisFree(c);
  INFO("redis " << args.at(0) << ": " << out);
  REQUIRE_FALSE(error);
  return out;
}

std::int64_t started_ms(const json& record) {
  return queue::JobRecord::from_json(record).started_at.value_or(0);
}
std::int64_t finished_ms(const json& record) {
  return queue::JobRecord::from_json(record).finished_at.value_or(0);
}

}  // namespace

TEST_CASE("outage: dockerd stopped for 15 s with 20 jobs queued: all 20 succeed, no attempt spent",
          "[e2e][outage]") {
  RouterProcessOptions options;
  options.concurrency = 4;
  RouterProcess router(options);
  EngineBack engine;

  dockerd("stop-dockerd");
  engine.stopped = true;
  const auto stopped_at = std::chrono::steady_clock::now();
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(cli_enqueue(router, {"--", "echo", "job-" + std::to_string(i)}));

  // The router finds out at its first create, hands the jobs back unspent and
  // stops claiming; readiness says so.
  REQUIRE(
      eventually([&] { return count_events(events_of(router), "router.engine_down") >= 1; }, 30s));
  CHECK(readyz(router) == 503);
  std::this_thread::sleep_until(stopped_at + 15s);
  CHECK(router.alive());
  dockerd("start-dockerd");
  engine.stopped = false;

  for (const auto& id : ids) expect_succeeded(router, id);
  for (const auto& id : ids) {
    auto rec = cli_status(router, id);
    INFO("job " << id << ": " << rec.dump());
    CHECK(rec["attempts"] == 1);
    CHECK(rec["state"] == "succeeded");
  }
  auto events = events_of(router);
  CHECK(count_events(events, "router.engine_up") >= 1);
  CHECK(count_events(events, "job.deferred") >= 1);
  CHECK(count_events(events, "job.failed") == 0);
  CHECK(router.alive());
  CHECK(eventually([&] { return readyz(router) == 200; }, 30s));
}

TEST_CASE(
    "outage: Redis shut down while a job's container exits: succeeded once Redis is back, "
    "one container",
    "[e2e][outage]") {
  // Over TCP, and over a Unix socket (unix://): the router and the CLI reach
  // Redis through it and ride out its restart.
  bool unix_socket = false;
  SECTION("TCP") {
    unix_socket = false;
  }
  SECTION("Unix socket") {
    unix_socket = true;
  }
  const std::string dir = run_dir() + "/" + unique_name("redis-down");
  std::vector<std::string> args{"--appendonly", "yes", "--appendfsync", "always"};
  if (unix_socket) {
    args.insert(args.end(), {"--unixsocket", dir + "/redis.sock", "--unixsocketperm", "700"});
  }
  RedisServerProcess redis(dir, args);
  redis.start();
  RouterProcessOptions options;
  options.redis_url = unix_socket ? "unix://" + dir + "/redis.sock" : redis.url();
  options.concurrency = 1;
  RouterProcess router(options);

  auto id = cli_enqueue(router, {"--", "sh", "-c", "sleep 3; echo finished-while-redis-was-down"});
  wait_running(router, id);
  redis.stop();
  const std::int64_t gone_ms = unix_ms_now();
  std::this_thread::sleep_for(7s);  // the container exits at ~3 s, Redis still down
  redis.start();

  expect_succeeded(router, id);
  auto rec = cli_status(router, id);
  // The result was reached while Redis was gone (finished_at is when the
  // router sent it), so it was written once Redis was back: its step failed
  // and was retried ("->redis" in the trace), or its command waited out the
  // client's reconnect backoff within its deadline; which one depends on
  // when the reconnect attempts of the router's other loops fall.
  CHECK(finished_ms(rec) > gone_ms);
  CHECK(rec["attempts"] == 1);
  CHECK(rec["exit_code"] == 0);
  CHECK(run_cli(router, {"logs", id}).out.find("finished-while-redis-was-down") !=
        std::string::npos);
  // One run, one create.
  auto runs = runs_of(router, id);
  INFO("router log:\n" << router.log_tail());
  REQUIRE(runs.size() == 1);
  const std::string trace = runs[0].value("run", "");
  CHECK(occurrences(trace, "create(") == 1);
  CHECK(occurrences(trace, "record(succeeded)") >= 1);
  CHECK(job_containers(id).empty());
}

TEST_CASE(
    "outage: a cancel whose message never reaches the router stops the container within "
    "one reconcile_interval",
    "[e2e][outage]") {
  RedisServerProcess redis(run_dir() + "/" + unique_name("redis-acl"), {});
  redis.start();
  // The router connects as its own user, so its channel permission can be
  // taken away: its subscription is dropped and cannot come back, and the
  // cancel's PUBLISH reaches nobody.
  redis_command(redis.port(), {"ACL", "SETUSER", "router", "on", ">pw", "~*", "&*", "+@all"});
  // The CLI (the default user) publishes the cancel.
  redis_command(redis.port(), {"ACL", "SETUSER", "default", "allchannels"});
  RouterProcessOptions options;
  options.redis_url = "redis://router:pw@127.0.0.1:" + std::to_string(redis.port()) + "/0";
  options.router_toml = "stop_grace = \"1s\"";  // reconcile_interval is 1 s in RouterProcess
  RouterProcess router(options);

  auto id = cli_enqueue(router, {"--", "sh", "-c", "sleep 120"});
  wait_running(router, id);
  redis_command(redis.port(), {"ACL", "SETUSER", "router", "resetchannels"});
  redis_command(redis.port(), {"CLIENT", "KILL", "USER", "router", "SKIPME", "yes"});
  const auto cancelled_at = std::chrono::steady_clock::now();
  auto cancel = run_cli(router, {"cancel", id, "--redis", redis.url()});
  INFO("cancel: " << cancel.out << cancel.err);
  REQUIRE(cancel.exit_code == 0);

  INFO("router log:\n" << router.log_tail());
  REQUIRE(eventually([&] { return job_containers(id, false).empty(); }, 20s));
  const auto took = std::chrono::steady_clock::now() - cancelled_at;
  // One renewal period (1 s) + stop_grace (1 s) + the stop and the list.
  CHECK(took < 6s);
  CHECK(router.log().find("cancel seen by the lease renewal") != std::string::npos);
  CHECK(router.log().find("cancel message received") == std::string::npos);
  CHECK(state_of(router, id) == "cancelled");
  redis_command(redis.port(), {"ACL", "SETUSER", "router", "allchannels"});
}

TEST_CASE("outage: two routers on one Redis never run two jobs of one concurrency key at once",
          "[e2e][outage]") {
  RouterProcessOptions a_options;
  a_options.key_prefix = "ws-" + unique_name("ckey") + ":";
  a_options.concurrency = 2;
  RouterProcessOptions b_options = a_options;
  RouterProcess a(a_options);
  RouterProcess b(b_options);

  const std::string key = unique_name("repo");
  std::vector<std::string> keyed;
  for (int i = 0; i < 6; ++i) {
    keyed.push_back(cli_enqueue(a, {"--concurrency-key", key, "--", "sh", "-c", "sleep 1"}));
  }
  const auto unrelated_enqueued = std::chrono::system_clock::now();
  auto unrelated = cli_enqueue(a, {"--", "echo", "unrelated"});

  expect_succeeded(a, unrelated);
  const auto unrelated_rec = cli_status(a, unrelated);
  const auto unrelated_start = started_ms(unrelated_rec);
  const auto enqueued_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(unrelated_enqueued.time_since_epoch())
          .count();
  // Not behind the six keyed jobs (which need 6 s one after another).
  CHECK(unrelated_start - enqueued_ms < 4000);

  std::vector<std::pair<std::int64_t, std::int64_t>> spans;
  std::set<std::string> routers;
  for (const auto& id : keyed) {
    expect_succeeded(a, id);
    auto rec = cli_status(a, id);
    spans.emplace_back(started_ms(rec), finished_ms(rec));
    routers.insert(rec.value("router_id", ""));
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    INFO("job " << i << " started at " << spans[i].first << ", the one before ended at "
                << spans[i - 1].second);
    CHECK(spans[i].first >= spans[i - 1].second);
  }
  INFO("routers that ran keyed jobs: " << routers.size());
  CHECK(!routers.empty());
}

TEST_CASE("outage: default_timeout applies to a job that names no timeout", "[e2e][outage]") {
  RouterProcessOptions options;
  options.router_toml = "default_timeout = \"3s\"\nstop_grace = \"1s\"";
  RouterProcess router(options);
  auto id = cli_enqueue(router, {"--", "sh", "-c", "sleep 60"});
  auto w = run_cli(router, {"wait", id, "--timeout", "60s"}, 90s);
  CHECK(w.exit_code == 1);
  auto rec = cli_status(router, id);
  CHECK(rec["state"] == "timed_out");
  CHECK(rec["error"] == "timed out after 3 s");
  const auto ran_ms = finished_ms(rec) - started_ms(rec);
  CHECK(ran_ms >= 3000);
  CHECK(ran_ms < 15000);
}

TEST_CASE(
    "outage: Redis restarted (AOF) while 5 jobs run: wait exits 0 for them and for 3 jobs "
    "enqueued during the restart",
    "[e2e][outage]") {
  RedisServerProcess redis(run_dir() + "/" + unique_name("redis-restart"),
                           {"--appendonly", "yes", "--appendfsync", "always"});
  redis.start();
  RouterProcessOptions options;
  options.redis_url = redis.url();
  options.concurrency = 5;
  RouterProcess router(options);

  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(cli_enqueue(router, {"--", "sh", "-c", "sleep 4"}));
  for (const auto& id : ids) wait_running(router, id);

  std::vector<int> codes(8, -1);
  std::vector<std::string> late(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&, i] {
      codes[i] = run_cli(router, {"wait", ids[i], "--timeout", "120s"}, 150s).exit_code;
    });
  }
  std::this_thread::sleep_for(300ms);  // the waits are polling
  redis.stop();
  std::vector<std::thread> enqueuers;
  for (int i = 0; i < 3; ++i) {
    enqueuers.emplace_back([&, i] {
      auto r = run_cli(router, {"enqueue", "--", "echo", "late-" + std::to_string(i)});
      if (r.exit_code == 0) late[i] = r.out.substr(0, r.out.find('\n'));
    });
  }
  std::this_thread::sleep_for(2s);
  redis.start();
  for (auto& t : enqueuers) t.join();
  for (int i = 0; i < 3; ++i) {
    REQUIRE_FALSE(late[i].empty());
    threads.emplace_back([&, i] {
      codes[5 + i] = run_cli(router, {"wait", late[i], "--timeout", "120s"}, 150s).exit_code;
    });
  }
  for (auto& t : threads) t.join();
  INFO("router log:\n" << router.log_tail());
  CHECK(codes == std::vector<int>(8, 0));
  CHECK(router.alive());
}

TEST_CASE(
    "outage: the Redis primary killed mid-run under Sentinel - router and CLI follow the "
    "failover and every acknowledged enqueue succeeds",
    "[e2e][outage][sentinel]") {
  SentinelGroup group(run_dir() + "/" + unique_name("sentinel"), "ws-e2e");
  const int replica_port = group.replica().port();
  RouterProcessOptions options;
  options.redis_url = group.url();
  options.concurrency = 4;
  // Acknowledged means replicated: an enqueue the API answered 201 to is on
  // the replica that the failover promotes.
  options.extra_toml = "[redis]\nreplicas_ack = 1\nreplicas_timeout = \"2s\"\n";
  RouterProcess router(options);

  // POSTs a job until the API acknowledges it (201, or 200 for a retry whose
  // first try was applied): the client's side of "acknowledged", with the
  // retry a client makes on 503 (idempotent by id).
  std::vector<std::string> acknowledged;
  int unavailable = 0;
  auto enqueue = [&](const std::string& id) {
    const json body = {{"id", id}, {"cmd", {"sh", "-c", "sleep 1"}}};
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < until) {
      api::testing::HttpResult r;
      try {
        r = router.call(boost::beast::http::verb::post, "/v1/jobs", body.dump());
      } catch (const std::exception&) {
        r.status = 0;  // connection refused: the router died (checked below)
      }
      if (r.status == 201 || r.status == 200) {
        acknowledged.push_back(id);
        return;
      }
      INFO("POST " << id << ": " << r.status << " " << r.body);
      REQUIRE(r.status == 503);
      ++unavailable;
      std::this_thread::sleep_for(200ms);
    }
    FAIL("job " << id << " was never acknowledged");
  };

  const std::string stem = unique_name("sentinel-job");
  for (int i = 0; i < 8; ++i) enqueue(stem + "-before-" + std::to_string(i));
  // And one through the CLI, which reads the same redis+sentinel:// URL.
  const std::string by_cli = cli_enqueue(router, {"--", "sh", "-c", "sleep 1"});

  group.primary().kill();
  const auto killed = std::chrono::steady_clock::now();
  // The operator's side, beside the clients: once the Sentinels promoted the
  // replica, the killed primary comes back (from its AOF) and is made a
  // replica of the new master, so WAIT has a replica again. A Sentinel may
  // even fail back to it (a spurious +sdown of the new master on a loaded
  // machine): acknowledged jobs are on it either way.
  std::atomic<bool> promoted{false};
  std::thread operator_thread([&] {
    promoted = eventually([&] { return group.master_port() == replica_port; }, 30s);
    group.primary().start();
  });
  for (int i = 0; i < 8; ++i) enqueue(stem + "-after-" + std::to_string(i));
  const double acked_after_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  operator_thread.join();
  REQUIRE(promoted);

  acknowledged.push_back(by_cli);
  for (const auto& id : acknowledged) {
    auto w = run_cli(router, {"wait", id, "--timeout", "90s"}, 100s);
    INFO("job " << id << ": " << w.out << w.err << "\nrouter log:\n" << router.log_tail());
    CHECK(w.exit_code == 0);
  }
  WARN(acknowledged.size() << " acknowledged jobs succeeded; the 8 enqueued after the kill were "
                           << "acknowledged within " << acked_after_s << " s (" << unavailable
                           << " answers 503 meanwhile)");
  CHECK(router.alive());
  const std::string log = router.log();
  CHECK(log.find("\"msg\":\"redis master\"") != std::string::npos);
  CHECK(log.find("127.0.0.1:" + std::to_string(replica_port)) != std::string::npos);
  // The CLI follows too: status through the Sentinels after the failover.
  CHECK(cli_status(router, acknowledged.front())["state"] == "succeeded");
}
