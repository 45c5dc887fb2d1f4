// router::ApiBackend in-process against the real Redis and dockerd: the shared
// event tailer (order, fan-out, no call after a subscription is dropped, stops
// with the last subscriber), webhook delivery marks, error statuses, readiness.
#include "router/api_backend.hpp"
#include "e2e/router_process.hpp"
#include "queue/redis_queue.hpp"
#include "snapshots/snapshot_cache.hpp"

#include <catch2/catch.hpp>

#include <mutex>

using namespace warmstart;
using namespace warmstart::testing;
using nlohmann::json;

// Never co_await inside a Catch macro: g++ evaluates the expression once more
// inside the macro's __builtin_constant_p check.

namespace {

// The status a Backend call fails with, 0 when it succeeds.
template <typename T>
awaitable<int> status_of(awaitable<T> op) {
  int status = 0;
  try {
    co_await std::move(op);
  } catch (const api::BackendError& e) {
    status = e.status;
  }
  co_return status;
}

struct Collected {
  std::mutex mutex;
  std::vector<json> events;
  std::size_t size() {
    std::lock_guard lock(mutex);
    return events.size();
  }
};

awaitable<bool> wait_until(std::function<bool()> condition, Duration limit) {
  const auto until = Clock::now() + limit;
  while (!condition()) {
    if (Clock::now() > until) co_return false;
    co_await sleep_for(20ms);
  }
  co_return true;
}

}  // namespace

TEST_CASE("api backend: the event tailer and delivery marks and error statuses and readiness",
          "[e2e][api_backend]") {
  const std::string prefix = "ws-" + unique_name("backend") + ":";
  run_coro(
      [&]() -> awaitable<void> {
        auto ex = co_await net::this_coro::executor;
        queue::RedisQueueOptions qo;
        qo.redis.url = redis::Url::parse(redis_url());
        qo.key_prefix = prefix;
        auto queue = std::make_shared<queue::RedisQueue>(ex, qo);
        redis::ClientOptions ro;
        ro.url = qo.redis.url;
        auto redis_client = redis::Client::create(ex, ro);
        co_await redis_client->connect();
        container::DockerClientOptions dopts;
        dopts.socket_path = docker_socket();
        auto docker = container::DockerClient::create(ex, dopts);
        snapshots::SnapshotCacheOptions sopts;
        sopts.registry.key_prefix = prefix + "snapshots:";
        auto cache = std::make_shared<snapshots::SnapshotCache>(docker, redis_client, sopts);
        router::ApiBackendOptions bo;
        bo.key_prefix = prefix;
        bo.event_poll_interval = 50ms;
        // Named, not braced in place: g++ 12 rejects initializer_list<std::string>
        // temporaries in coroutines.
        std::vector<std::string> allowlist;
        allowlist.push_back("allowed.example/*");
        router::ApiBackend backend(
            ex, router::ApiBackendDeps{queue, cache, docker, redis_client, nullptr},
            router::ImagePolicy(base_image(), allowlist), bo);

        // Two subscribers see the same events, in order, once each.
        Collected a, b;
        auto sub_a = backend.subscribe_events([&a](const json& e) {
          std::lock_guard lock(a.mutex);
          a.events.push_back(e);
        });
        auto sub_b = backend.subscribe_events([&b](const json& e) {
          std::lock_guard lock(b.mutex);
          b.events.push_back(e);
        });
        CHECK(backend.subscriber_count() == 2);
        CHECK(backend.tailing());
        std::vector<std::string> ids;
        for (int i = 0; i < 3; ++i) {
          json event = {{"type", "test.event"}, {"n", i}};
          ids.push_back(co_await queue->append_event(event));
        }
        const auto r1 = co_await wait_until([&] { return a.size() >= 3 && b.size() >= 3; }, 5s);
        CHECK(r1);
        co_await sleep_for(200ms);
        {
          std::lock_guard lock(a.mutex);
          REQUIRE(a.events.size() == 3);
          for (int i = 0; i < 3; ++i) {
            CHECK(a.events[i].at("id") == ids[i]);
            CHECK(a.events[i].at("n") == i);
          }
          std::lock_guard lock_b(b.mutex);
          CHECK(b.events == a.events);
        }

        // A dropped subscription is never called again; the other goes on.
        sub_a.reset();
        json later = {{"type", "test.later"}};
        co_await queue->append_event(later);
        const auto r2 = co_await wait_until([&] { return b.size() == 4; }, 5s);
        CHECK(r2);
        co_await sleep_for(200ms);
        CHECK(a.size() == 3);

        // The tailer stops with the last subscriber.
        sub_b.reset();
        CHECK(backend.subscriber_count() == 0);
        const auto r3 = co_await wait_until([&] { return !backend.tailing(); }, 2s);
        CHECK(r3);

        // Webhook delivery marks: set-if-absent under the key prefix, with a TTL.
        const auto r4 = co_await backend.webhook_seen("webhook:gh:d1", 60s);
        CHECK_FALSE(r4);
        const auto r5 = co_await backend.webhook_seen("webhook:gh:d1", 60s);
        CHECK(r5);
        auto pttl_args = redis::make_args("PTTL", prefix + "webhook:gh:d1");
        const redis::Reply pttl = co_await redis_client->command(std::move(pttl_args));
        CHECK(pttl.as_integer() > 0);
        CHECK(pttl.as_integer() <= 60000);

        // Error statuses.
        const auto r6 = co_await status_of(backend.get_job("nope"));
        CHECK(r6 == 404);
        const auto r7 = co_await status_of(backend.job_logs("nope"));
        CHECK(r7 == 404);
        const auto r8 = co_await status_of(backend.cancel_job("nope"));
        CHECK(r8 == 404);
        const auto r9 = co_await status_of(backend.invalidate_snapshot("no/such/key"));
        CHECK(r9 == 404);
        const json disallowed = {{"image", "evil.example/x"}, {"cmd", {"true"}}};
        const auto r10 = co_await status_of(backend.enqueue(disallowed));
        CHECK(r10 == 400);
        const json no_cmd = {{"image", "allowed.example/x"}};
        const auto r11 = co_await status_of(backend.enqueue(no_cmd));
        CHECK(r11 == 400);
        const auto r12 = co_await status_of(backend.list_jobs(std::string("bogus"), 10));
        CHECK(r12 == 400);
        auto none = co_await backend.list_jobs(std::nullopt, 10);
        CHECK(none.empty());
        auto snapshots_listed = co_await backend.list_snapshots();
        CHECK(snapshots_listed.empty());

        // Enqueue (an allowed image), idempotent id, list, cancel, cancel again.
        const json first_body = {{"id", "b-1"}, {"image", "allowed.example/x"}, {"cmd", {"true"}}};
        auto first = co_await backend.enqueue(first_body);
        CHECK(first.created);
        CHECK(first.job.at("state") == "queued");
        auto again = co_await backend.enqueue(first_body);
        CHECK_FALSE(again.created);
        co_await sleep_for(5ms);
        const json second_body = {{"id", "b-2"}, {"cmd", {"true"}}};
        co_await backend.enqueue(second_body);
        auto listed = co_await backend.list_jobs(std::nullopt, 10);
        REQUIRE(listed.size() == 2);
        CHECK(listed[0].at("id") == "b-2");
        CHECK(listed[1].at("id") == "b-1");
        auto limited = co_await backend.list_jobs(std::nullopt, 1);
        CHECK(limited.size() == 1);
        auto cancelled = co_await backend.cancel_job("b-1");
        CHECK(cancelled.at("state") == "cancelled");
        const auto r13 = co_await status_of(backend.cancel_job("b-1"));
        CHECK(r13 == 409);
        auto queued = co_await backend.list_jobs(std::string("queued"), 10);
        REQUIRE(queued.size() == 1);
        CHECK(queued[0].at("id") == "b-2");
        auto replay = co_await backend.read_events("", 100);
        CHECK(replay.size() >= 7);  // 4 test events, 2 queued, 1 cancelled

        // Readiness: both up and not draining.
        const api::ReadyStatus ready = co_await backend.check_ready();
        CHECK(ready.redis_ok);
        CHECK(ready.docker_ok);
        CHECK_FALSE(ready.draining);
        CHECK(ready.ready());

        // Redis unreachable: not ready within the probe deadline, and calls answer 503.
        redis::ClientOptions dead;
        dead.url = redis::Url::parse("redis://127.0.0.1:" + std::to_string(free_loopback_port()));
        dead.connect_timeout = 500ms;
        auto dead_client = redis::Client::create(ex, dead);
        router::ApiBackend unreachable(
            ex, router::ApiBackendDeps{queue, cache, docker, dead_client, nullptr},
            router::ImagePolicy(base_image(), std::vector<std::string>()), bo);
        const auto t0 = Clock::now();
        const api::ReadyStatus down = co_await unreachable.check_ready();
        CHECK_FALSE(down.redis_ok);
        CHECK(down.docker_ok);
        CHECK(Clock::now() - t0 < 3s);
        const auto r14 = co_await status_of(unreachable.webhook_seen("webhook:gh:d2", 60s));
        CHECK(r14 == 503);
        dead_client->close();

        // The queue's Redis unreachable while the registry's answers: the
        // snapshot listing still answers (status_of: 0), without its builder column.
        queue::RedisQueueOptions dead_qo = qo;
        dead_qo.redis.url = dead.url;
        dead_qo.redis.connect_timeout = 500ms;
        auto dead_queue = std::make_shared<queue::RedisQueue>(ex, dead_qo);
        router::ApiBackend no_builds(
            ex, router::ApiBackendDeps{dead_queue, cache, docker, redis_client, nullptr},
            router::ImagePolicy(base_image(), std::vector<std::string>()), bo);
        auto listing = no_builds.list_snapshots();
        const auto r15 = co_await status_of(std::move(listing));
        CHECK(r15 == 0);
        dead_queue->close();

        // Clean up the keys of this test.
        auto scan = redis::make_args("SCAN", "0", "MATCH", prefix + "*", "COUNT", 10000);
        std::string cursor = "0";
        do {
          scan[1] = cursor;
          const redis::Reply reply = co_await redis_client->command(scan);
          cursor = reply.as_array().at(0).as_string();
          std::vector<std::string> del = redis::make_args("DEL");
          for (const auto& key : reply.as_array().at(1).as_array()) del.push_back(key.str);
          if (del.size() > 1) co_await redis_client->command(std::move(del));
        } while (cursor != "0");
        queue->close();
        redis_client->close();
      },
      std::chrono::seconds(60));
}
