// The HTTP API of a real `warmstart router` process against the real Redis and
// dockerd: jobs run to the end, auth, limits, policy, webhooks, the event
// stream with resume, metrics and readiness.
#include "api/auth.hpp"
#include "api/testing_prometheus.hpp"
#include "e2e/router_process.hpp"
#include "queue/redis_queue.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <sstream>

using namespace warmstart;
using namespace warmstart::testing;
using api::testing::Headers;
using api::testing::http_call;
using api::testing::HttpResult;
using nlohmann::json;
using verb = boost::beast::http::verb;

namespace {

const std::set<std::string> terminal_states = {"succeeded", "failed", "timed_out", "cancelled"};

// GET /v1/jobs/{id} until it is in a terminal state; fails the test past `limit`.
json wait_terminal(const RouterProcess& router, const std::string& id, Headers headers = {},
                   std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    HttpResult r = router.call(verb::get, "/v1/jobs/" + id, "", headers);
    REQUIRE(r.status == 200);
    last = r.json();
    if (terminal_states.count(last.value("state", ""))) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  FAIL("job " << id << " not finished within " << limit.count() << " s; last record " << last.dump()
              << "\nrouter log:\n"
              << router.log_tail());
  return last;
}

api::testing::Exposition scrape(const RouterProcess& router) {
  HttpResult r = router.call(verb::get, "/metrics");
  REQUIRE(r.status == 200);
  return api::testing::parse_exposition(r.body);
}

// The retained events after `after_id`, straight from Redis (the source of truth).
std::vector<queue::QueueEvent> events_in_redis(const RouterProcess& router,
                                               const std::string& after_id) {
  return run_coro([&]() -> awaitable<std::vector<queue::QueueEvent>> {
    queue::RedisQueueOptions o;
    o.redis.url = redis::Url::parse(redis_url());
    o.key_prefix = router.key_prefix();
    queue::RedisQueue q(co_await net::this_coro::executor, o);
    co_return co_await q.read_events(after_id, 10000);
  });
}

json data_of(const api::testing::SseMessage& m) {
  return json::parse(m.data);
}

// Reads the stream until an event of `type` for `job` arrived; returns its index.
std::size_t read_until(api::testing::SseClient& sse, const std::string& type,
                       const std::string& job, const RouterProcess& router,
                       std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t checked = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto& messages = sse.read_messages(sse.messages().size() + 1, std::chrono::seconds(2));
    for (; checked < messages.size(); ++checked) {
      const json event = data_of(messages[checked]);
      if (event.value("type", "") == type && event.value("job", "") == job) return checked;
    }
  }
  FAIL("no " << type << " event for " << job << " on the stream within " << limit.count()
             << " s\nrouter log:\n"
             << router.log_tail());
  return 0;
}

}  // namespace

TEST_CASE("e2e: a job posted over HTTP runs to succeeded with its logs", "[e2e][http]") {
  RouterProcess router;

  const std::string id = unique_name("hello");
  const json body = {{"id", id}, {"cmd", {"sh", "-c", "echo hello-from-$WARMSTART_JOB_ID"}}};
  HttpResult created = post_job(router, body);
  REQUIRE(created.status == 201);
  CHECK(created.json().at("id") == id);
  CHECK(created.json().at("state") == "queued");

  const json done = wait_terminal(router, id);
  INFO(done.dump());
  CHECK(done.at("state") == "succeeded");
  CHECK(done.at("exit_code") == 0);
  REQUIRE(done.at("container_id").is_string());
  CHECK_FALSE(done.at("container_id").get<std::string>().empty());
  CHECK(done.at("router_id") == router.router_id());
  CHECK(done.at("attempts") == 1);
  CHECK(done.at("finished_at").is_string());

  HttpResult logs = router.call(verb::get, "/v1/jobs/" + id + "/logs");
  CHECK(logs.status == 200);
  CHECK(logs.headers["content-type"].rfind("text/plain", 0) == 0);
  CHECK(logs.body.find("hello-from-" + id) != std::string::npos);

  SECTION("the same id again returns the existing job and runs nothing") {
    HttpResult again = post_job(router, body);
    CHECK(again.status == 200);
    CHECK(again.json().at("state") == "succeeded");
    CHECK(jobs_listed(router).size() == 1);
  }
  SECTION("listing: all states newest first, and by state") {
    const std::string second = unique_name("second");
    const json second_body = {{"id", second}, {"cmd", {"true"}}};
    REQUIRE(post_job(router, second_body).status == 201);
    wait_terminal(router, second);
    json all = jobs_listed(router);
    REQUIRE(all.size() == 2);
    CHECK(all[0].at("id") == second);
    CHECK(all[1].at("id") == id);
    CHECK(jobs_listed(router, "?state=succeeded").size() == 2);
    CHECK(jobs_listed(router, "?state=queued").empty());
    CHECK(jobs_listed(router, "?limit=1").size() == 1);
  }
  SECTION("cancelling a finished job is a conflict and an unknown one is 404") {
    CHECK(router.call(verb::delete_, "/v1/jobs/" + id).status == 409);
    CHECK(router.call(verb::delete_, "/v1/jobs/no-such-job").status == 404);
    CHECK(router.call(verb::get, "/v1/jobs/no-such-job").status == 404);
    CHECK(router.call(verb::get, "/v1/jobs/no-such-job/logs").status == 404);
  }
  SECTION("metrics show the job and the dispatch latency, and /readyz is 200") {
    // Gauges are refreshed every 2 s.
    double succeeded = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (succeeded < 1 && std::chrono::steady_clock::now() < deadline) {
      succeeded =
          scrape(router).value("warmstart_jobs", "warmstart_jobs", {{"state", "succeeded"}});
      if (succeeded < 1) std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    CHECK(succeeded == 1);
    const auto metrics = scrape(router);
    CHECK(metrics.value("warmstart_jobs", "warmstart_jobs", {{"state", "running"}}) == 0);
    CHECK(metrics.value("warmstart_dispatch_latency_seconds",
                        "warmstart_dispatch_latency_seconds_count") == 1);
    CHECK(metrics.value("warmstart_container_create_seconds",
                        "warmstart_container_create_seconds_count") >= 1);
    CHECK(metrics.value("warmstart_container_start_seconds",
                        "warmstart_container_start_seconds_count") >= 1);
    CHECK(metrics.value("warmstart_running_containers", "warmstart_running_containers") == 0);
    CHECK(metrics.value("warmstart_http_requests_total", "warmstart_http_requests_total",
                        {{"method", "POST"}, {"code", "201"}}) == 1);

    HttpResult ready = router.call(verb::get, "/readyz");
    CHECK(ready.status == 200);
    CHECK(ready.json().at("ready") == true);
    CHECK(ready.json().at("redis") == true);
    CHECK(ready.json().at("docker") == true);
    CHECK(ready.json().at("draining") == false);
  }
}

TEST_CASE("e2e: a running job can be cancelled over HTTP", "[e2e][http]") {
  RouterProcess router;
  const std::string id = unique_name("sleeper");
  const json body = {{"id", id}, {"cmd", {"sleep", "60"}}};
  REQUIRE(post_job(router, body).status == 201);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string state;
  while (state != "running" && std::chrono::steady_clock::now() < deadline) {
    state = router.call(verb::get, "/v1/jobs/" + id).json().value("state", "");
    if (state != "running") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(state == "running");
  HttpResult cancel = router.call(verb::delete_, "/v1/jobs/" + id);
  CHECK(cancel.status == 200);
  const json done = wait_terminal(router, id, {}, std::chrono::seconds(30));
  CHECK(done.at("state") == "cancelled");
  // And its container goes too, also one the cancel caught mid-create: once
  // the run has ended (the router is not stopped with the create in flight,
  // which would leave the container to the next start's orphan sweep).
  auto run_ended = [&] {
    std::istringstream lines(router.log());
    for (std::string line; std::getline(lines, line);) {
      if (line.find("\"msg\":\"job run ended\"") != std::string::npos &&
          line.find("\"job\":\"" + id + "\"") != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  CHECK(eventually(run_ended, std::chrono::seconds(30)));
  CHECK(job_containers(id).empty());
}

TEST_CASE("e2e: with no token configured the router generates one and enforces it",
          "[e2e][http][auth]") {
  RouterProcess router;  // no token_file, no WARMSTART_API_TOKEN
  const fs::path file = fs::path(router.state_dir()) / "api-token";
  REQUIRE(fs::exists(file));
  CHECK((fs::status(file).permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write));
  const std::string token = router.token();
  REQUIRE(token.size() == 64);
  // The log says where the token is, never what it is.
  CHECK(router.log().find(file.string()) != std::string::npos);
  CHECK(router.log().find(token) == std::string::npos);

  const json body = {{"id", unique_name("anon")}, {"cmd", {"true"}}};
  const Headers json_type = {{"Content-Type", "application/json"}};
  HttpResult anonymous_post =
      http_call(router.port(), verb::post, "/v1/jobs", body.dump(), json_type);
  CHECK(anonymous_post.status == 401);
  HttpResult anonymous_get = http_call(router.port(), verb::get, "/v1/jobs");
  CHECK(anonymous_get.status == 401);
  CHECK(anonymous_get.headers.count("www-authenticate") == 1);
  CHECK(http_call(router.port(), verb::get, "/v1/jobs", "", {{"Authorization", "Bearer nope"}})
            .status == 401);
  CHECK(http_call(router.port(), verb::get, "/v1/events?access_token=" + token).status == 401);

  // Authenticated, but what a hostile page in the operator's browser can send:
  const json attack = {{"id", unique_name("attack")}, {"cmd", {"true"}}};
  HttpResult simple =
      router.call(verb::post, "/v1/jobs", attack.dump(), {{"Content-Type", "text/plain"}});
  CHECK(simple.status == 415);
  HttpResult foreign_origin =
      router.call(verb::post, "/v1/jobs", attack.dump(), {{"Origin", "http://evil.example"}});
  CHECK(foreign_origin.status == 403);
  HttpResult rebound = router.call(verb::post, "/v1/jobs", attack.dump(),
                                   {{"Host", "evil.example:" + std::to_string(router.port())}});
  CHECK(rebound.status == 403);
  CHECK(router.call(verb::get, "/v1/jobs", "", {{"Host", "evil.example"}}).status == 403);
  // Probes stay open, whatever they are called by.
  CHECK(http_call(router.port(), verb::get, "/readyz", "", {{"Host", "evil.example"}}).status ==
        200);
  CHECK(http_call(router.port(), verb::get, "/healthz").status == 200);
  CHECK(http_call(router.port(), verb::get, "/metrics").status == 200);
  // Nothing of all that was enqueued.
  CHECK(jobs_listed(router).empty());
  CHECK(router.call(verb::get, "/v1/jobs/" + attack["id"].get<std::string>()).status == 404);

  HttpResult created = post_job(router, body);
  REQUIRE(created.status == 201);
  wait_terminal(router, created.json().at("id"));
}

TEST_CASE("e2e: a token from the environment is the one enforced", "[e2e][http][auth]") {
  RouterProcessOptions options;
  options.env["WARMSTART_API_TOKEN"] = "e2e-secret-token";
  RouterProcess router(options);
  CHECK_FALSE(fs::exists(fs::path(router.state_dir()) / "api-token"));
  CHECK(http_call(router.port(), verb::get, "/v1/jobs").status == 401);
  const Headers auth = {{"Authorization", "Bearer e2e-secret-token"}};
  CHECK(http_call(router.port(), verb::get, "/v1/jobs", "", auth).status == 200);
}

TEST_CASE("e2e: a scoped token only creates jobs inside its snapshot namespace",
          "[e2e][http][auth]") {
  const fs::path token_file = fs::path(run_dir()) / (unique_name("ci-token") + ".txt");
  std::ofstream(token_file) << "ci-scoped-token\n";
  fs::permissions(token_file, fs::perms::owner_read | fs::perms::owner_write);
  RouterProcessOptions options;
  options.extra_toml = "[[api.tokens]]\nname = \"ci\"\ntoken_file = \"" + token_file.string() +
                       "\"\nsnapshot_prefix = \"ci/\"\n";
  RouterProcess router(options);
  const Headers ci = {{"Authorization", "Bearer ci-scoped-token"}};
  const json foreign = {{"id", unique_name("foreign")},
                        {"cmd", {"true"}},
                        {"snapshot", {{"key", "team-b/app"}, {"commit", false}}}};
  HttpResult refused = router.call(verb::post, "/v1/jobs", foreign.dump(), ci);
  CHECK(refused.status == 403);
  const json own = {{"id", unique_name("own")},
                    {"cmd", {"true"}},
                    {"snapshot", {{"key", "ci/app"}, {"commit", false}}}};
  HttpResult created = router.call(verb::post, "/v1/jobs", own.dump(), ci);
  REQUIRE(created.status == 201);
  const json listed = jobs_listed(router);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].at("id") == own.at("id"));
  wait_terminal(router, own.at("id"));
  fs::remove(token_file);
}

TEST_CASE("e2e: auth = none is refused on a listener that is not loopback", "[e2e][http][auth]") {
  // The refusal happens before anything binds: the process exits 2 at once.
  const fs::path dir = fs::path(run_dir()) / unique_name("auth-none");
  fs::create_directories(dir);
  const std::string config = (dir / "router.toml").string();
  std::ofstream(config) << "[router]\nlisten = \"0.0.0.0:" << free_loopback_port()
                        << "\"\nstate_dir = \"" << (dir / "state").string()
                        << "\"\n[api]\nauth = \"none\"\n";
  const std::string log = (dir / "router.log").string();
  std::vector<std::string> args = {warmstart_binary_path(),
                                   "router",
                                   "--config",
                                   config,
                                   "--redis",
                                   redis_url(),
                                   "--docker-host",
                                   "unix://" + docker_socket()};
  std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  const pid_t pid = spawn_logged(std::move(args), std::move(env), log);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("the router kept running with auth = none on 0.0.0.0");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str().find("only allowed on a loopback") != std::string::npos);
}

TEST_CASE("e2e: oversized and disallowed and privileged requests are refused and enqueue nothing",
          "[e2e][http]") {
  RouterProcessOptions options;
  options.extra_toml = "[api]\nbody_limit_bytes = 65536\n";
  options.router_toml = "image_allowlist = [\"allowed.example/*\"]\n";
  RouterProcess router(options);

  SECTION("a body over the limit is 413") {
    const json body = {{"cmd", {"echo", std::string(100 * 1024, 'x')}}};
    HttpResult r = post_job(router, body);
    CHECK(r.status == 413);
  }
  SECTION("an image outside the allowlist is 400 with the reason") {
    const json body = {{"image", "evil.example/miner:latest"}, {"cmd", {"true"}}};
    HttpResult r = post_job(router, body);
    CHECK(r.status == 400);
    CHECK(r.json().at("error").get<std::string>().find("not allowed") != std::string::npos);
    CHECK(r.json().at("error").get<std::string>().find("evil.example/miner") != std::string::npos);
  }
  SECTION("a privileged request is 400 with the reason") {
    const json body = {{"cmd", {"true"}}, {"privileged", true}};
    HttpResult r = post_job(router, body);
    CHECK(r.status == 400);
    CHECK(r.json().at("error").get<std::string>().find("privileged") != std::string::npos);
  }
  SECTION("an invalid job (no cmd) is 400") {
    const json body = {{"image", "allowed.example/x"}};
    HttpResult r = post_job(router, body);
    CHECK(r.status == 400);
    CHECK(r.json().contains("error"));
  }
  CHECK(jobs_listed(router).empty());
  // Nothing reached the events stream either (only the router's own start).
  for (const auto& event : events_in_redis(router, "")) {
    CHECK(event.body.value("type", "").rfind("job.", 0) != 0);
  }
}

TEST_CASE("e2e: a signed webhook delivery creates one job and a bad signature none",
          "[e2e][http][webhook]") {
  const std::string secret = "e2e-hook-secret";
  RouterProcessOptions options;
  options.env["E2E_GH_SECRET"] = secret;
  options.extra_toml =
      "[webhooks.gh]\n"
      "scheme = \"github\"\n"
      "secret_env = \"E2E_GH_SECRET\"\n"
      "events = [\"push\"]\n"
      "cmd = [\"sh\", \"-c\", \"echo built $REF\"]\n"
      "env = { REF = \"{{/ref}}\" }\n";
  RouterProcess router(options);

  const std::string payload = json{{"ref", "refs/heads/main"}, {"after", "abc123"}}.dump();
  const std::string delivery = unique_name("delivery");
  auto headers_for = [&](const std::string& signature) {
    return Headers{{"X-GitHub-Event", "push"},
                   {"X-GitHub-Delivery", delivery},
                   {"X-Hub-Signature-256", signature},
                   {"Content-Type", "application/json"}};
  };
  const std::string good = "sha256=" + api::to_hex(api::hmac_sha256(secret, payload));
  const std::string bad = "sha256=" + api::to_hex(api::hmac_sha256("wrong-secret", payload));

  HttpResult rejected = router.call(verb::post, "/v1/webhooks/gh", payload, headers_for(bad));
  CHECK(rejected.status == 401);
  CHECK(jobs_listed(router).empty());

  HttpResult accepted = router.call(verb::post, "/v1/webhooks/gh", payload, headers_for(good));
  REQUIRE(accepted.status == 201);
  CHECK(accepted.json().at("duplicate") == false);
  const std::string id = accepted.json().at("job").at("id");
  CHECK(id == "wh-gh-" + delivery);

  HttpResult again = router.call(verb::post, "/v1/webhooks/gh", payload, headers_for(good));
  CHECK(again.status == 200);
  CHECK(again.json().at("duplicate") == true);
  CHECK(again.json().at("job").at("id") == id);
  CHECK(jobs_listed(router).size() == 1);

  const json done = wait_terminal(router, id);
  CHECK(done.at("state") == "succeeded");
  HttpResult logs = router.call(verb::get, "/v1/jobs/" + id + "/logs");
  CHECK(logs.body.find("built refs/heads/main") != std::string::npos);
  // The delivery mark lives under the router's key prefix.
  const bool marked = run_coro([&]() -> awaitable<bool> {
    redis::ClientOptions o;
    o.url = redis::Url::parse(redis_url());
    auto client = redis::Client::create(co_await net::this_coro::executor, o);
    co_await client->connect();
    auto args = redis::make_args("EXISTS", router.key_prefix() + "webhook:gh:" + delivery);
    const redis::Reply reply = co_await client->command(std::move(args));
    client->close();
    co_return reply.as_integer() == 1;
  });
  CHECK(marked);
}

TEST_CASE("e2e: the event stream shows a job's life and resumes with Last-Event-ID",
          "[e2e][http][sse]") {
  RouterProcess router;

  api::testing::SseClient live(router.port(), "/v1/events", router.auth());
  REQUIRE(live.read_status() == 200);
  CHECK(live.head().find("text/event-stream") != std::string::npos);

  const std::string first = unique_name("sse-a");
  const json first_body = {{"id", first}, {"cmd", {"true"}}};
  REQUIRE(post_job(router, first_body).status == 201);
  const std::size_t queued = read_until(live, "job.queued", first, router);
  const std::size_t started = read_until(live, "job.started", first, router);
  const std::size_t succeeded = read_until(live, "job.succeeded", first, router);
  CHECK(queued < started);
  CHECK(started < succeeded);
  const json started_event = data_of(live.messages()[started]);
  CHECK(started_event.value("container", "") != "");
  // The SSE id is the event's id, and ids increase.
  for (std::size_t i = 0; i < live.messages().size(); ++i) {
    const auto& m = live.messages()[i];
    CHECK(m.id == data_of(m).value("id", ""));
    CHECK(m.event == data_of(m).value("type", ""));
    if (i > 0) CHECK(api::event_id_less(live.messages()[i - 1].id, m.id));
  }
  const std::string last_seen = live.messages()[succeeded].id;
  live.close();

  // While nobody listens, a second job runs.
  const std::string second = unique_name("sse-b");
  const json second_body = {{"id", second}, {"cmd", {"true"}}};
  REQUIRE(post_job(router, second_body).status == 201);
  CHECK(wait_terminal(router, second).at("state") == "succeeded");

  const std::vector<queue::QueueEvent> missed = events_in_redis(router, last_seen);
  REQUIRE(missed.size() >= 3);
  std::vector<std::string> missed_types;
  for (const auto& e : missed) {
    CHECK(e.body.value("job", "") != first);
    if (e.body.value("job", "") == second) missed_types.push_back(e.body.value("type", ""));
  }
  CHECK(missed_types == std::vector<std::string>{"job.queued", "job.started", "job.succeeded"});

  api::testing::Headers resume_headers = router.auth();
  resume_headers["Last-Event-ID"] = last_seen;
  api::testing::SseClient resumed(router.port(), "/v1/events", resume_headers);
  REQUIRE(resumed.read_status() == 200);
  resumed.read_messages(missed.size(), std::chrono::seconds(10));
  // Exactly the missed ones: nothing more arrives after them.
  resumed.read_messages(missed.size() + 1, std::chrono::seconds(1));
  std::vector<std::string> expected_ids;
  for (const auto& e : missed) expected_ids.push_back(e.id);
  CHECK(resumed.ids() == expected_ids);
}

TEST_CASE("e2e: SIGTERM ends event streams and the router exits 0", "[e2e][http][sse]") {
  RouterProcess router;
  api::testing::SseClient live(router.port(), "/v1/events", router.auth());
  REQUIRE(live.read_status() == 200);
  CHECK(router.call(verb::get, "/readyz").status == 200);

  const int status = router.stop(std::chrono::seconds(15));
  INFO("exit status " << status << "; router log:\n" << router.log_tail(20000));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(live.wait_closed(std::chrono::seconds(5)));
  CHECK_THROWS(router.call(verb::get, "/healthz"));
  CHECK(router.log().find("\"msg\":\"http stopping\"") != std::string::npos);
}
