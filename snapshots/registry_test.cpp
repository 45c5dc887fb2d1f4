// Integration tests of SnapshotRegistry against the real redis-server.
// No co_await inside CHECK/REQUIRE: g++ 12 also evaluates the operand of the
// macros' never-taken `false && (expr)` branch, so results go to locals first.
#include "snapshots/registry.hpp"
#include "common/redis.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
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

// Runs `body(client, prefix)`, a test against a connected client whose keys
// all start with a prefix of its own, then deletes those keys, whether the
// body passed or threw (and rethrows).
template <class Body>
awaitable<void> on_fresh_prefix(Body body) {
  auto client = co_await connect_redis();
  const auto prefix = unique_prefix();
  auto run = body(client, prefix);
  std::exception_ptr failure;
  try {
    co_await std::move(run);
  } catch (...) {
    failure = std::current_exception();
  }
  co_await delete_prefix(client, prefix);
  if (failure) std::rethrow_exception(failure);
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

// A client that counts what it sends (each call is one round trip) and
// passes it on to the real one.
class CountingClient final : public redis::Client {
 public:
  explicit CountingClient(redis::ClientPtr inner) : inner_(std::move(inner)) {}
  awaitable<void> connect() override { return inner_->connect(); }
  awaitable<redis::Reply> command(std::vector<std::string> args) override {
    ++sent;
    return inner_->command(std::move(args));
  }
  awaitable<redis::Reply> command(std::vector<std::string> args, Duration deadline) override {
    ++sent;
    return inner_->command(std::move(args), deadline);
  }
  awaitable<redis::Reply> eval(const std::string& script, std::vector<std::string> keys,
                               std::vector<std::string> args) override {
    ++sent;
    return inner_->eval(script, std::move(keys), std::move(args));
  }
  bool connected() const override { return inner_->connected(); }
  void close() override { inner_->close(); }
  int sent = 0;

 private:
  redis::ClientPtr inner_;
};

}  // namespace

TEST_CASE("registry compare-and-set registration with lookup use and remove",
          "[snapshots][redis]") {
  testing::run_coro([] {
    return on_fresh_prefix([](redis::ClientPtr client, std::string prefix) -> awaitable<void> {
      SnapshotRegistry reg(client, "ENGINE-1", {prefix});
      const std::string key = "repo-42/branch-main";
      auto awaited_1 = co_await reg.lookup(key);
      CHECK_FALSE(awaited_1.has_value());

      auto awaited_2 = co_await reg.next_generation(key);
      CHECK(awaited_2 == 1);
      auto awaited_3 = co_await reg.next_generation(key);
      CHECK(awaited_3 == 2);

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

      // A lookup for a job on the entry's base counts a use in the same
      // script and returns the entry as it was; one on another base does not.
      auto used = co_await reg.lookup_and_use(key, "sha256:base", 99000);
      REQUIRE(used.has_value());
      CHECK(*used == make_entry(key, "sha256:g2", 2));
      auto other_base = co_await reg.lookup_and_use(key, "sha256:rebuilt-base", 99500);
      REQUIRE(other_base.has_value());
      CHECK(other_base->uses == 1);
      found = co_await reg.lookup(key);
      CHECK(found->uses == 1);
      CHECK(found->last_used_ms == 99000);
      auto absent = co_await reg.lookup_and_use("no/such-key", "sha256:base", 99000);
      CHECK_FALSE(absent.has_value());
      // Nor does it write a hash for the key it did not find.
      std::vector<std::string> exists{"EXISTS", prefix + "ENGINE-1:entry:no/such-key"};
      auto awaited_4 = co_await client->command(std::move(exists));
      CHECK(awaited_4.as_integer() == 0);

      // Removal guarded by the image id never drops a newer generation.
      auto awaited_6 = co_await reg.remove(key, "sha256:g1");
      CHECK_FALSE(awaited_6.has_value());
      auto awaited_7 = co_await reg.list();
      CHECK(awaited_7.size() == 1);
      auto removed = co_await reg.remove(key, "sha256:g2");
      REQUIRE(removed.has_value());
      CHECK(removed->generation == 2);
      auto awaited_8 = co_await reg.list();
      CHECK(awaited_8.empty());
      // Generations are never reused, even after the entry is gone.
      auto awaited_9 = co_await reg.next_generation(key);
      CHECK(awaited_9 == 3);
    });
  });
}

TEST_CASE("registry of two engine IDs sharing one Redis are separate", "[snapshots][redis]") {
  testing::run_coro([] {
    return on_fresh_prefix([](redis::ClientPtr client, std::string prefix) -> awaitable<void> {
      SnapshotRegistry host_a(client, "AAAA:1111:ENGINE", {prefix});
      SnapshotRegistry host_b(client, "BBBB:2222:ENGINE", {prefix});
      const std::string key = "shared-key";
      auto awaited_10 = co_await host_a.register_cas(make_entry(key, "sha256:on-a", 1), "");
      CHECK(awaited_10.won);
      auto awaited_11 = co_await host_b.lookup(key);
      CHECK_FALSE(awaited_11.has_value());
      auto awaited_12 = co_await host_b.list();
      CHECK(awaited_12.empty());
      // Host B registers its own image for the same key without conflict.
      auto awaited_13 = co_await host_b.register_cas(make_entry(key, "sha256:on-b", 1), "");
      CHECK(awaited_13.won);
      auto awaited_14 = co_await host_a.lookup(key);
      CHECK(awaited_14->image_id == "sha256:on-a");
      auto awaited_15 = co_await host_b.lookup(key);
      CHECK(awaited_15->image_id == "sha256:on-b");
      auto awaited_16 = co_await host_a.remove(key);
      CHECK(awaited_16.has_value());
      auto awaited_17 = co_await host_b.lookup(key);
      CHECK(awaited_17.has_value());
      auto awaited_18 = co_await host_a.next_generation(key);
      CHECK(awaited_18 == 1);
      auto awaited_19 = co_await host_b.next_generation(key);
      CHECK(awaited_19 == 1);
    });
  });
}

TEST_CASE("registry list and totals read every entry in one round trip, skipping dangling keys",
          "[snapshots][redis]") {
  testing::run_coro([] {
    return on_fresh_prefix([](redis::ClientPtr client, std::string prefix) -> awaitable<void> {
      auto counting = std::make_shared<CountingClient>(client);
      SnapshotRegistry reg(counting, "ENGINE-L", {prefix});
      // Registered in reverse order: list() sorts by key.
      const int n = 300;
      for (int i = n - 1; i >= 0; --i) {
        char key[32];
        std::snprintf(key, sizeof key, "repo/%03d", i);
        auto registering =
            reg.register_cas(make_entry(key, "sha256:img" + std::to_string(i), i + 1), "");
        auto registered = co_await std::move(registering);
        REQUIRE(registered.won);
      }
      // An index member whose hash is gone (deleted by hand) and one whose
      // hash names no image are skipped, as lookup() would skip them.
      std::vector<std::string> dangle{"SADD", prefix + "ENGINE-L:keys", "gone/key", "bad/key"};
      co_await client->command(std::move(dangle));
      std::vector<std::string> bad{"HSET", prefix + "ENGINE-L:entry:bad/key", "key", "bad/key"};
      co_await client->command(std::move(bad));

      counting->sent = 0;
      auto entries = co_await reg.list();
      CHECK(counting->sent == 1);
      REQUIRE(entries.size() == static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        char key[32];
        std::snprintf(key, sizeof key, "repo/%03d", i);
        CHECK(entries[static_cast<std::size_t>(i)].key == key);
        CHECK(entries[static_cast<std::size_t>(i)].image_id == "sha256:img" + std::to_string(i));
        CHECK(entries[static_cast<std::size_t>(i)].generation == i + 1);
        CHECK(entries[static_cast<std::size_t>(i)].size_bytes == 4096);
      }
      // totals() counts the same entries, in one round trip.
      counting->sent = 0;
      auto totals = co_await reg.totals();
      CHECK(counting->sent == 1);
      CHECK(totals.count == n);
      CHECK(totals.bytes == std::int64_t{4096} * n);
      // A size that is not an integer counts 0, as list() reads it.
      std::vector<std::string> odd{"HSET", prefix + "ENGINE-L:entry:repo/000", "size_bytes", "1e9"};
      co_await client->command(std::move(odd));
      auto after_odd = co_await reg.totals();
      CHECK(after_odd.count == n);
      CHECK(after_odd.bytes == std::int64_t{4096} * (n - 1));
      auto relisted = co_await reg.list();
      REQUIRE(!relisted.empty());
      CHECK(relisted[0].size_bytes == 0);

      // Each entry is the one lookup() reads.
      auto one = co_await reg.lookup("repo/123");
      REQUIRE(one.has_value());
      CHECK(one->image == entries[123].image);
      CHECK(one->created_ms == entries[123].created_ms);

      // An empty registry lists nothing, also in one round trip.
      SnapshotRegistry empty(counting, "ENGINE-EMPTY", {prefix});
      counting->sent = 0;
      auto none = co_await empty.list();
      CHECK(none.empty());
      CHECK(counting->sent == 1);
      auto zero = co_await empty.totals();
      CHECK(zero.count == 0);
      CHECK(zero.bytes == 0);
    });
  });
}
