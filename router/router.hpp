// The dispatcher: claims jobs within capacity, chooses the image (snapshot or
// base), creates/starts/monitors containers, falls back to the base image when
// a snapshot image vanished, enforces timeouts and cancels, finishes jobs,
// recovers after a restart, and drains on SIGTERM.
//
// Everything runs on one executor (one thread): no locks, no thread per job or
// container. Each job is a coroutine that waits on its own timer, woken by the
// engine's event stream, the periodic batched container list, or a cancel.
#pragma once
#include "common/net.hpp"
#include "container/runtime.hpp"
#include "queue/queue.hpp"
#include "router/capacity.hpp"
#include "router/config.hpp"
#include "router/policy.hpp"
#include "router/recovery_plan.hpp"
#include "snapshots/snapshot_cache.hpp"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace warmstart::router {

struct RouterDeps {
  queue::QueuePtr queue;
  container::RuntimePtr runtime;
  std::shared_ptr<snapshots::SnapshotCache> snapshots;
};

// Counters and gauges the HTTP layer exports; plain values read on the loop.
struct RouterStats {
  int running = 0;               // jobs holding a slot
  int waiting_for_key = 0;       // claimed, waiting for their concurrency key
  std::uint64_t dispatched = 0;  // containers started
  std::uint64_t snapshot_fallbacks = 0;
  std::uint64_t finished = 0;
  bool draining = false;
};

// Observers the HTTP layer can hook to record latencies (seconds).
struct RouterObservers {
  std::function<void(double)> dispatch_latency;  // queued -> container started
  std::function<void(double)> create_latency;
  std::function<void(double)> start_latency;
};

class Router : public std::enable_shared_from_this<Router> {
 public:
  Router(net::any_io_executor executor, RouterConfig config, RouterDeps deps);
  ~Router();

  // Recovers, then serves until drained or stopped. Returns when the router may exit.
  awaitable<void> run();
  // First SIGTERM: stop claiming; wait for running jobs up to drain_deadline
  // (0: leave them running, the next start re-attaches them).
  void drain();
  // Second signal: return from run() at once.
  void stop_now();

  const RouterStats& stats() const { return stats_; }
  const RouterConfig& config() const { return config_; }
  RouterObservers& observers() { return observers_; }
  // The plan executed at start (for logs and tests).
  const RecoveryPlan& last_recovery_plan() const { return recovery_plan_; }

 private:
  struct ActiveJob;
  using ActiveJobPtr = std::shared_ptr<ActiveJob>;
  enum class Start { fresh, reattach, finalize };

  awaitable<void> recover();
  awaitable<void> claim_loop();
  awaitable<void> heartbeat_loop();
  awaitable<void> housekeeping_loop();
  awaitable<void> gc_loop();
  void start_job(queue::ClaimedJob claimed, Start how, std::string container_id = "");
  awaitable<void> run_job(ActiveJobPtr job, Start how);
  awaitable<bool> launch(ActiveJobPtr job);
  awaitable<void> monitor(ActiveJobPtr job);
  awaitable<void> complete(ActiveJobPtr job);
  awaitable<void> fail(ActiveJobPtr job, std::string reason, bool retryable);
  awaitable<void> remove_container_quietly(std::string id);
  awaitable<void> sync_containers();
  void on_engine_event(const container::Event& event);
  void on_cancel(const std::string& job_id);
  void forget(const ActiveJobPtr& job);
  void emit(nlohmann::json event);
  void wake_claimer();

  net::any_io_executor executor_;
  RouterConfig config_;
  RouterDeps deps_;
  ImagePolicy policy_;
  Capacity capacity_;
  RouterStats stats_;
  RouterObservers observers_;
  RecoveryPlan recovery_plan_;
  std::string consumer_;

  std::map<std::string, ActiveJobPtr> jobs_;          // by job id
  std::map<std::string, ActiveJobPtr> by_container_;  // by container id
  net::steady_timer claimer_wake_;                    // slot or key freed, drain requested
  net::steady_timer key_freed_;                       // a concurrency key was released
  net::steady_timer stopped_;                         // cancelled when run() must return
  bool draining_ = false;
  bool stopping_ = false;
  container::EventSubscriptionPtr engine_events_;
  std::unique_ptr<queue::CancelSubscription> cancels_;
};

}  // namespace warmstart::router
