// Integration tests of RedisQueue against real redis-server processes. Each
// test uses its own key prefix on the shared server and deletes its keys.
#include "queue/redis_queue.hpp"

#include "common/redis_test_server.hpp"
#include "queue/queue_contract_test.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>

#include <random>

using namespace warmstart;
using namespace warmstart::queue;
using redis::make_args;
using warmstart::testing::RedisServerProcess;
using warmstart::testing::run_coro;

namespace {

std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return std::to_string(rng());
}

// Deletes every key under `prefix` on `url` when the test ends (also on failure).
struct KeyCleanup {
  std::string url;
  std::string prefix;
  ~KeyCleanup() {
    auto u = redis::Url::parse(url);
    redisContext* c = redisConnect(u.host.c_str(), u.port);
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisFree(c);
      return;
    }
    std::string cursor = "0";
    do {
      auto* r = static_cast<redisReply*>(
          redisCommand(c, "SCAN %s MATCH %s* COUNT 1000", cursor.c_str(), prefix.c_str()));
      if (r == nullptr || r->type != REDIS_REPLY_ARRAY) break;
      cursor = r->element[0]->str;
      for (std::size_t i = 0; i < r->element[1]->elements; ++i) {
        freeReplyObject(redisCommand(c, "DEL %s", r->element[1]->element[i]->str));
      }
      freeReplyObject(r);
    } while (cursor != "0");
    redisFree(c);
  }
};

RedisQueueOptions options_for(const std::string& url, const std::string& prefix) {
  RedisQueueOptions o;
  o.redis.url = redis::Url::parse(url);
  o.redis.reconnect_min_backoff = 20ms;
  o.redis.reconnect_max_backoff = 200ms;
  o.key_prefix = prefix;
  o.queues = {"default"};
  return o;
}

JobSpec job(const std::string& id, int max_attempts = 1) {
  JobSpec s;
  s.id = id;
  s.cmd = {"true"};
  s.max_attempts = max_attempts;
  return s;
}

// Built by functions, not braces: g++ 12 destroys a braced aggregate
// temporary twice when it appears in a co_await expression.
JobResult result(JobState state, std::optional<int> exit_code, std::string error) {
  return JobResult{state, exit_code, std::move(error)};
}
RunInfo run_info(std::string image, bool from_snapshot, bool fallback, std::string container,
                 std::string router) {
  return RunInfo{std::move(image), from_snapshot, fallback, std::move(container),
                 std::move(router)};
}

std::string unique_prefix() {
  return "test:q:" + random_suffix() + ":";
}

// A consumer whose memory ceiling (2048 MB) is below the default one, and a
// job an enqueuer with the defaults accepts but it refuses.
RedisQueueOptions strict_options(const std::string& prefix) {
  auto o = options_for(testing::redis_url(), prefix);
  JobLimits limits;
  limits.memory_mb = 2048;
  o.validation.limits = limits;
  return o;
}
JobSpec over_strict_limits(const std::string& id, const std::string& key = "") {
  JobSpec s = contract::spec(id, key);
  s.resources.memory_mb = 4096;
  return s;
}

// Claims until `want` jobs arrived or `limit` passed.
awaitable<std::vector<ClaimedJob>> claim_n(Queue& q, const std::string& consumer, std::size_t want,
                                           Duration limit = 5s) {
  std::vector<ClaimedJob> out;
  auto until = Clock::now() + limit;
  while (out.size() < want && Clock::now() < until) {
    auto got = co_await q.claim(consumer, want - out.size(), 200ms);
    for (auto& j : got) out.push_back(std::move(j));
  }
  co_return out;
}

}  // namespace

TEST_CASE("enqueue is idempotent by id and spec", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    auto first = co_await q.enqueue(job("same-id"));
    CHECK(first.created);
    CHECK(first.record.state == JobState::queued);
    auto second = co_await q.enqueue(job("same-id"));
    CHECK_FALSE(second.created);
    CHECK(second.record.id == "same-id");
    // The same id with another spec is a conflict, and changes nothing.
    JobSpec changed = job("same-id");
    changed.cmd = {"false"};
    bool conflict = false;
    try {
      co_await q.enqueue(changed);
    } catch (const IdConflict& e) {
      conflict = true;
      CHECK(e.existing_fingerprint() == job("same-id").fingerprint());
      CHECK(e.requested_fingerprint() == changed.fingerprint());
    }
    CHECK(conflict);
    auto stored = co_await q.get("same-id");
    CHECK(stored->spec.cmd == std::vector<std::string>{"true"});  // the original
    auto len = co_await q.client()->command(make_args("XLEN", q.stream_key("default")));
    CHECK(len.as_integer() == 1);
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::queued] == 1);
    auto events = co_await q.read_events("", 10);
    REQUIRE(events.size() == 1);
    CHECK(events[0].body["type"] == "job.queued");
    CHECK(events[0].body["job"] == "same-id");
    CHECK(events[0].body["id"] == events[0].id);
  });
}

TEST_CASE("claim then mark_running then finish acks the job and records the result", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    co_await q.enqueue(job("j1"));
    auto claimed = co_await claim_n(q, "router-a", 1);
    REQUIRE(claimed.size() == 1);
    CHECK(claimed[0].record.id == "j1");
    CHECK(claimed[0].record.state == JobState::running);
    CHECK(claimed[0].record.attempts == 1);
    CHECK(claimed[0].lease.attempt == 1);
    auto none = co_await q.claim("router-b", 10, 0ms);
    CHECK(none.empty());

    auto info = run_info("worker:1", true, false, "c-123", "router-a");
    auto running = co_await q.mark_running(claimed[0].lease, std::move(info));
    CHECK(running == JobState::running);
    auto marked = co_await q.get("j1");
    REQUIRE(marked);
    CHECK(marked->container_id == "c-123");
    CHECK(marked->from_snapshot);
    CHECK(marked->started_at.has_value());
    co_await q.set_log_tail("j1", "line 1\nline 2\n");
    auto arg1 = result(JobState::succeeded, 0, "");
    auto done = co_await q.finish(claimed[0].lease, std::move(arg1));
    CHECK(done.state == JobState::succeeded);
    CHECK(done.exit_code == 0);
    CHECK(done.finished_at > 0);
    auto stored = co_await q.get("j1");
    REQUIRE(stored.has_value());
    CHECK(stored->state == JobState::succeeded);
    CHECK(stored->finished_at == done.finished_at);
    CHECK(stored->log_tail == "line 1\nline 2\n");

    auto pending =
        co_await q.client()->command(make_args("XPENDING", q.stream_key("default"), "routers"));
    CHECK(pending.as_array().at(0).as_integer() == 0);
    auto len = co_await q.client()->command(make_args("XLEN", q.stream_key("default")));
    CHECK(len.as_integer() == 0);
    auto ttl = co_await q.client()->command(make_args("TTL", q.job_key("j1")));
    CHECK(ttl.as_integer() > 6 * 24 * 3600);
    auto listed = co_await q.list(JobState::succeeded, 10);
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == "j1");
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::succeeded] == 1);
    CHECK(counts.by_state[JobState::running] == 0);
    CHECK(counts.depth["default"] == 0);

    std::vector<std::string> types;
    for (auto& e : co_await q.read_events("0", 100)) types.push_back(e.body["type"]);
    CHECK(types == std::vector<std::string>{"job.queued", "job.started", "job.succeeded"});
    // Resume after the first event (SSE Last-Event-ID).
    auto all = co_await q.read_events("", 100);
    auto rest = co_await q.read_events(all[0].id, 100);
    CHECK(rest.size() == 2);
    // A second report after the ack changes nothing.
    auto arg2 = result(JobState::failed, 1, "late");
    auto again = co_await q.finish(claimed[0].lease, std::move(arg2));
    CHECK(again.state == JobState::succeeded);
    CHECK(again.error.empty());
  });
}

TEST_CASE("a renewed lease keeps a long job from being reclaimed", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto o = options_for(testing::redis_url(), prefix);
    o.lease_timeout = 1s;
    RedisQueue a(ex, o);
    RedisQueue b(ex, o);
    co_await a.enqueue(job("long"));
    auto claimed = co_await claim_n(a, "router-a", 1);
    REQUIRE(claimed.size() == 1);
    // The job "runs" 5 s; a heartbeats every lease/3 while b tries to reclaim.
    auto until = Clock::now() + 5s;
    auto next_beat = Clock::now();
    std::size_t stolen = 0;
    while (Clock::now() < until) {
      if (Clock::now() >= next_beat) {
        auto report =
            co_await a.renew_leases("router-a", std::vector<LeaseHandle>(1, claimed[0].lease));
        CHECK(report.lost.empty());
        next_beat += 333ms;
      }
      stolen += (co_await b.reclaim_expired("router-b", 10)).size();
      co_await sleep_for(50ms);  // pacing of the loop, not synchronization
    }
    CHECK(stolen == 0);
    auto arg3 = result(JobState::succeeded, 0, "");
    auto done = co_await a.finish(claimed[0].lease, std::move(arg3));
    CHECK(done.state == JobState::succeeded);
    auto stored = co_await a.get(done.job_id);
    REQUIRE(stored.has_value());
    CHECK(stored->router_id == "router-a");
  });
}

TEST_CASE("one reclaim round finds an expired lease behind 40 live ones", "[queue]") {
  // XAUTOCLAIM COUNT 1 looks at 10 pending entries: one call would stop at
  // the 10th live lease and leave the expired one for four rounds more.
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto o = options_for(testing::redis_url(), prefix);
    o.lease_timeout = 1s;
    RedisQueue a(ex, o);
    RedisQueue b(ex, o);
    for (int i = 0; i < 41; ++i) co_await a.enqueue(job("j-" + std::to_string(100 + i)));
    auto held = co_await claim_n(a, "router-a", 41);
    REQUIRE(held.size() == 41);
    // a renews all but the last entry of its pending list, which expires.
    std::vector<LeaseHandle> live;
    for (std::size_t i = 0; i + 1 < held.size(); ++i) live.push_back(held[i].lease);
    const auto expired_at = Clock::now() + o.lease_timeout + 200ms;
    while (Clock::now() < expired_at) {
      auto report = co_await a.renew_leases("router-a", live);
      CHECK(report.lost.empty());
      co_await sleep_for(250ms);
    }
    auto renewed = co_await a.renew_leases("router-a", live);
    CHECK(renewed.lost.empty());
    auto got = co_await b.reclaim_expired("router-b", 1);
    REQUIRE(contract::ids(got) == std::vector<std::string>{"j-140"});
    CHECK(got[0].lease.consumer == "router-b");
    // The live leases stay a's.
    auto still = co_await a.renew_leases("router-a", live);
    CHECK(still.lost.empty());
  });
}

TEST_CASE("a consumer killed with SIGKILL has its job reclaimed within lease + 1 s", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  const auto lease = 1500ms;
  // Start the consumer process, with its stdout on a pipe.
  int out[2];
  REQUIRE(::pipe(out) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  std::vector<std::string> args{
      QUEUE_TEST_CONSUMER, testing::redis_url(), prefix,
      "default",           "doomed-router",      std::to_string(lease.count())};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    co_await q.enqueue(job("orphan"));
  });
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, QUEUE_TEST_CONSUMER, &actions, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  // Wait (bounded) for "CLAIMED orphan".
  std::string line;
  pollfd pfd{out[0], POLLIN, 0};
  auto until = std::chrono::steady_clock::now() + 10s;
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
    if (::poll(&pfd, 1, 200) == 1) {
      char buf[256];
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(out[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto killed_at = Clock::now();
  REQUIRE(line == "CLAIMED orphan\n");

  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.lease_timeout = lease;
    RedisQueue q(co_await net::this_coro::executor, o);
    auto before = co_await q.get("orphan");
    REQUIRE(before);
    CHECK(before->state == JobState::running);
    CHECK(before->router_id == "doomed-router");
    std::vector<ClaimedJob> got;
    while (got.empty() && Clock::now() < killed_at + lease + 1s) {
      got = co_await q.reclaim_expired("rescuer", 10);
      if (got.empty()) co_await sleep_for(100ms);  // a router's reclaim tick
    }
    auto took = Clock::now() - killed_at;
    REQUIRE(got.size() == 1);
    CHECK(took <= lease + 1s);
    CHECK(got[0].record.id == "orphan");
    CHECK(got[0].record.router_id == "rescuer");
    CHECK(got[0].lease.consumer == "rescuer");
    auto arg4 = result(JobState::succeeded, 0, "");
    auto done = co_await q.finish(got[0].lease, std::move(arg4));
    CHECK(done.state == JobState::succeeded);
  });
}

TEST_CASE(
    "claim promotes at most every promote_every: another router's due retry waits for it, "
    "this queue's own retry does not",
    "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.retry_backoff.initial = 0ms;
    o.retry_backoff.jitter = 0;
    o.promote_every = 1500ms;
    auto ex = co_await net::this_coro::executor;
    RedisQueue q(ex, o);
    RedisQueue other(ex, o);
    // (Out of CHECK: g++ 12 evaluates a co_await inside it three times.)
    auto first = co_await q.claim("r", 1, 0ms);  // q promoted: next one in 1.5 s
    CHECK(first.empty());
    co_await other.enqueue(job("theirs", 2));
    auto theirs = co_await claim_n(other, "o", 1);
    REQUIRE(theirs.size() == 1);
    co_await other.fail_attempt(theirs[0].lease, "exit 1", true);  // due at once
    const auto scheduled_at = Clock::now();
    // q does not promote yet: a claim is one round trip, not two.
    auto not_yet = co_await q.claim("r", 1, 0ms);
    CHECK(not_yet.empty());
    // A blocked claim wakes up for its next promotion and gets the retry.
    auto late = co_await q.claim("r", 1, 5s);
    const auto waited = Clock::now() - scheduled_at;
    REQUIRE(contract::ids(late) == std::vector<std::string>{"theirs"});
    CHECK(waited >= 1s);
    CHECK(waited < 3s);

    // Its own retry: the next claim promotes it, whatever promote_every says.
    co_await q.fail_attempt(late[0].lease, "exit 1", true);
    co_await q.enqueue(job("mine", 2));
    auto mine = co_await claim_n(q, "r", 1);
    REQUIRE(contract::ids(mine) == std::vector<std::string>{"mine"});
    co_await q.fail_attempt(mine[0].lease, "exit 1", true);
    auto again = co_await q.claim("r", 1, 0ms);
    REQUIRE(contract::ids(again) == std::vector<std::string>{"mine"});
    CHECK(again[0].record.attempts == 2);
  });
}

namespace {
// Calls of `command` (lower case) this Redis has served so far.
awaitable<long> command_calls(RedisQueue& q, const std::string& command) {
  redis::Reply info = co_await q.client()->command(make_args("INFO", "commandstats"));
  const std::string key = "cmdstat_" + command + ":calls=";
  const auto at = info.as_string().find(key);
  co_return at == std::string::npos ? 0 : std::stol(info.as_string().substr(at + key.size()));
}
}  // namespace

TEST_CASE("an idle claim loop makes one read and one promote per window", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.promote_every = 300ms;
    RedisQueue q(co_await net::this_coro::executor, o);
    auto none = co_await q.claim("r", 1, 0ms);  // promoted: the next one is due in 300 ms
    CHECK(none.empty());
    co_await sleep_for(150ms);  // claims out of phase with promoting
    // This one's read is split by the promotion due inside its window ...
    none = co_await q.claim("r", 1, 300ms);
    CHECK(none.empty());
    // ... the ones after it, each following one that waited out its block,
    // promote at their start instead: one read each, for ever.
    const long reads = co_await command_calls(q, "xreadgroup");
    const long scripts = co_await command_calls(q, "evalsha");
    const auto t0 = Clock::now();
    for (int i = 0; i < 3; ++i) {
      none = co_await q.claim("r", 1, 300ms);
      CHECK(none.empty());
    }
    CHECK(Clock::now() - t0 >= 900ms);  // each waited out its whole block
    const long reads_after = co_await command_calls(q, "xreadgroup");
    const long scripts_after = co_await command_calls(q, "evalsha");
    CHECK(reads_after - reads == 3);
    CHECK(scripts_after - scripts == 3);
  });
}

TEST_CASE("a backlog is claimed one round trip per claim, each job as a read would give it",
          "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    for (int i = 0; i < 5; ++i) {
      JobSpec s = job("b" + std::to_string(i));
      s.cmd = {"echo", std::to_string(i)};
      s.env = {{"N", std::to_string(i)}};
      co_await q.enqueue(std::move(s));
    }
    const long reads = co_await command_calls(q, "xreadgroup");
    const long scripts = co_await command_calls(q, "evalsha");
    for (int i = 0; i < 5; ++i) {
      auto got = co_await q.claim("r", 1, 0ms);
      REQUIRE(got.size() == 1);
      const JobRecord& rec = got[0].record;
      CHECK(rec.id == "b" + std::to_string(i));  // FIFO
      CHECK(rec.state == JobState::running);
      CHECK(rec.attempts == 1);
      CHECK(rec.router_id == "r");
      CHECK(rec.created_at > 0);
      CHECK(rec.spec.queue == "default");
      CHECK(rec.spec.cmd == std::vector<std::string>{"echo", std::to_string(i)});
      CHECK(rec.spec.env.at("N") == std::to_string(i));
      CHECK(got[0].lease.attempt == 1);
      auto done = result(JobState::succeeded, 0, "");
      auto finished = co_await q.finish(got[0].lease, std::move(done));
      CHECK(finished.state == JobState::succeeded);
    }
    // The first claim read and then claimed (two round trips) and saw more
    // waiting; the next four each read and claimed in one script, the last
    // of them saw the stream empty: the claim after it reads (and waits).
    CHECK(q.one_trip_claims() == 4);
    CHECK(co_await command_calls(q, "xreadgroup") - reads == 5);
    CHECK(co_await command_calls(q, "evalsha") - scripts >= 5);
    auto none = co_await q.claim("r", 1, 0ms);
    CHECK(none.empty());
    CHECK(q.one_trip_claims() == 4);
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::succeeded] == 5);
    CHECK(counts.by_state[JobState::running] == 0);
    auto len = co_await q.client()->command(make_args("XLEN", q.stream_key("default")));
    CHECK(len.as_integer() == 0);  // every entry acked and deleted
  });
}

TEST_CASE("a one-trip claim leaves other entries to validation: raw, cancelled, parked",
          "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    co_await q.enqueue(job("first"));
    co_await q.enqueue(contract::spec("holder", "k"));
    co_await q.enqueue(job("cancelled"));
    co_await q.client()->command(make_args("XADD", q.stream_key("default"), "*", "job",
                                           R"({"id": "raw", "cmd": ["true"]})"));
    co_await q.client()->command(make_args("XADD", q.stream_key("default"), "*", "job", "{nope"));
    co_await q.enqueue(contract::spec("waiter", "k"));
    co_await q.enqueue(job("last"));
    co_await q.cancel("cancelled");
    auto first = co_await q.claim("r", 1, 0ms);  // a read, then the claim script
    REQUIRE(first.size() == 1);
    CHECK(first[0].record.id == "first");
    std::vector<ClaimedJob> rest;
    for (int i = 0; i < 6 && rest.size() < 4; ++i) {
      auto got = co_await q.claim("r", 4 - rest.size(), 0ms);
      for (auto& j : got) rest.push_back(std::move(j));
    }
    CHECK(q.one_trip_claims() >= 1);
    std::vector<std::string> ids;
    for (const auto& j : rest) ids.push_back(j.record.id);
    // The holder takes the key, the waiter parks behind it, the cancelled
    // job is skipped, the raw entry is adopted, the malformed one rejected.
    CHECK(ids == std::vector<std::string>{"holder", "raw", "last"});
    auto bad = co_await q.list(JobState::failed, 10);
    REQUIRE(bad.size() == 1);
    CHECK(bad[0].error.find("not valid JSON") != std::string::npos);
    auto cancelled = co_await q.get("cancelled");
    CHECK(cancelled->state == JobState::cancelled);
    auto parked = co_await q.get("waiter");
    CHECK(parked->state == JobState::queued);
    CHECK(parked->waiting_for_key == "k");
    // The holder leaves: the waiter comes back and is claimed.
    for (const auto& j : rest) {
      if (j.record.id != "holder") continue;
      auto done = result(JobState::succeeded, 0, "");
      co_await q.finish(j.lease, std::move(done));
    }
    auto woken = co_await claim_n(q, "r", 1);
    REQUIRE(woken.size() == 1);
    CHECK(woken[0].record.id == "waiter");
    CHECK(woken[0].record.spec.concurrency_key == "k");
  });
}

TEST_CASE("a queued job beyond the claiming router's limits fails, and the next one runs",
          "[queue]") {
  // Enqueued under the default ceilings, claimed by a router whose ceilings
  // are lower (lowered while jobs waited, or another router of the fleet).
  // Met by a claim's read, it is validated in C++ (the claim script's 'bad'
  // path); met by a one-trip claim, its spec comes back from its record and
  // is checked after. Either way that job fails: it never waits on.
  bool one_trip = false;
  SECTION("met by a claim's read") {
    one_trip = false;
  }
  SECTION("met by a one-trip claim") {
    one_trip = true;
  }
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue producer(co_await net::this_coro::executor,
                        options_for(testing::redis_url(), prefix));
    RedisQueue q(co_await net::this_coro::executor, strict_options(prefix));
    if (one_trip) co_await producer.enqueue(job("first"));
    co_await producer.enqueue(over_strict_limits("big"));
    co_await producer.enqueue(job("next"));
    if (one_trip) {
      auto first = co_await q.claim("r", 1, 0ms);  // a read: it sees more waiting
      REQUIRE(first.size() == 1);
      CHECK(first[0].record.id == "first");
    }
    auto got = co_await claim_n(q, "r", 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].record.id == "next");
    // One-trip claims: "next" (after the read that met "big"); on the other
    // path also the one that met "big".
    CHECK(q.one_trip_claims() == (one_trip ? 2u : 1u));
    auto rec = co_await q.get("big");
    CHECK(rec->state == JobState::failed);
    CHECK(rec->error.find("invalid job") != std::string::npos);
    CHECK(rec->error.find("memory_mb") != std::string::npos);
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::queued] == 0);
    CHECK(counts.by_state[JobState::failed] == 1);  // that job, no raw-... copy
    CHECK(counts.by_state[JobState::running] == (one_trip ? 2 : 1));
    auto events = co_await q.read_events("", 20);
    bool failed_event = false;
    for (const auto& e : events) {
      if (e.body["type"] == "job.failed" && e.body["job"] == "big") failed_event = true;
    }
    CHECK(failed_event);
  });
}

TEST_CASE("a woken waiter the claiming router refuses fails and frees its key", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    // A lenient router holds key k and parks the waiter; the holder ends, the
    // waiter is woken with the key reserved for it, and a router with lower
    // ceilings reads it: it fails, and the reservation goes with it.
    RedisQueue lenient(co_await net::this_coro::executor,
                       options_for(testing::redis_url(), prefix));
    RedisQueue strict(co_await net::this_coro::executor, strict_options(prefix));
    co_await lenient.enqueue(contract::spec("holder", "k"));
    co_await lenient.enqueue(over_strict_limits("waiter", "k"));
    auto held = co_await claim_n(lenient, "lenient", 2, 1s);
    REQUIRE(held.size() == 1);
    CHECK(held[0].record.id == "holder");
    auto done = result(JobState::succeeded, 0, "");
    co_await lenient.finish(held[0].lease, std::move(done));
    const std::string key = prefix + "ckey:k";
    auto reserved = co_await lenient.client()->command(make_args("ZCARD", key));
    CHECK(reserved.as_integer() == 1);  // the woken waiter's reservation
    auto none = co_await claim_n(strict, "strict", 1, 1s);
    CHECK(none.empty());
    auto rec = co_await strict.get("waiter");
    CHECK(rec->state == JobState::failed);
    CHECK(rec->error.find("memory_mb") != std::string::npos);
    auto left = co_await lenient.client()->command(make_args("ZCARD", key));
    CHECK(left.as_integer() == 0);
  });
}

TEST_CASE("a one-trip claim whose consumer group vanished recreates it and goes on", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    for (const char* id : {"a", "b", "c"}) co_await q.enqueue(job(id));
    auto a = co_await q.claim("r", 1, 0ms);  // a read: it sees more waiting
    REQUIRE(a.size() == 1);
    CHECK(a[0].record.id == "a");
    // As after a restart of a Redis without persistence: the group is gone,
    // so the next claim's script fails with NOGROUP.
    co_await q.client()->command(
        make_args("XGROUP", "DESTROY", q.stream_key("default"), q.options().group));
    auto b = co_await claim_n(q, "r", 1);
    REQUIRE(b.size() == 1);
    CHECK(b[0].record.id == "b");  // "a", read again, is running: skipped
    auto c = co_await claim_n(q, "r", 1);
    REQUIRE(c.size() == 1);
    CHECK(c[0].record.id == "c");
    auto rec = co_await q.get("a");
    CHECK(rec->state == JobState::running);
  });
}

TEST_CASE("a one-trip claim that loses Redis before its follow-up keeps what it claimed",
          "[queue]") {
  // The one-trip claim claims "b" and "c" and hands back the raw entry
  // between them unchecked; the connection dies before that entry's own
  // claim script. The claim returns "b" and "c" (their leases work), and the
  // raw entry, left pending for this consumer, is reclaimed once its lease
  // runs out: nothing is lost.
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.lease_timeout = 500ms;
    RedisQueue q(co_await net::this_coro::executor, o);
    co_await q.enqueue(job("a"));
    co_await q.enqueue(job("b"));
    // Another producer's entry that names its attempt: the claim's observer
    // sees it just before the claim script that would adopt it.
    co_await q.client()->command(make_args("XADD", q.stream_key("default"), "*", "job",
                                           R"({"id": "raw", "cmd": ["true"]})", "attempt", "1"));
    co_await q.enqueue(job("c"));
    auto a = co_await q.claim("r", 1, 0ms);  // a read: it sees more waiting
    REQUIRE(a.size() == 1);
    CHECK(a[0].record.id == "a");
    redis::Reply client_id = co_await q.client()->command(make_args("CLIENT", "ID"));
    int cuts = 0;
    EntryObserver cut = [&](const EntrySeen& e) {
      if (e.job_id != "raw" || cuts++ > 0) return;
      const std::vector<std::string> kill{"CLIENT", "KILL", "ID",
                                          std::to_string(client_id.as_integer())};
      REQUIRE(RedisServerProcess::sync_command(redis::Url::parse(testing::redis_url()).port, kill,
                                               [](const redisReply&) {}));
    };
    auto got = co_await q.claim("r", 3, 0ms, cut);
    CHECK(cuts == 1);
    CHECK(q.one_trip_claims() == 1);
    std::vector<std::string> ids;
    for (const auto& j : got) ids.push_back(j.record.id);
    CHECK(ids == std::vector<std::string>{"b", "c"});
    got.push_back(std::move(a[0]));
    for (const auto& j : got) {
      auto done = result(JobState::succeeded, 0, "");
      auto finished = co_await q.finish(j.lease, std::move(done));  // reconnects
      CHECK(finished.state == JobState::succeeded);
    }
    auto raw = co_await q.get("raw");
    CHECK_FALSE(raw);  // never adopted: its claim script did not run
    redis::Reply pending = co_await q.client()->command(
        make_args("XPENDING", q.stream_key("default"), q.options().group));
    CHECK(pending.as_array().at(0).as_integer() == 1);
    std::vector<ClaimedJob> back;
    for (auto until = Clock::now() + 5s; back.empty() && Clock::now() < until;) {
      back = co_await q.reclaim_expired("rescuer", 10);
      if (back.empty()) co_await sleep_for(100ms);
    }
    REQUIRE(back.size() == 1);
    CHECK(back[0].record.id == "raw");
    auto done = result(JobState::succeeded, 0, "");
    auto finished = co_await q.finish(back[0].lease, std::move(done));
    CHECK(finished.state == JobState::succeeded);
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::succeeded] == 4);
    auto len = co_await q.client()->command(make_args("XLEN", q.stream_key("default")));
    CHECK(len.as_integer() == 0);
  });
}

TEST_CASE("a heartbeat and a fleet read are one script each and expired routers are forgotten",
          "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    RouterRecord gone = contract::router_record("r-gone", 0);
    co_await q.heartbeat(std::move(gone), 100ms);
    auto listed = co_await q.routers();  // both scripts are loaded now: EVALSHA from here
    const long calls = co_await command_calls(q, "evalsha");
    RouterRecord mine = contract::router_record("r-mine", 1);
    mine.lease_ms = 30'000;
    co_await q.heartbeat(std::move(mine), 10s);
    listed = co_await q.routers();
    const long calls_after = co_await command_calls(q, "evalsha");
    CHECK(calls_after - calls == 2);
    REQUIRE(listed.size() == 2);
    CHECK(listed[0].id == "r-gone");
    // The host of a live router is live for its lease (snapshot affinity).
    auto live_args = make_args("PTTL", q.host_live_key("host-r-mine"));
    redis::Reply live = co_await q.client()->command(std::move(live_args));
    CHECK(live.as_integer() > 20'000);

    co_await sleep_for(200ms);
    listed = co_await q.routers();
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == "r-mine");
    auto members_args = make_args("SMEMBERS", q.routers_key());
    redis::Reply members = co_await q.client()->command(std::move(members_args));
    REQUIRE(members.as_array().size() == 1);
    CHECK(members.as_array()[0].as_string() == "r-mine");

    // A draining router's host is not live.
    RouterRecord draining = contract::router_record("r-mine", 1);
    draining.draining = true;
    co_await q.heartbeat(std::move(draining), 10s);
    auto exists_args = make_args("EXISTS", q.host_live_key("host-r-mine"));
    redis::Reply exists = co_await q.client()->command(std::move(exists_args));
    CHECK(exists.as_integer() == 0);
  });
}

TEST_CASE("a failed attempt is retried after the backoff and fails when attempts are spent",
          "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.retry_backoff.initial = 600ms;
    o.retry_backoff.jitter = 0;
    RedisQueue q(co_await net::this_coro::executor, o);
    co_await q.enqueue(job("flaky", 2));
    auto first = co_await claim_n(q, "r", 1);
    REQUIRE(first.size() == 1);
    auto scheduled = co_await q.fail_attempt(first[0].lease, "exit 1", true);
    auto failed_at = Clock::now();
    CHECK(scheduled.state == JobState::scheduled);
    CHECK(scheduled.error == "exit 1");
    REQUIRE(scheduled.due_at.has_value());
    // Not before the delay...
    {
      auto r_ = co_await q.claim("r", 1, 0ms);
      CHECK(r_.empty());
    }
    // ...but right after it (claim's block is cut to the due time).
    auto second = co_await q.claim("r", 1, 5s);
    auto waited = Clock::now() - failed_at;
    REQUIRE(second.size() == 1);
    CHECK(waited >= 590ms);
    CHECK(waited < 2s);
    CHECK(second[0].record.attempts == 2);
    CHECK(second[0].lease.attempt == 2);

    auto final_record = co_await q.fail_attempt(second[0].lease, "exit 1", true);
    CHECK(final_record.state == JobState::failed);
    CHECK(final_record.error == "exit 1 (attempts exhausted: 2/2)");
    CHECK(final_record.finished_at.has_value());
    auto dead = co_await q.dead_letters(10);
    REQUIRE(dead.size() == 1);
    CHECK(dead[0].id == "flaky");

    bool saw_retry = false;
    for (auto& e : co_await q.read_events("", 100)) {
      if (e.body["type"] == "job.retry_scheduled") {
        saw_retry = true;
        CHECK(e.body["attempt"] == 1);
        CHECK(e.body["delay_s"].get<double>() == Approx(0.6));
      }
    }
    CHECK(saw_retry);
    // Not retryable: terminal at once even with attempts left.
    co_await q.enqueue(job("fatal", 5));
    auto f = co_await claim_n(q, "r", 1);
    REQUIRE(f.size() == 1);
    auto rec = co_await q.fail_attempt(f[0].lease, "invalid image", false);
    CHECK(rec.state == JobState::failed);
    CHECK(rec.error == "invalid image");
  });
}

TEST_CASE("cancel of a queued or scheduled job: it never dispatches", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(testing::redis_url(), prefix);
    o.retry_backoff.initial = 100ms;
    RedisQueue q(co_await net::this_coro::executor, o);
    co_await q.enqueue(job("c1"));
    auto r = co_await q.cancel("c1");
    CHECK(r.outcome == CancelOutcome::cancelled);
    CHECK(r.previous_state == JobState::queued);
    {
      auto r_ = co_await q.claim("r", 10, 300ms);
      CHECK(r_.empty());
    }
    auto rec = co_await q.get("c1");
    CHECK(rec->state == JobState::cancelled);
    {
      auto r_ = co_await q.cancel("c1");
      CHECK(r_.outcome == CancelOutcome::already_finished);
    }
    {
      auto r_ = co_await q.cancel("nope");
      CHECK(r_.outcome == CancelOutcome::not_found);
    }

    co_await q.enqueue(job("c2", 3));
    auto c = co_await claim_n(q, "r", 1);
    REQUIRE(c.size() == 1);
    co_await q.fail_attempt(c[0].lease, "boom", true);
    {
      auto r_ = co_await q.cancel("c2");
      CHECK(r_.previous_state == JobState::scheduled);
    }
    // Past the 100 ms backoff: still nothing.
    {
      auto r_ = co_await q.claim("r", 10, 500ms);
      CHECK(r_.empty());
    }
    {
      auto r_ = co_await q.get("c2");
      CHECK(r_->state == JobState::cancelled);
    }
  });
}

TEST_CASE("cancel of a running job tells its router at once", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    RedisQueue q(ex, options_for(testing::redis_url(), prefix));
    std::vector<std::pair<std::string, std::string>> heard;
    net::steady_timer heard_signal(ex, Clock::time_point::max());
    auto sub = q.subscribe_cancellations([&](const std::string& job_id, const std::string& router) {
      heard.emplace_back(job_id, router);
      heard_signal.cancel();
    });
    {
      auto r_ = co_await sub->wait_ready(5s);
      REQUIRE(r_);
    }
    co_await q.enqueue(job("busy"));
    auto c = co_await claim_n(q, "router-x", 1);
    REQUIRE(c.size() == 1);
    auto arg5 = run_info("img", false, false, "c-9", "router-x");
    co_await q.mark_running(c[0].lease, std::move(arg5));
    auto r = co_await q.cancel("busy");
    CHECK(r.outcome == CancelOutcome::router_notified);
    heard_signal.expires_after(5s);
    co_await heard_signal.async_wait(net::as_tuple(use_awaitable));
    REQUIRE(heard.size() == 1);
    CHECK(heard[0] == std::pair<std::string, std::string>{"busy", "router-x"});
    {
      auto r_ = co_await q.get("busy");
      CHECK(r_->state == JobState::cancelled);
    }
    // The router stops the container and reports; the state stays cancelled.
    auto arg6 = result(JobState::cancelled, 137, "stopped");
    auto done = co_await q.finish(c[0].lease, std::move(arg6));
    CHECK(done.state == JobState::cancelled);
    auto pending =
        co_await q.client()->command(make_args("XPENDING", q.stream_key("default"), "routers"));
    CHECK(pending.as_array().at(0).as_integer() == 0);
  });
}

TEST_CASE("1000 malformed raw entries end failed and the consumer keeps going", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    const std::vector<std::string> bad = {
        "{not json",
        R"({"cmd": []})",
        R"({"cmd": ["sh"], "privileged": true})",
        R"({"cmd": ["sh"], "binds": ["/:/h"]})",
        R"({"cmd": ["sh"], "network_mode": "host"})",
        R"({"id": "x y", "cmd": ["sh"]})",
        R"([1, 2])",
        R"({"cmd": ["sh"], "max_attempts": 0})",
        std::string("\xff\xfe", 2),
    };
    std::vector<std::string> reasons_expected;
    for (int i = 0; i < 1000; ++i) {
      if (i % 10 == 9) {
        co_await q.client()->command(make_args("XADD", q.stream_key("default"), "*", "other", "x"));
      } else {
        co_await q.client()->command(
            make_args("XADD", q.stream_key("default"), "*", "job", bad[i % bad.size()]));
      }
    }
    co_await q.enqueue(job("valid-after"));
    std::vector<ClaimedJob> got;
    auto until = Clock::now() + 30s;
    while (got.empty() && Clock::now() < until) got = co_await q.claim("r", 100, 100ms);
    REQUIRE(got.size() == 1);
    CHECK(got[0].record.id == "valid-after");
    auto failed = co_await q.list(JobState::failed, 2000);
    CHECK(failed.size() == 1000);
    std::size_t with_reason = 0;
    for (auto& f : failed) with_reason += !f.error.empty();
    CHECK(with_reason == 1000);
    bool saw_privileged = false;
    for (auto& f : failed) {
      saw_privileged =
          saw_privileged || f.error == "invalid job: privileged containers are not allowed";
    }
    CHECK(saw_privileged);
    auto arg7 = result(JobState::succeeded, 0, "");
    co_await q.finish(got[0].lease, std::move(arg7));
    auto len = co_await q.client()->command(make_args("XLEN", q.stream_key("default")));
    CHECK(len.as_integer() == 0);
    auto pending =
        co_await q.client()->command(make_args("XPENDING", q.stream_key("default"), "routers"));
    CHECK(pending.as_array().at(0).as_integer() == 0);
  });
}

TEST_CASE("a poison entry of 800 KB nested arrays becomes one failed record (issue 12)",
          "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    // Room for the whole body, so it is the depth that stops it, not the size.
    RedisQueueOptions options = options_for(testing::redis_url(), prefix);
    options.validation.max_payload_bytes = 1 << 20;
    RedisQueue q(co_await net::this_coro::executor, options);
    const std::string nested = std::string(400 * 1024, '[') + std::string(400 * 1024, ']');
    const std::string poison = R"({"id": "poison-1", "cmd": ["true"], "x": )" + nested + "}";
    co_await q.client()->command(make_args("XADD", q.stream_key("default"), "*", "job", poison));
    co_await q.enqueue(job("valid-after"));

    auto got = co_await claim_n(q, "r", 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].record.id == "valid-after");
    auto failed = co_await q.list(JobState::failed, 10);
    REQUIRE(failed.size() == 1);
    CHECK(failed[0].id.rfind("raw-default-", 0) == 0);
    CHECK(failed[0].error == "job is nested deeper than 64 levels");

    // Acked at once: not pending (nothing to reclaim), no second record.
    auto again = co_await q.claim("r2", 10, 100ms);
    CHECK(again.empty());
    auto failed_after = co_await q.list(JobState::failed, 10);
    CHECK(failed_after.size() == 1);
    auto pending =
        co_await q.client()->command(make_args("XPENDING", q.stream_key("default"), "routers"));
    CHECK(pending.as_array().at(0).as_integer() == 1);  // only valid-after, still held

    // The queue keeps working.
    auto done = result(JobState::succeeded, 0, "");
    co_await q.finish(got[0].lease, std::move(done));
    co_await q.enqueue(job("valid-later"));
    auto later = co_await claim_n(q, "r", 1);
    REQUIRE(later.size() == 1);
    CHECK(later[0].record.id == "valid-later");
  });
}

TEST_CASE("a valid raw entry without an id is adopted and runs", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(testing::redis_url(), prefix));
    co_await q.client()->command(
        make_args("XADD", q.stream_key("default"), "*", "job", R"({"cmd": ["echo", "hi"]})"));
    auto got = co_await claim_n(q, "r", 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].record.spec.cmd == std::vector<std::string>{"echo", "hi"});
    CHECK(got[0].record.id.rfind("s-default-", 0) == 0);
    // Adopted straight into its claimed state: the state index holds it once.
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::queued] == 0);
    CHECK(counts.by_state[JobState::running] == 1);
    auto arg8 = result(JobState::succeeded, 0, "");
    co_await q.finish(got[0].lease, std::move(arg8));
    auto after = co_await q.counts();
    CHECK(after.by_state[JobState::running] == 0);
    CHECK(after.by_state[JobState::succeeded] == 1);
  });
}

TEST_CASE("concurrent finishes are group-committed and each gets its own record", "[queue]") {
  const std::string prefix = unique_prefix();
  KeyCleanup cleanup{testing::redis_url(), prefix};
  constexpr int kJobs = 60;
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    RedisQueue q(ex, options_for(testing::redis_url(), prefix));
    for (int i = 0; i < kJobs; ++i) co_await q.enqueue(job("c" + std::to_string(i)));
    auto claimed = co_await claim_n(q, "r", kJobs);
    REQUIRE(claimed.size() == kJobs);
    for (const auto& c : claimed) {
      CHECK(c.record.state == JobState::running);
      CHECK(c.record.attempts == 1);
      CHECK(c.record.spec.cmd == std::vector<std::string>{"true"});
    }
    // Every finish at once: odd jobs fail with their index as exit code.
    std::vector<FinishOutcome> done(kJobs);
    int left = kJobs;
    net::steady_timer all_done(ex, Clock::time_point::max());
    for (int i = 0; i < kJobs; ++i) {
      net::co_spawn(
          ex,
          [&, i]() -> awaitable<void> {
            // No ?: with class-type operands in a coroutine (g++ 12).
            std::string error;
            if (i % 2 == 1) error = "exit " + std::to_string(i);
            auto r = result(i % 2 == 0 ? JobState::succeeded : JobState::failed, i, error);
            done[static_cast<std::size_t>(i)] =
                co_await q.finish(claimed[static_cast<std::size_t>(i)].lease, std::move(r));
          },
          [&](std::exception_ptr e) {
            if (e) FAIL_CHECK("finish threw");
            if (--left == 0) all_done.cancel();
          });
    }
    co_await all_done.async_wait(net::as_tuple(use_awaitable));
    // Fewer scripts than calls: the calls that came during a batch shared the next.
    CHECK(q.finish_batcher().items() == kJobs);
    CHECK(q.finish_batcher().batches() < kJobs / 2);
    for (int i = 0; i < kJobs; ++i) {
      const FinishOutcome& r = done[static_cast<std::size_t>(i)];
      CHECK(r.job_id == claimed[static_cast<std::size_t>(i)].record.id);
      CHECK(r.state == (i % 2 == 0 ? JobState::succeeded : JobState::failed));
      CHECK(r.exit_code == i);
      CHECK(r.finished_at > 0);
    }
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::running] == 0);
    CHECK(counts.by_state[JobState::succeeded] == kJobs / 2);
    CHECK(counts.by_state[JobState::failed] == kJobs / 2);
    CHECK(counts.depth["default"] == 0);
    auto pending =
        co_await q.client()->command(make_args("XPENDING", q.stream_key("default"), "routers"));
    CHECK(pending.as_array().at(0).as_integer() == 0);
    auto ttl = co_await q.client()->command(make_args("PTTL", q.job_key("c7")));
    CHECK(ttl.as_integer() > 0);
    auto events = co_await q.read_events("", 1000);
    std::size_t finished_events = 0;
    for (const auto& e : events) {
      finished_events += e.body["type"] == "job.succeeded" || e.body["type"] == "job.failed";
    }
    CHECK(finished_events == kJobs);
    // A second finish of a finished job only releases the entry: not a new transition.
    auto again = result(JobState::succeeded, 0, "");
    auto second = co_await q.finish(claimed[1].lease, std::move(again));
    CHECK(second.state == JobState::failed);
  });
}

TEST_CASE("redis-server restarted with AOF - the queue reconnects and loses no job", "[queue]") {
  const std::string prefix = "test:q:aof:";
  RedisServerProcess server(testing::run_dir() + "/queue-aof-" + random_suffix(),
                            {"--appendonly", "yes", "--appendfsync", "always"});
  server.start();
  run_coro([&]() -> awaitable<void> {
    RedisQueue q(co_await net::this_coro::executor, options_for(server.url(), prefix));
    for (int i = 0; i < 50; ++i) co_await q.enqueue(job("aof-" + std::to_string(i)));
    auto first = co_await claim_n(q, "r", 10);
    REQUIRE(first.size() == 10);
    auto arg9 = result(JobState::succeeded, 0, "");
    for (auto& j : first) co_await q.finish(j.lease, std::move(arg9));
    // Claimed but unfinished when the server goes down: must survive too.
    auto held = co_await claim_n(q, "r", 5);
    REQUIRE(held.size() == 5);

    server.stop();
    bool down = false;
    try {
      co_await q.get("aof-0");
    } catch (const redis::ConnectionError&) {
      down = true;
    }
    CHECK(down);
    server.start();

    auto arg10 = result(JobState::succeeded, 0, "");
    for (auto& j : held) co_await q.finish(j.lease, std::move(arg10));
    auto rest = co_await claim_n(q, "r", 35, 10s);
    CHECK(rest.size() == 35);
    auto arg11 = result(JobState::succeeded, 0, "");
    for (auto& j : rest) co_await q.finish(j.lease, std::move(arg11));
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::succeeded] == 50);
    CHECK(counts.by_state[JobState::queued] == 0);
    CHECK(counts.by_state[JobState::running] == 0);
  });
  server.stop();
}

TEST_CASE("a queue command against a frozen server fails at its deadline", "[queue]") {
  RedisServerProcess server(testing::run_dir() + "/queue-frozen-" + random_suffix(), {});
  server.start();
  run_coro([&]() -> awaitable<void> {
    auto o = options_for(server.url(), "test:q:frozen:");
    o.redis.command_timeout = 400ms;
    RedisQueue q(co_await net::this_coro::executor, o);
    co_await q.enqueue(job("ice"));
    server.freeze();
    auto started = Clock::now();
    try {
      co_await q.get("ice");
      FAIL("get on a frozen server returned");
    } catch (const redis::ConnectionError& e) {
      CHECK(e.command() == "HGETALL");
      CHECK_THAT(e.what(), Catch::Contains("deadline of 400 ms exceeded"));
    }
    CHECK(Clock::now() - started < 2s);
    server.thaw();
    auto rec = co_await q.get("ice");
    CHECK(rec.has_value());
  });
  server.stop();
}

TEST_CASE("replicas_ack: enqueue and finish wait for a replica and fail without one",
          "[queue][sentinel]") {
  // A primary with a replica (and Sentinels, unused here), and a lone server.
  testing::SentinelGroup group(testing::run_dir() + "/queue-replicas-" + random_suffix(), "ws-q");
  RedisServerProcess lone(testing::run_dir() + "/queue-lone-" + random_suffix(), {});
  lone.start();
  run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto o = options_for(group.primary().url(), "test:q:replicas:");
    o.replicas_ack = 1;
    o.replicas_timeout = 2s;
    RedisQueue q(ex, o);
    // The replica may still be syncing: the first enqueue is retried as a
    // caller retries a transient error.
    bool acked = false;
    for (int i = 0; i < 20 && !acked; ++i) {
      auto enqueueing = q.enqueue(job("rep-1"));
      try {
        co_await std::move(enqueueing);
        acked = true;
      } catch (const redis::ReplyError& e) {
        CHECK(redis::is_transient(e));
      }
    }
    REQUIRE(acked);
    auto claimed = co_await claim_n(q, "r", 1);
    REQUIRE(claimed.size() == 1);
    auto done = result(JobState::succeeded, 0, "");
    auto out = co_await q.finish(claimed[0].lease, std::move(done));
    CHECK(out.state == JobState::succeeded);
    // The replica has the result.
    auto replica = redis::Client::create(ex, options_for(group.replica().url(), "").redis);
    auto state = co_await replica->command(make_args("HGET", q.job_key("rep-1"), "state"));
    CHECK(state.as_string() == "succeeded");

    auto lone_options = options_for(lone.url(), "test:q:replicas:");
    lone_options.replicas_ack = 1;
    lone_options.replicas_timeout = 200ms;
    RedisQueue alone(ex, lone_options);
    auto started = Clock::now();
    auto enqueueing = alone.enqueue(job("rep-2"));
    try {
      co_await std::move(enqueueing);
      FAIL("enqueue with replicas_ack = 1 and no replica returned");
    } catch (const redis::ReplyError& e) {
      CHECK(redis::is_transient(e));
      CHECK_THAT(e.what(), Catch::Contains("NOREPLICAS enqueue of rep-2 reached 0 of 1 replicas"));
    }
    CHECK(Clock::now() - started >= 200ms);
    replica->close();
  });
  lone.stop();
}

// The scenarios MemoryQueue passes in its unit tests (queue_contract_test.hpp),
// here against the real Redis: the double cannot drift from the adapter unnoticed.
TEST_CASE("RedisQueue keeps the queue contract", "[queue]") {
  for (const auto& [name, scenario] : contract::scenarios()) {
    DYNAMIC_SECTION(name) {
      const std::string prefix = unique_prefix();
      KeyCleanup cleanup{testing::redis_url(), prefix};
      run_coro([&]() -> awaitable<void> {
        auto o = options_for(testing::redis_url(), prefix);
        contract::apply_contract_knobs(o);
        // The contract's "at once" (a lost host's job, a due retry): promote
        // before every claim, like MemoryQueue. The default's up-to-1 s lag
        // has its own test.
        o.promote_every = 0ms;
        RedisQueue q(co_await net::this_coro::executor, o);
        // Real time: leases and key holds expire by the clock of the scripts.
        contract::Harness h{q, [](Duration d) { return sleep_for(d); }};
        co_await scenario(h);
      });
    }
  }
}
