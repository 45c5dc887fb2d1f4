#include "api/metrics.hpp"

#include <prometheus/text_serializer.h>

namespace warmstart::api {
namespace {

using prometheus::Histogram;

// Docker calls and dispatch range from milliseconds (warm, local) to minutes
// (cold image, busy engine); commits of large snapshots take longer still.
const Histogram::BucketBoundaries& latency_buckets() {
  static const Histogram::BucketBoundaries buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                      1,     2.5,  5,     10,   30,  60,   300};
  return buckets;
}
const Histogram::BucketBoundaries& commit_buckets() {
  static const Histogram::BucketBoundaries buckets = {0.1, 0.5, 1,   2.5, 5,  10,
                                                      30,  60,  120, 300, 600};
  return buckets;
}

constexpr const char* job_states[] = {"queued", "scheduled", "running",  "succeeded",
                                      "failed", "timed_out", "cancelled"};

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  auto& reg = *registry_;
  jobs_family_ = &prometheus::BuildGauge()
                      .Name("warmstart_jobs")
                      .Help("Jobs currently in each state")
                      .Register(reg);
  for (const char* state : job_states) jobs_family_->Add({{"state", state}});
  // Unlabelled series: one per family.
  auto gauge = [&reg](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(reg).Add({});
  };
  auto counter = [&reg](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(reg).Add({});
  };
  auto histogram = [&reg](const char* name, const char* help,
                          const prometheus::Histogram::BucketBoundaries& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(reg).Add({}, buckets);
  };
  queue_depth_ = gauge("warmstart_queue_depth", "Jobs waiting to be claimed");
  dispatch_latency_ = histogram("warmstart_dispatch_latency_seconds", "Time from queued to started",
                                latency_buckets());
  container_create_ = histogram("warmstart_container_create_seconds",
                                "Docker container create latency", latency_buckets());
  container_start_ = histogram("warmstart_container_start_seconds",
                               "Docker container start latency", latency_buckets());
  running_containers_ = gauge("warmstart_running_containers", "Job containers currently running");
  engine_up_ = gauge("warmstart_engine_up",
                     "1 while the container engine answers, 0 while claiming is paused");
  jobs_handed_back_ = counter("warmstart_jobs_handed_back_total",
                              "Jobs given back unspent because the engine did not answer");
  claim_creates_ = counter("warmstart_claim_creates_total",
                           "Containers created while their job's claim was on its way");
  claim_creates_unused_ =
      counter("warmstart_claim_creates_unused_total",
              "Containers created during a claim that no run took (removed unstarted)");
  snapshot_coalesced_ = counter(
      "warmstart_snapshot_coalesced_total",
      "Waits of a job for another job's build of its snapshot key, instead of a cold start");
  auto& starts = prometheus::BuildCounter()
                     .Name("warmstart_job_starts_total")
                     .Help(
                         "Job containers started, by what they started from: warm (a snapshot), "
                         "cold (the base image), fallback (the base image after the snapshot "
                         "image vanished)")
                     .Register(reg);
  starts_warm_ = &starts.Add({{"start", "warm"}});
  starts_cold_ = &starts.Add({{"start", "cold"}});
  starts_fallback_ = &starts.Add({{"start", "fallback"}});
  time_saved_ = counter("warmstart_snapshot_time_saved_seconds_total",
                        "Run time warm starts did not repeat: for each, the build time its "
                        "snapshot holds");
  snapshot_hits_ = counter("warmstart_snapshot_hits_total", "Jobs started from a cached snapshot");
  snapshot_misses_ =
      counter("warmstart_snapshot_misses_total", "Jobs with a snapshot key and no usable snapshot");
  snapshot_fallbacks_ =
      counter("warmstart_snapshot_fallbacks_total",
              "Snapshot images found missing (404) and retried on the base image");
  auto& affinity = prometheus::BuildCounter()
                       .Name("warmstart_affinity_total")
                       .Help(
                           "Jobs routed to the host holding their snapshot, by result: hit "
                           "(started there) or miss (started on another host)")
                       .Register(reg);
  affinity_hits_ = &affinity.Add({{"result", "hit"}});
  affinity_misses_ = &affinity.Add({{"result", "miss"}});
  snapshot_commits_ = counter("warmstart_snapshot_commits_total", "Snapshots committed");
  snapshot_commit_failures_ =
      counter("warmstart_snapshot_commit_failures_total", "Snapshot commits that failed");
  snapshot_evictions_ = counter("warmstart_snapshot_evictions_total", "Snapshot images evicted");
  commit_duration_ = histogram("warmstart_snapshot_commit_seconds", "Duration of a snapshot commit",
                               commit_buckets());
  bytes_cached_ = gauge("warmstart_snapshot_bytes_cached", "Bytes of snapshot images in the cache");
  sse_clients_ = gauge("warmstart_sse_clients", "Connected event-stream clients");
  sse_dropped_ = counter("warmstart_sse_slow_clients_dropped_total",
                         "Event-stream clients disconnected for falling behind");
  http_family_ = &prometheus::BuildCounter()
                      .Name("warmstart_http_requests_total")
                      .Help("HTTP requests answered, by method and status code")
                      .Register(reg);
}

std::string Metrics::serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

prometheus::Gauge& Metrics::jobs(std::string_view state) {
  return jobs_family_->Add({{"state", std::string(state)}});
}

prometheus::Counter& Metrics::job_starts(StartKind kind) {
  switch (kind) {
    case StartKind::warm:
      return *starts_warm_;
    case StartKind::fallback:
      return *starts_fallback_;
    case StartKind::cold:
      break;
  }
  return *starts_cold_;
}

HistoryReading Metrics::reading() const {
  auto histogram = [](prometheus::Histogram& h, std::uint64_t& count, double& sum) {
    const auto sample = h.Collect().histogram;
    count = sample.sample_count;
    sum = sample.sample_sum;
  };
  auto whole = [](const prometheus::Counter& c) {
    return static_cast<std::uint64_t>(c.Value() + 0.5);
  };
  HistoryReading r;
  r.queue_depth = queue_depth_->Value();
  r.running = running_containers_->Value();
  r.warm_starts = whole(*starts_warm_);
  r.cold_starts = whole(*starts_cold_);
  r.fallback_starts = whole(*starts_fallback_);
  histogram(*commit_duration_, r.commits, r.commit_seconds);
  histogram(*dispatch_latency_, r.dispatches, r.dispatch_seconds);
  r.time_saved_seconds = time_saved_->Value();
  return r;
}

prometheus::Counter& Metrics::http_requests(std::string_view method, int code) {
  std::string folded = (method == "GET" || method == "POST" || method == "DELETE")
                           ? std::string(method)
                           : std::string("OTHER");
  return http_family_->Add({{"method", std::move(folded)}, {"code", std::to_string(code)}});
}

}  // namespace warmstart::api
