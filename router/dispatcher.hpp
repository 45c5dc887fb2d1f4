// The dispatcher: everything of a router that is not one job's run. It claims
// jobs within capacity while the engine answers, hands each claimed job to the
// executor (job_executor.hpp), keeps the leases alive and learns of cancels in
// the same round trip, watches the engine (events + a periodic list), sweeps
// orphan containers, takes over jobs of dead routers, recovers after a
// restart, tracks the engine's health, and drains on SIGTERM.
//
// Everything runs on one executor (one thread): no locks, no thread per job or
// container. docs/router.md describes the loops and the error policy.
#pragma once
#include "common/net.hpp"
#include "container/runtime.hpp"
#include "queue/queue.hpp"
#include "router/capacity.hpp"
#include "router/config.hpp"
#include "router/job_executor.hpp"
#include "router/policy.hpp"
#include "router/recovery_plan.hpp"
#include "snapshots/cache.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmstart::router {

struct RouterDeps {
  queue::QueuePtr queue;
  container::RuntimePtr runtime;
  snapshots::CachePtr snapshots;  // null: no snapshots
};

// Who this router is in the fleet (docs/fleet.md): filled in at start from
// the config, the engine's /info and the machine.
struct HostIdentity {
  std::string host_id;    // [router] host_id, else the engine ID
  std::string engine_id;  // docker info .ID
  std::string host_name;  // gethostname()
  std::string version;    // warmstart version
};

// A live router of another engine claims this router's host identity.
class HostIdentityConflict : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Gauges and counters the HTTP layer exports; plain values read on the loop.
// The executor's counters (ExecutorStats) and the dispatcher's own.
struct RouterStats : ExecutorStats {
  int running = 0;  // jobs holding a slot
  std::uint64_t orphans_removed = 0;
  std::uint64_t leases_lost = 0;  // renewals that found another router owning a running job
  bool draining = false;
  bool engine_up = true;  // false from a call that got no answer until a ping answers
};

class Dispatcher : public std::enable_shared_from_this<Dispatcher> {
 public:
  Dispatcher(net::any_io_executor executor, RouterConfig config, RouterDeps deps);
  ~Dispatcher();

  // Recovers, then serves until drained or stopped. Returns when the router may exit.
  awaitable<void> run();
  // First SIGTERM: stop claiming; wait for running jobs up to drain_deadline
  // (0: leave them running, the next start re-attaches them).
  void drain();
  // Second signal: return from run() at once.
  void stop_now();

  // Sets who this router is; call before claim_host_identity() and run().
  void identify(HostIdentity identity);
  // The start-up check: throws HostIdentityConflict when a live router of
  // another engine claims this host identity; else writes the first heartbeat.
  awaitable<void> claim_host_identity();
  // This router's fleet record as of now (what the next heartbeat writes).
  queue::RouterRecord fleet_record() const;

  RouterStats stats() const;
  const RouterConfig& config() const { return config_; }
  RouterObservers& observers() { return executor_.observers(); }
  // The plan executed at start (for logs and tests).
  const RecoveryPlan& last_recovery_plan() const { return recovery_plan_; }

 private:
  awaitable<void> recover();
  awaitable<RecoveryInput> observe_for_recovery(std::map<std::string, queue::ClaimedJob>& held);
  awaitable<void> execute_recovery(std::map<std::string, queue::ClaimedJob>& held);
  awaitable<void> claim_loop();
  awaitable<void> lease_loop();
  awaitable<void> housekeeping_loop();
  awaitable<void> housekeeping_round();
  awaitable<void> gc_loop();
  awaitable<void> heartbeat_loop();
  awaitable<void> probe_engine();
  awaitable<void> watch_containers();
  awaitable<void> sweep_orphans(const std::vector<container::ContainerSummary>& mine);
  void spawn(awaitable<void> loop, const char* name);
  ExecutorHooks hooks();

  void admit(queue::ClaimedJob claimed, StartMode mode, std::string container_id = "",
             PrecreatedPtr precreated = nullptr);
  // Claim-time creates (precreate.hpp): sends the create of an entry the
  // claim read into `out` (at most `room`), and removes one no run took.
  void precreate(const queue::EntrySeen& entry, int room,
                 std::map<std::string, PrecreatedPtr>& out);
  void discard(PrecreatedPtr unused, const char* why);
  // What a run of this job's claimed attempt does (image policy, snapshot, timeout).
  RunSpec run_spec(const std::string& job_id, int attempt, const queue::JobSpec& spec,
                   bool cancelled) const;
  void release(const ActiveJobPtr& job);
  ActiveJobPtr find(const std::string& job_id) const;
  void on_engine_event(const container::Event& event);
  void on_cancel(const std::string& job_id, const char* how);
  void on_lease_report(const queue::LeaseReport& report);
  void engine_failed(const std::string& error);
  void emit(nlohmann::json event);
  void wake_claimer();
  bool may_claim() const { return !draining_ && !stopping_ && engine_up_; }

  net::any_io_executor io_;
  RouterConfig config_;
  RouterDeps deps_;
  ImagePolicy policy_;
  Capacity capacity_;
  JobExecutor executor_;
  RecoveryPlan recovery_plan_;
  std::string consumer_;
  HostIdentity identity_;
  std::string instance_;             // random per process: tells a restart from a twin
  std::int64_t started_at_ = 0;      // Unix ms
  std::int64_t snapshot_count_ = 0;  // registry entries of this host, as of the last heartbeat
  std::int64_t snapshot_bytes_ = 0;

  std::map<std::string, ActiveJobPtr> jobs_;          // by job id
  std::map<std::string, ActiveJobPtr> by_container_;  // by container id
  net::steady_timer claimer_wake_;                    // slot freed, engine up, drain requested
  net::steady_timer stopped_;                         // cancelled when run() must return
  bool draining_ = false;
  bool stopping_ = false;
  bool engine_up_ = true;
  bool probing_ = false;
  std::uint64_t orphans_removed_ = 0;
  std::uint64_t leases_lost_ = 0;
  // Claims promote due retries first, and a blocked one wakes up to promote
  // (queue.hpp): housekeeping promotes only when none ran since its last round.
  bool claim_in_flight_ = false;
  bool claimed_since_housekeeping_ = false;
  Clock::time_point next_reclaim_{};  // housekeeping's next reclaim_expired()
  container::EventSubscriptionPtr engine_events_;
  std::unique_ptr<queue::CancelSubscription> cancels_;
};

}  // namespace warmstart::router
