// Prometheus metrics of the router and the HTTP front. One Metrics object owns
// the registry; the router updates the families, GET /metrics serializes them
// (prometheus-cpp's Registry + TextSerializer, served by our own Beast server).
// Every member is thread-safe (prometheus-cpp metrics are atomics).
#pragma once
#include "api/history.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <string_view>

namespace warmstart::api {

// Content type of the text exposition format served on /metrics.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4";

// What a started container started from.
enum class StartKind { warm, cold, fallback };

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  // The whole registry in the text exposition format.
  std::string serialize() const;

  // Jobs per state (queued, scheduled, running, succeeded, failed, timed_out,
  // cancelled); every state is pre-created at 0 so dashboards see all series.
  prometheus::Gauge& jobs(std::string_view state);
  prometheus::Gauge& queue_depth() { return *queue_depth_; }
  prometheus::Histogram& dispatch_latency() { return *dispatch_latency_; }  // queued -> started, s
  prometheus::Histogram& container_create_latency() { return *container_create_; }  // s
  prometheus::Histogram& container_start_latency() { return *container_start_; }    // s
  prometheus::Gauge& running_containers() { return *running_containers_; }
  prometheus::Gauge& engine_up() { return *engine_up_; }
  prometheus::Counter& jobs_handed_back() { return *jobs_handed_back_; }
  // Creates sent while the claim ran (router/precreate.hpp), and those removed
  // unused (the claim skipped the entry, or the run asked for another container).
  prometheus::Counter& claim_creates() { return *claim_creates_; }
  prometheus::Counter& claim_creates_unused() { return *claim_creates_unused_; }
  // Waits for another job's cold start of the same snapshot key (single-flight).
  prometheus::Counter& snapshot_coalesced() { return *snapshot_coalesced_; }
  // Containers started: from a snapshot (warm), the base image (cold), or the
  // base image after the snapshot image vanished (fallback).
  prometheus::Counter& job_starts(StartKind kind);
  // Sum over warm starts of the run time their snapshot holds (its build_ms).
  prometheus::Counter& snapshot_time_saved() { return *time_saved_; }

  prometheus::Counter& snapshot_hits() { return *snapshot_hits_; }
  prometheus::Counter& snapshot_misses() { return *snapshot_misses_; }
  prometheus::Counter& snapshot_fallbacks() { return *snapshot_fallbacks_; }  // stale image, 404
  // Jobs routed to the host holding their snapshot: started there (hit) or
  // elsewhere after affinity_wait or the host's loss (miss), counted by the
  // router that started them.
  prometheus::Counter& affinity(bool hit) { return *(hit ? affinity_hits_ : affinity_misses_); }
  prometheus::Counter& snapshot_commits() { return *snapshot_commits_; }
  prometheus::Counter& snapshot_commit_failures() { return *snapshot_commit_failures_; }
  prometheus::Counter& snapshot_evictions() { return *snapshot_evictions_; }
  prometheus::Histogram& snapshot_commit_duration() { return *commit_duration_; }  // s
  prometheus::Gauge& snapshot_bytes_cached() { return *bytes_cached_; }

  prometheus::Gauge& sse_clients() { return *sse_clients_; }
  prometheus::Counter& sse_slow_clients_dropped() { return *sse_dropped_; }
  // method is folded to GET/POST/DELETE/OTHER so untrusted input cannot grow
  // the label space.
  prometheus::Counter& http_requests(std::string_view method, int code);

  // The dashboard's recent history, fed by record_history().
  const History& history() const { return history_; }
  // The counters and gauges the history follows, read now.
  HistoryReading reading() const;
  // Adds a history point ending at `now_ms` (Unix ms), every History::interval_ms().
  void record_history(std::int64_t now_ms) { history_.record(now_ms, reading()); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* jobs_family_;
  prometheus::Family<prometheus::Counter>* http_family_;
  prometheus::Gauge* queue_depth_;
  prometheus::Histogram* dispatch_latency_;
  prometheus::Histogram* container_create_;
  prometheus::Histogram* container_start_;
  prometheus::Gauge* running_containers_;
  prometheus::Gauge* engine_up_;
  prometheus::Counter* jobs_handed_back_;
  prometheus::Counter* claim_creates_;
  prometheus::Counter* claim_creates_unused_;
  prometheus::Counter* snapshot_coalesced_;
  prometheus::Counter* snapshot_hits_;
  prometheus::Counter* snapshot_misses_;
  prometheus::Counter* snapshot_fallbacks_;
  prometheus::Counter* affinity_hits_;
  prometheus::Counter* affinity_misses_;
  prometheus::Counter* snapshot_commits_;
  prometheus::Counter* snapshot_commit_failures_;
  prometheus::Counter* snapshot_evictions_;
  prometheus::Histogram* commit_duration_;
  prometheus::Gauge* bytes_cached_;
  prometheus::Gauge* sse_clients_;
  prometheus::Counter* sse_dropped_;
  prometheus::Counter* starts_warm_;
  prometheus::Counter* starts_cold_;
  prometheus::Counter* starts_fallback_;
  prometheus::Counter* time_saved_;
  History history_;
};

}  // namespace warmstart::api
