// The port between the HTTP front and the rest of warmstart. The api/ module
// depends only on this interface; the router implements it over the Redis queue,
// the snapshot registry and the Docker engine, and api/testing_backend.hpp is an
// in-memory double for the HTTP tests.
#pragma once
#include "common/net.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmstart::api {

// A refusal the HTTP layer maps 1:1 to a response status: 400 (invalid input),
// 404 (unknown job or snapshot), 409 (conflicting state, e.g. cancelling a
// finished job) or 503 (Redis or Docker unavailable). Anything else a Backend
// throws is a bug and answers 500.
struct BackendError : std::runtime_error {
  BackendError(int status_code, const std::string& message, nlohmann::json extra = nullptr)
      : std::runtime_error(message), status(status_code), details(std::move(extra)) {}
  int status;
  nlohmann::json details;  // an object: more fields of the error body (e.g. both spec hashes)
};

struct EnqueueResult {
  nlohmann::json job;  // the job record (see DESIGN.md "Job")
  bool created;        // false: the id existed and `job` is the existing record
  // A prewarm (snapshot.prewarm) of a key that has a builder already: nothing
  // was enqueued, `job` is the builder's record.
  bool coalesced = false;
};

struct ReadyStatus {
  bool redis_ok = false;
  bool docker_ok = false;
  bool draining = false;
  bool ready() const { return redis_ok && docker_ok && !draining; }
};

// Receives each event (a JSON object with at least "id" and "type") appended
// after subscribe_events() returned, in id order, exactly once. It may be called
// from any thread and must not block.
using EventHandler = std::function<void(const nlohmann::json& event)>;

// Destroying the handle ends the subscription: once the destructor has returned
// the handler is never called again.
class Subscription {
 public:
  virtual ~Subscription() = default;
};
using SubscriptionPtr = std::unique_ptr<Subscription>;

// Event ids are Redis stream ids ("<ms>-<seq>"), strictly increasing; "" (or
// "0") means "before the first event". Arguments are taken by value because
// they must outlive the caller's frame inside a coroutine.
class Backend {
 public:
  virtual ~Backend() = default;

  // Validates and enqueues a job body; an existing id returns the existing job.
  // A prewarm (snapshot.prewarm) joins the key's running build when it has one.
  virtual awaitable<EnqueueResult> enqueue(nlohmann::json job_body) = 0;
  virtual awaitable<nlohmann::json> get_job(std::string id) = 0;
  // Newest first; `state` filters when set.
  virtual awaitable<std::vector<nlohmann::json>> list_jobs(std::optional<std::string> state,
                                                           std::size_t limit) = 0;
  virtual awaitable<std::string> job_logs(std::string id) = 0;
  // Returns the job record after the cancel was recorded.
  virtual awaitable<nlohmann::json> cancel_job(std::string id) = 0;
  virtual awaitable<std::vector<nlohmann::json>> list_snapshots() = 0;
  virtual awaitable<nlohmann::json> invalidate_snapshot(std::string key) = 0;
  // The fleet: every router's last heartbeat (id, host_id, engine_id,
  // host_name, capacity, running, snapshot_count, snapshot_bytes, version,
  // last_seen, status "live" | "draining" | "lost"), by router id.
  virtual awaitable<std::vector<nlohmann::json>> list_routers() = 0;
  // Up to `max` retained events with id > after_id, oldest first.
  virtual awaitable<std::vector<nlohmann::json>> read_events(std::string after_id,
                                                             std::size_t max) = 0;
  virtual SubscriptionPtr subscribe_events(EventHandler handler) = 0;
  virtual awaitable<ReadyStatus> check_ready() = 0;
  // Atomic set-if-absent of `delivery_key` for `ttl`; true when it was already set.
  virtual awaitable<bool> webhook_seen(std::string delivery_key, Duration ttl) = 0;
};

}  // namespace warmstart::api
