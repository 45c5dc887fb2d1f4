#include "api/routes.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using Outcome = RouteMatch::Outcome;

namespace {

std::string describe(std::string_view method, std::string_view path) {
  const RouteMatch m = match_route(method, path);
  switch (m.outcome) {
    case Outcome::matched:
      return std::string(endpoint_name(m.endpoint)) + "(" + m.param + ")";
    case Outcome::not_found:
      return "404";
    case Outcome::method_not_allowed:
      return "405 " + m.allow;
    case Outcome::bad_request:
      return "400 " + m.reason;
  }
  return "?";
}

}  // namespace

TEST_CASE("routing table (golden)", "[unit]") {
  CHECK(describe("POST", "/v1/jobs") == "create_job()");
  CHECK(describe("GET", "/v1/jobs") == "list_jobs()");
  CHECK(describe("GET", "/v1/jobs/abc") == "get_job(abc)");
  CHECK(describe("DELETE", "/v1/jobs/abc") == "cancel_job(abc)");
  CHECK(describe("GET", "/v1/jobs/abc/logs") == "job_logs(abc)");
  CHECK(describe("GET", "/v1/jobs/a%3Ab") == "get_job(a:b)");
  CHECK(describe("GET", "/v1/snapshots") == "list_snapshots()");
  CHECK(describe("DELETE", "/v1/snapshots/repo-42/branch-main") ==
        "invalidate_snapshot(repo-42/branch-main)");
  CHECK(describe("DELETE", "/v1/snapshots/org%2Frepo/refs%2Fheads%2Fmain") ==
        "invalidate_snapshot(org/repo/refs/heads/main)");
  CHECK(describe("POST", "/v1/snapshots/org%2Frepo/prewarm") == "prewarm_snapshot(org/repo)");
  CHECK(describe("GET", "/v1/events") == "events()");
  CHECK(describe("GET", "/v1/history") == "history()");
  CHECK(describe("POST", "/v1/webhooks/github") == "webhook(github)");
  CHECK(describe("GET", "/metrics") == "metrics()");
  CHECK(describe("GET", "/healthz") == "healthz()");
  CHECK(describe("GET", "/readyz") == "readyz()");
  CHECK(describe("GET", "/") == "dashboard()");
}

TEST_CASE("routing: 404, 405 with Allow, 400 on bad escapes", "[unit]") {
  CHECK(describe("GET", "/v1/nope") == "404");
  CHECK(describe("GET", "/v1/jobs/") == "404");
  CHECK(describe("GET", "/v1/jobs/a/b") == "404");
  CHECK(describe("GET", "/v1/snapshots/") == "404");
  CHECK(describe("GET", "/healthz/x") == "404");
  CHECK(describe("PUT", "/v1/jobs") == "405 POST, GET");
  CHECK(describe("POST", "/v1/jobs/abc") == "405 GET, DELETE");
  CHECK(describe("GET", "/v1/snapshots/k") == "405 DELETE");
  CHECK(describe("GET", "/v1/webhooks/github") == "405 POST");
  CHECK(describe("GET", "/v1/jobs/%zz") == "400 malformed percent-encoding in path");
  CHECK(describe("GET", "/v1/jobs/a%00b") == "400 malformed percent-encoding in path");
  CHECK(describe("GET", "/v1/jobs/a%2") == "400 malformed percent-encoding in path");
}

TEST_CASE("bearer auth covers /v1 except webhooks", "[unit]") {
  CHECK(requires_bearer(Endpoint::create_job));
  CHECK(requires_bearer(Endpoint::events));
  CHECK(requires_bearer(Endpoint::invalidate_snapshot));
  CHECK(requires_bearer(Endpoint::prewarm_snapshot));
  CHECK(requires_bearer(Endpoint::list_routers));
  CHECK(requires_bearer(Endpoint::history));
  CHECK_FALSE(requires_bearer(Endpoint::webhook));
  CHECK_FALSE(requires_bearer(Endpoint::healthz));
  CHECK_FALSE(requires_bearer(Endpoint::readyz));
  CHECK_FALSE(requires_bearer(Endpoint::metrics));
  CHECK_FALSE(requires_bearer(Endpoint::dashboard));
}

TEST_CASE("request targets split into raw path and decoded query", "[unit]") {
  auto t = parse_target("/v1/jobs?state=running&limit=5&x=a+b%2Fc&flag");
  REQUIRE(t);
  CHECK(t->path == "/v1/jobs");
  CHECK(t->query.at("state") == "running");
  CHECK(t->query.at("limit") == "5");
  CHECK(t->query.at("x") == "a b/c");
  CHECK(t->query.at("flag").empty());
  CHECK(parse_target("/a%2Fb")->path == "/a%2Fb");
  CHECK_FALSE(parse_target("http://example.test/"));
  CHECK_FALSE(parse_target("/x?a=%g0"));
  CHECK(url_decode("a+b") == "a+b");
  CHECK(url_decode("a+b", true) == "a b");
}
