// In-memory Backend for the HTTP tests: jobs in a map, events in a vector with
// increasing ids, subscription fan-out under one mutex. Thread-safe, so a test
// can append events from its own thread while the server runs on another.
// The real Backend (router over Redis + Docker) is tested end to end elsewhere.
#pragma once
#include "api/backend.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>

namespace warmstart::api {

class TestingBackend : public Backend {
 public:
  TestingBackend() = default;

  awaitable<EnqueueResult> enqueue(nlohmann::json job_body) override;
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
  SubscriptionPtr subscribe_events(EventHandler handler) override;
  awaitable<ReadyStatus> check_ready() override;
  awaitable<bool> webhook_seen(std::string delivery_key, Duration ttl) override;

  // Test controls.
  // Appends {"id", "ts", "type", ...fields} and delivers it to subscribers; returns the id.
  std::string append_event(const std::string& type,
                           nlohmann::json fields = nlohmann::json::object());
  void set_job_state(const std::string& id, const std::string& state);
  void set_job_logs(const std::string& id, std::string logs);
  void add_snapshot(nlohmann::json snapshot);  // needs "key"
  void set_routers(std::vector<nlohmann::json> routers);
  void set_ready(ReadyStatus status);
  // Runs (outside the lock) at the start of every read_events call: lets a test
  // append events exactly inside an SSE client's replay window.
  void on_read_events(std::function<void()> hook);

  std::size_t enqueue_calls() const;  // successful enqueue() calls, created or not
  std::size_t job_count() const;
  std::size_t subscriber_count() const;
  std::size_t read_events_calls() const;

 private:
  class TestingSubscription;
  void unsubscribe(std::uint64_t token);
  std::string append_event_locked(const std::string& type, nlohmann::json fields);

  mutable std::mutex mutex_;
  std::map<std::string, nlohmann::json> jobs_;
  std::vector<std::string> job_order_;  // creation order
  std::map<std::string, std::string> logs_;
  std::map<std::string, nlohmann::json> snapshots_;
  std::vector<nlohmann::json> routers_;
  std::vector<nlohmann::json> events_;
  std::uint64_t next_event_ = 1;
  std::uint64_t next_job_ = 1;
  std::map<std::uint64_t, EventHandler> subscribers_;
  std::uint64_t next_subscriber_ = 1;
  std::set<std::string> seen_deliveries_;
  ReadyStatus ready_{true, true, false};
  std::function<void()> read_hook_;
  std::size_t enqueue_calls_ = 0;
  std::size_t read_events_calls_ = 0;
};

}  // namespace warmstart::api
