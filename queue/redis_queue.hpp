// RedisQueue: queue::Queue on Redis Streams. Key layout and scripts: docs/queue.md.
// Every multi-key state change is one Lua script (atomic); transitions come
// from state_machine.hpp's table.
#pragma once
#include "common/json_limits.hpp"
#include "common/redis.hpp"
#include "queue/backoff.hpp"
#include "queue/queue.hpp"
#include "queue/script_batcher.hpp"
#include "queue/validation.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace warmstart::queue {

struct RedisQueueOptions {
  redis::ClientOptions redis;                       // where Redis is
  std::string key_prefix = "ws:";                   // every key starts with it (tests isolate)
  std::vector<std::string> queues = {"default"};    // streams claim() reads
  std::string group = "routers";                    // consumer group of every stream
  Duration lease_timeout = 30s;                     // idle time after which a job is reclaimed
  int concurrency_key_limit = 1;                    // jobs of one concurrency_key running at once,
                                                    // fleet-wide (every router: the same value)
  int max_reclaims = 3;                             // lease expiries before a job fails
  Duration retention = std::chrono::hours(24 * 7);  // finished records expire after this
  std::size_t events_max = 10000;                   // event stream cap (MAXLEN ~)
  std::size_t log_tail_max_bytes = 64 * 1024;       // set_log_tail keeps the last bytes
  BackoffOptions retry_backoff;                     // delay before retries
  ValidationOptions validation;                     // for enqueue() and raw entries
  bool promote_on_claim = true;                     // claim() first runs promote_due(),
  Duration promote_every = 1s;         // at most this often, or sooner when its last answer
                                       // named something due or this queue scheduled a retry
                                       // (an idle claim: up to one block window early)
  std::size_t finish_batch_max = 128;  // finish() calls per script (group commit)
  Duration affinity_wait = 5s;         // promote_due(): a job routed to its snapshot's host
                                       // waits this long on that host's stream
  // Acknowledged writes survive a failover: enqueue() and finish() wait with
  // WAIT until this many replicas have them, and throw a transient
  // NOREPLICAS error when they do not within replicas_timeout. 0 = off.
  int replicas_ack = 0;
  Duration replicas_timeout = 1s;
};

class RedisQueue final : public Queue {
 public:
  // Opens two connections lazily: one for commands (pipelined) and one for
  // blocking claims (a blocked XREADGROUP would stall a pipelined connection).
  RedisQueue(net::any_io_executor executor, RedisQueueOptions options);
  ~RedisQueue() override;

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

  // The router's ceilings (options().validation.limits) in Redis, for the CLI:
  // publish_limits() writes them (key "<prefix>limits"); adopt_published_limits()
  // makes them this queue's own when a router published any, so a client
  // refuses what the router would. Without published ones the options stand.
  awaitable<void> publish_limits();
  awaitable<void> adopt_published_limits();

  // Closes both connections (pending commands fail); an io_context with no
  // other work can then return from run().
  void close();

  // Key names (docs/queue.md).
  std::string stream_key(const std::string& queue) const;
  std::string job_key(const std::string& id) const;
  std::string events_key() const;
  std::string cancel_channel() const;
  std::string limits_key() const;
  std::string routers_key() const;   // set of router ids
  std::string affinity_key() const;  // hash snapshot key -> host id
  std::string host_live_key(const std::string& host_id) const;
  const RedisQueueOptions& options() const { return options_; }
  // The command connection, for tools and tests that inspect keys.
  const redis::ClientPtr& client() const { return client_; }
  // Group commit of finish() (script_batcher.hpp): batches sent, calls served.
  const ScriptBatcher& finish_batcher() const { return finish_batcher_; }
  // Claims whose read and claim were one round trip (entries were waiting).
  std::uint64_t one_trip_claims() const { return one_trip_claims_; }

 private:
  JsonLimits entry_limits() const;  // a raw stream entry's size and depth
  awaitable<void> ensure_groups();
  awaitable<void> ensure_group(const std::string& stream);
  // The streams `consumer` reads: each queue's, then its host's own
  // (`<queue>@<host>`, once a heartbeat named the host).
  std::vector<std::string> streams_of(const std::string& consumer) const;
  // Validates the entries of an XREADGROUP-shaped reply and claims them
  // (kClaim). `count`: the COUNT they were read with, for the script's hint
  // (entries_wait_); 0: no hint (reclaimed, or claim_next's rest).
  awaitable<std::vector<ClaimedJob>> process_entries(const std::string& consumer,
                                                     const redis::Reply& streams, bool reclaim,
                                                     std::size_t count,
                                                     const EntryObserver& seen = {});
  // Read and claim in one script (kClaimNext), for when entries wait:
  // nullopt when there was nothing to read.
  awaitable<std::optional<std::vector<ClaimedJob>>> claim_next(const std::string& consumer,
                                                               std::size_t count,
                                                               const EntryObserver& seen);
  // What claim_next's script could not claim by itself: specs this router's
  // limits refuse (the attempt fails) and unchecked entries (process_entries).
  awaitable<std::vector<ClaimedJob>> settle_claim_next(
      const std::string& consumer, std::vector<std::pair<LeaseHandle, std::string>> refused,
      redis::Reply unchecked, const EntryObserver& seen);
  // WAIT replicas_ack replicas_timeout after a write the caller is told of.
  awaitable<void> await_replicas(std::string what);
  awaitable<redis::Reply> run_script(const std::string& script, std::vector<std::string> args);

  net::any_io_executor executor_;
  RedisQueueOptions options_;
  redis::ClientPtr client_;
  redis::ClientPtr blocking_client_;
  Backoff backoff_;
  bool groups_ready_ = false;
  // When claim() next runs promote_due() (time_point{}: on the next claim).
  Clock::time_point promote_at_{};
  // The last claim blocked and waited out its whole window, with nothing read.
  bool waited_out_ = false;
  // The last claim read a full COUNT and the stream held more (the scripts'
  // `more`): the next claim reads and claims in one round trip (claim_next).
  // One hint for every consumer of this queue object: a wrong hint costs a
  // round trip, never a job.
  bool entries_wait_ = false;
  // Claims answered by claim_next's one round trip (tests, benchmarks).
  std::uint64_t one_trip_claims_ = 0;
  std::map<std::string, std::string> reclaim_cursor_;  // stream -> XAUTOCLAIM cursor
  std::map<std::string, std::string> host_of_;         // consumer -> host id (its heartbeat)
  std::set<std::string> grouped_;                      // host streams whose group exists
  ScriptBatcher finish_batcher_;
};

}  // namespace warmstart::queue
