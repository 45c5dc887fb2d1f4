// Integration tests of SnapshotRegistry against the real redis-server.
#include "common/redis.hpp"
#include "snapshots/registry.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace warmstart;
using namespace warmstart::snapshots;

namespace {

std::string unique_prefix() {
  std::random_device rd;
  return "wstest:snapreg:" + std::to_string(rd()) + std::to_string(rd()) + ":";
}

awaitable<redis::ClientPtr> connect_redis() {
  redis::ClientOptions options;
  options.url = redis::Url::parse(testing::redis_url());
  auto client = redis::Client::create(co_await net::this_coro::executor, options);
  co_await client->connect();
  co_return client;
}

// Deletes every Redis key under `prefix` (tests share one Redis).
awaitable<void> delete_prefix(redis::ClientPtr client, std::string prefix) {
  std::vector<std::string> keys_cmd{"KEYS", prefix + "*"};
  auto keys = co_await client->command(std::move(keys_cmd));
  for (const auto& k : keys.as_array()) {
    std::vector<std::string> del{"DEL", k.as_string()};
    co_await client->command(std::move(del));
  }
}

SnapshotEntry make_entry(std::string key, std::string image_id, std::int64_t generation) {
  SnapshotEntry e;
  e.key = std::move(key);
  e.image = "warmstart-snapshot/x:g" + std::to_string(generation);
  e.image_id = std::move(image_id);
  e.base_image_id = "sha256:base";
  e.source_job = "job-" + std::to_string(generation);
  e.created_ms = 1000 * generation;
  e.last_used_ms = e.created_ms;
  e.size_bytes = 4096;
  e.layer_depth = 2;
  e.generation = generation;
  return e;
}

}  // namespace

TEST_CASE("registry: compare-and-set registration, lookup, use, remove", "[snapshots][redis]") {
  testing::run_coro([]() -> awaitable<void> {
    auto client = co_await connect_redis();
    const auto prefix = unique_prefix();
    std::exception_ptr failure;
    try {
      SnapshotRegistry reg(client, "ENGINE-1", {prefix});
      const std::string key = "repo-42/branch-main";
      CHECK_FALSE((co_await reg.lookup(key)).has_value());

      CHECK(co_await reg.next_generation(key) == 1);
      CHECK(co_await reg.next_generation(key) == 2);

      // First registration expects no entry.
      auto first = co_await reg.register_cas(make_entry(key, "sha256:g1", 1), "");
      CHECK(first.won);
      CHECK_FALSE(first.previous.has_value());
      // A second "first" registration loses and learns the winner.
      auto late = co_await reg.register_cas(make_entry(key, "sha256:other", 2), "");
      CHECK_FALSE(late.won);
      REQUIRE(late.current.has_value());
      CHECK(late.current->image_id == "sha256:g1");
      // The successor of g1 wins and reports what it replaced.
      auto next = co_await reg.register_cas(make_entry(key, "sha256:g2", 2), "sha256:g1");
      CHECK(next.won);
      REQUIRE(next.previous.has_value());
      CHECK(next.previous->image_id == "sha256:g1");

      auto found = co_await reg.lookup(key);
      REQUIRE(found.has_value());
      CHECK(*found == make_entry(key, "sha256:g2", 2));

      CHECK(co_await reg.record_use(key, "sha256:g2", 99000));
      CHECK_FALSE(co_await reg.record_use(key, "sha256:g1", 99500));  // stale generation
      found = co_await reg.lookup(key);
      CHECK(found->uses == 1);
      CHECK(found->last_used_ms == 99000);

      // Removal guarded by the image id never drops a newer generation.
      CHECK_FALSE((co_await reg.remove(key, "sha256:g1")).has_value());
      CHECK((co_await reg.list()).size() == 1);
      auto removed = co_await reg.remove(key, "sha256:g2");
      REQUIRE(removed.has_value());
      CHECK(removed->generation == 2);
      CHECK((co_await reg.list()).empty());
      // Generations are never reused, even after the entry is gone.
      CHECK(co_await reg.next_generation(key) == 3);
    } catch (...) {
      failure = std::current_exception();
    }
    co_await delete_prefix(client, prefix);
    if (failure) std::rethrow_exception(failure);
  });
}

TEST_CASE("registry: two engine IDs sharing one Redis see separate registries",
          "[snapshots][redis]") {
  testing::run_coro([]() -> awaitable<void> {
    auto client = co_await connect_redis();
    const auto prefix = unique_prefix();
    std::exception_ptr failure;
    try {
      SnapshotRegistry host_a(client, "AAAA:1111:ENGINE", {prefix});
      SnapshotRegistry host_b(client, "BBBB:2222:ENGINE", {prefix});
      const std::string key = "shared-key";
      CHECK((co_await host_a.register_cas(make_entry(key, "sha256:on-a", 1), "")).won);
      CHECK_FALSE((co_await host_b.lookup(key)).has_value());
      CHECK((co_await host_b.list()).empty());
      // Host B registers its own image for the same key without conflict.
      CHECK((co_await host_b.register_cas(make_entry(key, "sha256:on-b", 1), "")).won);
      CHECK((co_await host_a.lookup(key))->image_id == "sha256:on-a");
      CHECK((co_await host_b.lookup(key))->image_id == "sha256:on-b");
      CHECK((co_await host_a.remove(key)).has_value());
      CHECK((co_await host_b.lookup(key)).has_value());
      CHECK(co_await host_a.next_generation(key) == 1);
      CHECK(co_await host_b.next_generation(key) == 1);
    } catch (...) {
      failure = std::current_exception();
    }
    co_await delete_prefix(client, prefix);
    if (failure) std::rethrow_exception(failure);
  });
}
