// ScriptBatcher's group commit against a test double of the script call (no
// server): what goes out in which batch, and how replies and errors come back.
#include "queue/script_batcher.hpp"

#include "support/test_env.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::queue;
using warmstart::testing::run_coro;

namespace {

// Records each batch's arguments; answers after `delay` with one string reply
// per item ("r:" + the item's first argument), `items_per_reply` arguments each.
struct FakeScript {
  Duration delay = 5ms;
  std::size_t args_per_item = 2;
  std::vector<std::vector<std::string>> batches;
  bool fail = false;
  bool short_reply = false;

  ScriptBatcher::Send send() {
    return [this](std::vector<std::string> args) -> awaitable<redis::Reply> {
      batches.push_back(args);
      co_await sleep_for(delay);
      if (fail) throw redis::ConnectionError("EVALSHA", "connection lost");
      redis::Reply out;
      out.type = redis::Reply::Type::array;
      for (std::size_t i = 0; i + args_per_item <= args.size(); i += args_per_item) {
        redis::Reply r;
        r.type = redis::Reply::Type::string;
        r.str = "r:" + args[i];
        out.elements.push_back(std::move(r));
      }
      if (short_reply) out.elements.pop_back();
      co_return out;
    };
  }
};

// Starts `n` calls at once; collects their replies (or error texts) by index.
awaitable<std::vector<std::string>> run_many(ScriptBatcher& b, int n) {
  auto ex = co_await net::this_coro::executor;
  std::vector<std::string> out(static_cast<std::size_t>(n));
  int left = n;
  net::steady_timer done(ex, Clock::time_point::max());
  for (int i = 0; i < n; ++i) {
    net::co_spawn(
        ex,
        [&b, &out, i]() -> awaitable<void> {
          auto item = redis::make_args("item" + std::to_string(i), "x");
          redis::Reply r = co_await b.run(std::move(item));
          out[static_cast<std::size_t>(i)] = r.as_string();
        },
        [&, i](std::exception_ptr e) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& err) {
              out[static_cast<std::size_t>(i)] = std::string("error: ") + err.what();
            }
          }
          if (--left == 0) done.cancel();
        });
  }
  co_await done.async_wait(net::as_tuple(use_awaitable));
  co_return out;
}

}  // namespace

TEST_CASE("an idle batcher sends a call at once, alone", "[unit][batcher]") {
  FakeScript fake;
  run_coro([&]() -> awaitable<void> {
    ScriptBatcher b(co_await net::this_coro::executor, 64, fake.send());
    auto item = redis::make_args("a", "1");
    redis::Reply r = co_await b.run(std::move(item));
    CHECK(r.as_string() == "r:a");
    auto item2 = redis::make_args("b", "2");
    redis::Reply r2 = co_await b.run(std::move(item2));
    CHECK(r2.as_string() == "r:b");
    CHECK(b.batches() == 2);
  });
  REQUIRE(fake.batches.size() == 2);
  CHECK(fake.batches[0] == std::vector<std::string>{"a", "1"});
  CHECK(fake.batches[1] == std::vector<std::string>{"b", "2"});
}

TEST_CASE("calls arriving during a batch go out together as the next one", "[unit][batcher]") {
  FakeScript fake;
  std::vector<std::string> replies;
  run_coro([&]() -> awaitable<void> {
    ScriptBatcher b(co_await net::this_coro::executor, 64, fake.send());
    replies = co_await run_many(b, 10);
    CHECK(b.items() == 10);
  });
  // The first call leads alone; the nine that queued behind it share one batch.
  REQUIRE(fake.batches.size() == 2);
  CHECK(fake.batches[0].size() == 2);
  CHECK(fake.batches[1].size() == 18);
  CHECK(fake.batches[1][0] == "item1");
  CHECK(fake.batches[1][16] == "item9");
  for (int i = 0; i < 10; ++i)
    CHECK(replies[static_cast<std::size_t>(i)] == "r:item" + std::to_string(i));
}

TEST_CASE("a batch never holds more than max_items calls", "[unit][batcher]") {
  FakeScript fake;
  std::vector<std::string> replies;
  run_coro([&]() -> awaitable<void> {
    ScriptBatcher b(co_await net::this_coro::executor, 4, fake.send());
    replies = co_await run_many(b, 11);
  });
  // 1 (leader), then 4, 4, 2.
  REQUIRE(fake.batches.size() == 4);
  CHECK(fake.batches[0].size() == 2);
  CHECK(fake.batches[1].size() == 8);
  CHECK(fake.batches[2].size() == 8);
  CHECK(fake.batches[3].size() == 4);
  for (int i = 0; i < 11; ++i)
    CHECK(replies[static_cast<std::size_t>(i)] == "r:item" + std::to_string(i));
}

TEST_CASE("a failed batch fails every call in it, and the next batch still goes out",
          "[unit][batcher]") {
  FakeScript fake;
  std::vector<std::string> replies;
  std::string after;
  run_coro([&]() -> awaitable<void> {
    ScriptBatcher b(co_await net::this_coro::executor, 64, fake.send());
    fake.fail = true;
    replies = co_await run_many(b, 5);
    fake.fail = false;
    auto item = redis::make_args("later", "1");
    redis::Reply r = co_await b.run(std::move(item));
    after = r.as_string();
  });
  for (const auto& r : replies) CHECK(r == "error: connection lost");
  CHECK(after == "r:later");
}

TEST_CASE("a reply with the wrong number of elements is a protocol error", "[unit][batcher]") {
  FakeScript fake;
  fake.short_reply = true;
  std::vector<std::string> replies;
  run_coro([&]() -> awaitable<void> {
    ScriptBatcher b(co_await net::this_coro::executor, 64, fake.send());
    replies = co_await run_many(b, 3);
  });
  CHECK(replies[0] == "error: batched script returned 0 replies for 1 calls");
  CHECK(replies[1] == "error: batched script returned 1 replies for 2 calls");
  CHECK(replies[2] == replies[1]);
}

TEST_CASE("a waiting call cancelled by its deadline is never sent", "[unit][batcher]") {
  FakeScript fake;
  fake.delay = 100ms;
  std::string first;
  std::string timed_out;
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    ScriptBatcher b(ex, 64, fake.send());
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          auto item = redis::make_args("first", "1");
          redis::Reply r = co_await b.run(std::move(item));
          first = r.as_string();
        },
        net::detached);
    co_await sleep_for(5ms);  // "first" is in flight now
    auto item = redis::make_args("late", "1");
    auto waiting = with_deadline(b.run(std::move(item)), 20ms, "finish");
    try {
      co_await std::move(waiting);
    } catch (const DeadlineExceeded& e) {
      timed_out = e.what();
    }
    co_await sleep_for(150ms);  // "first" has returned
    fake.delay = 1ms;
    auto item3 = redis::make_args("third", "1");
    redis::Reply r3 = co_await b.run(std::move(item3));
    CHECK(r3.as_string() == "r:third");
  });
  CHECK(first == "r:first");
  CHECK(timed_out.find("deadline") != std::string::npos);
  REQUIRE(fake.batches.size() == 2);
  CHECK(fake.batches[1] == std::vector<std::string>{"third", "1"});
}
