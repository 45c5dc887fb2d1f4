// Hostile input against the real router and CLI (issue 12, part A): poison
// stream entries, operator ceilings, container caps, the CLI forms that used
// to fail and output that must stay JSON whatever a job printed.
#include "e2e/cli_runner.hpp"
#include "queue/redis_queue.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;
using verb = boost::beast::http::verb;

namespace {

std::shared_ptr<container::DockerClient> docker_on(net::any_io_executor ex) {
  container::DockerClientOptions o;
  o.socket_path = docker_socket();
  return container::DockerClient::create(ex, o);
}

// XADDs `payload` as the "job" field of the router's default stream, as a
// producer other than warmstart would.
void xadd_raw(const RouterProcess& router, const std::string& payload) {
  run_coro([&]() -> awaitable<void> {
    queue::RedisQueueOptions o;
    o.redis.url = redis::Url::parse(redis_url());
    o.key_prefix = router.key_prefix();
    queue::RedisQueue q(co_await net::this_coro::executor, o);
    auto args = redis::make_args("XADD", q.stream_key("default"), "*", "job", payload);
    co_await q.client()->command(std::move(args));
  });
}

json wait_state(const RouterProcess& router, const std::string& id, const std::string& state,
                std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = cli_status(router, id);
    if (last["state"] == state) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("job " << id << " not " << state << " within " << limit.count() << " s: " << last.dump()
              << "\nrouter log:\n"
              << router.log_tail());
  return last;
}

json failed_records(const RouterProcess& router) {
  auto r = run_cli(router, {"jobs", "--state", "failed", "--json"});
  REQUIRE(r.exit_code == 0);
  return r.json();
}

}  // namespace

TEST_CASE("e2e: enqueue --env A=1 -- sh -c 'exit 0' runs, and output stays JSON",
          "[e2e][cli][hostile]") {
  RouterProcess router;
  const std::string id = cli_enqueue(router, {"--env", "A=1", "--", "sh", "-c", "exit 0"});
  auto w = run_cli(router, {"wait", id, "--timeout", "90s"});
  INFO(w.err << router.log_tail());
  CHECK(w.exit_code == 0);
  CHECK(cli_status(router, id)["spec"]["env"]["A"] == "1");

  // A job that prints a byte that is not UTF-8: status and jobs still print JSON.
  // (Docker's json-file driver already turns the byte into U+FFFD; the raw
  // byte is written into the record as another log driver, or anything with
  // access to Redis, would leave it.)
  const std::string printer = cli_enqueue(router, {"--", "sh", "-c", "printf 'ok \\377\\n'"});
  REQUIRE(run_cli(router, {"wait", printer, "--timeout", "90s"}).exit_code == 0);
  run_coro([&]() -> awaitable<void> {
    queue::RedisQueueOptions o;
    o.redis.url = redis::Url::parse(redis_url());
    o.key_prefix = router.key_prefix();
    queue::RedisQueue q(co_await net::this_coro::executor, o);
    auto args = redis::make_args("HSET", q.job_key(printer), "log_tail", "ok \377\n");
    co_await q.client()->command(std::move(args));
  });
  auto status = run_cli(router, {"status", printer, "--json"});
  REQUIRE(status.exit_code == 0);
  const json record = json::parse(status.out);       // throws (fails) when not valid JSON
  CHECK(record["log_tail"] == "ok \xEF\xBF\xBD\n");  // U+FFFD for the stray byte
  auto jobs = run_cli(router, {"jobs", "--json"});
  REQUIRE(jobs.exit_code == 0);
  CHECK(json::parse(jobs.out).size() == 2);
  // `logs` prints the bytes as they were.
  CHECK(run_cli(router, {"logs", printer}).out == "ok \377\n");
}

TEST_CASE("e2e: operator ceilings refuse at the CLI, the API and at claim", "[e2e][cli][hostile]") {
  RouterProcessOptions options;
  options.extra_toml = "[limits]\npids = 100\nmemory = \"512m\"\n";
  RouterProcess router(options);

  auto huge = run_cli(router, {"enqueue", "--pids", "4194304", "--memory", "1000g", "--", "true"});
  CHECK(huge.exit_code == 2);
  CHECK(huge.err.find("limits.memory = 512 MiB") != std::string::npos);
  // The router published its own ceiling (100), not the default (1024).
  auto over = run_cli(router, {"enqueue", "--pids", "200", "--", "true"});
  CHECK(over.exit_code == 2);
  CHECK(over.err.find("resources.pids 200 is over the operator's ceiling limits.pids = 100") !=
        std::string::npos);
  const std::string fits = cli_enqueue(router, {"--pids", "100", "--", "true"});
  CHECK(run_cli(router, {"wait", fits, "--timeout", "90s"}).exit_code == 0);
  // A job that asked for nothing runs within the ceilings.
  CHECK(cli_status(router, fits)["spec"]["resources"]["memory_mb"] == 512);

  auto api =
      router.call(verb::post, "/v1/jobs", R"({"cmd": ["true"], "resources": {"pids": 4194304}})");
  CHECK(api.status == 400);
  CHECK(api.body.find("limits.pids = 100") != std::string::npos);

  // Written to Redis by other means: the router re-checks at claim.
  xadd_raw(router, R"({"id": "raw-over", "cmd": ["true"], "resources": {"pids": 4194304}})");
  const json failed = wait_state(router, "raw-over", "failed");
  CHECK(failed["error"].get<std::string>().find("limits.pids = 100") != std::string::npos);
}

TEST_CASE("e2e: a poison stream entry becomes one failed record and the router lives",
          "[e2e][hostile]") {
  // A short lease: reclaim rounds (where a poison entry used to crash the
  // router again and again) come every few seconds of the 60 s watched below.
  RouterProcessOptions options;
  options.router_toml = "lease_timeout = \"3s\"";
  RouterProcess router(options);
  // The 800 KB nested body of issue 12 (over the 256 KiB payload limit) and a
  // 200 KB one under it (refused for its depth).
  const std::string big = R"({"cmd": ["true"], "x": )" + std::string(400 * 1024, '[') +
                          std::string(400 * 1024, ']') + "}";
  const std::string deep = R"({"cmd": ["true"], "x": )" + std::string(100 * 1024, '[') +
                           std::string(100 * 1024, ']') + "}";
  // Over HTTP: refused with 400 before anything is enqueued, and the router lives.
  for (const std::string* body : {&big, &deep}) {
    auto r = router.call(verb::post, "/v1/jobs", *body);
    CHECK(r.status == 400);
    CHECK(router.alive());
  }
  // The same bytes written straight into the stream.
  xadd_raw(router, big);
  xadd_raw(router, deep);
  const auto poisoned_at = std::chrono::steady_clock::now();
  const std::string after = cli_enqueue(router, {"--", "true"});
  REQUIRE(run_cli(router, {"wait", after, "--timeout", "90s"}).exit_code == 0);
  CHECK(router.alive());

  const json failed = failed_records(router);
  REQUIRE(failed.size() == 2);
  std::set<std::string> reasons;
  for (const json& f : failed) {
    CHECK(f["id"].get<std::string>().rfind("raw-default-", 0) == 0);
    reasons.insert(f["error"].get<std::string>());
  }
  CHECK(reasons.count("job is nested deeper than 64 levels") == 1);
  CHECK(reasons.count("job is " + std::to_string(big.size()) + " bytes; the limit is 262144") == 1);

  // Nothing left to reclaim: a later job runs, and there is still one record each.
  const std::string later = cli_enqueue(router, {"--", "true"});
  REQUIRE(run_cli(router, {"wait", later, "--timeout", "90s"}).exit_code == 0);
  CHECK(router.alive());
  CHECK(failed_records(router).size() == 2);

  // And it still lives 60 s after the poison (about 20 lease periods).
  while (std::chrono::steady_clock::now() < poisoned_at + std::chrono::seconds(60)) {
    REQUIRE(router.alive());
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  CHECK(router.call(verb::get, "/healthz").status == 200);
  CHECK(failed_records(router).size() == 2);
}

TEST_CASE("e2e: every job container has a log cap, no swap and a nofile limit", "[e2e][hostile]") {
  RouterProcess router;
  const std::string id = cli_enqueue(router, {"--memory", "64m", "--", "sleep", "60"});
  // "running" comes at claim; the container id once the container exists.
  json record = wait_state(router, id, "running");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!record["container_id"].is_string() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    record = cli_status(router, id);
  }
  REQUIRE(record["container_id"].is_string());
  const std::string container_id = record["container_id"];
  const json raw = run_coro([&]() -> awaitable<json> {
    auto docker = docker_on(co_await net::this_coro::executor);
    co_return co_await docker->inspect_container_raw(container_id);
  });
  const json& host = raw.at("HostConfig");
  CHECK(host.at("Memory") == 64 << 20);
  CHECK(host.at("MemorySwap") == 64 << 20);
  CHECK(host.at("LogConfig").at("Type") == "json-file");
  CHECK(host.at("LogConfig").at("Config").at("max-size") == "10m");
  CHECK(host.at("LogConfig").at("Config").at("max-file") == "3");
  REQUIRE(host.at("Ulimits").size() == 1);
  CHECK(host.at("Ulimits")[0].at("Name") == "nofile");
  CHECK(host.at("Ulimits")[0].at("Hard") == 16384);
  CHECK(run_cli(router, {"cancel", id}).exit_code == 0);
  wait_state(router, id, "cancelled");
}
