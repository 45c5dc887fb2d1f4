// Single-flight cold starts end to end (docs/snapshots.md): the real router
// and CLI against the private redis-server and dockerd. Jobs of a fresh key
// that arrive together build its snapshot once; the builder's loss hands the
// build to a waiter.
#include "api/auth.hpp"
#include "e2e/cli_runner.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <thread>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;
using verb = boost::beast::http::verb;

namespace {

// A setup that runs only when the filesystem has not got it: the cold start
// sleeps 5 s and leaves /work/ready, a warm start finds it.
const std::vector<std::string> kSetup = {
    "sh", "-c",
    "if [ -f /work/ready ]; then echo warm; else sleep 5; echo built > /work/ready; fi"};

std::vector<std::string> enqueue_args(const std::string& key) {
  std::vector<std::string> args = {"--snapshot-key", key, "--max-attempts", "2", "--"};
  args.insert(args.end(), kSetup.begin(), kSetup.end());
  return args;
}

}  // namespace

TEST_CASE("single-flight: six jobs of a fresh key at concurrency 6 - one builds, five start warm",
          "[e2e][single_flight]") {
  RouterProcessOptions options;
  options.concurrency = 6;
  RouterProcess router(options);
  SnapshotImageCleanup cleanup{router};
  const std::string key = unique_name("fanout");
  std::vector<std::string> ids;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 6; ++i) ids.push_back(cli_enqueue(router, enqueue_args(key)));
  for (const auto& id : ids) expect_succeeded(router, id);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int cold = 0;
  for (const auto& id : ids) {
    auto rec = cli_status(router, id);
    INFO(rec.dump());
    CHECK(rec["state"] == "succeeded");
    CHECK(rec["attempts"] == 1);
    if (rec["from_snapshot"] == false) {
      ++cold;
      CHECK(run_cli(router, {"logs", id}).out.find("warm") == std::string::npos);
    } else {
      CHECK(run_cli(router, {"logs", id}).out.find("warm") != std::string::npos);
    }
  }
  CHECK(cold == 1);
  const auto events = events_of(router);
  CHECK(count_events(events, "snapshot.build_started", "key", key) == 1);
  CHECK(count_events(events, "snapshot.build_waiters", "key", key) >= 5);
  CHECK(count_events(events, "snapshot.build_ended", "key", key) == 1);
  // One 5 s setup, not six in parallel on two cores, and no 5 s poll in between.
  CHECK(wall_s < 20.0);
  WARN("6 jobs of a fresh key, single-flight: " << wall_s << " s wall");
}

TEST_CASE("single-flight: the builder's container removed mid-setup - a waiter takes over",
          "[e2e][single_flight]") {
  RouterProcessOptions options;
  options.concurrency = 4;
  RouterProcess router(options);
  SnapshotImageCleanup cleanup{router};
  const std::string key = unique_name("lost-builder");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(cli_enqueue(router, enqueue_args(key)));

  // The builder is the one job running; the others wait for it.
  std::string builder, container;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (container.empty() && std::chrono::steady_clock::now() < until) {
    for (const auto& id : ids) {
      auto rec = cli_status(router, id);
      if (rec["state"] == "running" && rec["container_id"].is_string()) {
        builder = id;
        container = rec["container_id"];
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE_FALSE(container.empty());
  std::this_thread::sleep_for(std::chrono::seconds(1));  // mid-setup
  run_coro([&]() -> awaitable<void> {
    container::DockerClientOptions o;
    o.socket_path = docker_socket();
    auto docker = container::DockerClient::create(co_await net::this_coro::executor, o);
    co_await docker->remove_container(container, true);
  });

  for (const auto& id : ids) expect_succeeded(router, id);
  int warm = 0;
  for (const auto& id : ids) warm += cli_status(router, id)["from_snapshot"] == true ? 1 : 0;
  // Records show each job's last attempt: only the waiter that took the build
  // over ran cold; the others, the removed builder's retry included, started
  // from its snapshot.
  CHECK(warm == 3);
  const auto events = events_of(router);
  CHECK(count_events(events, "snapshot.build_started", "key", key) == 2);
  CHECK(cli_status(router, builder)["attempts"] == 2);
}

TEST_CASE("prewarm: the first job of a prewarmed key starts warm and sees the setup's work",
          "[e2e][single_flight][prewarm]") {
  RouterProcess router;
  SnapshotImageCleanup cleanup{router};
  const std::string key = unique_name("pre") + "/main";
  auto pre = run_cli(
      router, {"prewarm", "--snapshot-key", key, "--", "sh", "-c", "echo built > /work/pre"});
  INFO(pre.err);
  REQUIRE(pre.exit_code == 0);
  const std::string prewarm_id = pre.out.substr(0, pre.out.find('\n'));
  expect_succeeded(router, prewarm_id);
  auto prewarm_rec = cli_status(router, prewarm_id);
  CHECK(prewarm_rec["spec"]["snapshot"]["prewarm"] == true);
  auto first = cli_enqueue(router, {"--snapshot-key", key, "--", "cat", "/work/pre"});
  expect_succeeded(router, first);
  CHECK(cli_status(router, first)["from_snapshot"] == true);
  CHECK(run_cli(router, {"logs", first}).out.find("built") != std::string::npos);

  // Through the API, with the key's '/' encoded: a rebuild of the same key.
  std::string encoded = key;
  encoded.replace(encoded.find('/'), 1, "%2F");
  auto api = router.call(verb::post, "/v1/snapshots/" + encoded + "/prewarm",
                         R"({"cmd": ["sh", "-c", "echo again >> /work/pre"]})");
  INFO(api.body);
  REQUIRE(api.status == 201);
  CHECK(api.json()["coalesced"] == false);
  expect_succeeded(router, api.json()["id"].get<std::string>());
  auto listed = run_cli(router, {"snapshots", "list", "--json"}).json();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["generation"].get<int>() >= 3);  // prewarm, first job, API prewarm
}

TEST_CASE("prewarm: a push to a webhook with prewarm = true rebuilds its key's snapshot",
          "[e2e][single_flight][prewarm][webhook]") {
  const std::string secret = "e2e-prewarm-secret";
  const std::string key = unique_name("hook");
  RouterProcessOptions options;
  options.env["E2E_GH_SECRET"] = secret;
  options.extra_toml =
      "[webhooks.warm]\n"
      "secret_env = \"E2E_GH_SECRET\"\n"
      "events = [\"push\"]\n"
      "cmd = [\"sh\", \"-c\", \"echo {{/after}} > /work/head\"]\n"
      "snapshot_key = \"" +
      key +
      "/{{/ref}}\"\n"
      "prewarm = true\n";
  RouterProcess router(options);
  SnapshotImageCleanup cleanup{router};
  // Each push is a prewarm of its branch's key: the first builds the
  // snapshot, the next rebuilds it with the new head.
  auto push = [&](const std::string& head) {
    const std::string payload = json{{"ref", "main"}, {"after", head}}.dump();
    const std::string signature = "sha256=" + api::to_hex(api::hmac_sha256(secret, payload));
    auto delivered = router.call(verb::post, "/v1/webhooks/warm", payload,
                                 {{"X-GitHub-Event", "push"},
                                  {"X-GitHub-Delivery", unique_name("delivery")},
                                  {"X-Hub-Signature-256", signature},
                                  {"Content-Type", "application/json"}});
    INFO(delivered.body);
    REQUIRE(delivered.status == 201);
    expect_succeeded(router, delivered.json()["job"]["id"].get<std::string>());
  };
  auto head_seen_by_a_job = [&]() {
    auto reader = cli_enqueue(
        router, {"--snapshot-key", key + "/main", "--no-commit", "--", "cat", "/work/head"});
    expect_succeeded(router, reader);
    CHECK(cli_status(router, reader)["from_snapshot"] == true);
    return run_cli(router, {"logs", reader}).out;
  };
  push("abc123");
  auto listed = run_cli(router, {"snapshots", "list", "--json"}).json();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["key"] == key + "/main");
  const int first_generation = listed[0]["generation"];
  CHECK(head_seen_by_a_job().find("abc123") != std::string::npos);
  push("def456");
  listed = run_cli(router, {"snapshots", "list", "--json"}).json();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["generation"].get<int>() > first_generation);
  CHECK(head_seen_by_a_job().find("def456") != std::string::npos);
}

TEST_CASE("single-flight: the builder's router killed with kill -9 - every job still succeeds",
          "[e2e][single_flight]") {
  // Two routers on one Redis and one engine, with short leases: the builder
  // runs on `a`, its waiters are claimed by `b`.
  RouterProcessOptions options;
  options.key_prefix = "ws-" + unique_name("sf-kill") + ":";
  options.concurrency = 1;
  options.router_toml = "lease_timeout = \"3s\"";
  auto a = std::make_unique<RouterProcess>(options);
  SnapshotImageCleanup cleanup{*a};
  const std::string key = unique_name("killed-builder");
  const std::vector<std::string> slow_setup = {
      "sh", "-c",
      "if [ -f /work/ready ]; then echo warm; else sleep 6; echo built > /work/ready; fi"};
  std::vector<std::string> args = {"--snapshot-key", key, "--max-attempts", "2", "--"};
  args.insert(args.end(), slow_setup.begin(), slow_setup.end());
  const std::string builder = cli_enqueue(*a, args);
  REQUIRE(eventually([&] { return cli_status(*a, builder)["state"] == "running"; },
                     std::chrono::seconds(60)));

  RouterProcessOptions b_options = options;
  b_options.concurrency = 2;
  RouterProcess b(b_options);
  // Before b's destructor drops the shared key prefix (and with it the
  // registry this cleanup reads).
  SnapshotImageCleanup cleanup_b{b};
  std::vector<std::string> waiters;
  for (int i = 0; i < 2; ++i) waiters.push_back(cli_enqueue(b, args));
  // Both wait for the builder, holding no slot.
  REQUIRE(eventually(
      [&] {
        return std::all_of(waiters.begin(), waiters.end(), [&](const std::string& id) {
          return cli_status(b, id).value("waiting_for_snapshot", "") == key;
        });
      },
      std::chrono::seconds(30)));

  ::kill(a->pid(), SIGKILL);
  while (a->alive()) std::this_thread::sleep_for(std::chrono::milliseconds(20));

  // `b` takes the builder's job over when its lease runs out, and the
  // waiters start from the snapshot it makes, or one of them builds it.
  std::vector<std::string> all = waiters;
  all.push_back(builder);
  for (const auto& id : all) expect_succeeded(b, id);
  int cold = 0;
  for (const auto& id : all) {
    auto rec = cli_status(b, id);
    INFO(rec.dump());
    CHECK(rec["router_id"] == b.router_id());
    if (rec["from_snapshot"] == false) ++cold;
  }
  CHECK(cold >= 1);
  CHECK(cold <= 2);  // never all three: the waiters did wait
  const auto builder_rec = cli_status(b, builder);
  WARN("builder's router killed: " << cold << " cold start(s) of 3; the builder's job ran "
                                   << builder_rec["attempts"] << " attempt(s), from_snapshot "
                                   << builder_rec["from_snapshot"]);
  const auto events = events_of(b);
  CHECK(count_events(events, "snapshot.build_started", "key", key) >= 1);
  auto listed = run_cli(b, {"snapshots", "list", "--json"}).json();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["key"] == key);
  CHECK(listed[0]["builder"].is_null());
  CHECK(job_containers(builder).empty());
}
