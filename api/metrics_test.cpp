#include "api/metrics.hpp"
#include "api/testing_prometheus.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using warmstart::api::testing::parse_exposition;

TEST_CASE("the exposition parser rejects what Prometheus would", "[unit]") {
  CHECK_NOTHROW(
      parse_exposition("# HELP a_total A\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n"));
  CHECK_THROWS_WITH(parse_exposition("a 1\n"), Catch::Contains("sample without # TYPE"));
  CHECK_THROWS_WITH(parse_exposition("# TYPE a gauge\na{x=1} 1\n"), Catch::Contains("not quoted"));
  CHECK_THROWS_WITH(parse_exposition("# TYPE a gauge\na one\n"),
                    Catch::Contains("bad sample value"));
  CHECK_THROWS_WITH(parse_exposition("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                     "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"),
                    Catch::Contains("not cumulative"));
  CHECK_THROWS_WITH(parse_exposition("# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                                     "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"),
                    Catch::Contains("+Inf bucket != _count"));
}

TEST_CASE("metrics serialize to a valid exposition with every family the router updates",
          "[unit]") {
  Metrics metrics;
  metrics.jobs("running").Set(2);
  metrics.queue_depth().Set(5);
  metrics.dispatch_latency().Observe(0.2);
  metrics.dispatch_latency().Observe(42);
  metrics.container_create_latency().Observe(0.03);
  metrics.container_start_latency().Observe(0.4);
  metrics.running_containers().Set(2);
  metrics.snapshot_hits().Increment();
  metrics.snapshot_misses().Increment(2);
  metrics.snapshot_fallbacks().Increment();
  metrics.snapshot_commits().Increment();
  metrics.snapshot_evictions().Increment();
  metrics.snapshot_commit_duration().Observe(3);
  metrics.snapshot_bytes_cached().Set(1e9);
  metrics.sse_clients().Set(1);
  metrics.http_requests("GET", 200).Increment();
  metrics.http_requests("BREW", 418).Increment();

  const auto e = parse_exposition(metrics.serialize());
  CHECK(e.family("warmstart_jobs").type == "gauge");
  CHECK(e.value("warmstart_jobs", "warmstart_jobs", {{"state", "running"}}) == 2);
  CHECK(e.value("warmstart_jobs", "warmstart_jobs", {{"state", "queued"}}) == 0);
  CHECK(e.family("warmstart_jobs").samples.size() == 7);
  CHECK(e.value("warmstart_queue_depth", "warmstart_queue_depth") == 5);
  CHECK(e.family("warmstart_dispatch_latency_seconds").type == "histogram");
  CHECK(e.value("warmstart_dispatch_latency_seconds", "warmstart_dispatch_latency_seconds_count") ==
        2);
  CHECK(e.value("warmstart_dispatch_latency_seconds", "warmstart_dispatch_latency_seconds_sum") ==
        Approx(42.2));
  CHECK(e.value("warmstart_dispatch_latency_seconds", "warmstart_dispatch_latency_seconds_bucket",
                {{"le", "0.25"}}) == 1);
  CHECK(e.family("warmstart_container_create_seconds").type == "histogram");
  CHECK(e.family("warmstart_container_start_seconds").type == "histogram");
  CHECK(e.family("warmstart_snapshot_commit_seconds").type == "histogram");
  CHECK(e.value("warmstart_snapshot_hits_total", "warmstart_snapshot_hits_total") == 1);
  CHECK(e.value("warmstart_snapshot_misses_total", "warmstart_snapshot_misses_total") == 2);
  CHECK(e.family("warmstart_snapshot_fallbacks_total").type == "counter");
  CHECK(e.family("warmstart_snapshot_commits_total").type == "counter");
  CHECK(e.family("warmstart_snapshot_evictions_total").type == "counter");
  CHECK(e.value("warmstart_snapshot_bytes_cached", "warmstart_snapshot_bytes_cached") == 1e9);
  CHECK(e.value("warmstart_running_containers", "warmstart_running_containers") == 2);
  CHECK(e.value("warmstart_sse_clients", "warmstart_sse_clients") == 1);
  CHECK(e.family("warmstart_sse_slow_clients_dropped_total").type == "counter");
  CHECK(e.value("warmstart_http_requests_total", "warmstart_http_requests_total",
                {{"method", "GET"}, {"code", "200"}}) == 1);
  // Unknown methods are folded so clients cannot mint label values.
  CHECK(e.value("warmstart_http_requests_total", "warmstart_http_requests_total",
                {{"method", "OTHER"}, {"code", "418"}}) == 1);
}
