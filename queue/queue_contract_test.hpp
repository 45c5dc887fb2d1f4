// The behaviours of queue::Queue the router relies on, written once and run
// against both adapters: MemoryQueue (memory_queue_test.cpp, [unit], with a
// ManualClock) and RedisQueue (redis_queue_contract_test.cpp, against the real
// Redis, where time really passes). A difference between the double and the
// real adapter fails one of them.
//
// The queue under test must be built with apply_contract_knobs().
#pragma once
#include "queue/queue.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace warmstart::queue::contract {

inline constexpr Duration kContractLease = 500ms;
inline constexpr Duration kContractAffinityWait = 800ms;

// The knobs every queue under contract test has (RedisQueueOptions and
// MemoryQueueOptions name them alike).
template <typename Options>
void apply_contract_knobs(Options& o) {
  o.lease_timeout = kContractLease;
  o.affinity_wait = kContractAffinityWait;
  o.concurrency_key_limit = 1;
  o.retry_backoff.initial = 0ms;  // a retry is due at once: no waiting for backoff
  o.retry_backoff.jitter = 0;
}

struct Harness {
  Queue& queue;
  // Lets `d` pass for leases and due times (sleeps, or moves a ManualClock).
  std::function<awaitable<void>(Duration)> pass_time;
};

using Scenario = std::function<awaitable<void>(Harness&)>;

// Built by functions, not braces: g++ 12 destroys a braced aggregate
// temporary twice when it appears in a co_await expression.
inline JobSpec spec(const std::string& id, const std::string& key = "", int max_attempts = 1) {
  JobSpec s;
  s.id = id;
  s.cmd = {"true"};
  s.concurrency_key = key;
  s.max_attempts = max_attempts;
  return s;
}
inline JobResult result(JobState state, std::optional<int> exit_code = std::nullopt,
                        std::string error = "") {
  JobResult r;
  r.state = state;
  r.exit_code = exit_code;
  r.error = std::move(error);
  return r;
}
inline RunInfo run_info(const std::string& container, const std::string& router) {
  RunInfo info;
  info.image = "worker:1";
  info.container_id = container;
  info.router_id = router;
  return info;
}
// The calls with their arguments built inside (see above).
inline awaitable<EnqueueResult> enqueue(Queue& q, std::string id, std::string key = "",
                                        int max_attempts = 1) {
  JobSpec s = spec(id, key, max_attempts);
  co_return co_await q.enqueue(std::move(s));
}
inline awaitable<JobState> mark_running(Queue& q, LeaseHandle lease, std::string container,
                                        std::string router) {
  RunInfo info = run_info(container, router);
  co_return co_await q.mark_running(lease, std::move(info));
}
inline awaitable<FinishOutcome> finish(Queue& q, LeaseHandle lease, JobState state,
                                       std::optional<int> exit_code = std::nullopt,
                                       std::string error = "") {
  JobResult r = result(state, exit_code, std::move(error));
  co_return co_await q.finish(lease, std::move(r));
}
inline awaitable<LeaseReport> renew(Queue& q, std::string consumer, LeaseHandle lease) {
  std::vector<LeaseHandle> held(1, lease);
  co_return co_await q.renew_leases(std::move(consumer), std::move(held));
}

inline std::vector<std::string> ids(const std::vector<ClaimedJob>& jobs) {
  std::vector<std::string> out;
  for (const auto& j : jobs) out.push_back(j.record.id);
  std::sort(out.begin(), out.end());
  return out;
}

inline const ClaimedJob& by_id(const std::vector<ClaimedJob>& jobs, const std::string& id) {
  for (const auto& j : jobs) {
    if (j.record.id == id) return j;
  }
  FAIL("job " << id << " was not claimed");
  throw std::logic_error("unreachable");
}

inline awaitable<std::vector<std::string>> event_types(Queue& q, std::string job) {
  std::vector<std::string> out;
  for (const auto& e : co_await q.read_events("", 1000)) {
    if (e.body.value("job", "") == job) out.push_back(e.body.value("type", ""));
  }
  co_return out;
}

inline awaitable<void> enqueue_is_idempotent_by_id_and_spec(Harness& h) {
  Queue& q = h.queue;
  auto first = co_await enqueue(q, "same");
  CHECK(first.created);
  CHECK(first.record.state == JobState::queued);
  auto again = co_await enqueue(q, "same");
  CHECK_FALSE(again.created);
  CHECK(again.record.id == "same");
  JobSpec other = spec("same");
  other.cmd = {"false"};
  bool conflict = false;
  try {
    co_await q.enqueue(other);
  } catch (const IdConflict& e) {
    conflict = true;
    CHECK(e.job_id() == "same");
    CHECK(e.existing_fingerprint() == spec("same").fingerprint());
    CHECK(e.requested_fingerprint() == other.fingerprint());
  }
  CHECK(conflict);
  auto counts = co_await q.counts();
  CHECK(counts.by_state[JobState::queued] == 1);
  CHECK(counts.depth["default"] == 1);
  JobSpec bad = spec("bad");
  bad.cmd.clear();
  bool invalid = false;
  try {
    co_await q.enqueue(bad);
  } catch (const InvalidJob&) {
    invalid = true;
  }
  CHECK(invalid);
}

inline awaitable<void> claim_run_finish(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "j1");
  auto claimed = co_await q.claim("router-a", 10, 0ms);
  REQUIRE(claimed.size() == 1);
  const ClaimedJob c = claimed[0];
  CHECK(c.record.state == JobState::running);
  CHECK(c.record.attempts == 1);
  CHECK(c.record.router_id == "router-a");
  CHECK(c.lease.attempt == 1);
  CHECK(c.lease.consumer == "router-a");
  CHECK(c.lease.queue == "default");
  auto none = co_await q.claim("router-b", 10, 0ms);
  CHECK(none.empty());
  auto running = co_await mark_running(q, c.lease, "c-1", "router-a");
  CHECK(running == JobState::running);
  auto marked = co_await q.get(c.record.id);
  REQUIRE(marked);
  CHECK(marked->state == JobState::running);
  CHECK(marked->container_id == "c-1");
  CHECK(marked->started_at.has_value());
  auto held = co_await q.held_by("router-a");
  REQUIRE(held.size() == 1);
  CHECK(held[0].lease == c.lease);
  auto report = co_await renew(q, "router-a", c.lease);
  CHECK(report.lost.empty());
  CHECK(report.cancelled.empty());
  JobResult ok = result(JobState::succeeded, 0);
  ok.snapshot_error = "commit failed: disk full";
  ok.log_tail = "line 1\nline 2\n";
  auto done = co_await q.finish(c.lease, ok);
  CHECK(done.state == JobState::succeeded);
  CHECK(done.exit_code == 0);
  auto stored = co_await q.get("j1");
  REQUIRE(stored.has_value());
  CHECK(stored->state == JobState::succeeded);
  CHECK(stored->snapshot_error == "commit failed: disk full");
  CHECK(stored->log_tail == "line 1\nline 2\n");
  CHECK(stored->finished_at == done.finished_at);
  auto types_j1 = co_await event_types(q, "j1");
  CHECK(types_j1 == std::vector<std::string>{"job.queued", "job.started", "job.succeeded"});
  // A late second report changes nothing; the lease is gone.
  auto again = co_await finish(q, c.lease, JobState::failed, 1, "late");
  CHECK(again.state == JobState::succeeded);
  auto after = co_await renew(q, "router-a", c.lease);
  CHECK(after.lost == std::vector<std::string>{"j1"});
  auto counts = co_await q.counts();
  CHECK(counts.depth["default"] == 0);
  CHECK(counts.by_state[JobState::succeeded] == 1);
}

// How the key holder leaves in concurrency_key_* scenarios.
enum class Leave { finish, fail, hand_back, cancel };

inline awaitable<void> leave(Queue& q, const LeaseHandle& lease, Leave how) {
  switch (how) {
    case Leave::finish:
      co_await finish(q, lease, JobState::succeeded, 0);
      break;
    case Leave::fail:
      co_await q.fail_attempt(lease, "exit 3", false);
      break;
    case Leave::hand_back:
      co_await q.hand_back(lease, "engine unreachable", 0ms);
      break;
    case Leave::cancel: {
      // A running job keeps its key until its router reports the cancel.
      auto r = co_await q.cancel(lease.job_id);
      CHECK(r.outcome == CancelOutcome::router_notified);
      auto still = co_await q.claim("router-a", 10, 0ms);
      CHECK(still.empty());
      co_await finish(q, lease, JobState::cancelled, 137, "cancelled");
      break;
    }
  }
}

// limit 1: the second job of a key parks without a claim, a job of no key
// runs meanwhile, and the first job's leaving (however) wakes the second.
inline Scenario concurrency_key_parks_until_the_holder_leaves(Leave how) {
  return [how](Harness& h) -> awaitable<void> {
    Queue& q = h.queue;
    co_await enqueue(q, "a", "k");
    co_await enqueue(q, "b", "k");
    co_await enqueue(q, "c");
    auto first = co_await q.claim("router-a", 10, 0ms);
    CHECK(ids(first) == std::vector<std::string>{"a", "c"});
    auto b = co_await q.get("b");
    CHECK(b->state == JobState::queued);
    CHECK(b->waiting_for_key == "k");
    auto held = co_await q.held_by("router-a");
    CHECK(held.size() == 2);  // b holds no claim
    auto nothing = co_await q.claim("router-b", 10, 0ms);
    CHECK(nothing.empty());
    const LeaseHandle holder = by_id(first, "a").lease;
    co_await leave(q, holder, how);
    auto second = co_await q.claim("router-b", 10, 0ms);
    REQUIRE(ids(second) == std::vector<std::string>{"b"});
    CHECK(second[0].record.attempts == 1);
    auto woke = co_await q.get("b");
    CHECK(woke->waiting_for_key.empty());
    CHECK(woke->state == JobState::running);
  };
}

// Waiters go in FIFO order; a cancelled waiter (parked, or woken and holding
// the reservation) hands its turn on.
inline awaitable<void> concurrency_key_waiters_fifo_and_cancel(Harness& h) {
  Queue& q = h.queue;
  const std::vector<std::string> waiters = {"w1", "w2", "w3", "w4"};
  for (const auto& id : waiters) co_await enqueue(q, id, "k");
  auto first = co_await q.claim("r", 10, 0ms);
  REQUIRE(ids(first) == std::vector<std::string>{"w1"});
  auto parked = co_await q.cancel("w2");
  CHECK(parked.outcome == CancelOutcome::cancelled);
  CHECK(parked.previous_state == JobState::queued);
  co_await finish(q, first[0].lease, JobState::succeeded, 0);
  // w3 is woken and reserved; cancelling it passes the key to w4.
  auto woken = co_await q.get("w3");
  CHECK(woken->waiting_for_key.empty());
  auto reserved = co_await q.cancel("w3");
  CHECK(reserved.outcome == CancelOutcome::cancelled);
  auto next = co_await q.claim("r", 10, 0ms);
  CHECK(ids(next) == std::vector<std::string>{"w4"});
}

// A router that dies holding a key: its hold runs out with the lease and
// promote_due() wakes the waiter.
inline awaitable<void> concurrency_key_holder_expiry_wakes_waiter(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "a", "k");
  co_await enqueue(q, "b", "k");
  auto first = co_await q.claim("router-dead", 10, 0ms);
  REQUIRE(ids(first) == std::vector<std::string>{"a"});
  co_await h.pass_time(kContractLease * 2);
  co_await q.promote_due();
  auto second = co_await q.claim("router-b", 10, 0ms);
  CHECK(ids(second) == std::vector<std::string>{"b"});
}

// A router whose renewals were late (a Redis blip longer than the lease)
// but whose job nobody reclaimed keeps running it: its renewal takes the key
// hold back, so the key's limit counts the job again.
inline awaitable<void> concurrency_key_late_renewal_takes_the_hold_back(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "a", "k");
  auto first = co_await q.claim("router-slow", 10, 0ms);
  REQUIRE(ids(first) == std::vector<std::string>{"a"});
  co_await h.pass_time(kContractLease * 2);
  co_await enqueue(q, "b", "k");
  auto second = co_await q.claim("router-b", 10, 0ms);  // a's hold ran out
  REQUIRE(ids(second) == std::vector<std::string>{"b"});
  auto report = co_await renew(q, "router-slow", first[0].lease);
  CHECK(report.lost.empty());
  co_await finish(q, second[0].lease, JobState::succeeded, 0);
  co_await enqueue(q, "c", "k");
  auto third = co_await q.claim("router-b", 10, 0ms);
  CHECK(third.empty());  // a runs and holds k again
  co_await finish(q, first[0].lease, JobState::succeeded, 0);
  auto fourth = co_await q.claim("router-b", 10, 0ms);
  CHECK(ids(fourth) == std::vector<std::string>{"c"});
}

inline awaitable<void> hand_back_keeps_the_attempt(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "h");
  auto first = co_await q.claim("r", 1, 0ms);
  REQUIRE(first.size() == 1);
  const LeaseHandle lease = first[0].lease;
  co_await mark_running(q, lease, "c-h", "r");
  co_await q.hand_back(lease, "engine unreachable", 0ms);
  auto rec = co_await q.get("h");
  CHECK(rec->state == JobState::scheduled);
  CHECK(rec->attempts == 0);
  CHECK(rec->container_id.empty());
  CHECK(rec->due_at.has_value());
  auto types_h = co_await event_types(q, "h");
  CHECK(types_h == std::vector<std::string>{"job.queued", "job.started", "job.deferred"});
  auto promoted = co_await q.promote_due();
  CHECK(promoted == 1);
  auto again = co_await q.claim("r", 1, 0ms);
  REQUIRE(again.size() == 1);
  CHECK(again[0].record.attempts == 1);
  CHECK(again[0].lease.attempt == 1);
  // The old lease is dead: only the new one finishes.
  bool lost = false;
  try {
    co_await finish(q, lease, JobState::succeeded, 0);
  } catch (const LeaseLost&) {
    lost = true;
  }
  CHECK(lost);
  auto done = co_await finish(q, again[0].lease, JobState::succeeded, 0);
  CHECK(done.state == JobState::succeeded);
}

inline awaitable<void> retry_then_attempts_exhausted(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "f", "", 2);
  auto first = co_await q.claim("r", 1, 0ms);
  REQUIRE(first.size() == 1);
  auto scheduled = co_await q.fail_attempt(first[0].lease, "exit 1", true);
  CHECK(scheduled.state == JobState::scheduled);
  CHECK(scheduled.error == "exit 1");
  CHECK(scheduled.due_at.has_value());
  auto second = co_await q.claim("r", 1, 0ms);  // promoted: no backoff in the contract knobs
  REQUIRE(second.size() == 1);
  CHECK(second[0].record.attempts == 2);
  CHECK(second[0].lease.attempt == 2);
  auto failed = co_await q.fail_attempt(second[0].lease, "exit 1", true);
  CHECK(failed.state == JobState::failed);
  CHECK(failed.error == "exit 1 (attempts exhausted: 2/2)");
  auto dead = co_await q.dead_letters(10);
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].id == "f");
  auto types_f = co_await event_types(q, "f");
  CHECK(types_f == std::vector<std::string>{"job.queued", "job.retry_scheduled", "job.failed"});
}

// claim() shows every entry it reads before claiming it, with the attempt its
// claim runs: after enqueue, a retry, a hand-back, and a concurrency key's wake-up.
inline awaitable<void> claim_shows_entries_and_their_attempt(Harness& h) {
  Queue& q = h.queue;
  using Seen = std::vector<std::pair<std::string, int>>;
  Seen seen;
  EntryObserver note = [&seen](const EntrySeen& e) {
    CHECK(e.spec.id == e.job_id);
    seen.emplace_back(e.job_id, e.attempt);
  };
  co_await enqueue(q, "s", "", 2);
  co_await enqueue(q, "k1", "k");
  co_await enqueue(q, "k2", "k");
  auto first = co_await q.claim("r", 10, 0ms, note);
  CHECK(seen == Seen{{"s", 1}, {"k1", 1}, {"k2", 1}});  // k2 is read, then parked
  REQUIRE(ids(first) == std::vector<std::string>{"k1", "s"});
  CHECK(by_id(first, "s").lease.attempt == 1);

  seen.clear();
  co_await q.fail_attempt(by_id(first, "s").lease, "exit 1", true);
  auto retried = co_await q.claim("r", 10, 0ms, note);
  CHECK(seen == Seen{{"s", 2}});
  REQUIRE(retried.size() == 1);
  CHECK(retried[0].lease.attempt == 2);

  seen.clear();
  co_await q.hand_back(retried[0].lease, "engine unreachable", 0ms);
  co_await q.promote_due();
  auto handed = co_await q.claim("r", 10, 0ms, note);
  CHECK(seen == Seen{{"s", 2}});  // a hand-back does not spend the attempt
  REQUIRE(handed.size() == 1);
  CHECK(handed[0].lease.attempt == 2);

  seen.clear();
  co_await finish(q, by_id(first, "k1").lease, JobState::succeeded, 0);
  auto woken = co_await q.claim("r", 10, 0ms, note);
  CHECK(seen == Seen{{"k2", 1}});
  REQUIRE(ids(woken) == std::vector<std::string>{"k2"});
  CHECK(woken[0].lease.attempt == 1);
}

// renew_leases reports a cancel in the same round trip: a lost cancel
// message costs one renewal period.
inline awaitable<void> cancel_of_running_job_is_reported_by_renew(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "x");
  auto c = co_await q.claim("r", 1, 0ms);
  REQUIRE(c.size() == 1);
  co_await mark_running(q, c[0].lease, "c-x", "r");
  auto r = co_await q.cancel("x");
  CHECK(r.outcome == CancelOutcome::router_notified);
  CHECK(r.previous_state == JobState::running);
  auto report = co_await renew(q, "r", c[0].lease);
  CHECK(report.lost.empty());
  CHECK(report.cancelled == std::vector<std::string>{"x"});
  auto late = co_await mark_running(q, c[0].lease, "c-x", "r");
  CHECK(late == JobState::cancelled);
  auto done = co_await finish(q, c[0].lease, JobState::cancelled, 137, "stopped");
  CHECK(done.state == JobState::cancelled);
  auto gone = co_await renew(q, "r", c[0].lease);
  CHECK(gone.lost == std::vector<std::string>{"x"});
  auto twice = co_await q.cancel("x");
  CHECK(twice.outcome == CancelOutcome::already_finished);
  auto unknown = co_await q.cancel("nope");
  CHECK(unknown.outcome == CancelOutcome::not_found);
}

inline awaitable<void> cancel_of_queued_and_scheduled_jobs(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "q1");
  auto r1 = co_await q.cancel("q1");
  CHECK(r1.outcome == CancelOutcome::cancelled);
  co_await enqueue(q, "s1", "", 3);
  auto c = co_await q.claim("r", 10, 0ms);
  REQUIRE(ids(c) == std::vector<std::string>{"s1"});
  co_await q.fail_attempt(c[0].lease, "boom", true);
  auto r2 = co_await q.cancel("s1");
  CHECK(r2.previous_state == JobState::scheduled);
  auto none = co_await q.claim("r", 10, 0ms);
  CHECK(none.empty());
  auto counts = co_await q.counts();
  CHECK(counts.by_state[JobState::cancelled] == 2);
  CHECK(counts.depth["default"] == 0);
}

// A router that stops renewing loses the job to another after the lease.
inline awaitable<void> expired_lease_is_reclaimed(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "l");
  auto c = co_await q.claim("router-a", 1, 0ms);
  REQUIRE(c.size() == 1);
  co_await mark_running(q, c[0].lease, "c-l", "router-a");
  auto early = co_await q.reclaim_expired("router-b", 10);
  CHECK(early.empty());
  co_await h.pass_time(kContractLease * 2);
  auto taken = co_await q.reclaim_expired("router-b", 10);
  REQUIRE(taken.size() == 1);
  CHECK(taken[0].record.container_id == "c-l");  // the new router re-attaches to it
  CHECK(taken[0].record.attempts == 1);
  CHECK(taken[0].lease.consumer == "router-b");
  CHECK(taken[0].lease.entry_id == c[0].lease.entry_id);
  auto report = co_await renew(q, "router-a", c[0].lease);
  CHECK(report.lost == std::vector<std::string>{"l"});
  bool lost = false;
  try {
    co_await finish(q, c[0].lease, JobState::succeeded, 0);
  } catch (const LeaseLost&) {
    lost = true;
  }
  CHECK(lost);
  auto done = co_await finish(q, taken[0].lease, JobState::succeeded, 0);
  CHECK(done.state == JobState::succeeded);
}

// The fleet view: records are listed by id with what they said, and one whose
// router fell silent past `keep` is gone.
inline RouterRecord router_record(const std::string& id, int running) {
  RouterRecord r;
  r.id = id;
  r.host_id = "host-" + id;
  r.engine_id = "ENGINE:" + id;
  r.capacity = 4;
  r.running = running;
  r.queues = {"default"};
  return r;
}
inline awaitable<void> router_records_expire_when_silent(Harness& h) {
  RouterRecord b = router_record("r-b", 0);
  co_await h.queue.heartbeat(std::move(b), 10s);
  RouterRecord a = router_record("r-a", 3);
  co_await h.queue.heartbeat(std::move(a), 400ms);
  auto listed = co_await h.queue.routers();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].id == "r-a");
  CHECK(listed[0].running == 3);
  CHECK(listed[0].engine_id == "ENGINE:r-a");
  CHECK(listed[1].id == "r-b");
  CHECK(listed[1].queues == std::vector<std::string>{"default"});
  // A second heartbeat replaces the record.
  RouterRecord again = router_record("r-b", 2);
  co_await h.queue.heartbeat(std::move(again), 10s);
  co_await h.pass_time(700ms);
  listed = co_await h.queue.routers();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].id == "r-b");
  CHECK(listed[0].running == 2);
}

// Snapshot affinity: a job reusing key K goes to the live host holding K's
// snapshot; another host's router gets it only after affinity_wait, or at once
// when the host is lost. Hosts are live by their routers' heartbeats.
inline awaitable<EnqueueResult> enqueue_reusing(Queue& q, std::string id, std::string key) {
  JobSpec s = spec(id);
  s.snapshot = SnapshotSpec{key, true, true};
  co_return co_await q.enqueue(std::move(s));
}
inline awaitable<void> beat(Queue& q, std::string id, Duration lease) {
  RouterRecord r = router_record(id, 0);  // host "host-<id>"
  r.lease_ms = std::chrono::duration_cast<std::chrono::milliseconds>(lease).count();
  co_await q.heartbeat(std::move(r), 10s);
}
inline awaitable<void> run_on(Queue& q, const ClaimedJob& job, std::string router,
                              std::string expect_affinity) {
  RunInfo info = run_info("c-" + job.record.id, router);
  info.host_id = "host-" + router;
  JobState state = co_await q.mark_running(job.lease, std::move(info));
  CHECK(state == JobState::running);
  auto rec = co_await q.get(job.record.id);
  REQUIRE(rec);
  CHECK(rec->host == "host-" + router);
  CHECK(rec->affinity() == expect_affinity);
  co_await finish(q, job.lease, JobState::succeeded, 0);
  auto stored = co_await q.get(job.record.id);
  REQUIRE(stored);
  CHECK(stored->state == JobState::succeeded);
  CHECK(stored->affinity() == expect_affinity);
}
inline awaitable<void> affinity_routes_jobs_to_the_snapshot_host(Harness& h) {
  Queue& q = h.queue;
  co_await beat(q, "r-a", 10s);
  co_await beat(q, "r-b", 10s);
  co_await q.set_affinity("k", "host-r-a");
  co_await enqueue_reusing(q, "hit", "k");
  co_await enqueue(q, "plain");
  auto counts = co_await q.counts();
  CHECK(counts.depth["default"] == 2);  // a host's stream counts for its queue
  // r-b sees only the job without affinity; r-a gets its own.
  auto b = co_await q.claim("r-b", 10, 0ms);
  CHECK(ids(b) == std::vector<std::string>{"plain"});
  auto a = co_await q.claim("r-a", 10, 0ms);
  REQUIRE(ids(a) == std::vector<std::string>{"hit"});
  CHECK(a[0].record.affinity_host == "host-r-a");
  co_await run_on(q, a[0], "r-a", "hit");
  co_await finish(q, b[0].lease, JobState::succeeded, 0);

  // Past affinity_wait, any router runs it (the host was busy).
  co_await enqueue_reusing(q, "waited", "k");
  CHECK((co_await q.claim("r-b", 10, 0ms)).empty());
  co_await beat(q, "r-a", 10s);
  co_await h.pass_time(kContractAffinityWait + 200ms);
  auto late = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(late) == std::vector<std::string>{"waited"});
  co_await run_on(q, late[0], "r-b", "miss");
  CHECK((co_await q.claim("r-a", 10, 0ms)).empty());  // no second copy anywhere

  // A cancelled routed job never runs.
  co_await beat(q, "r-a", 10s);
  co_await enqueue_reusing(q, "gone", "k");
  auto cancelled = co_await q.cancel("gone");
  CHECK(cancelled.outcome == CancelOutcome::cancelled);
  CHECK((co_await q.claim("r-a", 10, 0ms)).empty());

  // The host lost (its lease ran out with no heartbeat): at once, not after the wait.
  co_await beat(q, "r-a", 300ms);
  co_await enqueue_reusing(q, "orphan", "k");
  co_await h.pass_time(450ms);
  auto taken = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(taken) == std::vector<std::string>{"orphan"});
  co_await run_on(q, taken[0], "r-b", "miss");

  // A key whose hint was dropped (its snapshot vanished there) is not routed;
  // a drop naming another host leaves the hint alone.
  co_await beat(q, "r-a", 10s);
  co_await q.drop_affinity("k", "host-r-b");
  co_await enqueue_reusing(q, "still", "k");
  CHECK((co_await q.claim("r-b", 10, 0ms)).empty());
  auto own = co_await q.claim("r-a", 10, 0ms);
  REQUIRE(ids(own) == std::vector<std::string>{"still"});
  co_await run_on(q, own[0], "r-a", "hit");
  co_await q.drop_affinity("k", "host-r-a");
  co_await enqueue_reusing(q, "free", "k");
  auto any = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(any) == std::vector<std::string>{"free"});
  co_await run_on(q, any[0], "r-b", "");

  // Claimed from its host's stream, then the host is lost: another router
  // reclaims it after the lease, like a job of the shared stream.
  co_await beat(q, "r-a", 300ms);
  co_await q.set_affinity("k", "host-r-a");
  co_await enqueue_reusing(q, "stranded", "k");
  auto mine = co_await q.claim("r-a", 10, 0ms);
  REQUIRE(ids(mine) == std::vector<std::string>{"stranded"});
  CHECK((co_await q.reclaim_expired("r-b", 10)).empty());
  co_await h.pass_time(kContractLease * 2);
  auto rescued = co_await q.reclaim_expired("r-b", 10);
  REQUIRE(ids(rescued) == std::vector<std::string>{"stranded"});
  CHECK(rescued[0].lease.consumer == "r-b");
  co_await run_on(q, rescued[0], "r-b", "miss");

  auto types = co_await event_types(q, "waited");
  CHECK(types == std::vector<std::string>{"job.queued", "job.affinity_released", "job.started",
                                          "job.succeeded"});
}

// Single-flight cold starts: one builder per snapshot key; the other jobs of
// the key wait off the stream, without spending their attempt, until the
// builder ends (onto its host's stream when it holds the snapshot) or their
// poll comes round; the marker is lease-backed. (Results are taken before
// CHECK: g++ 12 runs a co_await inside CHECK twice.)
inline awaitable<BuildWait> wait_for(Queue& q, const ClaimedJob& job, std::string builder,
                                     Duration poll = 10s, Duration max_wait = 60s) {
  co_return co_await q.wait_for_build(job.lease, "k", std::move(builder), poll, max_wait);
}
inline awaitable<void> single_flight_builds(Harness& h) {
  Queue& q = h.queue;
  co_await beat(q, "r-a", 10s);
  co_await enqueue_reusing(q, "a", "k");
  co_await enqueue_reusing(q, "b", "k");
  co_await enqueue_reusing(q, "c", "k");
  auto claimed = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(claimed) == std::vector<std::string>{"a", "b", "c"});
  const ClaimedJob a = by_id(claimed, "a"), b = by_id(claimed, "b"), c = by_id(claimed, "c");
  std::string took = co_await q.begin_build("k", "a", true);
  CHECK(took == "a");
  took = co_await q.begin_build("k", "a", true);
  CHECK(took == "a");  // its own: kept
  took = co_await q.begin_build("k", "b", true);
  CHECK(took == "a");  // taken: b is told who has it
  took = co_await q.begin_build("k", "c", false);
  CHECK(took == "a");
  took = co_await q.begin_build("other", "c", false);
  CHECK(took.empty());  // asking takes nothing
  auto building = co_await q.builds();
  CHECK(building.size() == 1);
  CHECK(building["k"] == "a");

  BuildWait waited = co_await wait_for(q, b, "a");
  CHECK(waited == BuildWait::waiting);
  auto waiting = co_await q.get("b");
  REQUIRE(waiting);
  CHECK(waiting->state == JobState::scheduled);
  CHECK(waiting->waiting_for_snapshot == "k");
  CHECK(waiting->attempts == 0);  // not spent
  // A wait on a job that is not (or no longer) the key's builder changes nothing.
  waited = co_await wait_for(q, c, "zz");
  CHECK(waited == BuildWait::builder_gone);
  auto held = co_await q.get("c");
  CHECK(held->state == JobState::running);
  waited = co_await wait_for(q, c, "a");
  CHECK(waited == BuildWait::waiting);
  auto none = co_await q.claim("r-b", 10, 0ms);
  CHECK(none.empty());  // waiting, not due
  std::size_t moved = co_await q.promote_due();
  CHECK(moved == 0);

  // The builder ends with the snapshot on host-r-a: both wake onto that host's stream.
  std::size_t woke = co_await q.end_build("k", "a", "host-r-a");
  CHECK(woke == 2);
  building = co_await q.builds();
  CHECK(building.empty());
  woke = co_await q.end_build("k", "a", "host-r-a");
  CHECK(woke == 0);  // twice: nothing more
  auto woken = co_await q.get("b");
  CHECK(woken->state == JobState::queued);
  CHECK(woken->waiting_for_snapshot.empty());
  CHECK(woken->affinity_host == "host-r-a");
  none = co_await q.claim("r-b", 10, 0ms);
  CHECK(none.empty());  // another host's router
  auto again = co_await q.claim("r-a", 10, 0ms);
  REQUIRE(ids(again) == std::vector<std::string>{"b", "c"});
  CHECK(by_id(again, "b").lease.attempt == 1);
  co_await finish(q, a.lease, JobState::succeeded, 0);
  co_await finish(q, by_id(again, "b").lease, JobState::succeeded, 0);
  auto types = co_await event_types(q, "b");
  CHECK(types == std::vector<std::string>{"job.queued", "snapshot.build_waiters", "job.succeeded"});

  // The wait is bounded from the job's first wait, and the poll brings it back.
  const ClaimedJob c2 = by_id(again, "c");
  took = co_await q.begin_build("k", "x", true);
  CHECK(took.empty());  // no such job: nothing taken
  co_await enqueue_reusing(q, "d", "k");
  auto d = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(d) == std::vector<std::string>{"d"});
  took = co_await q.begin_build("k", "d", true);
  CHECK(took == "d");
  waited = co_await q.wait_for_build(c2.lease, "k", "d", 100ms, 60s);
  CHECK(waited == BuildWait::waiting);
  co_await h.pass_time(200ms);
  moved = co_await q.promote_due();
  CHECK(moved == 1);
  auto polled = co_await q.claim("r-b", 10, 0ms);
  REQUIRE(ids(polled) == std::vector<std::string>{"c"});
  waited = co_await q.wait_for_build(polled[0].lease, "k", "d", 100ms, 150ms);
  CHECK(waited == BuildWait::over);
  held = co_await q.get("c");
  CHECK(held->state == JobState::running);

  // Renewals keep the builder's marker; without them it runs out with the lease.
  took = co_await q.begin_build("k", "d", true);  // its own: the lease starts again
  CHECK(took == "d");
  co_await h.pass_time(kContractLease / 2);
  co_await renew(q, "r-b", d[0].lease);
  co_await h.pass_time(kContractLease / 2 + 100ms);
  took = co_await q.begin_build("k", "c", true);
  CHECK(took == "d");
  co_await h.pass_time(kContractLease + 100ms);
  building = co_await q.builds();
  CHECK(building.empty());
  took = co_await q.begin_build("k", "c", true);
  CHECK(took == "c");
}

// What a run's snapshot lookup saw is kept with the run, for a router that
// re-attaches it after a restart; the next attempt starts without it.
inline awaitable<void> snapshot_lookup_kept_with_the_run(Harness& h) {
  Queue& q = h.queue;
  co_await enqueue(q, "s", "", 2);
  auto first = co_await q.claim("r", 1, 0ms);
  REQUIRE(first.size() == 1);
  RunInfo info = run_info("c-s", "r");
  info.snapshot_seen = "sha256:seen";
  info.snapshot_build_ms = 1234;
  co_await q.mark_running(first[0].lease, std::move(info));
  auto held = co_await q.held_by("r");
  REQUIRE(held.size() == 1);
  CHECK(held[0].record.snapshot_seen == "sha256:seen");
  CHECK(held[0].record.snapshot_build_ms == 1234);
  co_await q.fail_attempt(first[0].lease, "exit 1", true);
  auto second = co_await q.claim("r", 1, 0ms);
  REQUIRE(second.size() == 1);
  co_await mark_running(q, second[0].lease, "c-s2", "r");  // no snapshot key this time
  auto rec = co_await q.get("s");
  REQUIRE(rec);
  CHECK(rec->snapshot_seen.empty());
  CHECK(rec->snapshot_build_ms == 0);
}

inline std::vector<std::pair<std::string, Scenario>> scenarios() {
  return {
      {"enqueue is idempotent by id and spec", enqueue_is_idempotent_by_id_and_spec},
      {"claim, run, finish", claim_run_finish},
      {"key: finish wakes the waiter",
       concurrency_key_parks_until_the_holder_leaves(Leave::finish)},
      {"key: failure wakes the waiter", concurrency_key_parks_until_the_holder_leaves(Leave::fail)},
      {"key: hand_back wakes the waiter",
       concurrency_key_parks_until_the_holder_leaves(Leave::hand_back)},
      {"key: cancel wakes the waiter",
       concurrency_key_parks_until_the_holder_leaves(Leave::cancel)},
      {"key: FIFO waiters and cancelled waiters", concurrency_key_waiters_fifo_and_cancel},
      {"key: holder's lease expiry wakes the waiter", concurrency_key_holder_expiry_wakes_waiter},
      {"key: a late renewal takes the hold back", concurrency_key_late_renewal_takes_the_hold_back},
      {"hand_back keeps the attempt", hand_back_keeps_the_attempt},
      {"retry, then attempts exhausted", retry_then_attempts_exhausted},
      {"claim shows entries and their attempt", claim_shows_entries_and_their_attempt},
      {"a run's snapshot lookup is kept with it", snapshot_lookup_kept_with_the_run},
      {"cancel of a running job is reported by renew", cancel_of_running_job_is_reported_by_renew},
      {"cancel of queued and scheduled jobs", cancel_of_queued_and_scheduled_jobs},
      {"an expired lease is reclaimed", expired_lease_is_reclaimed},
      {"router records expire when silent", router_records_expire_when_silent},
      {"affinity routes jobs to the snapshot host", affinity_routes_jobs_to_the_snapshot_host},
      {"single-flight: one builder, waiters woken", single_flight_builds},
  };
}

}  // namespace warmstart::queue::contract
