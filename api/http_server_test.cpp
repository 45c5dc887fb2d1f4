// Integration tests of the HTTP front: a real server on 127.0.0.1:0 with the
// in-memory TestingBackend. (End-to-end tests through the router's real
// Backend come with the router.)
#include "api/auth.hpp"
#include "api/testing_http.hpp"
#include "api/testing_prometheus.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::api;
using namespace warmstart::api::testing;
using nlohmann::json;
using verb = beast::http::verb;

namespace {

std::string job(const std::string& id) {
  return json{{"id", id}, {"cmd", {"sh", "-c", "true"}}}.dump();
}

}  // namespace

TEST_CASE("jobs: create, idempotent create, get, list, logs, cancel") {
  ServerFixture f;
  auto created = http_call(f.port, verb::post, "/v1/jobs", job("build-1"));
  CHECK(created.status == 201);
  CHECK(created.headers["content-type"] == "application/json");
  CHECK(created.json()["id"] == "build-1");
  CHECK(created.json()["state"] == "queued");

  auto again = http_call(f.port, verb::post, "/v1/jobs", job("build-1"));
  CHECK(again.status == 200);
  CHECK(again.json()["id"] == "build-1");
  CHECK(f.backend.job_count() == 1);

  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("build-2")).status == 201);
  f.backend.set_job_state("build-2", "running");
  f.backend.set_job_logs("build-1", "line 1\nline 2\n");

  auto got = http_call(f.port, verb::get, "/v1/jobs/build-1");
  CHECK(got.status == 200);
  CHECK(got.json()["spec"]["cmd"] == json::array({"sh", "-c", "true"}));

  auto all = http_call(f.port, verb::get, "/v1/jobs");
  REQUIRE(all.status == 200);
  REQUIRE(all.json()["jobs"].size() == 2);
  CHECK(all.json()["jobs"][0]["id"] == "build-2");  // newest first
  auto running = http_call(f.port, verb::get, "/v1/jobs?state=running");
  REQUIRE(running.json()["jobs"].size() == 1);
  CHECK(running.json()["jobs"][0]["id"] == "build-2");
  CHECK(http_call(f.port, verb::get, "/v1/jobs?limit=1").json()["jobs"].size() == 1);

  auto logs = http_call(f.port, verb::get, "/v1/jobs/build-1/logs");
  CHECK(logs.status == 200);
  CHECK(logs.headers["content-type"] == "text/plain; charset=utf-8");
  CHECK(logs.body == "line 1\nline 2\n");

  auto cancelled = http_call(f.port, verb::delete_, "/v1/jobs/build-2");
  CHECK(cancelled.status == 200);
  CHECK(cancelled.json()["state"] == "cancelled");
  auto conflict = http_call(f.port, verb::delete_, "/v1/jobs/build-2");
  CHECK(conflict.status == 409);
  CHECK(conflict.json()["error"] == "job build-2 already cancelled");
  CHECK(f.stop());
}

TEST_CASE("routing and JSON errors") {
  ServerFixture f;
  auto missing = http_call(f.port, verb::get, "/v1/nope");
  CHECK(missing.status == 404);
  CHECK(missing.json()["error"] == "no route for /v1/nope");
  auto unknown_job = http_call(f.port, verb::get, "/v1/jobs/ghost");
  CHECK(unknown_job.status == 404);
  CHECK(unknown_job.json()["error"] == "no such job: ghost");
  auto wrong_method = http_call(f.port, verb::put, "/v1/jobs");
  CHECK(wrong_method.status == 405);
  CHECK(wrong_method.headers["allow"] == "POST, GET");
  CHECK(wrong_method.json().contains("error"));

  auto bad_json = http_call(f.port, verb::post, "/v1/jobs", "{not json");
  CHECK(bad_json.status == 400);
  CHECK(bad_json.json()["error"] == "body is not valid JSON");
  auto no_cmd = http_call(f.port, verb::post, "/v1/jobs", R"({"id":"x"})");
  CHECK(no_cmd.status == 400);
  CHECK(no_cmd.json()["error"] == "job.cmd must be a non-empty array of strings");
  auto privileged = http_call(f.port, verb::post, "/v1/jobs", R"({"cmd":["x"],"privileged":true})");
  CHECK(privileged.status == 400);
  CHECK(http_call(f.port, verb::get, "/v1/jobs?state=bogus").status == 400);
  CHECK(http_call(f.port, verb::get, "/v1/jobs?limit=0").status == 400);
  CHECK(http_call(f.port, verb::get, "/v1/jobs?limit=abc").status == 400);
  CHECK(http_call(f.port, verb::get, "/v1/jobs/%zz").status == 400);
  CHECK(f.backend.job_count() == 0);

  auto health = http_call(f.port, verb::get, "/healthz");
  CHECK(health.status == 200);
  CHECK(health.json()["status"] == "ok");
  CHECK(f.stop());
}

TEST_CASE("snapshots: list and invalidate keys containing '/'") {
  ServerFixture f;
  f.backend.add_snapshot(
      {{"key", "repo-42/branch-main"}, {"image", "warmstart-snap:1"}, {"size", 10}});
  f.backend.add_snapshot(
      {{"key", "org/repo/refs/heads/x"}, {"image", "warmstart-snap:2"}, {"size", 20}});
  auto list = http_call(f.port, verb::get, "/v1/snapshots");
  REQUIRE(list.status == 200);
  CHECK(list.json()["snapshots"].size() == 2);

  auto plain = http_call(f.port, verb::delete_, "/v1/snapshots/repo-42/branch-main");
  CHECK(plain.status == 200);
  CHECK(plain.json()["key"] == "repo-42/branch-main");
  auto encoded = http_call(f.port, verb::delete_, "/v1/snapshots/org%2Frepo/refs%2Fheads%2Fx");
  CHECK(encoded.status == 200);
  CHECK(encoded.json()["key"] == "org/repo/refs/heads/x");
  CHECK(http_call(f.port, verb::delete_, "/v1/snapshots/repo-42/branch-main").status == 404);
  CHECK(http_call(f.port, verb::get, "/v1/snapshots").json()["snapshots"].empty());
  CHECK(f.stop());
}

TEST_CASE("snapshots: POST /v1/snapshots/{key}/prewarm enqueues a prewarm of the key") {
  ServerFixture f;
  auto made = http_call(f.port, verb::post, "/v1/snapshots/org%2Frepo/prewarm",
                        R"({"id": "pw-1", "cmd": ["sh", "-c", "echo built > /work/pre"]})");
  REQUIRE(made.status == 201);
  CHECK(made.json()["id"] == "pw-1");
  CHECK(made.json()["coalesced"] == false);
  CHECK(made.json()["job"]["spec"]["snapshot"] ==
        json::parse(R"({"key": "org/repo", "reuse": true, "commit": true, "prewarm": true})"));
  auto fresh = http_call(f.port, verb::post, "/v1/snapshots/k/prewarm",
                         R"({"cmd": ["true"], "snapshot": {"reuse": false}})");
  REQUIRE(fresh.status == 201);
  CHECK(fresh.json()["job"]["spec"]["snapshot"]["reuse"] == false);
  // The key is the path's; a body naming another (or no command) is refused.
  CHECK(http_call(f.port, verb::post, "/v1/snapshots/k/prewarm",
                  R"({"cmd": ["true"], "snapshot": {"key": "other"}})")
            .status == 400);
  CHECK(http_call(f.port, verb::post, "/v1/snapshots/k/prewarm", R"({"env": {}})").status == 400);
  CHECK(http_call(f.port, verb::post, "/v1/snapshots/k/prewarm", R"([1])").status == 400);
  CHECK(f.backend.job_count() == 2);
  CHECK(f.stop());
}

TEST_CASE("routers: GET /v1/routers lists the fleet from the backend") {
  ServerFixture f;
  CHECK(http_call(f.port, verb::get, "/v1/routers").json()["routers"].empty());
  f.backend.set_routers({{{"id", "r1"}, {"status", "live"}, {"engine_id", "E1"}},
                         {{"id", "r2"}, {"status", "lost"}, {"engine_id", "E2"}}});
  auto list = http_call(f.port, verb::get, "/v1/routers");
  REQUIRE(list.status == 200);
  REQUIRE(list.json()["routers"].size() == 2);
  CHECK(list.json()["routers"][1]["status"] == "lost");
  CHECK(http_call(f.port, verb::put, "/v1/routers").status == 405);
  CHECK(f.stop());
}

TEST_CASE("history: GET /v1/history serves the recorded points, newer than ?since=") {
  ServerFixture f;
  auto empty = http_call(f.port, verb::get, "/v1/history");
  REQUIRE(empty.status == 200);
  CHECK(empty.json()["points"].empty());
  CHECK(empty.json()["interval_ms"] == History::default_interval_ms);
  f.metrics.job_starts(StartKind::warm).Increment(2);
  f.metrics.record_history(1'000);
  f.metrics.job_starts(StartKind::cold).Increment();
  f.metrics.record_history(11'000);
  auto all = http_call(f.port, verb::get, "/v1/history");
  REQUIRE(all.json()["points"].size() == 2);
  CHECK(all.json()["points"][0]["warm"] == 2);
  CHECK(all.json()["points"][1]["cold"] == 1);
  CHECK(all.json()["points"][1]["warm"] == 0);
  auto newer = http_call(f.port, verb::get, "/v1/history?since=1000");
  REQUIRE(newer.json()["points"].size() == 1);
  CHECK(newer.json()["points"][0]["t"] == 11'000);
  CHECK(http_call(f.port, verb::get, "/v1/history?since=soon").status == 400);
  CHECK(http_call(f.port, verb::get, "/v1/history?since=-5").status == 400);
  CHECK(http_call(f.port, verb::post, "/v1/history", "{}").status == 405);
  CHECK(f.stop());
}

namespace {

ServerOptions with_tokens() {
  ServerOptions options;
  options.tokens.push_back({"default", "t0ken-for-tests", std::nullopt});
  options.tokens.push_back({"ci", "ci-t0ken", std::string("ci/")});
  return options;
}

Headers bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

std::string job_with_key(const std::string& id, const std::string& key) {
  return json{{"id", id}, {"cmd", {"true"}}, {"snapshot", {{"key", key}}}}.dump();
}

}  // namespace

TEST_CASE("auth: bearer token on /v1, open health, metrics and dashboard") {
  ServerFixture f(with_tokens());

  auto none = http_call(f.port, verb::get, "/v1/jobs");
  CHECK(none.status == 401);
  CHECK(none.json()["error"] == "missing bearer token");
  CHECK(none.headers["www-authenticate"].starts_with("Bearer"));
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("a")).status == 401);
  auto wrong = http_call(f.port, verb::get, "/v1/jobs", "", bearer("t0ken-for-test"));
  CHECK(wrong.status == 401);
  CHECK(wrong.json()["error"] == "invalid token");
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("a"), bearer("nope")).status == 401);
  CHECK(f.backend.job_count() == 0);
  CHECK(http_call(f.port, verb::get, "/v1/jobs", "", bearer("t0ken-for-tests")).status == 200);
  CHECK(http_call(f.port, verb::get, "/v1/jobs", "", bearer("ci-t0ken")).status == 200);
  // A token in the query string is never accepted, on no route.
  CHECK(http_call(f.port, verb::get, "/v1/jobs?access_token=t0ken-for-tests").status == 401);

  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  CHECK(http_call(f.port, verb::get, "/readyz").status == 200);
  CHECK(http_call(f.port, verb::get, "/metrics").status == 200);
  CHECK(http_call(f.port, verb::get, "/").status == 200);

  SseClient anonymous(f.port, "/v1/events");
  CHECK(anonymous.read_status() == 401);
  SseClient by_query(f.port, "/v1/events?access_token=t0ken-for-tests");
  CHECK(by_query.read_status() == 401);
  SseClient by_header(f.port, "/v1/events", bearer("t0ken-for-tests"));
  CHECK(by_header.read_status() == 200);
  CHECK(f.stop());
}

TEST_CASE("front door: Content-Type, Origin and Host are checked before anything is enqueued") {
  ServerFixture f(with_tokens());
  const auto token = bearer("t0ken-for-tests");
  auto with = [&](Headers extra) {
    Headers h = token;
    for (auto& [k, v] : extra) h[k] = v;
    return h;
  };
  // A browser's cross-site "simple request" is text/plain or a form.
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "", "json"}) {
    INFO(type);
    auto r =
        http_call(f.port, verb::post, "/v1/jobs", job("simple"), with({{"Content-Type", type}}));
    CHECK(r.status == 415);
    CHECK_THAT(r.json()["error"].get<std::string>(), Catch::Contains("application/json"));
  }
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("typed"),
                  with({{"Content-Type", "Application/JSON; charset=utf-8"}}))
            .status == 201);

  // Origin: foreign (and "null") refused on mutating routes, same origin fine.
  const std::string self = "http://127.0.0.1:" + std::to_string(f.port);
  for (const std::string origin :
       {"http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1.evil.example"}) {
    INFO(origin);
    auto r = http_call(f.port, verb::post, "/v1/jobs", job("csrf"), with({{"Origin", origin}}));
    CHECK(r.status == 403);
    CHECK(
        http_call(f.port, verb::delete_, "/v1/jobs/typed", "", with({{"Origin", origin}})).status ==
        403);
  }
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("same"), with({{"Origin", self}})).status ==
        201);
  // Reads are not refused for an Origin (no CORS headers are ever sent).
  CHECK(http_call(f.port, verb::get, "/v1/jobs", "", with({{"Origin", "http://evil.example"}}))
            .status == 200);

  // Host: a rebound name is refused on every route but the probes.
  for (const char* host : {"evil.example", "evil.example:", "localhost.evil.example", "10.0.0.1"}) {
    INFO(host);
    CHECK(http_call(f.port, verb::get, "/v1/jobs", "", with({{"Host", host}})).status == 403);
    CHECK(
        http_call(f.port, verb::post, "/v1/jobs", job("rebound"), with({{"Host", host}})).status ==
        403);
    CHECK(http_call(f.port, verb::get, "/", "", {{"Host", host}}).status == 403);
    CHECK(http_call(f.port, verb::get, "/healthz", "", {{"Host", host}}).status == 200);
    CHECK(http_call(f.port, verb::get, "/readyz", "", {{"Host", host}}).status == 200);
  }
  for (const char* host : {"localhost", "localhost:8080", "127.0.0.1", "[::1]:80", "127.0.0.2"}) {
    INFO(host);
    CHECK(http_call(f.port, verb::get, "/v1/jobs", "", with({{"Host", host}})).status == 200);
  }
  CHECK(f.backend.job_count() == 2);  // "typed" and "same"
  CHECK(f.backend.enqueue_calls() == 2);
  CHECK(f.stop());
}

TEST_CASE("front door: allowed_hosts and allowed_origins admit configured names") {
  ServerOptions options = with_tokens();
  options.allowed_hosts = {"Warmstart.Example.com"};
  options.allowed_origins = {"https://ops.example.com"};
  ServerFixture f(options);
  Headers h = bearer("t0ken-for-tests");
  h["Host"] = "warmstart.example.com";
  CHECK(http_call(f.port, verb::get, "/v1/jobs", "", h).status == 200);
  h["Origin"] = "https://ops.example.com";
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("from-ops"), h).status == 201);
  h["Origin"] = "https://warmstart.example.com";  // same origin behind a TLS proxy
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("proxied"), h).status == 201);
  h["Origin"] = "https://other.example.com";
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("other"), h).status == 403);
  CHECK(f.backend.job_count() == 2);
  CHECK(f.stop());
}

TEST_CASE("server options: auth none only on loopback, auth token needs a token") {
  ServerOptions open;
  open.auth = AuthMode::none;
  open.listen = "127.0.0.1:8080";
  CHECK_NOTHROW(validate_server_options(open));
  open.listen = "[::1]:8080";
  CHECK_NOTHROW(validate_server_options(open));
  for (const char* listen : {"0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"}) {
    open.listen = listen;
    CHECK_THROWS_WITH(validate_server_options(open), Catch::Contains("only allowed on a loopback"));
  }
  ServerOptions tokenless;
  tokenless.listen = "127.0.0.1:8080";
  CHECK_THROWS_WITH(validate_server_options(tokenless), Catch::Contains("no token"));
  ServerOptions twice = with_tokens();
  twice.listen = "0.0.0.0:8080";
  CHECK_NOTHROW(validate_server_options(twice));
  twice.tokens[1].secret = twice.tokens[0].secret;
  CHECK_THROWS_WITH(validate_server_options(twice), Catch::Contains("same secret"));
  ServerOptions bad_host = with_tokens();
  bad_host.listen = "127.0.0.1:8080";
  bad_host.allowed_hosts = {"not a host"};
  CHECK_THROWS_AS(validate_server_options(bad_host), std::invalid_argument);
}

TEST_CASE("scoped tokens: jobs and snapshot calls stay inside the token's key prefix") {
  ServerFixture f(with_tokens());
  f.backend.add_snapshot({{"key", "ci/app"}, {"image", "s:1"}, {"size", 1}});
  f.backend.add_snapshot({{"key", "team-b/app"}, {"image", "s:2"}, {"size", 1}});
  const auto ci = bearer("ci-t0ken");
  const auto admin = bearer("t0ken-for-tests");

  auto foreign = http_call(f.port, verb::post, "/v1/jobs", job_with_key("j1", "team-b/app"), ci);
  CHECK(foreign.status == 403);
  CHECK_THAT(foreign.json()["error"].get<std::string>(), Catch::Contains("\"ci/\""));
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job_with_key("j2", "ci"), ci).status == 403);
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job_with_key("j3", "ci/app"), ci).status == 201);
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job("cold"), ci).status == 201);
  CHECK(http_call(f.port, verb::post, "/v1/jobs", job_with_key("j4", "team-b/app"), admin).status ==
        201);

  auto listed = http_call(f.port, verb::get, "/v1/snapshots", "", ci).json()["snapshots"];
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["key"] == "ci/app");
  CHECK(http_call(f.port, verb::get, "/v1/snapshots", "", admin).json()["snapshots"].size() == 2);
  CHECK(http_call(f.port, verb::delete_, "/v1/snapshots/team-b/app", "", ci).status == 403);
  CHECK(http_call(f.port, verb::delete_, "/v1/snapshots/ci/app", "", ci).status == 200);
  CHECK(http_call(f.port, verb::post, "/v1/snapshots/team-b%2Fapp/prewarm", R"({"cmd": ["true"]})",
                  ci)
            .status == 403);
  CHECK(f.backend.job_count() == 3);
  CHECK(f.stop());
}

TEST_CASE("connection caps: per client for HTTP, a separate pool for event streams") {
  ServerOptions options;
  options.max_connections_per_client = 2;
  options.max_event_streams = 3;
  options.max_event_streams_per_client = 2;
  ServerFixture f(options);
  net::io_context io;
  net::ip::tcp::socket a(io), b(io);
  a.connect({net::ip::address_v4::loopback(), f.port});
  b.connect({net::ip::address_v4::loopback(), f.port});
  REQUIRE(eventually([&] { return f.server->connection_count() == 2; }));
  auto refused = http_call(f.port, verb::get, "/healthz");
  CHECK(refused.status == 429);
  CHECK(refused.json()["error"] == "too many connections from this address");
  a.close();
  b.close();
  REQUIRE(eventually([&] { return f.server->connection_count() == 0; }));

  // Streams leave the HTTP pool: two streams, and requests still get through.
  SseClient s1(f.port, "/v1/events");
  REQUIRE(s1.read_status() == 200);
  SseClient s2(f.port, "/v1/events");
  REQUIRE(s2.read_status() == 200);
  REQUIRE(eventually([&] { return f.server->event_stream_count() == 2; }));
  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  CHECK(http_call(f.port, verb::get, "/v1/jobs").status == 200);
  SseClient s3(f.port, "/v1/events");
  CHECK(s3.read_status() == 429);
  s1.close();
  REQUIRE(eventually([&] { return f.server->event_stream_count() == 1; }));
  SseClient s4(f.port, "/v1/events");
  CHECK(s4.read_status() == 200);
  CHECK(f.stop());
}

TEST_CASE("lists carry summaries: no env values, no log tail") {
  ServerFixture f;
  const json body = {{"id", "secretive"}, {"cmd", {"true"}}, {"env", {{"API_KEY", "sk-12345"}}}};
  REQUIRE(http_call(f.port, verb::post, "/v1/jobs", body.dump()).status == 201);
  f.backend.set_job_logs("secretive", "printed sk-12345\n");
  auto list = http_call(f.port, verb::get, "/v1/jobs");
  REQUIRE(list.status == 200);
  CHECK(list.body.find("sk-12345") == std::string::npos);
  const json listed = list.json()["jobs"][0];
  CHECK(listed["spec"]["env_keys"] == json::array({"API_KEY"}));
  CHECK_FALSE(listed["spec"].contains("env"));
  CHECK_FALSE(listed.contains("log_tail"));
  CHECK(http_call(f.port, verb::get, "/v1/jobs?state=queued").body.find("sk-12345") ==
        std::string::npos);
  auto summary = http_call(f.port, verb::get, "/v1/jobs/secretive?view=summary");
  CHECK(summary.body.find("sk-12345") == std::string::npos);
  // Asked for by id, the record is whole.
  CHECK(http_call(f.port, verb::get, "/v1/jobs/secretive").json()["spec"]["env"]["API_KEY"] ==
        "sk-12345");
  CHECK(f.stop());
}

TEST_CASE("a body over the limit answers 413 and reaches nothing") {
  ServerFixture f;  // default limit: 1 MiB
  json body = {{"cmd", {"sh", "-c", std::string(1536 * 1024, 'x')}}};
  auto big = http_call(f.port, verb::post, "/v1/jobs", body.dump());
  CHECK(big.status == 413);
  CHECK(big.json()["error"] == "request body exceeds 1048576 bytes");
  CHECK(f.backend.enqueue_calls() == 0);
  // Just under the limit is fine.
  json fits = {{"cmd", {"sh", "-c", std::string(1000 * 1024, 'x')}}};
  CHECK(http_call(f.port, verb::post, "/v1/jobs", fits.dump()).status == 201);
  CHECK(f.stop());
}

TEST_CASE("readyz is 503 with reasons when the backend is not ready") {
  ServerFixture f;
  auto ok = http_call(f.port, verb::get, "/readyz");
  CHECK(ok.status == 200);
  CHECK(ok.json()["ready"] == true);
  f.backend.set_ready({true, false, false});
  auto no_docker = http_call(f.port, verb::get, "/readyz");
  CHECK(no_docker.status == 503);
  CHECK(no_docker.json()["reasons"] == json::array({"docker unreachable"}));
  f.backend.set_ready({false, true, true});
  auto draining = http_call(f.port, verb::get, "/readyz");
  CHECK(draining.status == 503);
  CHECK(draining.json()["reasons"] == json::array({"redis unreachable", "draining"}));
  CHECK(f.stop());
}

TEST_CASE("/metrics parses as the Prometheus text format and counts requests") {
  ServerFixture f;
  f.metrics.dispatch_latency().Observe(1.5);
  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  CHECK(http_call(f.port, verb::get, "/v1/nope").status == 404);
  auto res = http_call(f.port, verb::get, "/metrics");
  REQUIRE(res.status == 200);
  CHECK(res.headers["content-type"] == "text/plain; version=0.0.4");
  const auto e = parse_exposition(res.body);
  CHECK(e.value("warmstart_http_requests_total", "warmstart_http_requests_total",
                {{"method", "GET"}, {"code", "200"}}) >= 1);
  CHECK(e.value("warmstart_http_requests_total", "warmstart_http_requests_total",
                {{"method", "GET"}, {"code", "404"}}) == 1);
  CHECK(e.value("warmstart_dispatch_latency_seconds", "warmstart_dispatch_latency_seconds_count") ==
        1);
  CHECK(f.stop());
}

TEST_CASE("the dashboard is served from the binary") {
  ServerFixture f;
  auto res = http_call(f.port, verb::get, "/");
  REQUIRE(res.status == 200);
  CHECK(res.headers["content-type"] == "text/html; charset=utf-8");
  CHECK(res.headers["content-security-policy"].find("default-src 'none'") != std::string::npos);
  CHECK(res.body.find("id=\"jobs-table\"") != std::string::npos);
  CHECK(res.body.find("text/event-stream") != std::string::npos);
  CHECK(res.body.find("id=\"charts\"") != std::string::npos);
  // No CDN, nothing remote. The SVG namespace is a name, never fetched.
  std::string page = res.body;
  const std::string svg_ns = "\"http://www.w3.org/2000/svg\"";
  CHECK(page.find(svg_ns) != std::string::npos);
  for (auto at = page.find(svg_ns); at != std::string::npos; at = page.find(svg_ns)) {
    page.erase(at, svg_ns.size());
  }
  CHECK(page.find("http://") == std::string::npos);
  CHECK(page.find("https://") == std::string::npos);
  CHECK(f.stop());
}

// ---------------------------------------------------------------------------
// Webhooks

namespace {

const std::string gh_secret = "It's a Secret to Everybody";

ServerOptions webhook_options(std::optional<std::string> token = std::nullopt,
                              std::optional<std::string> snapshot_prefix = std::nullopt) {
  ServerOptions options;
  if (token) options.tokens.push_back({"default", *token, std::nullopt});
  auto table = toml::parse(R"(
    secret_env = "GH_SECRET"
    events = ["push"]
    cmd = ["sh", "-c", "echo {{/repository/full_name}}"]
    env = { REPO = "{{/repository/full_name}}" }
    snapshot_key = "{{/repository/full_name}}/{{/ref}}"
    id = "gh-{{delivery}}"
  )");
  options.webhooks.emplace("github", parse_webhook_config("github", table, [](const std::string&) {
                             return std::optional<std::string>(gh_secret);
                           }));
  options.webhooks["github"].snapshot_prefix = std::move(snapshot_prefix);
  return options;
}

const std::string push = R"({"ref":"refs/heads/main","repository":{"full_name":"acme/app"}})";

Headers github_headers(const std::string& body, const std::string& delivery,
                       const std::string& event = "push") {
  return {{"X-Hub-Signature-256", "sha256=" + to_hex(hmac_sha256(gh_secret, body))},
          {"X-GitHub-Event", event},
          {"X-GitHub-Delivery", delivery},
          {"Content-Type", "application/json"}};
}

}  // namespace

TEST_CASE("webhook: bad or missing signature is 401 and enqueues nothing") {
  ServerFixture f(webhook_options());
  auto headers = github_headers(push, "d-1");
  headers["X-Hub-Signature-256"] = "sha256=" + to_hex(hmac_sha256("not the secret", push));
  auto bad = http_call(f.port, verb::post, "/v1/webhooks/github", push, headers);
  CHECK(bad.status == 401);
  CHECK(bad.json()["error"] == "signature does not match");
  headers.erase("X-Hub-Signature-256");
  auto missing = http_call(f.port, verb::post, "/v1/webhooks/github", push, headers);
  CHECK(missing.status == 401);
  CHECK(missing.json()["error"] == "missing X-Hub-Signature-256 header");
  CHECK(f.backend.enqueue_calls() == 0);
  CHECK(f.backend.job_count() == 0);
  CHECK(http_call(f.port, verb::post, "/v1/webhooks/gitlab", push, github_headers(push, "d"))
            .status == 404);
  CHECK(f.stop());
}

TEST_CASE("webhook: a signed push becomes the templated job and a redelivery is no second job") {
  ServerFixture f(webhook_options("api-token"));  // webhooks do not need the bearer token
  auto first =
      http_call(f.port, verb::post, "/v1/webhooks/github", push, github_headers(push, "d-42"));
  REQUIRE(first.status == 201);
  const json job = first.json()["job"];
  CHECK(job["id"] == "gh-d-42");
  CHECK(job["spec"]["cmd"] == json::array({"sh", "-c", "echo acme/app"}));
  CHECK(job["spec"]["env_keys"] == json::array({"REPO"}));  // a summary: no env values
  CHECK(first.body.find("\"REPO\":\"acme/app\"") == std::string::npos);
  CHECK(job["spec"]["snapshot"]["key"] == "acme/app/refs/heads/main");

  auto second =
      http_call(f.port, verb::post, "/v1/webhooks/github", push, github_headers(push, "d-42"));
  CHECK(second.status == 200);
  CHECK(second.json()["duplicate"] == true);
  CHECK(second.json()["job"]["id"] == "gh-d-42");
  CHECK(f.backend.job_count() == 1);
  CHECK(f.backend.enqueue_calls() == 1);

  auto ping = http_call(f.port, verb::post, "/v1/webhooks/github", push,
                        github_headers(push, "d-43", "ping"));
  CHECK(ping.status == 202);
  CHECK(ping.json()["ignored"] == "event \"ping\" is not configured");

  const std::string incomplete = R"({"ref":"refs/heads/main"})";
  auto bad = http_call(f.port, verb::post, "/v1/webhooks/github", incomplete,
                       github_headers(incomplete, "d-44"));
  CHECK(bad.status == 400);
  CHECK(bad.json()["error"] == "payload has no value at /repository/full_name");
  CHECK(f.backend.job_count() == 1);
  CHECK(f.stop());
}

TEST_CASE("webhook: a snapshot_prefix keeps its jobs inside the webhook's namespace") {
  ServerFixture f(webhook_options(std::nullopt, "acme/"));
  auto own = http_call(f.port, verb::post, "/v1/webhooks/github", push, github_headers(push, "p1"));
  CHECK(own.status == 201);
  const std::string other = R"({"ref":"refs/heads/main","repository":{"full_name":"evil/app"}})";
  auto foreign =
      http_call(f.port, verb::post, "/v1/webhooks/github", other, github_headers(other, "p2"));
  CHECK(foreign.status == 403);
  CHECK(f.backend.job_count() == 1);
  // A webhook body is JSON too.
  auto headers = github_headers(push, "p3");
  headers["Content-Type"] = "application/x-www-form-urlencoded";
  CHECK(http_call(f.port, verb::post, "/v1/webhooks/github", push, headers).status == 415);
  CHECK(f.stop());
}

TEST_CASE("webhook: a replay under a new or no delivery id is a duplicate") {
  ServerOptions options;
  auto table = toml::parse(R"(
    scheme = "generic"
    secret_env = "S"
    signature_header = "X-Signature"
    delivery_header = "X-Delivery"
    cmd = ["run", "{{/task}}"]
  )");
  // A name with '_': its default job id wh-ci_push-<delivery> must be a valid id.
  options.webhooks.emplace("ci_push",
                           parse_webhook_config("ci_push", table, [](const std::string&) {
                             return std::optional<std::string>("k");
                           }));
  ServerFixture f(options);
  const std::string body = R"({"task":"t1"})";
  Headers headers = {{"X-Signature", to_hex(hmac_sha256("k", body))},
                     {"X-Delivery", "d-1"},
                     {"Content-Type", "application/json"}};
  auto first = http_call(f.port, verb::post, "/v1/webhooks/ci_push", body, headers);
  REQUIRE(first.status == 201);
  CHECK(first.json()["job"]["id"] == "wh-ci_push-d-1");
  headers["X-Delivery"] = "d-2";
  auto renamed = http_call(f.port, verb::post, "/v1/webhooks/ci_push", body, headers);
  CHECK(renamed.status == 200);
  CHECK(renamed.json()["duplicate"] == true);
  headers.erase("X-Delivery");
  for (int i = 0; i < 3; ++i) {
    auto bare = http_call(f.port, verb::post, "/v1/webhooks/ci_push", body, headers);
    CHECK(bare.status == 200);
    CHECK(bare.json()["duplicate"] == true);
  }
  CHECK(f.backend.enqueue_calls() == 1);
  CHECK(f.backend.job_count() == 1);
  // Another body is another delivery.
  const std::string other = R"({"task":"t2"})";
  headers["X-Signature"] = to_hex(hmac_sha256("k", other));
  CHECK(http_call(f.port, verb::post, "/v1/webhooks/ci_push", other, headers).status == 201);
  CHECK(f.backend.job_count() == 2);
  CHECK(f.stop());
}

TEST_CASE("POST /v1/jobs: a deeply nested body is a 400 and the server lives") {
  ServerFixture f;
  const std::string body = R"({"cmd": ["true"], "x": )" + std::string(400 * 1024, '[') +
                           std::string(400 * 1024, ']') + "}";
  auto deep = http_call(f.port, verb::post, "/v1/jobs", body,
                        Headers{{"Content-Type", "application/json"}});
  CHECK(deep.status == 400);
  CHECK(deep.json()["error"] == "body is nested deeper than 64 levels");
  CHECK(f.backend.enqueue_calls() == 0);
  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  CHECK(f.stop());
}

// ---------------------------------------------------------------------------
// Server-sent events

TEST_CASE("SSE: a reconnect with Last-Event-ID gets exactly the missed events") {
  ServerOptions options;
  options.sse.replay_page = 2;  // several pages, so paging is exercised
  ServerFixture f(options);

  std::vector<std::string> all;
  std::string last_seen;
  {
    SseClient client(f.port, "/v1/events");
    REQUIRE(client.read_status() == 200);
    REQUIRE(eventually([&] { return f.server->event_hub().session_count() == 1; }));
    for (int i = 0; i < 3; ++i)
      all.push_back(f.backend.append_event("job.queued", {{"job", "j" + std::to_string(i)}}));
    const auto& got = client.read_messages(3);
    REQUIRE(got.size() == 3);
    CHECK(client.ids() == all);
    CHECK(got[0].event == "job.queued");
    CHECK(json::parse(got[0].data)["job"] == "j0");
    last_seen = got.back().id;
  }
  REQUIRE(eventually([&] { return f.server->event_hub().session_count() == 0; }));

  // While away.
  for (int i = 3; i < 6; ++i)
    all.push_back(f.backend.append_event("job.started", {{"job", "j" + std::to_string(i)}}));
  // Inside the replay window: appended while the client's first page is read,
  // so these arrive both live and in a later replay page.
  // The hook runs on the server's thread; `all` is shared with it.
  std::mutex all_mutex;
  int hook_calls = 0;
  f.backend.on_read_events([&] {
    if (hook_calls++ == 0) {
      const std::string a = f.backend.append_event("job.succeeded", {{"job", "j6"}});
      const std::string b = f.backend.append_event("job.succeeded", {{"job", "j7"}});
      std::lock_guard lock(all_mutex);
      all.push_back(a);
      all.push_back(b);
    }
  });

  SseClient resumed(f.port, "/v1/events", {{"Last-Event-ID", last_seen}});
  REQUIRE(resumed.read_status() == 200);
  resumed.read_messages(5);
  f.backend.on_read_events(nullptr);
  std::lock_guard lock(all_mutex);
  all.push_back(f.backend.append_event("job.failed", {{"job", "j8"}}));
  resumed.read_messages(6);
  // Nothing more may come (no duplicates trailing behind).
  resumed.read_messages(7, std::chrono::milliseconds(300));
  const std::vector<std::string> expected(all.begin() + 3, all.end());
  CHECK(resumed.ids() == expected);
  CHECK(f.backend.read_events_calls() >= 3);

  // The query parameter works like the header (EventSource's first connect).
  SseClient by_query(f.port, "/v1/events?last_event_id=" + all[6]);
  REQUIRE(by_query.read_status() == 200);
  by_query.read_messages(2);
  by_query.read_messages(3, std::chrono::milliseconds(300));
  CHECK(by_query.ids() == std::vector<std::string>{all[7], all[8]});
  CHECK(f.stop());
}

TEST_CASE("SSE: keepalive comments flow while idle") {
  ServerOptions options;
  options.sse.keepalive = std::chrono::milliseconds(100);
  ServerFixture f(options);
  SseClient client(f.port, "/v1/events");
  REQUIRE(client.read_status() == 200);
  CHECK(client.head().find("Content-Type: text/event-stream") != std::string::npos);
  CHECK(client.read_keepalive(std::chrono::seconds(3)));
  CHECK(f.stop());
}

TEST_CASE("SSE: a client that falls behind is dropped and counted and the server goes on") {
  ServerOptions options;
  options.sse.max_queue = 8;
  ServerFixture f(options);
  // Tiny receive window and never reading: the server's writes stall.
  SseClient slow(f.port, "/v1/events", {}, 4096);
  REQUIRE(slow.read_status() == 200);
  REQUIRE(eventually([&] { return f.server->event_hub().session_count() == 1; }));
  const std::string filler(32 * 1024, 'x');
  for (int i = 0; i < 400 && f.server->event_hub().slow_clients_dropped() == 0; ++i) {
    f.backend.append_event("job.started", {{"job", "j" + std::to_string(i)}, {"pad", filler}});
  }
  CHECK(eventually([&] { return f.server->event_hub().slow_clients_dropped() == 1; }));
  CHECK(eventually([&] { return f.server->event_hub().session_count() == 0; }));
  CHECK(eventually([&] { return f.backend.subscriber_count() == 0; }));
  CHECK(slow.wait_closed(std::chrono::seconds(10)));

  // The server goes on: a new client streams normally.
  SseClient next(f.port, "/v1/events");
  REQUIRE(next.read_status() == 200);
  REQUIRE(eventually([&] { return f.server->event_hub().session_count() == 1; }));
  const std::string id = f.backend.append_event("job.queued", {{"job", "after"}});
  CHECK(next.read_messages(1).size() == 1);
  CHECK(next.ids() == std::vector<std::string>{id});
  const auto e = parse_exposition(f.metrics.serialize());
  CHECK(e.value("warmstart_sse_slow_clients_dropped_total",
                "warmstart_sse_slow_clients_dropped_total") == 1);
  CHECK(f.stop());
}

TEST_CASE("SSE: 100 clients connecting and dropping leave fds and sessions where they were") {
  ServerOptions options;
  options.max_event_streams_per_client = 100;  // all from 127.0.0.1
  ServerFixture f(options);
  // One request first, so lazily created process-wide fds exist in the baseline.
  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  REQUIRE(eventually([&] { return f.server->connection_count() == 0; }));
  const std::size_t fds_before = open_fd_count();
  {
    std::vector<std::unique_ptr<SseClient>> clients;
    for (int i = 0; i < 100; ++i) {
      clients.push_back(std::make_unique<SseClient>(f.port, "/v1/events"));
      REQUIRE(clients.back()->read_status() == 200);
    }
    REQUIRE(eventually([&] { return f.server->event_hub().session_count() == 100; }));
    CHECK(f.backend.subscriber_count() == 1);  // one backend subscription, fanned out
    const std::string id = f.backend.append_event("job.queued", {{"job", "fan-out"}});
    for (auto& client : clients) {
      CHECK(client->read_messages(1).size() == 1);
      CHECK(client->ids() == std::vector<std::string>{id});
    }
    // Half hang up first, the rest when the vector goes.
    for (int i = 0; i < 50; ++i) clients[i]->close();
    CHECK(eventually([&] { return f.server->event_hub().session_count() == 50; }));
  }
  CHECK(eventually([&] { return f.server->event_hub().session_count() == 0; }));
  CHECK(eventually([&] { return f.server->connection_count() == 0; }));
  CHECK(eventually([&] { return f.backend.subscriber_count() == 0; }));
  CHECK(eventually([&] { return open_fd_count() == fds_before; }));
  CHECK(open_fd_count() == fds_before);
  const auto e = parse_exposition(f.metrics.serialize());
  CHECK(e.value("warmstart_sse_clients", "warmstart_sse_clients") == 0);
  CHECK(f.stop());
}

TEST_CASE("graceful stop ends streams, closes idle connections and refuses new ones") {
  ServerFixture f;
  SseClient stream(f.port, "/v1/events");
  REQUIRE(stream.read_status() == 200);
  // An idle keep-alive connection: connected, nothing sent.
  net::io_context io;
  net::ip::tcp::socket idle(io);
  idle.connect({net::ip::address_v4::loopback(), f.port});
  REQUIRE(eventually([&] { return f.server->connection_count() == 2; }));

  CHECK(f.stop());  // the loop ran out of work: nothing was left behind
  CHECK(stream.wait_closed());
  CHECK(f.server->connection_count() == 0);
  CHECK(f.server->event_hub().session_count() == 0);
  boost::system::error_code ec;
  net::ip::tcp::socket late(io);
  late.connect({net::ip::address_v4::loopback(), f.port}, ec);
  CHECK(ec);  // nobody listens any more
}

TEST_CASE("connections past max_connections get 503") {
  ServerOptions options;
  options.max_connections = 2;
  ServerFixture f(options);
  net::io_context io;
  net::ip::tcp::socket a(io), b(io);
  a.connect({net::ip::address_v4::loopback(), f.port});
  b.connect({net::ip::address_v4::loopback(), f.port});
  REQUIRE(eventually([&] { return f.server->connection_count() == 2; }));
  auto refused = http_call(f.port, verb::get, "/healthz");
  CHECK(refused.status == 503);
  CHECK(refused.json()["error"] == "too many connections");
  a.close();
  b.close();
  REQUIRE(eventually([&] { return f.server->connection_count() == 0; }));
  CHECK(http_call(f.port, verb::get, "/healthz").status == 200);
  CHECK(f.stop());
}

TEST_CASE("silent and idle keep-alive connections are closed on their deadlines") {
  ServerOptions options;
  options.read_timeout = std::chrono::milliseconds(200);
  options.keep_alive_timeout = std::chrono::milliseconds(300);
  ServerFixture f(options);
  net::io_context io;
  auto wait_eof = [&io](net::ip::tcp::socket& socket, std::string& received) {
    std::array<char, 4096> buf;
    bool eof = false;
    std::function<void()> read = [&] {
      socket.async_read_some(net::buffer(buf), [&](boost::system::error_code ec, std::size_t n) {
        received.append(buf.data(), n);
        if (ec) {
          eof = true;
        } else {
          read();
        }
      });
    };
    read();
    io.restart();
    io.run_for(std::chrono::seconds(3));
    if (!eof) {
      socket.cancel();
      io.restart();
      io.run();
    }
    return eof;
  };

  // Connected, never sends a byte: closed after read_timeout.
  net::ip::tcp::socket silent(io);
  silent.connect({net::ip::address_v4::loopback(), f.port});
  std::string nothing;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(wait_eof(silent, nothing));
  CHECK(nothing.empty());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));

  // One keep-alive request answered, then idle: closed after keep_alive_timeout.
  net::ip::tcp::socket idle(io);
  idle.connect({net::ip::address_v4::loopback(), f.port});
  net::write(idle, net::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")));
  std::string response;
  CHECK(wait_eof(idle, response));
  CHECK(response.starts_with("HTTP/1.1 200 OK"));
  CHECK(response.find("Connection: close") == std::string::npos);  // it was kept alive
  REQUIRE(eventually([&] { return f.server->connection_count() == 0; }));
  CHECK(f.stop());
}
