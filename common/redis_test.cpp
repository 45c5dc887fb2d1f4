// Integration tests of the Redis client against real redis-server processes:
// the shared one of the test run (WARMSTART_TEST_REDIS_URL) and, for restart,
// freeze and auth scenarios, servers of the tests' own.
#include "common/redis.hpp"
#include "common/redis_test_server.hpp"
#include "support/test_env.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <catch2/catch.hpp>

#include <random>
#include <sstream>

using namespace warmstart;
using namespace warmstart::redis;
using warmstart::testing::RedisServerProcess;
using warmstart::testing::run_coro;

namespace {

std::string unique(const std::string& what) {
  static std::mt19937_64 rng{std::random_device{}()};
  return "test:redis:" + what + ":" + std::to_string(rng());
}

ClientOptions options_for(const std::string& url) {
  ClientOptions o;
  o.url = Url::parse(url);
  o.command_timeout = 5s;
  o.reconnect_min_backoff = 20ms;
  o.reconnect_max_backoff = 200ms;
  return o;
}

std::string run_dir_sub(const std::string& name) {
  return testing::run_dir() + "/" + name + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(std::random_device{}());
}

}  // namespace

TEST_CASE("commands round-trip binary-safe values", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto client =
        Client::create(co_await net::this_coro::executor, options_for(testing::redis_url()));
    co_await client->connect();
    CHECK(client->connected());
    const std::string key = unique("binary");
    const std::string value("a\0b\r\nc\xff", 7);
    co_await client->command(make_args("SET", key, value));
    Reply got = co_await client->command(make_args("GET", key));
    CHECK(got.as_string() == value);
    {
      auto r_ = co_await client->command(make_args("GET", key + ":missing"));
      CHECK(r_.is_nil());
    }
    {
      auto r_ = co_await client->command(make_args("DEL", key));
      CHECK(r_.as_integer() == 1);
    }
  });
}

TEST_CASE("a value larger than the socket buffer is written in parts and read back", "[redis]") {
  // Commands are written without waiting for writability first; one that does
  // not fit the socket's send buffer must then wait for room, not spin or stop.
  run_coro([]() -> awaitable<void> {
    auto client =
        Client::create(co_await net::this_coro::executor, options_for(testing::redis_url()));
    const std::string key = unique("large");
    std::string value(24 * 1024 * 1024, '\0');
    for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + i % 23);
    co_await client->command(make_args("SET", key, value));
    Reply got = co_await client->command(make_args("GET", key));
    CHECK(got.as_string().size() == value.size());
    CHECK(got.as_string() == value);
    co_await client->command(make_args("DEL", key));
  });
}

TEST_CASE("concurrent commands are pipelined on one connection", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto client = Client::create(ex, options_for(testing::redis_url()));
    const std::string key = unique("pipeline");
    constexpr int n = 2000;
    int done = 0;
    std::int64_t max_seen = 0;
    for (int i = 0; i < n; ++i) {
      net::co_spawn(
          ex,
          [&]() -> awaitable<void> {
            Reply r = co_await client->command(make_args("INCR", key));
            max_seen = std::max(max_seen, r.as_integer());
            ++done;
          },
          net::detached);
    }
    // All 2000 are in flight together; wait for them with a bound.
    auto until = Clock::now() + 10s;
    while (done < n && Clock::now() < until) co_await sleep_for(5ms);
    CHECK(done == n);
    CHECK(max_seen == n);
    {
      auto r_ = co_await client->command(make_args("GET", key));
      CHECK(r_.as_string() == std::to_string(n));
    }
    co_await client->command(make_args("DEL", key));
  });
}

TEST_CASE("an error reply throws ReplyError naming the command", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto client =
        Client::create(co_await net::this_coro::executor, options_for(testing::redis_url()));
    const std::string key = unique("wrongtype");
    co_await client->command(make_args("SET", key, "x"));
    try {
      co_await client->command(make_args("lpush", key, "y"));
      FAIL("LPUSH on a string succeeded");
    } catch (const ReplyError& e) {
      CHECK(e.command() == "LPUSH");
      CHECK_THAT(e.what(), Catch::StartsWith("LPUSH: WRONGTYPE"));
    }
    // The connection stays usable after an error reply.
    {
      auto r_ = co_await client->command(make_args("DEL", key));
      CHECK(r_.as_integer() == 1);
    }
  });
}

TEST_CASE("eval uses EVALSHA and falls back to EVAL after SCRIPT FLUSH", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto client =
        Client::create(co_await net::this_coro::executor, options_for(testing::redis_url()));
    const std::string key = unique("eval");
    // A unique script text so other tests' flushes and caches do not matter.
    const std::string script = "-- " + key + "\nredis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]";
    co_await client->command(make_args("SCRIPT", "FLUSH"));
    {
      auto r_ = co_await client->eval(script, make_args(key), make_args("one"));
      CHECK(r_.as_string() == "one");
    }
    // Now cached on the server: EVALSHA succeeds directly.
    {
      auto r_ = co_await client->eval(script, make_args(key), make_args("two"));
      CHECK(r_.as_string() == "two");
    }
    co_await client->command(make_args("SCRIPT", "FLUSH"));
    {
      auto r_ = co_await client->eval(script, make_args(key), make_args("three"));
      CHECK(r_.as_string() == "three");
    }
    {
      auto r_ = co_await client->command(make_args("GET", key));
      CHECK(r_.as_string() == "three");
    }
    try {
      co_await client->eval("return redis.error_reply('boom')", make_args(), make_args());
      FAIL("error_reply did not throw");
    } catch (const ReplyError& e) {
      CHECK_THAT(e.what(), Catch::Contains("boom"));
    }
    co_await client->command(make_args("DEL", key));
  });
}

TEST_CASE("rediss:// fails with a clear TLS error", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto client =
        Client::create(co_await net::this_coro::executor, options_for("rediss://127.0.0.1:1"));
    try {
      co_await client->command(make_args("PING"));
      FAIL("rediss:// connected");
    } catch (const ConnectionError& e) {
      CHECK(std::string(e.what()) == "TLS (rediss://) is not supported: hiredis 0.14 has no TLS");
    }
  });
}

TEST_CASE("a refused connection is a ConnectionError naming the command", "[redis]") {
  RedisServerProcess server(run_dir_sub("refused"), {});  // never started: port is closed
  run_coro([&]() -> awaitable<void> {
    auto client = Client::create(co_await net::this_coro::executor, options_for(server.url()));
    try {
      co_await client->command(make_args("GET", "k"));
      FAIL("connected to a closed port");
    } catch (const ConnectionError& e) {
      CHECK(e.command() == "CONNECT");
      CHECK_THAT(e.what(), Catch::Contains("127.0.0.1:" + std::to_string(server.port())));
    }
    CHECK_FALSE(client->connected());
  });
}

TEST_CASE("a command deadline fires against a frozen server and the client recovers", "[redis]") {
  RedisServerProcess server(run_dir_sub("frozen"), {});
  server.start();
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto client = Client::create(ex, options_for(server.url()));
    co_await client->command(make_args("SET", "k", "v"));
    server.freeze();
    // Two commands in flight: the one whose deadline fires names itself, the
    // other fails with the connection.
    bool other_failed = false;
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          try {
            co_await client->command(make_args("GET", "k"), 5s);
          } catch (const ConnectionError&) {
            other_failed = true;
          }
        },
        net::detached);
    auto started = Clock::now();
    try {
      co_await client->command(make_args("INCR", "n"), 300ms);
      FAIL("INCR on a frozen server returned");
    } catch (const ConnectionError& e) {
      CHECK(e.command() == "INCR");
      CHECK_THAT(e.what(), Catch::Contains("deadline of 300 ms exceeded"));
    }
    auto took = Clock::now() - started;
    CHECK(took >= 300ms);
    CHECK(took < 2s);
    co_await sleep_for(1ms);  // let the failed sibling run its handler
    CHECK(other_failed);
    server.thaw();
    {
      auto r_ = co_await client->command(make_args("GET", "k"));
      CHECK(r_.as_string() == "v");
    }
    CHECK(client->connected());
  });
  server.stop();
}

TEST_CASE(
    "a command whose caller is cancelled ends at once, and its late reply does not disturb the "
    "next command",
    "[redis]") {
  run_coro([]() -> awaitable<void> {
    using namespace boost::asio::experimental::awaitable_operators;
    auto ex = co_await net::this_coro::executor;
    auto client = Client::create(ex, options_for(testing::redis_url()));
    auto pusher = Client::create(ex, options_for(testing::redis_url()));
    const std::string key = unique("cancelled");
    const auto started = Clock::now();
    // BLPOP blocks 5 s; the timer wins the race and cancels it.
    auto blocked = client->command(make_args("BLPOP", key, 5));
    auto raced = co_await (std::move(blocked) || sleep_for(100ms));
    const auto took = Clock::now() - started;
    CHECK(raced.index() == 1);
    CHECK(took >= 100ms);
    CHECK(took < 2s);
    // The abandoned BLPOP still holds the connection: unblock it, then the
    // next command gets its own reply, not the BLPOP's.
    co_await pusher->command(make_args("RPUSH", key, "late"));
    auto echoed = co_await client->command(make_args("ECHO", "next"));
    CHECK(echoed.as_string() == "next");
    CHECK(client->connected());
    co_await pusher->command(make_args("DEL", key));
  });
}

TEST_CASE("a restarted server is reconnected to and in-flight commands fail", "[redis]") {
  RedisServerProcess server(run_dir_sub("restart"), {"--appendonly", "yes"});
  server.start();
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto client = Client::create(ex, options_for(server.url()));
    co_await client->command(make_args("SET", "k", "before"));
    // A blocked BLPOP is in flight when the server goes away.
    bool blpop_failed = false;
    bool blpop_done = false;
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          try {
            co_await client->command(make_args("BLPOP", "nothing", "10"), 15s);
          } catch (const ConnectionError& e) {
            blpop_failed = std::string(e.what()).find("lost") != std::string::npos;
          }
          blpop_done = true;
        },
        net::detached);
    co_await sleep_for(100ms);  // BLPOP reaches the server (no event to await here)
    server.stop();
    auto until = Clock::now() + 5s;
    while (!blpop_done && Clock::now() < until) co_await sleep_for(10ms);
    CHECK(blpop_failed);
    CHECK_FALSE(client->connected());
    server.start();
    {
      auto r_ = co_await client->command(make_args("GET", "k"));
      CHECK(r_.as_string() == "before");
    }
    CHECK(client->connected());
  });
  server.stop();
}

TEST_CASE("a unix:// URL talks to the server through its socket, pub/sub too, across a restart",
          "[redis]") {
  const std::string dir = run_dir_sub("unix");
  const std::string sock = dir + "/redis.sock";
  RedisServerProcess server(
      dir, {"--unixsocket", sock, "--unixsocketperm", "700", "--appendonly", "yes"});
  server.start();
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    const auto o = options_for("unix://" + sock + "?db=2");
    auto client = Client::create(ex, o);
    co_await client->command(make_args("SET", "k", "v"));
    {
      // The server sees this client on its socket, in db 2, under its name.
      auto r_ = co_await client->command(make_args("CLIENT", "INFO"));
      CHECK_THAT(r_.as_string(), Catch::Contains("laddr=" + sock));
      CHECK_THAT(r_.as_string(), Catch::Contains(" db=2 "));
      CHECK_THAT(r_.as_string(), Catch::Contains(" name=warmstart "));
    }
    std::vector<std::string> heard;
    auto sub = Subscriber::create(
        ex, o, {"ch"}, [&](const std::string&, const std::string& msg) { heard.push_back(msg); });
    {
      auto r_ = co_await sub->wait_subscribed(5s);
      REQUIRE(r_);
    }
    co_await client->command(make_args("PUBLISH", "ch", "one"));
    auto until = Clock::now() + 5s;
    while (heard.empty() && Clock::now() < until) co_await sleep_for(5ms);
    CHECK(heard == std::vector<std::string>{"one"});
    sub->stop();

    server.stop();
    // This GET is written to a socket whose server is gone, before the client
    // has read the end of the stream: on a Unix socket that raises SIGPIPE,
    // which ended this process until the client set it to ignored.
    bool lost = false;
    try {
      co_await client->command(make_args("GET", "k"));
    } catch (const ConnectionError& e) {
      lost = std::string(e.what()).find(sock) != std::string::npos;
    }
    CHECK(lost);  // the error names the socket
    server.start();
    {
      auto r_ = co_await client->command(make_args("GET", "k"));
      CHECK(r_.as_string() == "v");  // from the AOF, over a new connection
    }
  });
  server.stop();
}

TEST_CASE("a unix:// URL whose socket does not exist is a ConnectionError naming it", "[redis]") {
  const std::string sock = run_dir_sub("nosock") + "/redis.sock";
  run_coro([&]() -> awaitable<void> {
    auto client = Client::create(co_await net::this_coro::executor, options_for("unix://" + sock));
    try {
      co_await client->command(make_args("PING"));
      FAIL("connected to a socket that does not exist");
    } catch (const ConnectionError& e) {
      CHECK(e.command() == "CONNECT");
      CHECK_THAT(e.what(), Catch::Contains(sock));
      CHECK_THAT(e.what(), Catch::Contains("No such file"));
    }
  });
}

TEST_CASE("AUTH with user or password plus SELECT and CLIENT SETNAME on connect", "[redis]") {
  RedisServerProcess server(run_dir_sub("auth"), {"--requirepass", "s3cret"});
  server.start();
  const std::string base = "127.0.0.1:" + std::to_string(server.port());
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto o = options_for("redis://:s3cret@" + base + "/2");
    o.client_name = "warmstart test";
    auto client = Client::create(ex, o);
    co_await client->command(make_args("SET", "k", "db2"));
    {
      auto r_ = co_await client->command(make_args("CLIENT", "GETNAME"));
      CHECK(r_.as_string() == "warmstart-test");
    }
    auto db0 = Client::create(ex, options_for("redis://:s3cret@" + base + "/0"));
    {
      auto r_ = co_await db0->command(make_args("GET", "k"));
      CHECK(r_.is_nil());
    }
    co_await db0->command(make_args("ACL", "SETUSER", "alice", "on", ">pw2", "~*", "+@all"));

    auto alice = Client::create(ex, options_for("redis://alice:pw2@" + base + "/2"));
    {
      auto r_ = co_await alice->command(make_args("ACL", "WHOAMI"));
      CHECK(r_.as_string() == "alice");
    }
    {
      auto r_ = co_await alice->command(make_args("GET", "k"));
      CHECK(r_.as_string() == "db2");
    }

    auto wrong = Client::create(ex, options_for("redis://:nope-not-it@" + base));
    try {
      co_await wrong->command(make_args("PING"));
      FAIL("wrong password accepted");
    } catch (const ConnectionError& e) {
      CHECK(e.command() == "AUTH");
      CHECK_THAT(e.what(), !Catch::Contains("nope-not-it"));
    }
  });
  server.stop();
}

TEST_CASE("a subscriber hears messages and resubscribes after its link is killed", "[redis]") {
  run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto o = options_for(testing::redis_url());
    auto client = Client::create(ex, o);
    const std::string channel = unique("channel");
    std::vector<std::string> heard;
    auto sub_options = o;
    sub_options.client_name = unique("sub").substr(11);
    auto sub = Subscriber::create(ex, sub_options, {channel},
                                  [&](const std::string& ch, const std::string& msg) {
                                    CHECK(ch == channel);
                                    heard.push_back(msg);
                                  });
    {
      auto r_ = co_await sub->wait_subscribed(5s);
      REQUIRE(r_);
    }
    {
      auto r_ = co_await client->command(make_args("PUBLISH", channel, "one"));
      CHECK(r_.as_integer() == 1);
    }
    auto until = Clock::now() + 5s;
    while (heard.empty() && Clock::now() < until) co_await sleep_for(5ms);
    REQUIRE(heard == std::vector<std::string>{"one"});

    // Kill exactly our subscriber's connection (the Redis is shared): find it
    // by its unique client name.
    std::string list =
        (co_await client->command(make_args("CLIENT", "LIST", "TYPE", "pubsub"))).as_string();
    std::string id;
    std::istringstream lines(list);
    for (std::string line; std::getline(lines, line);) {
      if (line.find(" name=" + sub_options.client_name + "-sub ") == std::string::npos) continue;
      id = line.substr(3, line.find(' ') - 3);
    }
    REQUIRE_FALSE(id.empty());
    {
      auto r_ = co_await client->command(make_args("CLIENT", "KILL", "ID", id));
      CHECK(r_.as_integer() == 1);
    }
    // The subscriber notices, reconnects and resubscribes: publish until a
    // receiver is there again (bounded), then the message must arrive.
    until = Clock::now() + 5s;
    std::int64_t receivers = 0;
    while (receivers == 0 && Clock::now() < until) {
      co_await sleep_for(20ms);
      if (co_await sub->wait_subscribed(1s)) {
        receivers = (co_await client->command(make_args("PUBLISH", channel, "two"))).as_integer();
      }
    }
    CHECK(receivers == 1);
    until = Clock::now() + 5s;
    while (heard.size() < 2 && Clock::now() < until) co_await sleep_for(5ms);
    CHECK(heard == std::vector<std::string>{"one", "two"});
    sub->stop();
  });
}

// Regression (found by ./scripts/test --sanitize, a heap-use-after-free at
// router shutdown): the io_context is destroyed with a subscriber's loop
// suspended in an Event wait, and the subscriber's last owner is another
// suspended frame, destroyed in the same shutdown. Stopping the subscriber
// then notified a timer of the already destroyed frame.
TEST_CASE("a subscriber owned by a suspended coroutine survives io_context destruction",
          "[redis]") {
  for (int round = 0; round < 5; ++round) {
    net::io_context io;
    auto o = options_for(testing::redis_url());
    std::shared_ptr<Subscriber> sub =
        Subscriber::create(io.get_executor(), o, {unique("shutdown")}, [](auto&, auto&) {});
    bool subscribed = false;
    net::co_spawn(
        io, [&, sub]() -> awaitable<void> { subscribed = co_await sub->wait_subscribed(5s); },
        net::detached);
    const auto until = Clock::now() + 5s;
    while (!subscribed && Clock::now() < until) io.run_one_for(100ms);
    REQUIRE(subscribed);
    // Only a frame that never ran owns the subscriber now: it sits in the
    // scheduler's queue, which shuts down after the timers (where the
    // subscriber's loop waits), as the router's metrics loop did.
    net::co_spawn(
        io, [owner = std::move(sub)]() -> awaitable<void> { co_return; }, net::detached);
  }  // ~io_context destroys both frames; ASan reports a use-after-free if the order bites
  SUCCEED("no crash");
}
