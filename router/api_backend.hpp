// ApiBackend: the HTTP front's Backend port (api/backend.hpp) implemented over
// the router's own parts: the Redis job queue, the snapshot cache, the Docker
// engine and Redis for readiness, and the Router for its draining state.
//
// It runs on the router's executor (one thread): its coroutines and the event
// tailer share the loop with the dispatcher, so reading Router::stats() needs
// no lock. Only the subscriber table is locked, because the Backend contract
// lets a subscription be dropped from any thread.
#pragma once
#include "api/backend.hpp"
#include "common/net.hpp"
#include "common/redis.hpp"
#include "container/runtime.hpp"
#include "queue/queue.hpp"
#include "router/policy.hpp"
#include "snapshots/cache.hpp"

#include <memory>
#include <string>

namespace warmstart::router {

class Dispatcher;

struct ApiBackendOptions {
  std::string key_prefix = "ws:";  // webhook delivery marks live under it (like the queue)
  Duration ready_timeout = 2s;     // each readiness probe (Redis PING, Docker /_ping)
  Duration redis_retry = 3s;       // a request rides out a Redis blip this long, then answers 503
  Duration event_poll_interval = 200ms;  // the event tailer's XRANGE period while idle
  std::size_t event_page = 500;          // events per XRANGE of the tailer
  // The tailer's first read starts this long before "now" (the local clock),
  // so an event appended right after subscribe_events() returned is never
  // missed even when Redis's clock is a little behind ours. Subscribers may
  // therefore also see events from this window before they subscribed; the
  // SSE hub drops those for resuming clients (they are not newer than the replay).
  Duration tail_start_margin = 2s;
};

struct ApiBackendDeps {
  queue::QueuePtr queue;
  snapshots::CachePtr snapshots;
  container::RuntimePtr runtime;       // readiness
  redis::ClientPtr redis;              // readiness and webhook delivery marks
  std::shared_ptr<Dispatcher> router;  // draining state; null = never draining (tools, tests)
};

class ApiBackend final : public api::Backend {
 public:
  ApiBackend(net::any_io_executor executor, ApiBackendDeps deps, ImagePolicy policy,
             ApiBackendOptions options = {});
  ~ApiBackend() override;
  ApiBackend(const ApiBackend&) = delete;
  ApiBackend& operator=(const ApiBackend&) = delete;

  // Redis and Docker failures surface as BackendError 503; invalid jobs and
  // disallowed images as 400 with the reason; unknown objects as 404.
  awaitable<api::EnqueueResult> enqueue(nlohmann::json job_body) override;
  awaitable<nlohmann::json> get_job(std::string id) override;
  awaitable<std::vector<nlohmann::json>> list_jobs(std::optional<std::string> state,
                                                   std::size_t limit) override;
  awaitable<std::string> job_logs(std::string id) override;
  awaitable<nlohmann::json> cancel_job(std::string id) override;
  awaitable<std::vector<nlohmann::json>> list_snapshots() override;
  awaitable<nlohmann::json> invalidate_snapshot(std::string key) override;
  awaitable<std::vector<nlohmann::json>> list_routers() override;
  awaitable<std::vector<nlohmann::json>> read_events(std::string after_id,
                                                     std::size_t max) override;
  // One shared tailer coroutine polls the events stream while at least one
  // subscription is alive. Handlers run on the executor, under the subscriber
  // table's lock: a handler must not drop a subscription itself.
  api::SubscriptionPtr subscribe_events(api::EventHandler handler) override;
  awaitable<api::ReadyStatus> check_ready() override;
  awaitable<bool> webhook_seen(std::string delivery_key, Duration ttl) override;

  // Live subscriptions and whether the tailer runs (tests, logs).
  std::size_t subscriber_count() const;
  bool tailing() const;

 private:
  class Tail;
  class TailSubscription;

  awaitable<queue::JobRecord> require_job(std::string id);
  Clock::time_point redis_deadline() const;
  awaitable<bool> redis_alive();
  awaitable<bool> docker_alive();

  net::any_io_executor executor_;
  ApiBackendDeps deps_;
  ImagePolicy policy_;
  ApiBackendOptions options_;
  std::shared_ptr<Tail> tail_;
};

}  // namespace warmstart::router
