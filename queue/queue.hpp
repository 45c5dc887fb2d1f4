// queue::Queue: the port through which the router, the API and the CLI use the
// durable job queue. RedisQueue (redis_queue.hpp) is the real adapter.
//
// Lifecycle seen from a router:
//   claim() -> mark_running() -> finish() | fail_attempt() | hand_back()
// with renew_leases() while a job runs (it also reports cancels, so a lost
// cancel message costs one renewal period), reclaim_expired() to take over the
// jobs of a router that died, and promote_due() to bring retries back.
//
// Concurrency keys are enforced here, fleet-wide: a job whose
// `concurrency_key` has `concurrency_key_limit` running jobs is not handed to
// any router; it waits in the queue (state `queued`, `waiting_for_key` set)
// without a claim, and the next job leaving that key wakes it.
//
// Snapshot affinity (docs/fleet.md): set_affinity() names the host holding a
// snapshot key's newest snapshot. enqueue() of a job that reuses key K routes
// it to that host when the host is live (a router of it heartbeats, not
// draining): it waits on the host's own stream, read only by routers whose
// heartbeat names that host, until promote_due() (any router) moves it to the
// shared stream: once it waited `affinity_wait`, at once when the host is lost.
//
// Single-flight cold starts (docs/snapshots.md): begin_build() makes one job
// the builder of a snapshot key that has no snapshot yet (a marker, lease-
// backed: renew_leases() keeps it while the job runs, it runs out one lease
// after its router stopped). Jobs of the key that would start cold meanwhile
// wait_for_build(): off the stream, without a claim, until end_build() wakes
// them (onto the builder's host, which holds the new snapshot) or their poll
// comes round to look again.
// MemoryQueue (memory_queue.hpp) is the in-memory test double.
#pragma once
#include "common/net.hpp"
#include "queue/fleet.hpp"
#include "queue/job.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmstart::queue {

// Base of queue errors (Redis failures surface as redis::Error).
class QueueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The job is not (or no longer) held by this consumer: another router
// reclaimed it after the lease expired. The caller must stop touching it.
class LeaseLost : public QueueError {
 public:
  using QueueError::QueueError;
};
// enqueue() of a spec that does not validate.
class InvalidJob : public QueueError {
 public:
  using QueueError::QueueError;
};
// enqueue() of an id that exists with another spec (JobSpec::fingerprint()).
class IdConflict : public QueueError {
 public:
  IdConflict(std::string job_id, std::string existing, std::string requested)
      : QueueError("job " + job_id + " exists with another spec (spec " + existing.substr(0, 12) +
                   ", this one " + requested.substr(0, 12) + ")"),
        job_id_(std::move(job_id)),
        existing_(std::move(existing)),
        requested_(std::move(requested)) {}
  const std::string& job_id() const { return job_id_; }
  const std::string& existing_fingerprint() const { return existing_; }
  const std::string& requested_fingerprint() const { return requested_; }

 private:
  std::string job_id_, existing_, requested_;
};

// Proof of a claim: what finish()/fail_attempt()/renew_leases() need.
struct LeaseHandle {
  std::string job_id;
  std::string queue;     // stream the entry lives on
  std::string entry_id;  // stream entry id (in the consumer group's pending list)
  std::string consumer;  // who holds it
  int attempt = 0;       // 1-based attempt this claim runs
  bool operator==(const LeaseHandle&) const = default;
};

struct ClaimedJob {
  JobRecord record;
  LeaseHandle lease;
};

// A job entry claim() read, before its claim is decided: what a router may
// start preparing while the claim's round trip runs (router/speculation.hpp).
// Seen only for valid entries on a queue's shared stream that name the attempt
// their claim would run (every entry the queue writes does; a raw entry
// another producer XADDed does not). The claim may still skip the entry
// (cancelled, parked, a stale copy) or run another attempt.
struct EntrySeen {
  const std::string& job_id;
  int attempt = 0;
  const JobSpec& spec;
};
using EntryObserver = std::function<void(const EntrySeen&)>;

struct EnqueueResult {
  JobRecord record;
  bool created = false;  // false: the id existed, `record` is the existing job
};

// What the router fills in once the container runs.
struct RunInfo {
  std::string image;
  bool from_snapshot = false;
  bool snapshot_fallback = false;
  std::string container_id;
  std::string router_id;
  std::string host_id;  // the router's host identity (JobRecord::host)
  // Jobs with a snapshot key: the image the lookup saw registered for it (""
  // none) and the build time the snapshot started from holds. A router that
  // re-attaches the job after a restart commits against the former and adds
  // the latter (JobRecord::snapshot_seen). nullopt: no snapshot key, nothing kept.
  std::optional<std::string> snapshot_seen;
  std::int64_t snapshot_build_ms = 0;
};

struct JobResult {
  JobState state = JobState::succeeded;  // succeeded | failed | timed_out | cancelled
  std::optional<int> exit_code;
  std::string error;  // empty for success
  std::string
      snapshot_error;  // the snapshot commit after a success failed (the job still succeeded)
  // The container's output, stored with the result ('' none; cut like
  // set_log_tail): one round trip for both.
  std::string log_tail;
};

// What wait_for_build() did.
enum class BuildWait {
  waiting,      // handed back: woken by end_build(), or after the poll
  over,         // the job waited max_wait already: it runs cold now (nothing changed)
  builder_gone  // the builder ended meanwhile: nothing changed, look again
};

// What one renew_leases() round trip found.
struct LeaseReport {
  std::vector<std::string> lost;       // held by another router now, or gone: stop touching them
  std::vector<std::string> cancelled;  // still ours, but a cancel was recorded
};

// What finish() recorded. When a cancel won the race the state is
// `cancelled` and the fields are the stored ones, not the reported result.
struct FinishOutcome {
  std::string job_id;
  JobState state = JobState::succeeded;
  std::int64_t finished_at = 0;  // Unix ms
  std::optional<int> exit_code;
  std::string error;
};

enum class CancelOutcome {
  cancelled,         // was queued or scheduled: it will never dispatch
  router_notified,   // was running: its router was told to stop the container
  already_finished,  // terminal already; nothing changed
  not_found,
};

struct CancelResult {
  CancelOutcome outcome = CancelOutcome::not_found;
  std::optional<JobState> previous_state;
};

struct QueueCounts {
  std::map<JobState, std::int64_t> by_state;  // every state, zeros included
  std::map<std::string, std::int64_t> depth;  // per queue: stream entries not yet finished
  std::int64_t scheduled_due = 0;             // scheduled retries already due
};

struct QueueEvent {
  std::string id;       // event stream id, usable as SSE Last-Event-ID
  nlohmann::json body;  // {"id", "ts", "type", "job", ...}
};

// Keeps a cancellation subscription alive; destroying it unsubscribes.
class CancelSubscription {
 public:
  virtual ~CancelSubscription() = default;
  // True once the subscription is active (a cancel published before is missed).
  virtual awaitable<bool> wait_ready(Duration timeout) = 0;
};

class Queue {
 public:
  // job id, router id of the router that runs it.
  using CancelHandler =
      std::function<void(const std::string& job_id, const std::string& router_id)>;

  virtual ~Queue() = default;

  // Idempotent by spec.id (generated when empty): the same id and spec twice
  // give one record and one stream entry. Writes a job.queued event. Throws
  // InvalidJob, or IdConflict when the id exists with another spec.
  virtual awaitable<EnqueueResult> enqueue(JobSpec spec) = 0;

  // Up to `max_jobs` jobs for `consumer`, waiting up to `block` when none is
  // ready (0: do not wait). Due retries are promoted first (promote_due();
  // RedisQueue at most every promote_every). Raw malformed stream entries end
  // `failed` with a reason and are acknowledged; cancelled jobs are
  // acknowledged and skipped.
  // `seen`, when set, is called for each entry read (EntrySeen) before its
  // claim is sent; it must not suspend.
  virtual awaitable<std::vector<ClaimedJob>> claim(std::string consumer, std::size_t max_jobs,
                                                   Duration block, EntryObserver seen) = 0;
  awaitable<std::vector<ClaimedJob>> claim(std::string consumer, std::size_t max_jobs,
                                           Duration block) {
    return claim(std::move(consumer), max_jobs, block, EntryObserver{});
  }
  // Resets the idle time of held jobs (and of their concurrency keys), and
  // reports in the same round trip the leases lost and the jobs cancelled.
  virtual awaitable<LeaseReport> renew_leases(std::string consumer,
                                              std::vector<LeaseHandle> leases) = 0;
  // The jobs `consumer` holds right now (its pending entries), unchanged: what a
  // restarted router with the same id must re-attach, finalize or run.
  virtual awaitable<std::vector<ClaimedJob>> held_by(std::string consumer) = 0;
  // Takes over jobs whose lease expired (their router stopped heartbeating).
  virtual awaitable<std::vector<ClaimedJob>> reclaim_expired(std::string consumer,
                                                             std::size_t max_jobs) = 0;

  // The container runs: records image/container/router, writes job.started.
  // Returns the job's state: `running`, or `cancelled` when a cancel won the
  // race (the router must then stop the container and finish() with
  // cancelled). Not the record: the caller holds it, and reading it back
  // costs a Redis HGETALL and a spec parse per job. Throws LeaseLost.
  virtual awaitable<JobState> mark_running(const LeaseHandle& lease, RunInfo info) = 0;
  // Terminal state + ack + event + retention. Throws LeaseLost. Returns the
  // outcome, not the whole record (get() has that). Concurrent calls share
  // Redis round trips (group commit).
  virtual awaitable<FinishOutcome> finish(const LeaseHandle& lease, JobResult result) = 0;
  // A failed attempt: `scheduled` for a retry after a backoff when retryable
  // and attempts remain, else terminal `failed`. Throws LeaseLost.
  virtual awaitable<JobRecord> fail_attempt(const LeaseHandle& lease, std::string reason,
                                            bool retryable) = 0;
  // Gives a claimed job back without spending its attempt (the attempt number
  // is reused, so its container name is too): `scheduled`, due after `delay`,
  // event job.deferred {reason, delay_s}. For failures that are not the job's
  // (the engine unreachable). A job cancelled meanwhile is only released.
  // Throws LeaseLost.
  virtual awaitable<void> hand_back(const LeaseHandle& lease, std::string reason,
                                    Duration delay) = 0;
  // Moves due scheduled retries back onto their streams, and wakes jobs
  // waiting for a concurrency key that has room again (its holder's router
  // died); returns how many moved.
  virtual awaitable<std::size_t> promote_due() = 0;

  virtual awaitable<CancelResult> cancel(std::string job_id) = 0;
  virtual awaitable<std::optional<JobRecord>> get(std::string job_id) = 0;
  // Newest first.
  virtual awaitable<std::vector<JobRecord>> list(JobState state, std::size_t limit) = 0;
  virtual awaitable<QueueCounts> counts() = 0;
  // Jobs that ended `failed` (attempts spent, not retryable, or invalid), newest first.
  virtual awaitable<std::vector<JobRecord>> dead_letters(std::size_t limit) = 0;
  virtual awaitable<void> set_log_tail(std::string job_id, std::string tail) = 0;

  // Adds "id" and "ts" and appends to the capped event stream; returns the id.
  virtual awaitable<std::string> append_event(nlohmann::json event) = 0;
  // Events after `after_id` ("" or "0": from the oldest retained), oldest first.
  virtual awaitable<std::vector<QueueEvent>> read_events(std::string after_id,
                                                         std::size_t count) = 0;
  virtual std::unique_ptr<CancelSubscription> subscribe_cancellations(CancelHandler handler) = 0;

  // The fleet view (fleet.hpp). Writes one router's record (record.id) and
  // keeps it `keep` after this heartbeat; a router silent longer vanishes.
  virtual awaitable<void> heartbeat(RouterRecord record, Duration keep) = 0;
  // Every record still kept, ordered by router id.
  virtual awaitable<std::vector<RouterRecord>> routers() = 0;

  // Snapshot affinity: `host_id` now holds the newest snapshot of `snapshot_key`.
  virtual awaitable<void> set_affinity(std::string snapshot_key, std::string host_id) = 0;
  // Forgets the hint of `snapshot_key` if it still names `host_id` (its
  // snapshot vanished there).
  virtual awaitable<void> drop_affinity(std::string snapshot_key, std::string host_id) = 0;

  // Single-flight cold starts. The job building `snapshot_key` now ("" none).
  // With `take`, `job_id` becomes it when there is none (event
  // snapshot.build_started); it stays the builder until end_build() or until
  // its lease runs out.
  virtual awaitable<std::string> begin_build(std::string snapshot_key, std::string job_id,
                                             bool take) = 0;
  // Gives the claim back, like hand_back() (the attempt is not spent), to wait
  // for `builder`'s snapshot of `snapshot_key` (event snapshot.build_waiters).
  // Due again after `poll` at most, and never later than `max_wait` after the
  // job's first wait; `over` once that is spent. Throws LeaseLost.
  virtual awaitable<BuildWait> wait_for_build(const LeaseHandle& lease, std::string snapshot_key,
                                              std::string builder, Duration poll,
                                              Duration max_wait) = 0;
  // `job_id` is done building `snapshot_key` (its marker goes, if still its):
  // the jobs waiting for it go back onto their streams now, onto `host_id`'s
  // own stream when that host is live ("" or not live: the shared stream).
  // Returns how many woke.
  virtual awaitable<std::size_t> end_build(std::string snapshot_key, std::string job_id,
                                           std::string host_id) = 0;
  // Every key being built, and its builder job.
  virtual awaitable<std::map<std::string, std::string>> builds() = 0;
};

using QueuePtr = std::shared_ptr<Queue>;

}  // namespace warmstart::queue
