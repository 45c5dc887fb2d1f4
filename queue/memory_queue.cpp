#include "queue/memory_queue.hpp"

#include "common/redis.hpp"
#include "common/time.hpp"

#include <algorithm>
#include <charconv>
#include <utility>

namespace warmstart::queue {

// A stream entry: a job enqueued here, or a raw entry of another producer.
struct MemoryQueue::Entry {
  std::uint64_t seq = 0;
  std::string id;  // "<seq>-0"
  std::string queue;
  std::string job_id;                  // empty for a raw entry until it is read
  bool raw = false;                    // XADDed by another producer
  std::optional<std::string> payload;  // raw: the "job" field (nullopt: none)
  int attempt = 0;                     // the attempt its claim would run (0: raw, none)
};

// An entry delivered to a consumer and not acknowledged: the lease.
struct MemoryQueue::Pending {
  Entry entry;
  std::string consumer;
  std::int64_t idle_since = 0;  // last delivery or renewal (XCLAIM resets it)
};

// The job hash of the Redis adapter (docs/queue.md).
struct MemoryQueue::Job {
  JobRecord record;                         // waiting_for_key is the hash's `parked`
  std::string fingerprint;                  // empty: adopted from a raw entry
  std::string entry;                        // stream entry of the current dispatch
  std::string consumer;                     // who holds it
  std::string key;                          // concurrency key held or reserved (`ckey`)
  std::string on;                           // the host stream "<queue>@<host>" its entry is on
  std::int64_t on_since = 0;                // when it went onto that host stream (`affq:` score)
  std::string building;                     // the snapshot key it builds (`building`)
  std::optional<std::int64_t> build_since;  // its first wait for a builder (`buildsince`)
  int reclaims = 0;                         // lease expiries so far
  std::optional<std::int64_t> expires_at;   // retention of a finished record
};

struct MemoryQueue::Subscribers {
  std::map<int, CancelHandler> handlers;
  int next_id = 0;
  bool down = false;
};

struct MemoryQueue::ClaimRound {
  std::vector<ClaimedJob> jobs;
  bool read_any = false;  // entries were read (maybe all parked or skipped)
};

namespace {

std::optional<JobEvent> finish_event(JobState state) {
  switch (state) {
    case JobState::succeeded:
      return JobEvent::succeeded;
    case JobState::failed:
      return JobEvent::failed;
    case JobState::timed_out:
      return JobEvent::timed_out;
    case JobState::cancelled:
      return JobEvent::cancel;
    default:
      return std::nullopt;
  }
}

// "<ms>-<seq>" -> (ms, seq); a bare "<ms>" has seq 0 (like XRANGE).
std::pair<std::uint64_t, std::uint64_t> parse_stream_id(std::string_view id) {
  std::uint64_t ms = 0, seq = 0;
  auto dash = id.find('-');
  std::from_chars(id.data(), id.data() + std::min(dash, id.size()), ms);
  if (dash != std::string_view::npos)
    std::from_chars(id.data() + dash + 1, id.data() + id.size(), seq);
  return {ms, seq};
}

LeaseLost lease_lost(const char* op, const LeaseHandle& lease) {
  return LeaseLost(std::string(op) + ": job " + lease.job_id + " is no longer held by " +
                   lease.consumer + " (lease expired and reclaimed)");
}

QueueError job_missing(const char* op, const LeaseHandle& lease) {
  return QueueError(std::string(op) + ": job " + lease.job_id + " does not exist (expired?)");
}

QueueError illegal(const char* op, const std::string& id, JobState state) {
  return QueueError(std::string(op) + ": job " + id + " is " + std::string(to_string(state)) +
                    ": transition not allowed");
}

double seconds(Duration d) {
  return static_cast<double>(d.count()) / 1000.0;
}

class MemoryCancelSubscription final : public CancelSubscription {
 public:
  MemoryCancelSubscription(std::function<void()> unsubscribe, std::function<bool()> up)
      : unsubscribe_(std::move(unsubscribe)), up_(std::move(up)) {}
  ~MemoryCancelSubscription() override { unsubscribe_(); }
  // While the queue is down the subscription cannot be made: false at once
  // (the real one gives up at `timeout`).
  awaitable<bool> wait_ready(Duration) override { co_return up_(); }

 private:
  std::function<void()> unsubscribe_;
  std::function<bool()> up_;
};

}  // namespace

std::string_view to_string(MemoryQueue::Op op) {
  using Op = MemoryQueue::Op;
  switch (op) {
    case Op::enqueue:
      return "enqueue";
    case Op::claim:
      return "claim";
    case Op::renew_leases:
      return "renew_leases";
    case Op::held_by:
      return "held_by";
    case Op::reclaim_expired:
      return "reclaim_expired";
    case Op::mark_running:
      return "mark_running";
    case Op::finish:
      return "finish";
    case Op::fail_attempt:
      return "fail_attempt";
    case Op::hand_back:
      return "hand_back";
    case Op::promote_due:
      return "promote_due";
    case Op::cancel:
      return "cancel";
    case Op::get:
      return "get";
    case Op::list:
      return "list";
    case Op::counts:
      return "counts";
    case Op::dead_letters:
      return "dead_letters";
    case Op::set_log_tail:
      return "set_log_tail";
    case Op::append_event:
      return "append_event";
    case Op::read_events:
      return "read_events";
    case Op::heartbeat:
      return "heartbeat";
    case Op::routers:
      return "routers";
    case Op::set_affinity:
      return "set_affinity";
    case Op::drop_affinity:
      return "drop_affinity";
    case Op::begin_build:
      return "begin_build";
    case Op::wait_for_build:
      return "wait_for_build";
    case Op::end_build:
      return "end_build";
    case Op::builds:
      return "builds";
  }
  return "?";
}

MemoryQueue::MemoryQueue(net::any_io_executor executor, MemoryQueueOptions options)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      backoff_(options_.retry_backoff, options_.backoff_seed),
      subscribers_(std::make_shared<Subscribers>()) {}

MemoryQueue::~MemoryQueue() = default;

// ---------------------------------------------------------------- scripting

void MemoryQueue::fail_next(Op op, std::exception_ptr error, int times, FaultPoint point) {
  for (int i = 0; i < times; ++i) faults_[op].push_back(Fault{error, point});
}

void MemoryQueue::set_down(bool down) {
  down_ = down;
  subscribers_->down = down;
  if (down) wake_claimers();  // their blocked reads fail with the connection
}

void MemoryQueue::add_raw_entry(const std::string& queue, std::optional<std::string> job_field) {
  Entry e;
  e.raw = true;
  e.payload = std::move(job_field);
  e.seq = ++entry_seq_;
  e.id = std::to_string(e.seq) + "-0";
  e.queue = queue;
  undelivered_[queue].push_back(std::move(e));
  wake_claimers();
}

void MemoryQueue::wake_claimers() {
  for (auto* waiter : claim_waiters_) waiter->cancel();
}

std::exception_ptr MemoryQueue::connection_error(const std::string& command) {
  return std::make_exception_ptr(redis::ConnectionError(
      command, command + " on 127.0.0.1:6379 failed: connection refused (MemoryQueue)"));
}

std::exception_ptr MemoryQueue::loading_error(const std::string& command) {
  return std::make_exception_ptr(
      redis::ReplyError(command, "LOADING Redis is loading the dataset in memory"));
}

// --------------------------------------------------------------- inspection

std::size_t MemoryQueue::calls(Op op) const {
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

std::optional<JobRecord> MemoryQueue::record(const std::string& id) const {
  const Job* job = find(id);
  if (job == nullptr) return std::nullopt;
  return job->record;
}

std::vector<QueueEvent> MemoryQueue::events() const {
  return events_;
}

std::vector<std::string> MemoryQueue::event_types(const std::string& job_id) const {
  std::vector<std::string> out;
  for (const auto& e : events_) {
    if (job_id.empty() || e.body.value("job", "") == job_id)
      out.push_back(e.body.value("type", ""));
  }
  return out;
}

std::vector<std::string> MemoryQueue::held_keys(const std::string& key) const {
  std::vector<std::string> out;
  auto it = keys_.find(key);
  if (it == keys_.end()) return out;
  for (const auto& [id, expiry] : it->second) {
    if (expiry >= now_ms()) out.push_back(id);
  }
  return out;
}

namespace {
// "<queue>@<host>" (a host's own stream) -> "<queue>".
std::string queue_of_stream(const std::string& stream) {
  return stream.substr(0, stream.find('@'));
}
}  // namespace

std::size_t MemoryQueue::depth(const std::string& queue) const {
  std::size_t n = 0;
  for (const auto& [stream, entries] : undelivered_) {
    if (queue_of_stream(stream) == queue) n += entries.size();
  }
  for (const auto& [seq, p] : pending_) n += queue_of_stream(p.entry.queue) == queue;
  return n;
}

std::string MemoryQueue::affinity_of(const std::string& snapshot_key) const {
  auto it = affinity_.find(snapshot_key);
  return it == affinity_.end() ? std::string() : it->second;
}

bool MemoryQueue::host_live(const std::string& host) const {
  auto it = host_live_until_.find(host);
  return it != host_live_until_.end() && it->second > now_ms();
}

std::vector<std::string> MemoryQueue::streams_of(const std::string& consumer) const {
  std::vector<std::string> out = options_.queues;
  if (auto host = host_of_.find(consumer); host != host_of_.end() && !host->second.empty()) {
    for (const auto& q : options_.queues) out.push_back(q + "@" + host->second);
  }
  return out;
}

std::int64_t MemoryQueue::now_ms() const {
  return options_.now_ms ? options_.now_ms() : unix_ms_now();
}

// ------------------------------------------------------- around every call

awaitable<void> MemoryQueue::begin(Op op) {
  // One suspension, like a round trip: callers never complete inline.
  co_await net::post(executor_, use_awaitable);
  ++calls_[op];
  expire_records();
  if (down_) std::rethrow_exception(connection_error());
  if (auto fault = take_fault(op, FaultPoint::before)) std::rethrow_exception(fault->error);
}

void MemoryQueue::end(Op op) {
  if (auto fault = take_fault(op, FaultPoint::after)) std::rethrow_exception(fault->error);
}

std::optional<MemoryQueue::Fault> MemoryQueue::take_fault(Op op, FaultPoint point) {
  auto it = faults_.find(op);
  if (it == faults_.end() || it->second.empty() || it->second.front().point != point) {
    return std::nullopt;
  }
  Fault f = std::move(it->second.front());
  it->second.pop_front();
  return f;
}

// -------------------------------------------------------------- operations

awaitable<EnqueueResult> MemoryQueue::enqueue(JobSpec spec) {
  co_await begin(Op::enqueue);
  EnqueueResult out = do_enqueue(std::move(spec));
  end(Op::enqueue);
  co_return out;
}

awaitable<std::vector<ClaimedJob>> MemoryQueue::claim(std::string consumer, std::size_t max_jobs,
                                                      Duration block, EntryObserver seen) {
  co_await begin(Op::claim);
  const Clock::time_point until = Clock::now() + block;
  for (;;) {
    Duration wait =
        std::max(Duration(0), std::chrono::duration_cast<Duration>(until - Clock::now()));
    if (options_.promote_on_claim) {
      do_promote();
      // Wake up when the next retry is due, to promote it and read it.
      if (auto due = next_due(); due && wait.count() > 0) {
        wait = std::min(wait, std::max(Duration(1), Duration(*due - now_ms())));
      }
    }
    ClaimRound round = claim_round(consumer, max_jobs, seen);
    // Entries that were all parked or skipped do not end the wait.
    if (!round.jobs.empty() || Clock::now() >= until) {
      end(Op::claim);
      co_return std::move(round.jobs);
    }
    if (round.read_any) continue;
    // Blocks like XREADGROUP BLOCK: a new entry (or wake_claimers()) ends the wait.
    net::steady_timer timer(executor_, wait);
    claim_waiters_.insert(&timer);
    // Woken (cancelled by wake_claimers) or timed out: either way, look again.
    co_await timer.async_wait(net::as_tuple(use_awaitable));
    claim_waiters_.erase(&timer);
    auto cancelled = (co_await net::this_coro::cancellation_state).cancelled();
    if (cancelled != net::cancellation_type::none) {
      // The caller gave up (a deadline): claim nothing it would never see.
      throw boost::system::system_error(net::error::operation_aborted);
    }
    if (down_) std::rethrow_exception(connection_error("XREADGROUP"));
  }
}

awaitable<LeaseReport> MemoryQueue::renew_leases(std::string consumer,
                                                 std::vector<LeaseHandle> leases) {
  if (leases.empty()) co_return LeaseReport{};  // no round trip, like RedisQueue
  co_await begin(Op::renew_leases);
  LeaseReport out = do_renew(consumer, leases);
  end(Op::renew_leases);
  co_return out;
}

awaitable<std::vector<ClaimedJob>> MemoryQueue::held_by(std::string consumer) {
  co_await begin(Op::held_by);
  auto out = do_held_by(consumer);
  end(Op::held_by);
  co_return out;
}

awaitable<std::vector<ClaimedJob>> MemoryQueue::reclaim_expired(std::string consumer,
                                                                std::size_t max_jobs) {
  co_await begin(Op::reclaim_expired);
  auto out = do_reclaim(consumer, max_jobs);
  end(Op::reclaim_expired);
  co_return out;
}

awaitable<JobState> MemoryQueue::mark_running(const LeaseHandle& lease, RunInfo info) {
  LeaseHandle l = lease;  // the reference may not outlive the first suspension
  co_await begin(Op::mark_running);
  JobState out = do_mark_running(l, info);
  end(Op::mark_running);
  co_return out;
}

awaitable<FinishOutcome> MemoryQueue::finish(const LeaseHandle& lease, JobResult result) {
  if (!is_terminal(result.state)) {
    throw std::invalid_argument("finish() needs a terminal state, got " +
                                std::string(to_string(result.state)));
  }
  LeaseHandle l = lease;
  co_await begin(Op::finish);
  FinishOutcome out = do_finish(l, result);
  end(Op::finish);
  co_return out;
}

awaitable<JobRecord> MemoryQueue::fail_attempt(const LeaseHandle& lease, std::string reason,
                                               bool retryable) {
  LeaseHandle l = lease;
  co_await begin(Op::fail_attempt);
  JobRecord out = do_fail_attempt(l, reason, retryable);
  end(Op::fail_attempt);
  co_return out;
}

awaitable<void> MemoryQueue::hand_back(const LeaseHandle& lease, std::string reason,
                                       Duration delay) {
  LeaseHandle l = lease;
  co_await begin(Op::hand_back);
  do_hand_back(l, reason, delay);
  end(Op::hand_back);
}

awaitable<std::size_t> MemoryQueue::promote_due() {
  co_await begin(Op::promote_due);
  std::size_t n = do_promote();
  end(Op::promote_due);
  co_return n;
}

awaitable<CancelResult> MemoryQueue::cancel(std::string job_id) {
  co_await begin(Op::cancel);
  CancelResult out = do_cancel(job_id);
  end(Op::cancel);
  co_return out;
}

awaitable<std::optional<JobRecord>> MemoryQueue::get(std::string job_id) {
  co_await begin(Op::get);
  auto out = record(job_id);
  end(Op::get);
  co_return out;
}

awaitable<std::vector<JobRecord>> MemoryQueue::list(JobState state, std::size_t limit) {
  co_await begin(Op::list);
  auto out = do_list(state, limit);
  end(Op::list);
  co_return out;
}

awaitable<QueueCounts> MemoryQueue::counts() {
  co_await begin(Op::counts);
  QueueCounts out = do_counts();
  end(Op::counts);
  co_return out;
}

awaitable<std::vector<JobRecord>> MemoryQueue::dead_letters(std::size_t limit) {
  co_await begin(Op::dead_letters);
  auto out = do_list(JobState::failed, limit);
  end(Op::dead_letters);
  co_return out;
}

awaitable<void> MemoryQueue::set_log_tail(std::string job_id, std::string tail) {
  co_await begin(Op::set_log_tail);
  if (Job* job = find(job_id)) {
    job->record.log_tail = keep_tail(std::move(tail), options_.log_tail_max_bytes);
  }
  end(Op::set_log_tail);
}

awaitable<std::string> MemoryQueue::append_event(nlohmann::json event) {
  if (!event.is_object()) throw std::invalid_argument("an event must be a JSON object");
  co_await begin(Op::append_event);
  event.erase("id");  // the stream assigns it
  emit(std::move(event));
  std::string id = events_.back().id;
  end(Op::append_event);
  co_return id;
}

awaitable<void> MemoryQueue::heartbeat(RouterRecord record, Duration keep) {
  co_await begin(Op::heartbeat);
  const std::int64_t expires =
      now_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(keep).count();
  std::string id = record.id;
  if (!record.host_id.empty()) {
    host_of_[id] = record.host_id;
    if (record.draining) {
      host_live_until_.erase(record.host_id);
    } else {
      host_live_until_[record.host_id] = now_ms() + std::max<std::int64_t>(1, record.lease_ms);
    }
  }
  routers_[id] = {std::move(record), expires};
  end(Op::heartbeat);
}

awaitable<void> MemoryQueue::set_affinity(std::string snapshot_key, std::string host_id) {
  co_await begin(Op::set_affinity);
  affinity_[snapshot_key] = host_id;
  end(Op::set_affinity);
}

awaitable<void> MemoryQueue::drop_affinity(std::string snapshot_key, std::string host_id) {
  co_await begin(Op::drop_affinity);
  if (auto it = affinity_.find(snapshot_key); it != affinity_.end() && it->second == host_id) {
    affinity_.erase(it);
  }
  end(Op::drop_affinity);
}

awaitable<std::string> MemoryQueue::begin_build(std::string snapshot_key, std::string job_id,
                                                bool take) {
  co_await begin(Op::begin_build);
  std::string holder = builder_of(snapshot_key);
  const std::int64_t until = now_ms() + options_.lease_timeout.count();
  if (holder == job_id) {
    builds_[snapshot_key].second = until;
  } else if (holder.empty() && take) {
    if (Job* job = find(job_id)) {
      builds_[snapshot_key] = {job_id, until};
      job->building = snapshot_key;
      holder = job_id;
      emit({{"type", "snapshot.build_started"}, {"key", snapshot_key}, {"job", job_id}});
    }
  }
  end(Op::begin_build);
  co_return holder;
}

awaitable<BuildWait> MemoryQueue::wait_for_build(const LeaseHandle& lease, std::string snapshot_key,
                                                 std::string builder, Duration poll,
                                                 Duration max_wait) {
  LeaseHandle l = lease;
  co_await begin(Op::wait_for_build);
  BuildWait out = do_wait_for_build(l, snapshot_key, builder, poll, max_wait);
  end(Op::wait_for_build);
  co_return out;
}

awaitable<std::size_t> MemoryQueue::end_build(std::string snapshot_key, std::string job_id,
                                              std::string host_id) {
  co_await begin(Op::end_build);
  std::size_t n = do_end_build(snapshot_key, job_id, host_id);
  end(Op::end_build);
  co_return n;
}

awaitable<std::map<std::string, std::string>> MemoryQueue::builds() {
  co_await begin(Op::builds);
  std::map<std::string, std::string> out;
  std::vector<std::string> keys;
  for (const auto& [key, b] : builds_) keys.push_back(key);
  for (const auto& key : keys) {
    if (std::string b = builder_of(key); !b.empty()) out.emplace(key, b);
  }
  end(Op::builds);
  co_return out;
}

awaitable<std::vector<RouterRecord>> MemoryQueue::routers() {
  co_await begin(Op::routers);
  std::vector<RouterRecord> out;
  const std::int64_t now = now_ms();
  for (auto it = routers_.begin(); it != routers_.end();) {
    if (it->second.second <= now) {
      it = routers_.erase(it);  // like the Redis key's expiry
      continue;
    }
    out.push_back(it->second.first);
    ++it;
  }
  end(Op::routers);
  co_return out;
}

awaitable<std::vector<QueueEvent>> MemoryQueue::read_events(std::string after_id,
                                                            std::size_t count) {
  co_await begin(Op::read_events);
  std::vector<QueueEvent> out;
  const bool from_start = after_id.empty() || after_id == "0";
  const auto after = parse_stream_id(after_id);
  for (const auto& e : events_) {
    if (out.size() >= std::max<std::size_t>(count, 1)) break;
    if (from_start || parse_stream_id(e.id) > after) out.push_back(e);
  }
  end(Op::read_events);
  co_return out;
}

std::unique_ptr<CancelSubscription> MemoryQueue::subscribe_cancellations(CancelHandler handler) {
  int id = subscribers_->next_id++;
  subscribers_->handlers.emplace(id, std::move(handler));
  std::weak_ptr<Subscribers> weak = subscribers_;
  auto unsubscribe = [weak, id] {
    if (auto s = weak.lock()) s->handlers.erase(id);
  };
  auto up = [weak] {
    auto s = weak.lock();
    return s && !s->down;
  };
  return std::make_unique<MemoryCancelSubscription>(std::move(unsubscribe), std::move(up));
}

// ------------------------------------------------------------ the scripts

EnqueueResult MemoryQueue::do_enqueue(JobSpec spec) {
  if (spec.id.empty()) spec.id = generate_job_id();
  // The spec may have been built in code: hold it to the same rules as JSON.
  Validated v = validate_job(spec.to_json(), options_.validation);
  if (!v.ok()) throw InvalidJob("invalid job " + spec.id + ": " + v.reason);
  JobSpec checked = std::move(*v.spec);
  std::string fingerprint = checked.fingerprint();
  if (const Job* existing = find(checked.id)) {
    if (!existing->fingerprint.empty() && existing->fingerprint != fingerprint) {
      throw IdConflict(checked.id, existing->fingerprint, fingerprint);
    }
    return EnqueueResult{existing->record, false};
  }
  Job job;
  job.record.id = checked.id;
  job.record.created_at = now_ms();
  job.record.spec = checked;
  job.fingerprint = std::move(fingerprint);
  Job& stored = jobs_.emplace(checked.id, std::move(job)).first->second;
  // Snapshot affinity: to the live host holding the key's snapshot.
  std::string host;
  if (checked.snapshot && checked.snapshot->reuse) {
    if (auto it = affinity_.find(checked.snapshot->key); it != affinity_.end()) host = it->second;
  }
  to_stream(stored, host);
  by_state_[JobState::queued][checked.id] = now_ms();
  queues_seen_.insert(checked.queue);
  nlohmann::json queued = {{"type", "job.queued"}, {"job", checked.id}, {"queue", checked.queue}};
  if (!stored.record.affinity_host.empty()) queued["host"] = stored.record.affinity_host;
  emit(std::move(queued));
  // Created: what was just written (RedisQueue returns no more either).
  JobRecord out;
  out.id = stored.record.id;
  out.created_at = stored.record.created_at;
  out.spec = std::move(checked);
  return EnqueueResult{std::move(out), true};
}

MemoryQueue::ClaimRound MemoryQueue::claim_round(const std::string& consumer, std::size_t max_jobs,
                                                 const EntryObserver& seen) {
  ClaimRound round;
  // Like XREADGROUP COUNT n over several streams: up to n entries from each.
  for (const auto& queue : streams_of(consumer)) {
    auto& entries = undelivered_[queue];
    for (std::size_t i = 0; i < std::max<std::size_t>(max_jobs, 1) && !entries.empty(); ++i) {
      Entry entry = std::move(entries.front());
      entries.pop_front();
      round.read_any = true;
      // As RedisQueue: a valid entry of the shared stream that names its attempt.
      const Job* known = entry.raw ? nullptr : find(entry.job_id);
      if (seen && known != nullptr && entry.attempt > 0 &&
          entry.queue.find('@') == std::string::npos) {
        seen(EntrySeen{known->record.id, entry.attempt, known->record.spec});
      }
      if (auto job = process_entry(consumer, std::move(entry), false)) {
        round.jobs.push_back(std::move(*job));
      }
    }
  }
  return round;
}

std::vector<ClaimedJob> MemoryQueue::do_reclaim(const std::string& consumer, std::size_t max_jobs) {
  std::vector<ClaimedJob> out;
  const std::int64_t now = now_ms();
  for (const auto& queue : options_.queues) {
    // XAUTOCLAIM min-idle = lease_timeout: the idle entries change owner (of
    // the queue's stream and of every host's own stream of it).
    std::vector<Entry> expired;
    for (auto& [seq, p] : pending_) {
      if (expired.size() >= std::max<std::size_t>(max_jobs, 1)) break;
      if (queue_of_stream(p.entry.queue) != queue ||
          now - p.idle_since < options_.lease_timeout.count()) {
        continue;
      }
      p.consumer = consumer;
      p.idle_since = now;
      expired.push_back(p.entry);
    }
    for (auto& entry : expired) {
      if (auto job = process_entry(consumer, std::move(entry), true))
        out.push_back(std::move(*job));
    }
  }
  return out;
}

// The claim script's body for one entry.
std::optional<ClaimedJob> MemoryQueue::process_entry(const std::string& consumer, Entry entry,
                                                     bool reclaim) {
  if (entry.raw && entry.job_id.empty()) {
    auto id = adopt_raw(entry);
    if (!id) return std::nullopt;
    entry.job_id = *id;
  }
  Job* job = find(entry.job_id);
  if (job == nullptr) {
    ack(entry.id);
    return std::nullopt;
  }
  const JobState state = job->record.state;
  // A queued job's current entry is the one its record names, on the stream it
  // names: another is a stale copy (promoted off a host's stream).
  const bool stale =
      state == JobState::queued &&
      ((!job->entry.empty() && job->entry != entry.id) ||
       job->on != (entry.queue.find('@') != std::string::npos ? entry.queue : std::string()));
  const bool claimable =
      !stale && state == JobState::queued && transition(state, JobEvent::claimed);
  if (claimable && !admit(*job, job->record.spec.concurrency_key)) {
    by_state_[JobState::queued].emplace(job->record.id, now_ms());  // an adopted job is new here
    ack(entry.id);
    return std::nullopt;  // parked: waits off the stream for its key
  }
  if (claimable) return claim_job(*job, consumer, entry);
  if (reclaim && job->entry == entry.id && transition(state, JobEvent::reclaimed)) {
    return reclaim_job(*job, consumer, entry);
  }
  // Cancelled, finished, scheduled, or a stale duplicate: nothing to run.
  ack(entry.id);
  return std::nullopt;
}

std::optional<ClaimedJob> MemoryQueue::claim_job(Job& job, const std::string& consumer,
                                                 const Entry& entry) {
  JobRecord& r = job.record;
  set_state(job, JobEvent::claimed, "claim");
  r.attempts += 1;
  job.entry = entry.id;
  job.on.clear();
  job.consumer = consumer;
  r.router_id = consumer;
  if (r.attempts > 1) {
    // A retry: clear what the previous attempt recorded.
    r.image.clear();
    r.container_id.clear();
    r.exit_code.reset();
    r.from_snapshot = r.snapshot_fallback = false;
    r.started_at.reset();
    r.due_at.reset();
    r.snapshot_seen.clear();
    r.snapshot_build_ms = 0;
  }
  Pending& p = pending_[entry.seq];
  p.entry = entry;
  p.entry.job_id = r.id;
  p.consumer = consumer;
  p.idle_since = now_ms();
  // RedisQueue builds a fresh claim's record from the spec alone.
  ClaimedJob out;
  out.record.id = r.id;
  out.record.state = r.state;
  out.record.attempts = r.attempts;
  out.record.created_at = r.created_at;
  out.record.router_id = consumer;
  out.record.affinity_host = r.affinity_host;
  out.record.spec = r.spec;
  out.lease = LeaseHandle{r.id, entry.queue, entry.id, consumer, r.attempts};
  return out;
}

std::optional<ClaimedJob> MemoryQueue::reclaim_job(Job& job, const std::string& consumer,
                                                   const Entry& entry) {
  JobRecord& r = job.record;
  if (++job.reclaims > options_.max_reclaims) {
    std::string reason =
        "lease expired " + std::to_string(job.reclaims) + " times: routers lost the job";
    set_state(job, JobEvent::failed, "claim");
    r.error = reason;
    r.finished_at = now_ms();
    emit({{"type", "job.failed"}, {"job", r.id}, {"error", reason}});
    retire(job);
    ack(entry.id);
    release_key(job);
    return std::nullopt;
  }
  // It ran already: it keeps its key whatever the limit says now.
  if (!r.spec.concurrency_key.empty()) hold_key(job, r.spec.concurrency_key);
  job.consumer = consumer;
  r.router_id = consumer;
  return ClaimedJob{r, LeaseHandle{r.id, entry.queue, entry.id, consumer, r.attempts}};
}

// A raw entry: its validated job's id (adopted when new), or nullopt when it
// was rejected and recorded `failed` with the reason.
std::optional<std::string> MemoryQueue::adopt_raw(const Entry& entry) {
  Validated v = validate_raw(entry);
  if (!v.ok()) {
    reject_raw(entry, v.id, v.reason);
    return std::nullopt;
  }
  if (find(v.id) == nullptr) {
    Job job;
    job.record.id = v.id;
    job.record.created_at = now_ms();
    job.record.spec = std::move(*v.spec);
    jobs_.emplace(v.id, std::move(job));  // not in the state index until it moves
    queues_seen_.insert(entry.queue);
    emit({{"type", "job.queued"}, {"job", v.id}, {"queue", entry.queue}});
  }
  return v.id;
}

// What RedisQueue::process_entries makes of an entry before its script runs.
Validated MemoryQueue::validate_raw(const Entry& entry) const {
  Validated out;
  if (!entry.payload) {
    out.reason = "stream entry has no \"job\" field";
    return out;
  }
  auto j = nlohmann::json::parse(*entry.payload, nullptr, false);
  if (j.is_discarded()) {
    out.reason = "job is not valid JSON";
    return out;
  }
  // An id-less raw job gets an id derived from its entry, so a redelivery
  // maps to the same record.
  if (j.is_object() && !j.contains("id")) j["id"] = "s-" + entry.queue + "-" + entry.id;
  if (j.is_object() && !j.contains("queue")) j["queue"] = entry.queue;
  ValidationOptions validation = options_.validation;
  validation.generate_id = false;
  out = validate_job(j, validation);
  if (out.ok()) out.spec->queue = entry.queue;  // the stream it is on wins
  if (!out.ok()) out.reason = "invalid job: " + out.reason;
  return out;
}

// A malformed entry ends `failed` with the reason, acknowledged.
void MemoryQueue::reject_raw(const Entry& entry, std::string id, const std::string& reason) {
  // It never touches an existing record, whatever id it claims.
  if (id.empty() || find(id) != nullptr) id = "raw-" + entry.queue + "-" + entry.id;
  Job job;
  job.record.id = id;
  job.record.state = JobState::failed;
  job.record.created_at = job.record.finished_at.emplace(now_ms());
  job.record.error = reason;
  job.record.spec.id = id;
  job.record.spec.queue = entry.queue;
  job.entry = entry.id;
  Job& stored = jobs_.emplace(id, std::move(job)).first->second;
  by_state_[JobState::failed][id] = now_ms();
  emit({{"type", "job.failed"}, {"job", id}, {"error", reason}});
  retire(stored);
  ack(entry.id);
}

LeaseReport MemoryQueue::do_renew(const std::string& consumer,
                                  const std::vector<LeaseHandle>& leases) {
  LeaseReport report;
  for (const auto& lease : leases) {
    Job* job = find(lease.job_id);
    bool held =
        job != nullptr && job->consumer == consumer && job->entry == lease.entry_id &&
        (job->record.state == JobState::running || job->record.state == JobState::cancelled);
    auto p = pending_.find(parse_stream_id(lease.entry_id).first);
    held = held && p != pending_.end() && p->second.entry.queue == lease.queue;
    if (!held) {
      report.lost.push_back(lease.job_id);
      continue;
    }
    // XCLAIM ... JUSTID: the idle time starts again.
    p->second.consumer = consumer;
    p->second.idle_since = now_ms();
    // Also takes back a hold that ran out while renewals were late.
    if (!job->key.empty()) hold_key(*job, job->key);
    if (!job->building.empty() && builder_of(job->building) == job->record.id) {
      builds_[job->building].second = now_ms() + options_.lease_timeout.count();
    }
    if (job->record.state == JobState::cancelled) report.cancelled.push_back(lease.job_id);
  }
  return report;
}

std::vector<ClaimedJob> MemoryQueue::do_held_by(const std::string& consumer) {
  std::vector<ClaimedJob> out;
  for (const auto& queue : streams_of(consumer)) {
    for (const auto& [seq, p] : pending_) {
      if (p.consumer != consumer || p.entry.queue != queue) continue;
      const Job* job = find(p.entry.job_id);
      if (job == nullptr) continue;
      const JobState s = job->record.state;
      if (is_terminal(s) && s != JobState::cancelled) continue;
      out.push_back(ClaimedJob{job->record, LeaseHandle{job->record.id, queue, p.entry.id, consumer,
                                                        job->record.attempts}});
    }
  }
  return out;
}

JobState MemoryQueue::do_mark_running(const LeaseHandle& lease, const RunInfo& info) {
  Job* job = find(lease.job_id);
  if (job == nullptr || job->entry != lease.entry_id || job->consumer != lease.consumer) {
    throw lease_lost("mark_running", lease);
  }
  JobRecord& r = job->record;
  if (r.state == JobState::cancelled) return r.state;
  set_state(*job, JobEvent::started, "mark_running");
  r.image = info.image;
  r.from_snapshot = info.from_snapshot;
  r.snapshot_fallback = info.snapshot_fallback;
  r.container_id = info.container_id;
  r.router_id = info.router_id.empty() ? lease.consumer : info.router_id;
  r.host = info.host_id;
  if (info.snapshot_seen) {
    r.snapshot_seen = *info.snapshot_seen;
    r.snapshot_build_ms = info.snapshot_build_ms;
  }
  r.started_at = now_ms();
  nlohmann::json started = {{"type", "job.started"},
                            {"job", r.id},
                            {"image", info.image},
                            {"from_snapshot", info.from_snapshot},
                            {"container", info.container_id},
                            {"router", r.router_id},
                            {"attempt", r.attempts}};
  if (!r.host.empty()) started["host"] = r.host;
  if (!r.affinity().empty()) started["affinity"] = r.affinity();
  emit(std::move(started));
  return r.state;
}

// Throws LeaseLost / QueueError like the scripts' {'lost'} / {'missing'}.
MemoryQueue::Job& MemoryQueue::held_job(const LeaseHandle& lease, const char* op) {
  Job* job = find(lease.job_id);
  if (job == nullptr) {
    ack(lease.entry_id);
    throw job_missing(op, lease);
  }
  if (job->entry != lease.entry_id || job->consumer != lease.consumer) throw lease_lost(op, lease);
  return *job;
}

FinishOutcome MemoryQueue::do_finish(const LeaseHandle& lease, const JobResult& result) {
  Job& job = held_job(lease, "finish");
  JobRecord& r = job.record;
  if (!result.log_tail.empty())
    r.log_tail = keep_tail(result.log_tail, options_.log_tail_max_bytes);
  if (!transition(r.state, *finish_event(result.state))) {
    // Cancelled while running: the router's report only releases the entry.
    if (!is_terminal(r.state)) throw illegal("finish", r.id, r.state);
    ack(lease.entry_id);
    release_key(job);
    if (!result.snapshot_error.empty()) r.snapshot_error = result.snapshot_error;
    return FinishOutcome{r.id, r.state, r.finished_at.value_or(0), r.exit_code, r.error};
  }
  set_state(job, *finish_event(result.state), "finish");
  r.finished_at = now_ms();
  r.exit_code = result.exit_code;
  r.error = result.error;
  r.snapshot_error = result.snapshot_error;
  nlohmann::json ev = {{"type", "job." + std::string(to_string(r.state))}, {"job", r.id}};
  if (r.exit_code) ev["exit_code"] = *r.exit_code;
  if (!r.error.empty()) ev["error"] = r.error;
  if (!r.snapshot_error.empty()) ev["snapshot_error"] = r.snapshot_error;
  emit(std::move(ev));
  ack(lease.entry_id);
  retire(job);
  release_key(job);
  return FinishOutcome{r.id, r.state, *r.finished_at, r.exit_code, r.error};
}

JobRecord MemoryQueue::do_fail_attempt(const LeaseHandle& lease, const std::string& reason,
                                       bool retryable) {
  // Drawn for every call, as RedisQueue draws it before its round trip.
  const Duration delay = backoff_.delay(std::max(lease.attempt, 1));
  Job& job = held_job(lease, "fail_attempt");
  JobRecord& r = job.record;
  if (is_terminal(r.state)) {
    ack(lease.entry_id);
    release_key(job);
    return r;
  }
  release_key(job);
  const int max = r.spec.max_attempts;
  if (retryable && r.attempts < max) {
    set_state(job, JobEvent::retry_scheduled, "fail_attempt");
    r.error = reason;
    schedule(job, now_ms() + delay.count());
    ack(lease.entry_id);
    emit({{"type", "job.retry_scheduled"},
          {"job", r.id},
          {"attempt", r.attempts},
          {"delay_s", seconds(delay)},
          {"error", reason}});
    return r;
  }
  set_state(job, JobEvent::failed, "fail_attempt");
  r.error = reason;
  if (retryable) {
    r.error +=
        " (attempts exhausted: " + std::to_string(r.attempts) + "/" + std::to_string(max) + ")";
  }
  r.finished_at = now_ms();
  emit({{"type", "job.failed"}, {"job", r.id}, {"error", r.error}});
  ack(lease.entry_id);
  retire(job);
  return r;
}

void MemoryQueue::do_hand_back(const LeaseHandle& lease, const std::string& reason,
                               Duration delay) {
  Job& job = held_job(lease, "hand_back");
  JobRecord& r = job.record;
  ack(lease.entry_id);
  release_key(job);
  if (is_terminal(r.state)) return;  // cancelled meanwhile: only released
  give_back(job, now_ms() + delay.count());
  emit({{"type", "job.deferred"}, {"job", r.id}, {"reason", reason}, {"delay_s", seconds(delay)}});
}

std::size_t MemoryQueue::do_promote() {
  const std::int64_t now = now_ms();
  std::vector<std::string> due;
  for (auto it = scheduled_.begin(); it != scheduled_.end() && it->first <= now; ++it) {
    if (due.size() >= 1000) break;
    due.push_back(it->second);
  }
  std::size_t n = 0;
  for (const auto& id : due) {
    std::erase_if(scheduled_, [&](const auto& s) { return s.second == id; });
    Job* job = find(id);
    if (job == nullptr || !transition(job->record.state, JobEvent::retry_due)) continue;
    set_state(*job, JobEvent::retry_due, "promote");
    to_stream(*job, "");
    job->record.due_at.reset();
    job->record.waiting_for_snapshot.clear();
    ++n;
  }
  // Snapshot affinity: off its host's stream once it waited affinity_wait, at
  // once when no router of the host is live.
  for (auto& [id, job] : jobs_) {
    if (job.on.empty() || job.record.state != JobState::queued ||
        !job.record.waiting_for_key.empty()) {
      continue;
    }
    const std::string& host = job.record.affinity_host;
    const bool live = host_live(host);
    if (live && now - job.on_since <= options_.affinity_wait.count()) continue;
    ack(job.entry);  // XDEL from the host's stream
    job.on.clear();
    job.entry = add_entry(job.record.spec.queue, id, std::nullopt);
    emit({{"type", "job.affinity_released"},
          {"job", id},
          {"host", host},
          {"reason", live ? "waited" : "host lost"}});
    ++n;
  }
  // Keys whose holders' leases ran out (their router died) let waiters in.
  std::vector<std::string> waiting;
  for (const auto& [key, ids] : key_waiters_) waiting.push_back(key);
  for (const auto& key : waiting) {
    if (int free = room(key); free > 0) wake_waiters(key, free);
  }
  return n;
}

CancelResult MemoryQueue::do_cancel(const std::string& job_id) {
  Job* job = find(job_id);
  if (job == nullptr) return CancelResult{CancelOutcome::not_found, std::nullopt};
  const JobState previous = job->record.state;
  if (!transition(previous, JobEvent::cancel)) {
    return CancelResult{CancelOutcome::already_finished, previous};
  }
  CancelOutcome outcome = CancelOutcome::cancelled;
  if (previous == JobState::queued) {
    ack(job->entry);  // XDEL: never delivered
    if (const std::string key = job->record.waiting_for_key; !key.empty()) {
      std::erase(key_waiters_[key], job_id);
      if (key_waiters_[key].empty()) key_waiters_.erase(key);
      job->record.waiting_for_key.clear();
    }
    release_key(*job);  // a woken waiter's reservation
  } else if (previous == JobState::scheduled) {
    std::erase_if(scheduled_, [&](const auto& s) { return s.second == job_id; });
  } else if (previous == JobState::running) {
    publish_cancel(job_id, job->record.router_id);
    outcome = CancelOutcome::router_notified;
  }
  set_state(*job, JobEvent::cancel, "cancel");
  job->record.finished_at = now_ms();
  emit({{"type", "job.cancelled"},
        {"job", job_id},
        {"previous_state", std::string(to_string(previous))}});
  retire(*job);
  return CancelResult{outcome, previous};
}

std::vector<JobRecord> MemoryQueue::do_list(JobState state, std::size_t limit) {
  std::vector<std::pair<std::int64_t, std::string>> order;
  for (const auto& [id, at] : by_state_[state]) order.emplace_back(at, id);
  // ZREVRANGE: newest first, ties by id descending.
  std::sort(order.rbegin(), order.rend());
  std::vector<JobRecord> out;
  for (const auto& [at, id] : order) {
    if (out.size() >= limit) break;
    if (const Job* job = find(id)) out.push_back(job->record);
  }
  return out;
}

QueueCounts MemoryQueue::do_counts() {
  QueueCounts out;
  for (JobState s : kAllStates) out.by_state[s] = static_cast<std::int64_t>(by_state_[s].size());
  for (const auto& q : queues_seen_) out.depth[q] = static_cast<std::int64_t>(depth(q));
  for (const auto& [due, id] : scheduled_) out.scheduled_due += due <= now_ms();
  return out;
}

// ------------------------------------------------ the prelude's functions

MemoryQueue::Job* MemoryQueue::find(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const MemoryQueue::Job* MemoryQueue::find(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void MemoryQueue::move_state(Job& job, JobState to) {
  by_state_[job.record.state].erase(job.record.id);
  by_state_[to][job.record.id] = now_ms();
  job.record.state = to;
}

// Every state change goes through the one transition table.
void MemoryQueue::set_state(Job& job, JobEvent event, const char* op) {
  auto to = transition(job.record.state, event);
  if (!to) throw illegal(op, job.record.id, job.record.state);
  move_state(job, *to);
}

void MemoryQueue::emit(nlohmann::json event) {
  const std::int64_t now = now_ms();
  event["ts"] = rfc3339(now);
  events_.push_back(QueueEvent{next_stream_id(now), std::move(event)});
  events_.back().body["id"] = events_.back().id;
  if (events_.size() > options_.events_max) events_.erase(events_.begin());
}

void MemoryQueue::retire(Job& job) {
  job.expires_at = now_ms() + options_.retention.count();
}

// XACK + XDEL: the entry leaves the pending list and the stream.
void MemoryQueue::ack(const std::string& entry_id) {
  const std::uint64_t seq = parse_stream_id(entry_id).first;
  pending_.erase(seq);
  for (auto& [queue, entries] : undelivered_) {
    std::erase_if(entries, [&](const Entry& e) { return e.seq == seq; });
  }
}

std::string MemoryQueue::add_entry(const std::string& queue, const std::string& job_id,
                                   std::optional<std::string> raw) {
  Entry e;
  e.seq = ++entry_seq_;
  e.id = std::to_string(e.seq) + "-0";
  e.queue = queue;
  e.job_id = job_id;
  e.payload = std::move(raw);
  if (const Job* job = find(job_id)) e.attempt = job->record.attempts + 1;
  std::string id = e.id;
  undelivered_[queue].push_back(std::move(e));
  wake_claimers();  // XADD ends a blocked XREADGROUP
  return id;
}

// Free places of a key; holds whose lease ran out no longer count.
int MemoryQueue::room(const std::string& key) {
  auto& holders = keys_[key];
  std::erase_if(holders, [now = now_ms()](const auto& h) { return h.second < now; });
  return options_.concurrency_key_limit - static_cast<int>(holders.size());
}

void MemoryQueue::hold_key(Job& job, const std::string& key) {
  keys_[key][job.record.id] = now_ms() + options_.lease_timeout.count();
  job.key = key;
}

// Takes the key for a job about to run, or parks it behind the key's waiters
// (FIFO: a newcomer never overtakes them). True when it may run.
bool MemoryQueue::admit(Job& job, const std::string& key) {
  if (key.empty()) return true;
  if (keys_[key].count(job.record.id) > 0) {
    hold_key(job, key);  // reserved when it was woken, or held across a reclaim
    return true;
  }
  const int free = room(key);
  auto& waiters = key_waiters_[key];
  if (free > 0 && waiters.empty()) {
    hold_key(job, key);
    return true;
  }
  waiters.push_back(job.record.id);
  job.record.waiting_for_key = key;
  job.on.clear();  // off every stream now: woken, it goes to its queue's shared stream
  if (free > 0) wake_waiters(key, free);
  return false;
}

// Wakes up to `n` waiters of `key`: each gets the key reserved (so no newer
// job overtakes it) and goes back onto its stream.
void MemoryQueue::wake_waiters(const std::string& key, int n) {
  auto& waiters = key_waiters_[key];
  while (n > 0 && !waiters.empty()) {
    std::string id = std::move(waiters.front());
    waiters.pop_front();
    Job* job = find(id);
    if (job == nullptr || job->record.state != JobState::queued ||
        job->record.waiting_for_key != key) {
      continue;
    }
    hold_key(*job, key);
    job->entry = add_entry(job->record.spec.queue, id, std::nullopt);
    job->record.waiting_for_key.clear();
    --n;
  }
  if (waiters.empty()) key_waiters_.erase(key);
}

// The job no longer runs: its key goes to the next waiter.
void MemoryQueue::release_key(Job& job) {
  if (job.key.empty()) return;
  const std::string key = std::exchange(job.key, "");
  keys_[key].erase(job.record.id);
  if (int free = room(key); free > 0) wake_waiters(key, free);
}

void MemoryQueue::schedule(Job& job, std::int64_t due) {
  std::erase_if(scheduled_, [&](const auto& s) { return s.second == job.record.id; });
  scheduled_.emplace(due, job.record.id);
  job.record.due_at = due;
}

// Back to `scheduled` without spending the attempt: the next claim runs it
// again under its number (the prelude's give_back).
void MemoryQueue::give_back(Job& job, std::int64_t due) {
  set_state(job, JobEvent::handed_back, "hand_back");
  job.record.attempts = std::max(0, job.record.attempts - 1);
  job.consumer.clear();
  job.record.container_id.clear();
  schedule(job, due);
}

void MemoryQueue::to_stream(Job& job, const std::string& host) {
  job.on.clear();
  if (!host.empty() && host_live(host)) {
    job.on = job.record.spec.queue + "@" + host;
    job.on_since = now_ms();
    job.record.affinity_host = host;
  }
  job.entry =
      add_entry(job.on.empty() ? job.record.spec.queue : job.on, job.record.id, std::nullopt);
}

std::string MemoryQueue::builder_of(const std::string& key) {
  auto it = builds_.find(key);
  if (it == builds_.end()) return "";
  if (it->second.second <= now_ms()) {
    builds_.erase(it);  // PX ran out
    return "";
  }
  return it->second.first;
}

BuildWait MemoryQueue::do_wait_for_build(const LeaseHandle& lease, const std::string& key,
                                         const std::string& builder, Duration poll,
                                         Duration max_wait) {
  Job& job = held_job(lease, "wait_for_build");
  const std::int64_t now = now_ms();
  const std::int64_t since = job.build_since.value_or(now);
  if (now - since >= max_wait.count()) return BuildWait::over;
  if (builder_of(key) != builder) return BuildWait::builder_gone;
  ack(lease.entry_id);
  release_key(job);
  if (is_terminal(job.record.state)) return BuildWait::waiting;  // cancelled: only released
  give_back(job, now + std::min<std::int64_t>(poll.count(), since + max_wait.count() - now));
  job.build_since = since;
  job.record.waiting_for_snapshot = key;
  auto& waiters = build_waiters_[key];
  waiters.insert(job.record.id);
  emit({{"type", "snapshot.build_waiters"},
        {"key", key},
        {"builder", builder},
        {"job", job.record.id},
        {"waiters", waiters.size()}});
  return BuildWait::waiting;
}

std::size_t MemoryQueue::do_end_build(const std::string& key, const std::string& job_id,
                                      const std::string& host) {
  if (builder_of(key) == job_id) builds_.erase(key);
  if (Job* builder = find(job_id); builder != nullptr && builder->building == key) {
    builder->building.clear();
  }
  std::size_t n = 0;
  if (auto it = build_waiters_.find(key); it != build_waiters_.end()) {
    for (const auto& id : it->second) {
      Job* job = find(id);
      if (job == nullptr || job->record.state != JobState::scheduled ||
          job->record.waiting_for_snapshot != key) {
        continue;
      }
      std::erase_if(scheduled_, [&](const auto& s) { return s.second == id; });
      set_state(*job, JobEvent::retry_due, "end_build");
      to_stream(*job, host);
      job->record.due_at.reset();
      job->record.waiting_for_snapshot.clear();
      ++n;
    }
    build_waiters_.erase(it);
  }
  emit({{"type", "snapshot.build_ended"}, {"key", key}, {"job", job_id}, {"woken", n}});
  return n;
}

// PUBLISH: at most once, to the subscribers connected right now.
void MemoryQueue::publish_cancel(const std::string& job_id, const std::string& router_id) {
  if (drop_cancel_messages_ || down_) return;
  std::weak_ptr<Subscribers> weak = subscribers_;
  for (const auto& [id, handler] : subscribers_->handlers) {
    net::post(executor_, [weak, id = id, job_id, router_id] {
      auto s = weak.lock();
      if (!s) return;
      if (auto it = s->handlers.find(id); it != s->handlers.end()) it->second(job_id, router_id);
    });
  }
}

// Finished records live for the retention period (PEXPIRE).
void MemoryQueue::expire_records() {
  const std::int64_t now = now_ms();
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    if (it->second.expires_at && *it->second.expires_at <= now) {
      by_state_[it->second.record.state].erase(it->first);
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<std::int64_t> MemoryQueue::next_due() const {
  std::optional<std::int64_t> due;
  if (!scheduled_.empty()) due = scheduled_.begin()->first;
  // A job waiting on a live host's stream is promoted when its wait ends.
  for (const auto& [id, job] : jobs_) {
    if (job.on.empty() || job.record.state != JobState::queued) continue;
    const std::int64_t at = job.on_since + options_.affinity_wait.count() + 1;
    if (!due || at < *due) due = at;
  }
  return due;
}

// Redis stream ids: "<ms>-<seq>", increasing even when the clock stands still.
std::string MemoryQueue::next_stream_id(std::int64_t now) {
  if (now > last_stream_ms_) {
    last_stream_ms_ = now;
    last_stream_seq_ = 0;
  } else {
    ++last_stream_seq_;
  }
  return std::to_string(last_stream_ms_) + "-" + std::to_string(last_stream_seq_);
}

}  // namespace warmstart::queue
