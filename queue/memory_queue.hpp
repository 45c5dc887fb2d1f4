// MemoryQueue: the in-memory test double of queue::Queue, for unit tests of
// the router (no Redis). It mirrors RedisQueue's Lua scripts
// (redis_queue_scripts.hpp) step for step on plain containers: the stream and
// its consumer group's pending list, concurrency keys with their FIFO waiters
// and reservations, leases that expire, retries with the same Backoff, and
// every state change through queue::transition(). queue_contract_test.hpp runs
// the same scenarios against both adapters.
//
// What a test can script:
//   - time: MemoryQueueOptions::now_ms (a ManualClock) drives leases, backoff
//     and due times, so lease expiry needs no sleeping;
//   - faults: fail_next(op, error) (before the operation ran, or after it ran
//     with its reply lost), set_down(true) (every call throws
//     redis::ConnectionError, like a Redis outage), drop_cancel_messages(true)
//     (a cancel is recorded, its PUBLISH never arrives);
//   - raw stream entries another producer XADDed: add_raw_entry();
//   - inspection: calls(op), record(id), events(), held_keys(key).
//
// Single-threaded: use it from its executor's thread. Every operation
// suspends once (posted), like a round trip, and then runs atomically, like
// a script.
#pragma once
#include "queue/backoff.hpp"
#include "queue/queue.hpp"
#include "queue/state_machine.hpp"
#include "queue/validation.hpp"

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace warmstart::queue {

// A wall clock (Unix ms) that only moves when the test says so. Copies share
// one time, so the same clock can drive several doubles.
class ManualClock {
 public:
  explicit ManualClock(std::int64_t start_unix_ms = 1'700'000'000'000)
      : now_(std::make_shared<std::atomic<std::int64_t>>(start_unix_ms)) {}
  std::int64_t now() const { return now_->load(); }
  void advance(Duration d) { now_->fetch_add(d.count()); }
  std::int64_t operator()() const { return now(); }

 private:
  std::shared_ptr<std::atomic<std::int64_t>> now_;
};

struct MemoryQueueOptions {
  std::vector<std::string> queues = {"default"};    // queues claim() reads
  Duration lease_timeout = 30s;                     // idle time after which a job is reclaimed
  int concurrency_key_limit = 1;                    // jobs of one concurrency_key running at once
  int max_reclaims = 3;                             // lease expiries before a job fails
  Duration retention = std::chrono::hours(24 * 7);  // finished records vanish after this
  std::size_t events_max = 10000;                   // event list cap
  std::size_t log_tail_max_bytes = 64 * 1024;       // set_log_tail keeps the last bytes
  BackoffOptions retry_backoff;                     // delay before retries
  std::uint64_t backoff_seed = 42;                  // fixed: retry delays are reproducible
  ValidationOptions validation;                     // for enqueue() and raw entries
  bool promote_on_claim = true;                     // claim() first runs promote_due()
  std::function<std::int64_t()> now_ms;             // Unix ms; empty: the system clock
  Duration affinity_wait = 5s;  // a job routed to its snapshot's host waits this long there
};

class MemoryQueue final : public Queue {
 public:
  // The operations, for fault injection and call counters.
  enum class Op {
    enqueue,
    claim,
    renew_leases,
    held_by,
    reclaim_expired,
    mark_running,
    finish,
    fail_attempt,
    hand_back,
    promote_due,
    cancel,
    get,
    list,
    counts,
    dead_letters,
    set_log_tail,
    append_event,
    read_events,
    heartbeat,
    routers,
    set_affinity,
    drop_affinity,
    begin_build,
    wait_for_build,
    end_build,
    builds,
  };
  // Where an injected error strikes: `before` = the command never ran (Redis
  // unreachable); `after` = it ran and its reply was lost (a deadline or a
  // dropped connection after the write): the caller's retry meets its effect.
  enum class FaultPoint { before, after };

  MemoryQueue(net::any_io_executor executor, MemoryQueueOptions options = {});
  ~MemoryQueue() override;

  awaitable<EnqueueResult> enqueue(JobSpec spec) override;
  using Queue::claim;
  awaitable<std::vector<ClaimedJob>> claim(std::string consumer, std::size_t max_jobs,
                                           Duration block, EntryObserver seen) override;
  awaitable<LeaseReport> renew_leases(std::string consumer,
                                      std::vector<LeaseHandle> leases) override;
  awaitable<std::vector<ClaimedJob>> held_by(std::string consumer) override;
  awaitable<std::vector<ClaimedJob>> reclaim_expired(std::string consumer,
                                                     std::size_t max_jobs) override;
  awaitable<JobState> mark_running(const LeaseHandle& lease, RunInfo info) override;
  awaitable<FinishOutcome> finish(const LeaseHandle& lease, JobResult result) override;
  awaitable<JobRecord> fail_attempt(const LeaseHandle& lease, std::string reason,
                                    bool retryable) override;
  awaitable<void> hand_back(const LeaseHandle& lease, std::string reason, Duration delay) override;
  awaitable<std::size_t> promote_due() override;
  awaitable<CancelResult> cancel(std::string job_id) override;
  awaitable<std::optional<JobRecord>> get(std::string job_id) override;
  awaitable<std::vector<JobRecord>> list(JobState state, std::size_t limit) override;
  awaitable<QueueCounts> counts() override;
  awaitable<std::vector<JobRecord>> dead_letters(std::size_t limit) override;
  awaitable<void> set_log_tail(std::string job_id, std::string tail) override;
  awaitable<std::string> append_event(nlohmann::json event) override;
  awaitable<std::vector<QueueEvent>> read_events(std::string after_id, std::size_t count) override;
  std::unique_ptr<CancelSubscription> subscribe_cancellations(CancelHandler handler) override;
  awaitable<void> heartbeat(RouterRecord record, Duration keep) override;
  awaitable<std::vector<RouterRecord>> routers() override;
  awaitable<void> set_affinity(std::string snapshot_key, std::string host_id) override;
  awaitable<void> drop_affinity(std::string snapshot_key, std::string host_id) override;
  awaitable<std::string> begin_build(std::string snapshot_key, std::string job_id,
                                     bool take) override;
  awaitable<BuildWait> wait_for_build(const LeaseHandle& lease, std::string snapshot_key,
                                      std::string builder, Duration poll,
                                      Duration max_wait) override;
  awaitable<std::size_t> end_build(std::string snapshot_key, std::string job_id,
                                   std::string host_id) override;
  awaitable<std::map<std::string, std::string>> builds() override;

  // --- Scripting ---
  // The next `times` calls of `op` throw `error` (after the calls already
  // scripted for that op).
  void fail_next(Op op, std::exception_ptr error, int times = 1,
                 FaultPoint point = FaultPoint::before);
  // While down, every call throws redis::ConnectionError("connection refused")
  // before doing anything, and cancel messages published meanwhile are lost.
  void set_down(bool down);
  bool down() const { return down_; }
  // Cancels of running jobs are recorded, but subscribers hear nothing.
  void drop_cancel_messages(bool drop) { drop_cancel_messages_ = drop; }
  // An entry XADDed by another producer: `job_field` is the entry's "job"
  // value (any text, valid or not); nullopt = an entry without that field.
  void add_raw_entry(const std::string& queue, std::optional<std::string> job_field);
  // Wakes blocked claims to look again (after the test moved its clock).
  void wake_claimers();

  // Errors as the real client throws them.
  static std::exception_ptr connection_error(const std::string& command = "EVALSHA");
  static std::exception_ptr loading_error(const std::string& command = "EVALSHA");

  // --- Inspection (synchronous, no fault applies) ---
  std::size_t calls(Op op) const;
  std::optional<JobRecord> record(const std::string& id) const;
  std::vector<QueueEvent> events() const;
  // Event types in order ("job.queued", ...), optionally of one job only.
  std::vector<std::string> event_types(const std::string& job_id = "") const;
  // Jobs holding (or reserved) a concurrency key right now.
  std::vector<std::string> held_keys(const std::string& key) const;
  // The host a snapshot key's affinity hint names ("" none).
  std::string affinity_of(const std::string& snapshot_key) const;
  // Stream entries of a queue not yet acknowledged (XLEN).
  std::size_t depth(const std::string& queue) const;
  std::int64_t now_ms() const;
  const MemoryQueueOptions& options() const { return options_; }

 private:
  struct Job;
  struct Entry;
  struct Pending;
  struct Fault {
    std::exception_ptr error;
    FaultPoint point;
  };
  struct Subscribers;
  struct ClaimRound;

  // Fault and counter bookkeeping around every operation.
  awaitable<void> begin(Op op);
  void end(Op op);
  std::optional<Fault> take_fault(Op op, FaultPoint point);

  // The scripts, synchronously.
  EnqueueResult do_enqueue(JobSpec spec);
  ClaimRound claim_round(const std::string& consumer, std::size_t max_jobs,
                         const EntryObserver& seen);
  std::vector<ClaimedJob> do_reclaim(const std::string& consumer, std::size_t max_jobs);
  std::optional<ClaimedJob> process_entry(const std::string& consumer, Entry entry, bool reclaim);
  std::optional<ClaimedJob> claim_job(Job& job, const std::string& consumer, const Entry& entry);
  std::optional<ClaimedJob> reclaim_job(Job& job, const std::string& consumer, const Entry& entry);
  std::optional<std::string> adopt_raw(const Entry& entry);
  Validated validate_raw(const Entry& entry) const;
  void reject_raw(const Entry& entry, std::string id, const std::string& reason);
  LeaseReport do_renew(const std::string& consumer, const std::vector<LeaseHandle>& leases);
  std::vector<ClaimedJob> do_held_by(const std::string& consumer);
  JobState do_mark_running(const LeaseHandle& lease, const RunInfo& info);
  FinishOutcome do_finish(const LeaseHandle& lease, const JobResult& result);
  JobRecord do_fail_attempt(const LeaseHandle& lease, const std::string& reason, bool retryable);
  void do_hand_back(const LeaseHandle& lease, const std::string& reason, Duration delay);
  std::size_t do_promote();
  CancelResult do_cancel(const std::string& job_id);
  std::vector<JobRecord> do_list(JobState state, std::size_t limit);
  QueueCounts do_counts();

  // Shared steps of the scripts (the prelude's functions).
  Job& held_job(const LeaseHandle& lease, const char* op);
  Job* find(const std::string& id);
  const Job* find(const std::string& id) const;
  void move_state(Job& job, JobState to);
  void set_state(Job& job, JobEvent event, const char* op);
  void emit(nlohmann::json event);
  void retire(Job& job);
  void ack(const std::string& entry_id);
  std::string add_entry(const std::string& queue, const std::string& job_id,
                        std::optional<std::string> raw);
  int room(const std::string& key);
  void hold_key(Job& job, const std::string& key);
  bool admit(Job& job, const std::string& key);
  void wake_waiters(const std::string& key, int n);
  void release_key(Job& job);
  void schedule(Job& job, std::int64_t due);
  void give_back(Job& job, std::int64_t due);
  // Onto the job's queue, or onto `host`'s own stream when that host is live.
  void to_stream(Job& job, const std::string& host);
  // The builder of `key` whose marker has not run out ("" none).
  std::string builder_of(const std::string& key);
  BuildWait do_wait_for_build(const LeaseHandle& lease, const std::string& key,
                              const std::string& builder, Duration poll, Duration max_wait);
  std::size_t do_end_build(const std::string& key, const std::string& job_id,
                           const std::string& host);
  void publish_cancel(const std::string& job_id, const std::string& router_id);
  void expire_records();
  std::optional<std::int64_t> next_due() const;
  bool host_live(const std::string& host) const;
  // The streams `consumer` reads: each queue's, then its host's own.
  std::vector<std::string> streams_of(const std::string& consumer) const;
  std::string next_stream_id(std::int64_t now);

  net::any_io_executor executor_;
  MemoryQueueOptions options_;
  Backoff backoff_;

  std::map<std::string, Job> jobs_;
  std::map<JobState, std::map<std::string, std::int64_t>> by_state_;  // id -> entered at
  std::map<std::string, std::deque<Entry>> undelivered_;              // queue -> entries
  std::map<std::uint64_t, Pending> pending_;                          // entry seq -> lease
  std::set<std::string> queues_seen_;
  std::multimap<std::int64_t, std::string> scheduled_;               // due -> job id
  std::map<std::string, std::map<std::string, std::int64_t>> keys_;  // key -> job -> expiry
  std::map<std::string, std::deque<std::string>> key_waiters_;       // key -> FIFO of job ids
  std::vector<QueueEvent> events_;
  std::map<std::string, std::pair<RouterRecord, std::int64_t>> routers_;  // id -> record, expiry
  std::map<std::string, std::string> affinity_;                           // snapshot key -> host
  std::map<std::string, std::int64_t> host_live_until_;  // host -> end of its lease (`hostlive:`)
  std::map<std::string, std::string> host_of_;           // consumer -> host (its heartbeat)
  std::map<std::string, std::pair<std::string, std::int64_t>> builds_;  // key -> builder, expiry
  std::map<std::string, std::set<std::string>> build_waiters_;          // key -> waiting jobs
  std::uint64_t entry_seq_ = 0;
  std::int64_t last_stream_ms_ = 0;
  std::uint64_t last_stream_seq_ = 0;

  std::map<Op, std::size_t> calls_;
  std::map<Op, std::deque<Fault>> faults_;
  bool down_ = false;
  bool drop_cancel_messages_ = false;
  std::shared_ptr<Subscribers> subscribers_;
  std::set<net::steady_timer*> claim_waiters_;
};

using MemoryQueuePtr = std::shared_ptr<MemoryQueue>;

std::string_view to_string(MemoryQueue::Op op);

}  // namespace warmstart::queue
