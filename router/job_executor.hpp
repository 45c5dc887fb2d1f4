// The executor drives one job's JobRun (job_run.hpp) against the ports:
//
//   auto action = run.begin(mode);
//   while (action.kind != done) action = run.resume(co_await perform(action));
//
// perform() is the only place a job touches the engine, the queue or the
// snapshot cache; every call goes through attempt() (outcome.hpp), so a
// failure becomes a classified Input and JobRun decides what it costs. The
// executor holds no policy of its own.
#pragma once
#include "common/gate.hpp"
#include "common/net.hpp"
#include "container/runtime.hpp"
#include "queue/queue.hpp"
#include "router/config.hpp"
#include "router/job_run.hpp"
#include "router/outcome.hpp"
#include "router/precreate.hpp"
#include "snapshots/cache.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace warmstart::router {

// One claimed job on this router, from claim to release.
struct ActiveJob {
  ActiveJob(net::any_io_executor ex, queue::ClaimedJob job, RunSpec spec)
      : claimed(std::move(job)), run(std::move(spec)), wake(ex, Clock::time_point::max()) {}

  queue::ClaimedJob claimed;
  JobRun run;
  std::string container_id;
  std::string log_tail;
  std::string snapshot_image_id;       // the registered image at lookup (commit CAS, invalidation)
  std::int64_t snapshot_build_ms = 0;  // build_ms of the snapshot started from (0: none)
  Clock::time_point deadline = Clock::time_point::max();
  net::steady_timer wake;  // cancelled to signal; expires at the deadline
  bool signalled = false;  // a signal arrived while no wait was pending
  // From the engine's events: the "die" event's exitCode and an "oom" event
  // before it. With an exit code, collect needs no inspect.
  std::optional<int> exit_code_seen;
  bool oom_seen = false;
  // Created while the claim was on its way (precreate.hpp); taken by create.
  PrecreatedPtr precreated;

  const std::string& id() const { return claimed.record.id; }
  const queue::JobSpec& spec() const { return claimed.record.spec; }
  // Wakes the job's wait (an exit, a cancel, a lost lease, the router stopping).
  void signal() {
    signalled = true;
    wake.cancel();
  }
};
using ActiveJobPtr = std::shared_ptr<ActiveJob>;

struct ExecutorPorts {
  queue::QueuePtr queue;
  container::RuntimePtr runtime;
  snapshots::CachePtr snapshots;  // null: no snapshots (jobs never commit)
};

// Counters the HTTP layer exports; plain values read on the loop.
struct ExecutorStats {
  std::uint64_t dispatched = 0;  // containers started and recorded running
  std::uint64_t snapshot_fallbacks = 0;
  std::uint64_t finished = 0;         // results recorded
  std::uint64_t handed_back = 0;      // jobs given back unspent (engine unreachable)
  std::uint64_t affinity_hits = 0;    // routed to this host's snapshot and started here
  std::uint64_t affinity_misses = 0;  // routed to another host's snapshot, started here
  std::uint64_t coalesced = 0;        // waits for another job's build of the snapshot key
  // Containers started (counted in `dispatched`), by what they started from:
  // a snapshot, the base image after a vanished snapshot, the base image.
  std::uint64_t warm_starts = 0;
  std::uint64_t fallback_starts = 0;
  std::uint64_t cold_starts = 0;
  // Sum over warm starts of the build_ms of the snapshot started from: the
  // run time those starts did not repeat.
  std::uint64_t time_saved_ms = 0;
  // Creates sent while the claim ran (precreate.hpp), and those no run took
  // (removed unstarted).
  std::uint64_t precreated = 0;
  std::uint64_t precreated_unused = 0;
  // Runs that ended because the router stops, their containers left running
  // for the next start to re-attach.
  std::uint64_t left_running = 0;
};

// Observers the HTTP layer can hook to record latencies (seconds).
struct RouterObservers {
  std::function<void(double)> dispatch_latency;  // queued -> container started
  std::function<void(double)> create_latency;
  std::function<void(double)> start_latency;
};

// What the executor tells the dispatcher.
struct ExecutorHooks {
  std::function<void(const ActiveJobPtr&)> container_known;  // die events find the job by it
  std::function<void(const ActiveJobPtr&)> slot_freed;       // the container stopped (free_slot)
  std::function<void(const std::string&)> engine_down;       // an engine call got no answer
  std::function<bool()> stopping;                            // leave running containers alone
  std::function<void(nlohmann::json)> emit;                  // into the events stream
  std::function<std::string()> host_id;                      // this router's host identity
};

class JobExecutor {
 public:
  JobExecutor(const RouterConfig& config, ExecutorPorts ports, ExecutorHooks hooks)
      : config_(config), ports_(std::move(ports)), hooks_(std::move(hooks)) {}

  // Runs the job until its run is done, or until the router stops (a running
  // container is then left for the next start to re-attach).
  awaitable<void> execute(ActiveJobPtr job, StartMode mode);

  // The create a fresh start of `run` would send first, when that needs no
  // lookup (no snapshot key, an allowed image, not cancelled); nullptr when the
  // start begins with something else. send_create() sends it; the caller hands
  // it to the run its claim confirms (ActiveJob::precreated) or to discard().
  PrecreatedPtr precreate(const net::any_io_executor& ex, const RunSpec& run,
                          const queue::JobSpec& spec) const;
  awaitable<void> send_create(PrecreatedPtr p);
  // Removes a precreated container no run took, once its create answered.
  awaitable<void> discard(PrecreatedPtr unused, std::string why);
  // Gives a claimed job that has not started back to the queue, unspent (its
  // attempt given back, claimable again after a short delay).
  awaitable<Outcome<void>> give_back(queue::LeaseHandle lease, std::string reason);

  const ExecutorStats& stats() const { return stats_; }
  RouterObservers& observers() { return observers_; }

 private:
  // nullopt: the router is stopping; leave the job as it is.
  awaitable<std::optional<Input>> perform(const ActiveJobPtr& job, const Action& action);
  awaitable<Input> choose_image(ActiveJob& job);
  awaitable<Input> create(const ActiveJobPtr& job, const Action& action);
  awaitable<Input> invalidate(ActiveJob& job, const Action& action);
  awaitable<Input> adopt(const ActiveJobPtr& job);
  awaitable<Input> start(ActiveJob& job);
  awaitable<Input> mark_running(ActiveJob& job);
  awaitable<std::optional<Input>> wait(ActiveJob& job);
  awaitable<Input> stop(ActiveJob& job);
  awaitable<Input> collect(ActiveJob& job);
  awaitable<Input> commit(ActiveJob& job);
  awaitable<Input> record(ActiveJob& job, const Action& action);
  awaitable<Input> hand_back(ActiveJob& job, const Action& action);
  awaitable<Input> wait_build(ActiveJob& job, const Action& action);
  awaitable<Input> end_build(ActiveJob& job, const Action& action);
  awaitable<Input> remove(ActiveJob& job);
  void log_end(const ActiveJob& job) const;
  // What create asks the engine for, for `run` on `image`.
  container::ContainerSpec container_spec(const RunSpec& run, const queue::JobSpec& spec,
                                          const std::string& image, bool from_snapshot) const;
  std::string host_id() const { return hooks_.host_id ? hooks_.host_id() : std::string(); }
  // Snapshot affinity hints (best effort: a failure is logged, the job goes on).
  awaitable<void> hint_affinity(const std::string& key, bool holds);

  // Creates and starts in flight (config start_concurrency); made on first use,
  // on the loop's executor.
  awaitable<AsyncGate::Pass> engine_start_pass();

  const RouterConfig& config_;
  std::optional<AsyncGate> engine_starts_;
  ExecutorPorts ports_;
  ExecutorHooks hooks_;
  ExecutorStats stats_;
  RouterObservers observers_;
};

// The attempt's wall-clock limit: the job's own, else the router's default.
std::int64_t effective_timeout_s(const queue::JobSpec& spec, const RouterConfig& config);

}  // namespace warmstart::router
