// Unit tests of MemoryQueue: the shared contract (queue_contract_test.hpp,
// also run against RedisQueue), then what only the double has: its clock,
// fault injection, lost cancel messages, blocking claims.
#include "queue/memory_queue.hpp"

#include "queue/prewarm.hpp"

#include "common/redis.hpp"
#include "queue/queue_contract_test.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::queue;
using namespace warmstart::queue::contract;
using warmstart::testing::run_coro;
using Op = MemoryQueue::Op;

namespace {

MemoryQueueOptions contract_options(const ManualClock& clock) {
  MemoryQueueOptions o;
  apply_contract_knobs(o);
  o.now_ms = clock;
  return o;
}

// Runs `body(queue, clock)` on a fresh io_context with a MemoryQueue built
// from `options` (its now_ms is the returned clock).
template <typename Body>
void with_queue(Body body, MemoryQueueOptions options = contract_options(ManualClock())) {
  ManualClock clock;
  options.now_ms = clock;
  run_coro([&]() -> awaitable<void> {
    MemoryQueue q(co_await net::this_coro::executor, options);
    co_await body(q, clock);
  });
}

// Lets posted handlers (cancel messages) run.
awaitable<void> settle() {
  for (int i = 0; i < 3; ++i) co_await net::post(co_await net::this_coro::executor, use_awaitable);
}

template <typename E, typename T>
awaitable<bool> throws(awaitable<T> op) {
  try {
    co_await std::move(op);
  } catch (const E&) {
    co_return true;
  }
  co_return false;
}

}  // namespace

TEST_CASE("MemoryQueue keeps the queue contract", "[unit]") {
  for (const auto& [name, scenario] : scenarios()) {
    DYNAMIC_SECTION(name) {
      with_queue([&](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
        Harness h{q, [&](Duration d) -> awaitable<void> {
                    clock.advance(d);
                    co_return;
                  }};
        co_await scenario(h);
      });
    }
  }
}

TEST_CASE("a lost cancel message is still reported by renew_leases", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    std::vector<std::string> heard;
    auto sub = q.subscribe_cancellations([&](const std::string& job, const std::string& router) {
      heard.push_back(job + "@" + router);
    });
    auto ready = co_await sub->wait_ready(1s);
    CHECK(ready);
    co_await enqueue(q, "lost");
    co_await enqueue(q, "heard");
    auto c = co_await q.claim("r", 10, 0ms);
    REQUIRE(c.size() == 2);
    q.drop_cancel_messages(true);
    auto r = co_await q.cancel("lost");
    CHECK(r.outcome == CancelOutcome::router_notified);
    co_await settle();
    CHECK(heard.empty());
    std::vector<LeaseHandle> both = {c[0].lease, c[1].lease};
    auto report = co_await q.renew_leases("r", std::move(both));
    CHECK(report.cancelled == std::vector<std::string>{"lost"});
    q.drop_cancel_messages(false);
    co_await q.cancel("heard");
    co_await settle();
    CHECK(heard == std::vector<std::string>{"heard@r"});
    sub.reset();  // unsubscribed: nothing more arrives
    co_await enqueue(q, "late");
    auto late = co_await q.claim("r", 1, 0ms);
    REQUIRE(late.size() == 1);
    co_await q.cancel("late");
    co_await settle();
    CHECK(heard.size() == 1);
  });
}

TEST_CASE("an injected failure before the call leaves the queue unchanged", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    co_await enqueue(q, "j");
    auto c = co_await q.claim("r", 1, 0ms);
    REQUIRE(c.size() == 1);
    q.fail_next(Op::finish, MemoryQueue::connection_error(), 2);
    for (int i = 0; i < 2; ++i) {
      auto failed =
          co_await throws<redis::ConnectionError>(finish(q, c[0].lease, JobState::succeeded, 0));
      CHECK(failed);
    }
    CHECK(q.record("j")->state == JobState::running);
    auto done = co_await finish(q, c[0].lease, JobState::succeeded, 0);
    CHECK(done.state == JobState::succeeded);
    CHECK(q.calls(Op::finish) == 3);
    CHECK(q.calls(Op::claim) == 1);
  });
}

TEST_CASE("an injected lost reply: the call took effect and its retry finds it", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    co_await enqueue(q, "j");
    auto c = co_await q.claim("r", 1, 0ms);
    REQUIRE(c.size() == 1);
    q.fail_next(Op::finish, MemoryQueue::connection_error(), 1, MemoryQueue::FaultPoint::after);
    auto failed =
        co_await throws<redis::ConnectionError>(finish(q, c[0].lease, JobState::succeeded, 0));
    CHECK(failed);
    CHECK(q.record("j")->state == JobState::succeeded);
    // The retry of a finish that went through: the stored outcome, no second event.
    auto again = co_await finish(q, c[0].lease, JobState::succeeded, 0);
    CHECK(again.state == JobState::succeeded);
    CHECK(q.event_types("j") == std::vector<std::string>{"job.queued", "job.succeeded"});
  });
}

TEST_CASE("a LOADING reply is a transient Redis error", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    q.fail_next(Op::mark_running, MemoryQueue::loading_error());
    co_await enqueue(q, "j");
    auto c = co_await q.claim("r", 1, 0ms);
    REQUIRE(c.size() == 1);
    std::exception_ptr error;
    try {
      co_await mark_running(q, c[0].lease, "c-1", "r");
    } catch (...) {
      error = std::current_exception();
    }
    REQUIRE(error);
    CHECK(redis::is_transient(error));
    auto state = co_await mark_running(q, c[0].lease, "c-1", "r");
    CHECK(state == JobState::running);
    auto rec = co_await q.get(c[0].record.id);
    REQUIRE(rec);
    CHECK(rec->container_id == "c-1");
  });
}

TEST_CASE("while down every call throws ConnectionError: back up, nothing was lost", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    co_await enqueue(q, "j");
    q.set_down(true);
    bool claim_failed = co_await throws<redis::ConnectionError>(q.claim("r", 1, 0ms));
    CHECK(claim_failed);
    bool get_failed = co_await throws<redis::ConnectionError>(q.get("j"));
    CHECK(get_failed);
    bool counts_failed = co_await throws<redis::ConnectionError>(q.counts());
    CHECK(counts_failed);
    auto sub = q.subscribe_cancellations([](const std::string&, const std::string&) {});
    auto ready = co_await sub->wait_ready(1s);
    CHECK_FALSE(ready);
    q.set_down(false);
    auto c = co_await q.claim("r", 1, 0ms);
    CHECK(ids(c) == std::vector<std::string>{"j"});
    CHECK(q.calls(Op::claim) == 2);
  });
}

TEST_CASE("a blocked claim returns when a job is enqueued", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    std::vector<ClaimedJob> got;
    bool done = false;
    net::co_spawn(
        ex, [&]() -> awaitable<void> { got = co_await q.claim("r", 1, 60s); },
        [&](std::exception_ptr) { done = true; });
    co_await settle();
    CHECK_FALSE(done);
    co_await enqueue(q, "wake");
    while (!done) co_await net::post(ex, use_awaitable);
    CHECK(ids(got) == std::vector<std::string>{"wake"});
  });
}

TEST_CASE("a blocked claim fails when Redis goes down", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    bool failed = false, done = false;
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          failed = co_await throws<redis::ConnectionError>(q.claim("r", 1, 60s));
        },
        [&](std::exception_ptr) { done = true; });
    co_await settle();
    CHECK_FALSE(done);
    q.set_down(true);
    while (!done) co_await net::post(ex, use_awaitable);
    CHECK(failed);
  });
}

TEST_CASE("a blocked claim wakes for a retry that became due", "[unit]") {
  MemoryQueueOptions o;
  o.retry_backoff.initial = 30s;
  o.retry_backoff.jitter = 0;
  with_queue(
      [](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
        auto ex = co_await net::this_coro::executor;
        co_await enqueue(q, "retry", "", 2);
        auto c = co_await q.claim("r", 1, 0ms);
        auto rec = co_await q.fail_attempt(c[0].lease, "exit 1", true);
        CHECK(rec.due_at == clock.now() + 30'000);
        std::vector<ClaimedJob> got;
        bool done = false;
        net::co_spawn(
            ex, [&]() -> awaitable<void> { got = co_await q.claim("r", 1, 60s); },
            [&](std::exception_ptr) { done = true; });
        co_await settle();
        CHECK_FALSE(done);
        clock.advance(30s);
        q.wake_claimers();
        while (!done) co_await net::post(ex, use_awaitable);
        REQUIRE(ids(got) == std::vector<std::string>{"retry"});
        CHECK(got[0].record.attempts == 2);
      },
      o);
}

TEST_CASE("a blocked claim cut by a deadline claims nothing", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    auto blocked = with_deadline(q.claim("r", 1, 60s), 20ms, "claim");
    bool expired = co_await throws<DeadlineExceeded>(std::move(blocked));
    CHECK(expired);
    co_await enqueue(q, "j");
    auto c = co_await q.claim("other", 1, 0ms);
    CHECK(ids(c) == std::vector<std::string>{"j"});
  });
}

TEST_CASE("a job whose lease keeps expiring fails after max_reclaims", "[unit]") {
  MemoryQueueOptions o;
  apply_contract_knobs(o);
  o.max_reclaims = 2;
  with_queue(
      [](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
        co_await enqueue(q, "doomed", "k");
        co_await enqueue(q, "next", "k");
        auto c = co_await q.claim("r0", 10, 0ms);
        REQUIRE(ids(c) == std::vector<std::string>{"doomed"});
        for (int i = 1; i <= 2; ++i) {
          clock.advance(kContractLease * 2);
          auto taken = co_await q.reclaim_expired("r" + std::to_string(i), 10);
          REQUIRE(ids(taken) == std::vector<std::string>{"doomed"});
          // A reclaimed job keeps its key: the waiter stays parked.
          CHECK(q.held_keys("k") == std::vector<std::string>{"doomed"});
        }
        clock.advance(kContractLease * 2);
        auto last = co_await q.reclaim_expired("r3", 10);
        CHECK(last.empty());
        auto rec = q.record("doomed");
        CHECK(rec->state == JobState::failed);
        CHECK(rec->error == "lease expired 3 times: routers lost the job");
        // Its key went to the waiter.
        auto woken = co_await q.claim("r3", 10, 0ms);
        CHECK(ids(woken) == std::vector<std::string>{"next"});
      },
      o);
}

TEST_CASE("a renewed lease is not reclaimed: renewal also keeps the key", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
    co_await enqueue(q, "long", "k");
    co_await enqueue(q, "wait", "k");
    auto c = co_await q.claim("r", 10, 0ms);
    REQUIRE(ids(c) == std::vector<std::string>{"long"});
    for (int i = 0; i < 5; ++i) {
      clock.advance(kContractLease / 2);
      auto report = co_await renew(q, "r", c[0].lease);
      CHECK(report.lost.empty());
      auto stolen = co_await q.reclaim_expired("thief", 10);
      CHECK(stolen.empty());
      co_await q.promote_due();
      CHECK(q.record("wait")->waiting_for_key == "k");
    }
  });
}

TEST_CASE("hand_back of a job cancelled meanwhile only releases it", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    co_await enqueue(q, "a", "k");
    co_await enqueue(q, "b", "k");
    auto c = co_await q.claim("r", 10, 0ms);
    REQUIRE(ids(c) == std::vector<std::string>{"a"});
    co_await q.cancel("a");
    co_await q.hand_back(c[0].lease, "engine unreachable", 5s);
    CHECK(q.record("a")->state == JobState::cancelled);
    CHECK(q.event_types("a") == std::vector<std::string>{"job.queued", "job.cancelled"});
    auto next = co_await q.claim("r", 10, 0ms);
    CHECK(ids(next) == std::vector<std::string>{"b"});
  });
}

TEST_CASE("a hand_back is due after its delay on the queue's clock", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
    co_await enqueue(q, "h");
    auto c = co_await q.claim("r", 1, 0ms);
    co_await q.hand_back(c[0].lease, "engine unreachable", 10s);
    CHECK(q.record("h")->due_at == clock.now() + 10'000);
    auto early = co_await q.claim("r", 1, 0ms);
    CHECK(early.empty());
    auto counts = co_await q.counts();
    CHECK(counts.scheduled_due == 0);
    clock.advance(10s);
    auto due = co_await q.counts();
    CHECK(due.scheduled_due == 1);
    auto again = co_await q.claim("r", 1, 0ms);
    REQUIRE(ids(again) == std::vector<std::string>{"h"});
    CHECK(again[0].lease.attempt == 1);
    CHECK(q.event_types("h") == std::vector<std::string>{"job.queued", "job.deferred"});
  });
}

TEST_CASE("lease checks: LeaseLost, missing jobs and non-terminal results", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    co_await enqueue(q, "j");
    auto c = co_await q.claim("r", 1, 0ms);
    LeaseHandle forged = c[0].lease;
    forged.consumer = "someone-else";
    bool mark_lost = co_await throws<LeaseLost>(mark_running(q, forged, "c", "r"));
    CHECK(mark_lost);
    bool finish_lost = co_await throws<LeaseLost>(finish(q, forged, JobState::succeeded, 0));
    CHECK(finish_lost);
    bool hand_back_lost = co_await throws<LeaseLost>(q.hand_back(forged, "x", 0ms));
    CHECK(hand_back_lost);
    LeaseHandle missing = c[0].lease;
    missing.job_id = "nope";
    bool missing_job = co_await throws<QueueError>(q.fail_attempt(missing, "x", true));
    CHECK(missing_job);
    bool not_terminal =
        co_await throws<std::invalid_argument>(finish(q, c[0].lease, JobState::running));
    CHECK(not_terminal);
  });
}

TEST_CASE("raw stream entries: malformed ones end failed, valid ones are adopted", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    q.add_raw_entry("default", "{not json");
    q.add_raw_entry("default", std::nullopt);
    q.add_raw_entry("default", R"({"cmd": ["sh"], "privileged": true})");
    q.add_raw_entry("default", R"({"cmd": ["echo", "hi"]})");
    auto got = co_await q.claim("r", 10, 0ms);
    REQUIRE(got.size() == 1);
    CHECK(got[0].record.id.rfind("s-default-", 0) == 0);
    CHECK(got[0].record.spec.cmd == std::vector<std::string>{"echo", "hi"});
    auto failed = co_await q.list(JobState::failed, 10);
    std::set<std::string> reasons;
    for (const auto& f : failed) reasons.insert(f.error);
    CHECK(reasons == std::set<std::string>{"job is not valid JSON",
                                           "stream entry has no \"job\" field",
                                           "invalid job: privileged containers are not allowed"});
    auto counts = co_await q.counts();
    CHECK(counts.by_state[JobState::running] == 1);
    CHECK(counts.by_state[JobState::queued] == 0);
    CHECK(q.depth("default") == 1);  // the adopted job's entry, held
  });
}

TEST_CASE("events: ids resume a reader, append_event validates, the list is capped", "[unit]") {
  MemoryQueueOptions o;
  o.events_max = 3;
  with_queue(
      [](MemoryQueue& q, ManualClock&) -> awaitable<void> {
        bool not_object =
            co_await throws<std::invalid_argument>(q.append_event(nlohmann::json::array()));
        CHECK(not_object);
        std::vector<std::string> ids_;
        for (int i = 0; i < 4; ++i) {
          nlohmann::json ev = {{"type", "router.started"}, {"n", i}, {"id", "ignored"}};
          ids_.push_back(co_await q.append_event(std::move(ev)));
        }
        auto all = co_await q.read_events("", 100);
        REQUIRE(all.size() == 3);  // capped: the oldest went
        CHECK(all[0].body["n"] == 1);
        CHECK(all[0].body["id"] == ids_[1]);
        CHECK(all[0].body.contains("ts"));
        auto rest = co_await q.read_events(ids_[2], 100);
        REQUIRE(rest.size() == 1);
        CHECK(rest[0].id == ids_[3]);
      },
      o);
}

TEST_CASE("finished records vanish after the retention period", "[unit]") {
  MemoryQueueOptions o;
  o.retention = 1h;
  with_queue(
      [](MemoryQueue& q, ManualClock& clock) -> awaitable<void> {
        co_await enqueue(q, "old");
        co_await q.cancel("old");
        clock.advance(59min);
        auto kept = co_await q.get("old");
        CHECK(kept.has_value());
        clock.advance(1min);
        auto gone = co_await q.get("old");
        CHECK_FALSE(gone.has_value());
        auto counts = co_await q.counts();
        CHECK(counts.by_state[JobState::cancelled] == 0);
      },
      o);
}

TEST_CASE("set_log_tail keeps the last bytes without splitting a character", "[unit]") {
  MemoryQueueOptions o;
  o.log_tail_max_bytes = 2;
  with_queue(
      [](MemoryQueue& q, ManualClock&) -> awaitable<void> {
        co_await enqueue(q, "j");
        co_await q.set_log_tail("j", "abc\xc3\xa9z");  // "abcéz": the cut would split é
        CHECK(q.record("j")->log_tail == "z");
        co_await q.set_log_tail("nope", "ignored");
        CHECK_FALSE(q.record("nope").has_value());
      },
      o);
}

TEST_CASE("held_by lists the jobs a consumer holds, cancelled ones included", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    const std::vector<std::string> jobs = {"a", "b", "c"};
    for (const auto& id : jobs) co_await enqueue(q, id);
    auto c = co_await q.claim("r", 10, 0ms);
    REQUIRE(c.size() == 3);
    co_await finish(q, by_id(c, "a").lease, JobState::succeeded, 0);
    co_await q.cancel("b");
    auto held = co_await q.held_by("r");
    CHECK(ids(held) == std::vector<std::string>{"b", "c"});
    auto none = co_await q.held_by("other");
    CHECK(none.empty());
  });
}

TEST_CASE("claim reads every configured queue", "[unit]") {
  MemoryQueueOptions o;
  o.queues = {"fast", "slow"};
  with_queue(
      [](MemoryQueue& q, ManualClock&) -> awaitable<void> {
        JobSpec f = spec("f");
        f.queue = "fast";
        JobSpec s = spec("s");
        s.queue = "slow";
        co_await q.enqueue(std::move(f));
        co_await q.enqueue(std::move(s));
        auto c = co_await q.claim("r", 1, 0ms);
        CHECK(ids(c) == std::vector<std::string>{"f", "s"});  // COUNT applies per stream
        CHECK(by_id(c, "s").lease.queue == "slow");
      },
      o);
}

TEST_CASE("a prewarm of a key being built is coalesced into the build", "[unit]") {
  with_queue([](MemoryQueue& q, ManualClock&) -> awaitable<void> {
    JobSpec pw = spec("pw-1");
    pw.snapshot = SnapshotSpec{"repo", true, true};
    PrewarmResult first = co_await submit_prewarm(q, pw);
    CHECK(first.job_id == "pw-1");
    CHECK(first.created);
    CHECK_FALSE(first.coalesced);
    auto stored = co_await q.get("pw-1");
    REQUIRE(stored);
    CHECK(stored->spec.snapshot->prewarm);
    CHECK(stored->spec.snapshot->commit);
    auto claimed = co_await q.claim("r", 10, 0ms);
    REQUIRE(claimed.size() == 1);
    std::string took = co_await q.begin_build("repo", "pw-1", true);
    CHECK(took == "pw-1");
    JobSpec again = spec("pw-2");
    again.snapshot = SnapshotSpec{"repo", true, false};
    PrewarmResult second = co_await submit_prewarm(q, again);
    CHECK(second.job_id == "pw-1");
    CHECK(second.coalesced);
    CHECK_FALSE(second.created);
    auto missing = co_await q.get("pw-2");
    CHECK_FALSE(missing.has_value());
  });
}
