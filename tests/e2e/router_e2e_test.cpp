// The router end to end: the real `warmstart router` and CLI binaries against
// the private redis-server and dockerd (issue: the router, "Done means").
#include "api/testing_prometheus.hpp"
#include "e2e/cli_runner.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;

namespace {

std::shared_ptr<container::DockerClient> docker_on(net::any_io_executor ex) {
  container::DockerClientOptions o;
  o.socket_path = docker_socket();
  return container::DockerClient::create(ex, o);
}

std::vector<container::ContainerSummary> containers_of(const std::string& label, bool all = true) {
  return run_coro([&]() -> awaitable<std::vector<container::ContainerSummary>> {
    auto docker = docker_on(co_await net::this_coro::executor);
    std::vector<std::string> labels{label};
    co_return co_await docker->list_containers(labels, all);
  });
}

void remove_image(const std::string& ref) {
  run_coro([&]() -> awaitable<void> {
    auto docker = docker_on(co_await net::this_coro::executor);
    co_await docker->remove_image(ref, true);
  });
}

// The router's /metrics once it shows `line` (published every 2 s), or as it
// was after 10 s; `found` tells which.
std::string metrics_showing(RouterProcess& router, const std::string& line, bool& found) {
  std::string metrics;
  found = eventually(
      [&] {
        metrics = router.call(boost::beast::http::verb::get, "/metrics").body;
        return metrics.find(line) != std::string::npos;
      },
      std::chrono::seconds(10));
  return metrics;
}

// Posts a job running `cmd` over HTTP, for tests that need jobs to queue up:
// on a loaded host one CLI run (a sanitized one above all) can outlast a
// short job, so jobs enqueued with the CLI would arrive one at a time.
std::string post_cmd(const RouterProcess& router, std::vector<std::string> cmd) {
  const auto id = unique_name("j");
  auto created = post_job(router, {{"id", id}, {"cmd", std::move(cmd)}});
  INFO(created.body);
  REQUIRE(created.status == 201);
  return id;
}

}  // namespace

TEST_CASE("router: cold, warm, stale-snapshot fallback, warm again", "[e2e][router]") {
  RouterProcess router;
  SnapshotImageCleanup cleanup{router};
  const std::string key = "repo-42/" + unique_name("main");

  // 1. Cold: the base image; writes a file, commits.
  auto cold = cli_enqueue(router, {"--snapshot-key", key, "--", "sh", "-c",
                                   "echo built-$WARMSTART_JOB_ID > /work/state.txt"});
  expect_succeeded(router, cold);
  auto cold_rec = cli_status(router, cold);
  CHECK(cold_rec["from_snapshot"] == false);
  CHECK(cold_rec["image"] == base_image());
  CHECK(cold_rec["exit_code"] == 0);

  // 2. Warm: starts from the snapshot, reads the file, sees the reuse variable.
  auto warm =
      cli_enqueue(router, {"--snapshot-key", key, "--", "sh", "-c",
                           "test \"$WARMSTART_SNAPSHOT_REUSE\" = 1 && cat /work/state.txt"});
  expect_succeeded(router, warm);
  auto warm_rec = cli_status(router, warm);
  CHECK(warm_rec["from_snapshot"] == true);
  CHECK(warm_rec["snapshot_fallback"] == false);
  CHECK(run_cli(router, {"logs", warm}).out.find("built-" + cold) != std::string::npos);

  // The listing: the warm job committed generation 2, which holds both runs,
  // on this router's host; nothing has started from it yet.
  auto listed = run_cli(router, {"snapshots", "list", "--json"}).json();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["generation"] == 2);
  CHECK(listed[0]["uses"] == 0);
  CHECK(listed[0]["build_ms"].get<std::int64_t>() > 0);
  CHECK(listed[0]["builder"].is_null());
  const std::string host = listed[0]["host"];
  CHECK_FALSE(host.empty());
  auto table = run_cli(router, {"snapshots", "list"});
  CHECK(table.out.find("GEN") != std::string::npos);
  CHECK(table.out.find(host.substr(0, 16)) != std::string::npos);
  CHECK(table.out.find(listed[0]["image"].get<std::string>()) != std::string::npos);
  CHECK(table.out.find(key) != std::string::npos);

  // 3. The snapshot image vanishes behind the router's back.
  const std::string stale = listed[0]["image"];
  remove_image(stale);
  auto third = cli_enqueue(router, {"--snapshot-key", key, "--", "sh", "-c",
                                    "test -z \"$WARMSTART_SNAPSHOT_REUSE\" && "
                                    "echo rebuilt > /work/state.txt"});
  expect_succeeded(router, third);
  auto third_rec = cli_status(router, third);
  CHECK(third_rec["snapshot_fallback"] == true);
  CHECK(third_rec["from_snapshot"] == false);
  CHECK(third_rec["image"] == base_image());
  auto events = events_of(router);
  CHECK(count_events(events, "job.snapshot_fallback", "job", third) == 1);
  CHECK(count_events(events, "snapshot.invalidated", "key", key) == 1);
  auto relisted = run_cli(router, {"snapshots", "list", "--json"}).json();
  REQUIRE(relisted.size() == 1);
  CHECK(relisted[0]["image"] != stale);

  // 4. Warm again from the fresh snapshot.
  auto fourth = cli_enqueue(router, {"--snapshot-key", key, "--", "cat", "/work/state.txt"});
  expect_succeeded(router, fourth);
  CHECK(cli_status(router, fourth)["from_snapshot"] == true);
  CHECK(run_cli(router, {"logs", fourth}).out.find("rebuilt") != std::string::npos);

  // The starts by kind and the time warm starts saved reach /metrics (every 2 s).
  bool counted = false;
  const std::string metrics =
      metrics_showing(router, "warmstart_job_starts_total{start=\"warm\"} 2", counted);
  INFO(metrics);
  CHECK(counted);
  CHECK(metrics.find("warmstart_job_starts_total{start=\"cold\"} 1") != std::string::npos);
  CHECK(metrics.find("warmstart_job_starts_total{start=\"fallback\"} 1") != std::string::npos);
  CHECK(metrics.find("warmstart_snapshot_time_saved_seconds_total 0\n") == std::string::npos);
}

TEST_CASE("router: a warm job sees the work of its snapshot's job but none of its credentials",
          "[e2e][router][snapshot]") {
  RouterProcess router;
  SnapshotImageCleanup cleanup{router};
  const std::string key = "hygiene/" + unique_name("main");

  auto cold = cli_enqueue(
      router, {"--snapshot-key", key, "--", "sh", "-c",
               "mkdir -p /root /work/repo/.git /tmp/scratch"
               " && echo 'machine example.com login u password hunter2' > /root/.netrc"
               " && echo 'https://u:hunter2@example.com' > /root/.git-credentials"
               " && printf '[remote \"origin\"]\\n\\turl = https://u:hunter2@example.com/r\\n'"
               " > /work/repo/.git/config"
               " && echo scratch > /tmp/scratch/file && echo built > /work/state.txt"});
  expect_succeeded(router, cold);

  auto warm =
      cli_enqueue(router, {"--snapshot-key", key, "--", "sh", "-c",
                           "test \"$WARMSTART_SNAPSHOT_REUSE\" = 1 && cat /work/state.txt"
                           " && cat /work/repo/.git/config"
                           " && if test -e /root/.netrc; then echo LEAK-netrc; fi"
                           " && if test -e /root/.git-credentials; then echo LEAK-credentials; fi"
                           " && if test -e /tmp/scratch; then echo LEAK-tmp; fi; test -d /tmp"});
  expect_succeeded(router, warm);
  CHECK(cli_status(router, warm)["from_snapshot"] == true);
  const std::string out = run_cli(router, {"logs", warm}).out;
  INFO(out);
  CHECK(out.find("built") != std::string::npos);
  CHECK(out.find("url = https://example.com/r") != std::string::npos);
  CHECK(out.find("LEAK") == std::string::npos);
  CHECK(out.find("hunter2") == std::string::npos);
  CHECK(router.log().find("snapshot filtered") != std::string::npos);
}

TEST_CASE("router: a missing image fails its job by name after max_attempts while others run",
          "[e2e][router]") {
  RouterProcessOptions options;
  options.router_toml = "image_allowlist = [\"warmstart-missing/*\"]";
  RouterProcess router(options);
  auto missing = cli_enqueue(
      router, {"--image", "warmstart-missing/none:1", "--max-attempts", "2", "--", "true"});
  auto fine = cli_enqueue(router, {"--", "echo", "ok"});
  expect_succeeded(router, fine);
  auto w = run_cli(router, {"wait", missing, "--timeout", "90s"});
  CHECK(w.exit_code == 1);
  auto rec = cli_status(router, missing);
  CHECK(rec["state"] == "failed");
  CHECK(rec["attempts"] == 2);
  CHECK(rec["error"].get<std::string>().find("image not found: warmstart-missing/none:1") !=
        std::string::npos);
  CHECK(containers_of("warmstart.job=" + missing).empty());
}

TEST_CASE("router: 30 jobs at concurrency 4 never exceed 4 containers and all succeed",
          "[e2e][router]") {
  RouterProcessOptions options;
  options.concurrency = 4;
  RouterProcess router(options);
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) {
    ids.push_back(post_cmd(router, {"sh", "-c", "sleep 0.3; echo job " + std::to_string(i)}));
  }
  // Watch the engine while the jobs run: one batched list every 50 ms.
  std::atomic<bool> done{false};
  std::atomic<std::size_t> peak{0};
  std::thread watcher([&] {
    run_coro(
        [&]() -> awaitable<void> {
          auto docker = docker_on(co_await net::this_coro::executor);
          std::vector<std::string> labels{"warmstart.router=" + router.router_id()};
          while (!done) {
            auto list = co_await docker->list_containers(labels, true);
            std::size_t n = list.size();
            if (n > peak) peak = n;
            co_await sleep_for(std::chrono::milliseconds(50));
          }
        },
        std::chrono::minutes(5));
  });
  for (const auto& id : ids) {
    auto w = run_cli(router, {"wait", id, "--timeout", "3m"});
    if (w.exit_code != 0) {
      done = true;
      watcher.join();
      FAIL("job " << id << " did not succeed: " << w.err << "\n" << router.log_tail());
    }
  }
  done = true;
  watcher.join();
  INFO("peak containers: " << peak.load());
  CHECK(peak.load() >= 2);  // the watcher saw the jobs run in parallel
  CHECK(peak.load() <= 4);
  auto succeeded = run_cli(router, {"jobs", "--state", "succeeded", "--json"}).json();
  CHECK(succeeded.size() == 30);
  CHECK(run_cli(router, {"jobs", "--state", "failed", "--json"}).json().empty());
  // The claims that read first created their containers while the claim ran
  // (the ones after them, through the backlog, read and claimed in one
  // round trip: docs/queue.md), and each was used (the peak above counts
  // them from their create on).
  bool counted = false;
  const std::string metrics = metrics_showing(router, "\nwarmstart_claim_creates_total ", counted);
  INFO(metrics);
  REQUIRE(counted);
  const double created = api::testing::parse_exposition(metrics).value(
      "warmstart_claim_creates_total", "warmstart_claim_creates_total");
  CHECK(created >= 1);
  CHECK(created <= 30);
  CHECK(metrics.find("warmstart_claim_creates_unused_total 0\n") != std::string::npos);
}

TEST_CASE("router: kill -9 with 6 jobs running, restart: each finishes once in its container",
          "[e2e][router]") {
  RouterProcessOptions options;
  options.concurrency = 6;
  auto first = std::make_unique<RouterProcess>(options);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(post_cmd(*first, {"sleep", "5"}));

  // Wait until all six run, and remember their containers. One HTTP listing a
  // round, not a CLI run per job: on a loaded host six CLI runs can outlast
  // the jobs, which then end before they are seen running.
  std::map<std::string, std::string> container_of;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (container_of.size() < ids.size() && std::chrono::steady_clock::now() < until) {
    for (const auto& rec : jobs_listed(*first, "?state=running")) {
      auto container = rec.find("container_id");
      if (container != rec.end() && container->is_string()) container_of[rec.at("id")] = *container;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(container_of.size() == 6);

  ::kill(first->pid(), SIGKILL);
  while (first->alive()) std::this_thread::sleep_for(std::chrono::milliseconds(20));

  // The same router id and key prefix come back.
  options.id = first->router_id();
  options.key_prefix = first->key_prefix();
  RouterProcess second(options);
  for (const auto& id : ids) expect_succeeded(second, id);
  auto events = events_of(second);
  for (const auto& id : ids) {
    auto rec = cli_status(second, id);
    CHECK(rec["container_id"] == container_of[id]);
    CHECK(rec["attempts"] == 1);
    CHECK(count_events(events, "job.succeeded", "job", id) == 1);
    CHECK(count_events(events, "job.started", "job", id) == 1);
  }
  CHECK(containers_of("warmstart.router=" + second.router_id()).empty());
  first.reset();  // its cleanup finds nothing left
}

TEST_CASE(
    "router: kill -9 during a warm job, restart: its commit replaces the generation it ran on",
    "[e2e][router][snapshots]") {
  RouterProcessOptions options;
  auto first = std::make_unique<RouterProcess>(options);
  SnapshotImageCleanup cleanup_first{*first};
  const std::string key = unique_name("reattach");
  const std::string cold =
      cli_enqueue(*first, {"--snapshot-key", key, "--", "sh", "-c", "echo 1 > /work/gen"});
  expect_succeeded(*first, cold);
  const std::string warm =
      cli_enqueue(*first, {"--snapshot-key", key, "--", "sh", "-c", "sleep 4; echo 2 > /work/gen"});
  // Started (mark-running wrote its container), not only claimed: the restart
  // must re-attach a running container, not run the job again.
  REQUIRE(eventually([&] { return cli_status(*first, warm)["started_at"].is_string(); },
                     std::chrono::seconds(60)));
  CHECK(cli_status(*first, warm)["from_snapshot"] == true);

  ::kill(first->pid(), SIGKILL);
  while (first->alive()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  options.id = first->router_id();
  options.key_prefix = first->key_prefix();
  RouterProcess second(options);
  SnapshotImageCleanup cleanup_second{second};
  expect_succeeded(second, warm);
  auto rec = cli_status(second, warm);
  INFO(rec.dump());
  CHECK(rec["attempts"] == 1);
  CHECK(rec["snapshot_error"].is_null());
  CHECK(second.log().find("\"run\":\"reattach ") != std::string::npos);

  // The re-attached run committed over generation 1 (not against "no entry",
  // which lost the race and kept the old snapshot), and the next job sees it.
  auto listed = run_cli(second, {"snapshots", "list", "--json"}).json();
  INFO(listed.dump());
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["generation"] == 2);
  CHECK(listed[0]["source_job"] == warm);
  const std::string next = cli_enqueue(
      second, {"--snapshot-key", key, "--", "sh", "-c", "test \"$(cat /work/gen)\" = 2"});
  expect_succeeded(second, next);
}

TEST_CASE("router: the exit code and an OOM kill reach the record from the engine's events",
          "[e2e][router]") {
  RouterProcess router;
  auto three = cli_enqueue(router, {"--", "sh", "-c", "exit 3"});
  // A shell variable far past the 16 MiB limit: the kernel kills it.
  auto hog = cli_enqueue(router, {"--memory", "16m", "--", "sh", "-c",
                                  "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"});
  for (const auto& id : {three, hog}) {
    auto w = run_cli(router, {"wait", id, "--timeout", "60s"});
    INFO("job " << id << ": " << w.err << "\nrouter log:\n" << router.log_tail());
    CHECK(w.exit_code == 1);
  }
  auto failed = cli_status(router, three);
  CHECK(failed["state"] == "failed");
  CHECK(failed["exit_code"] == 3);
  CHECK(failed["error"] == "exit code 3");
  auto killed = cli_status(router, hog);
  CHECK(killed["state"] == "failed");
  CHECK(killed["error"] == "exit code 137 (OOM killed)");
}

TEST_CASE("router: timeout and cancel stop the container", "[e2e][router]") {
  RouterProcessOptions options;
  options.router_toml = "stop_grace = \"1s\"";
  RouterProcess router(options);

  auto slow = cli_enqueue(router, {"--timeout", "2s", "--", "sleep", "60"});
  auto w = run_cli(router, {"wait", slow, "--timeout", "60s"});
  CHECK(w.exit_code == 1);
  CHECK(cli_status(router, slow)["state"] == "timed_out");
  CHECK(containers_of("warmstart.job=" + slow).empty());

  auto victim = cli_enqueue(router, {"--", "sleep", "60"});
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (cli_status(router, victim)["state"] != "running" &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(cli_status(router, victim)["state"] == "running");
  CHECK(run_cli(router, {"cancel", victim}).exit_code == 0);
  auto w2 = run_cli(router, {"wait", victim, "--timeout", "60s"});
  CHECK(w2.exit_code == 1);
  CHECK(cli_status(router, victim)["state"] == "cancelled");
  // The record says cancelled at once; the container is gone once the router
  // has stopped and removed it.
  const auto gone_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!containers_of("warmstart.job=" + victim).empty() &&
         std::chrono::steady_clock::now() < gone_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(containers_of("warmstart.job=" + victim).empty());
}

TEST_CASE("router: a disallowed image never reaches Docker and bad input is refused",
          "[e2e][router]") {
  RouterProcess router;
  auto evil = cli_enqueue(router, {"--image", "evil/miner:latest", "--", "true"});
  auto w = run_cli(router, {"wait", evil, "--timeout", "60s"});
  CHECK(w.exit_code == 1);
  auto rec = cli_status(router, evil);
  CHECK(rec["state"] == "failed");
  CHECK(rec["error"] == "image not allowed: evil/miner:latest");
  CHECK(containers_of("warmstart.job=" + evil).empty());

  // Usage errors exit 2 with a one-line reason.
  auto bad_env = run_cli(router, {"enqueue", "--env", "NOEQUALS", "--", "true"});
  CHECK(bad_env.exit_code == 2);
  CHECK(bad_env.err.find("K=V") != std::string::npos);
  auto bad_id = run_cli(router, {"enqueue", "--id", "has space", "--", "true"});
  CHECK(bad_id.exit_code == 2);
  auto no_cmd = run_cli(router, {"enqueue"});
  CHECK(no_cmd.exit_code == 2);
  auto unknown = run_cli(router, {"status", "no-such-job"});
  CHECK(unknown.exit_code == 1);
}

TEST_CASE("router: enqueue is idempotent by id and spec: another spec under the id is a conflict",
          "[e2e][router]") {
  RouterProcess router;
  const std::string id = unique_name("same-id");
  auto first = run_cli(router, {"enqueue", "--id", id, "--", "echo", "one"});
  REQUIRE(first.exit_code == 0);
  // The same id and spec: the existing job, no second run.
  auto again = run_cli(router, {"enqueue", "--id", id, "--", "echo", "one"});
  CHECK(again.exit_code == 0);
  CHECK(again.out.find(id) != std::string::npos);
  // Another spec under the same id: refused, naming the id (exit 1, never 0).
  auto other = run_cli(router, {"enqueue", "--id", id, "--", "echo", "two"});
  CHECK(other.exit_code == 1);
  CHECK(other.err.find(id) != std::string::npos);
  // The HTTP front answers 409 with both spec hashes.
  const std::string body = R"({"id": ")" + id + R"(", "cmd": ["echo", "three"]})";
  auto conflict = router.call(boost::beast::http::verb::post, "/v1/jobs", body);
  INFO(conflict.body);
  CHECK(conflict.status == 409);
  auto j = nlohmann::json::parse(conflict.body);
  CHECK(j["existing_spec_hash"].is_string());
  CHECK(j["requested_spec_hash"].is_string());
  CHECK(j["existing_spec_hash"] != j["requested_spec_hash"]);
  expect_succeeded(router, id);
  CHECK(run_cli(router, {"logs", id}).out.find("one") != std::string::npos);
}
