#include "api/testing_backend.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::api;
using nlohmann::json;

TEST_CASE("with_deadline passes a backend's typed error through at once", "[unit]") {
  // Regression: `a || timer` waits for the first *success*, so a throwing call
  // used to surface as DeadlineExceeded after the whole deadline.
  TestingBackend backend;
  const auto started = Clock::now();
  try {
    testing::run_coro([&] { return with_deadline(backend.get_job("ghost"), 5s, "get_job"); },
                      std::chrono::seconds(10));
    FAIL("no exception");
  } catch (const BackendError& e) {
    CHECK(e.status == 404);
  }
  CHECK(Clock::now() - started < 1s);
  auto deadline_hit = [] { return with_deadline(sleep_for(2s), Duration(50), "sleep"); };
  CHECK_THROWS_AS(testing::run_coro(deadline_hit, std::chrono::seconds(10)), DeadlineExceeded);
  CHECK(
      testing::run_coro([&] { return with_deadline(backend.check_ready(), 5s, "ready"); }).ready());
}

TEST_CASE("testing backend: events replay after an id and fan out to subscribers", "[unit]") {
  TestingBackend backend;
  std::vector<std::string> seen;
  auto subscription = backend.subscribe_events([&](const json& e) { seen.push_back(e["id"]); });
  const auto a = backend.append_event("job.queued", {{"job", "a"}});
  const auto b = backend.append_event("job.started", {{"job", "a"}});
  CHECK(seen == std::vector<std::string>{a, b});
  subscription.reset();
  backend.append_event("job.succeeded", {{"job", "a"}});
  CHECK(seen.size() == 2);  // none after the handle is gone
  CHECK(backend.subscriber_count() == 0);

  auto after_a = testing::run_coro([&] { return backend.read_events(a, 10); });
  REQUIRE(after_a.size() == 2);
  CHECK(after_a[0]["id"] == b);
  CHECK(testing::run_coro([&] { return backend.read_events("", 1); }).size() == 1);
}
