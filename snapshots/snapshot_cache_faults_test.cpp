// SnapshotCache when the engine fails a call: its registry in the real
// redis-server, the engine in memory (container/memory_runtime.hpp), which can
// fail the next call of an operation or be down. Every test works under its own
// Redis prefix and deletes its keys. No co_await inside CHECK/REQUIRE (g++ 12).
#include "common/redis.hpp"
#include "container/memory_runtime.hpp"
#include "snapshots/snapshot_cache.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace warmstart;
using namespace warmstart::snapshots;
using container::MemoryRuntime;

namespace {

std::string random_token() {
  std::random_device rd;
  return std::to_string(rd()) + std::to_string(rd());
}

struct Fixture {
  std::shared_ptr<MemoryRuntime> engine;
  redis::ClientPtr redis;
  std::string prefix;
  std::string base = "warmstart-worker:faults";
  std::shared_ptr<SnapshotCache> cache;

  // A container of `image` that ran and exited 0 (`keep_running`: still runs).
  awaitable<std::string> run(std::string image, bool keep_running = false) {
    container::ContainerSpec spec;
    spec.image = std::move(image);
    spec.cmd.push_back("true");
    auto id = co_await engine->create_container(std::move(spec));
    co_await engine->start_container(id);
    if (!keep_running) engine->exit(id, 0);
    co_return id;
  }

  // One job of `key` from its current image, committed.
  awaitable<CommitResult> commit_generation(std::string key) {
    auto choice = co_await cache->choose_image(key, base);
    auto id = co_await run(choice.image);
    CommitRequest request;
    request.container_id = id;
    request.job_id = "job-" + random_token();
    request.key = key;
    request.base_image = base;
    request.expected_image_id = choice.observed_image_id;
    auto result = co_await cache->commit(std::move(request));
    INFO(result.error);
    REQUIRE(result.status == CommitResult::Status::committed);
    co_await engine->remove_container(id, true);
    co_return result;
  }

  awaitable<bool> image_exists(std::string ref) {
    bool exists = true;
    try {
      co_await engine->inspect_image(ref);
    } catch (const container::ApiError& e) {
      if (!e.is_not_found()) throw;
      exists = false;
    }
    co_return exists;
  }

  awaitable<void> drop_keys() {
    std::vector<std::string> keys_args{"KEYS", prefix + "*"};
    auto keys = co_await redis->command(std::move(keys_args));
    for (const auto& k : keys.as_array()) {
      std::vector<std::string> del{"DEL", k.as_string()};
      co_await redis->command(std::move(del));
    }
  }
};

template <typename Body>
void run_fixture_test(Body body) {
  testing::run_coro(
      [&]() -> awaitable<void> {
        Fixture f;
        auto ex = co_await net::this_coro::executor;
        f.engine = MemoryRuntime::create(ex);
        f.engine->add_image(f.base);
        redis::ClientOptions redis_options;
        redis_options.url = redis::Url::parse(testing::redis_url());
        f.redis = redis::Client::create(ex, redis_options);
        co_await f.redis->connect();
        f.prefix = "wstest:snapfault:" + random_token() + ":";
        SnapshotCacheOptions o;
        o.registry.key_prefix = f.prefix;
        o.work_dir = std::filesystem::path(testing::run_dir()) / "snapshots-work";
        f.cache = std::make_shared<SnapshotCache>(f.engine, f.redis, std::move(o));
        std::exception_ptr failure;
        try {
          co_await f.cache->start();
          co_await body(f);
        } catch (...) {
          failure = std::current_exception();
        }
        co_await f.drop_keys();
        if (failure) std::rethrow_exception(failure);
      },
      std::chrono::seconds(60));
}

}  // namespace

TEST_CASE("release_unused keeps an image whose removal failed and removes it on a later call",
          "[snapshots][redis]") {
  run_fixture_test([](Fixture& f) -> awaitable<void> {
    const std::string key = "repo-7/main";
    auto first = co_await f.commit_generation(key);
    // A job still runs the first generation when the second replaces it.
    auto runner = co_await f.run(first.image, true);
    auto second = co_await f.commit_generation(key);
    REQUIRE(second.generation == first.generation + 1);
    auto kept = co_await f.image_exists(first.image_id);
    REQUIRE(kept);
    f.engine->exit(runner, 0);
    co_await f.engine->remove_container(runner, true);

    // The engine answers 500 to the removal: nothing released, the image and
    // the wish to remove it both stay.
    f.engine->fail_next(MemoryRuntime::Op::remove_image, MemoryRuntime::Fault::server_error);
    const std::size_t refused = co_await f.cache->release_unused();
    CHECK(refused == 0);
    auto after_refusal = co_await f.image_exists(first.image_id);
    CHECK(after_refusal);

    // The engine is down: the same.
    f.engine->set_down(true);
    const std::size_t while_down = co_await f.cache->release_unused();
    f.engine->set_down(false);
    CHECK(while_down == 0);
    auto after_outage = co_await f.image_exists(first.image_id);
    CHECK(after_outage);

    // Back: the next call removes it, and the one after has nothing left to do.
    const std::size_t released = co_await f.cache->release_unused();
    CHECK(released == 1);
    auto first_left = co_await f.image_exists(first.image_id);
    CHECK_FALSE(first_left);
    auto second_left = co_await f.image_exists(second.image_id);
    CHECK(second_left);
    const std::size_t again = co_await f.cache->release_unused();
    CHECK(again == 0);
  });
}

TEST_CASE("a lookup whose Redis is unreachable starts the job from the base, counted as a miss",
          "[snapshots][redis]") {
  run_fixture_test([](Fixture& f) -> awaitable<void> {
    const std::string key = "repo-9/main";
    auto committed = co_await f.commit_generation(key);
    auto hit = co_await f.cache->choose_image(key, f.base);
    CHECK(hit.outcome == LookupOutcome::hit);
    CHECK(hit.image == committed.image);

    // The same registry behind a Redis that refuses connections: the lookup
    // (and the hit it would count) fails, and the job runs cold, not at all.
    redis::ClientOptions down;
    down.url = redis::Url::parse("redis://127.0.0.1:1/0");
    down.connect_timeout = 500ms;
    down.command_timeout = 500ms;
    auto ex = co_await net::this_coro::executor;
    SnapshotCacheOptions o;
    o.registry.key_prefix = f.prefix;
    o.work_dir = std::filesystem::path(testing::run_dir()) / "snapshots-work";
    SnapshotCache cut_off(f.engine, redis::Client::create(ex, down), std::move(o));
    auto choice = co_await cut_off.choose_image(key, f.base);
    CHECK(choice.outcome == LookupOutcome::miss);
    CHECK(choice.reason == "registry_error");
    CHECK(choice.image == f.base);
    CHECK_FALSE(choice.entry.has_value());
    CHECK(cut_off.metrics().misses == 1);
    CHECK(cut_off.metrics().hits == 0);

    // Nothing was counted for it: the entry's uses are the one hit above.
    auto entry = co_await f.cache->registry().lookup(key);
    REQUIRE(entry.has_value());
    CHECK(entry->uses == 1);
  });
}
