#include "api/history.hpp"
#include "api/metrics.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;

TEST_CASE("history points hold each interval's gains, the gauges and mean latencies", "[unit]") {
  History history(10'000, 360);
  HistoryReading r;
  r.queue_depth = 7;
  r.running = 2;
  r.cold_starts = 2;
  r.dispatches = 2;
  r.dispatch_seconds = 0.5;
  history.record(1'000, r);

  r.queue_depth = 3;
  r.running = 4;
  r.warm_starts = 3;
  r.cold_starts = 3;
  r.fallback_starts = 1;
  r.commits = 2;
  r.commit_seconds = 3.0;
  r.dispatches = 7;
  r.dispatch_seconds = 1.5;
  r.time_saved_seconds = 12.5;
  history.record(11'000, r);
  history.record(21'000, r);  // nothing happened

  const auto points = history.points();
  REQUIRE(points.size() == 3);
  CHECK(points[0].end_ms == 1'000);
  CHECK(points[0].cold == 2);
  CHECK(points[0].queue_depth == 7);
  CHECK(points[0].dispatch_ms == Approx(250.0));
  CHECK_FALSE(points[0].commit_ms.has_value());

  CHECK(points[1].queue_depth == 3);
  CHECK(points[1].running == 4);
  CHECK(points[1].warm == 3);
  CHECK(points[1].cold == 1);
  CHECK(points[1].fallback == 1);
  CHECK(points[1].commits == 2);
  REQUIRE(points[1].commit_ms.has_value());
  CHECK(*points[1].commit_ms == Approx(1500.0));
  CHECK(points[1].dispatches == 5);
  CHECK(*points[1].dispatch_ms == Approx(200.0));
  CHECK(points[1].saved_s == Approx(12.5));

  CHECK(points[2].warm == 0);
  CHECK(points[2].commits == 0);
  CHECK_FALSE(points[2].commit_ms.has_value());
  CHECK_FALSE(points[2].dispatch_ms.has_value());
  CHECK(points[2].running == 4);  // gauges carry on
}

TEST_CASE("history keeps its capacity, newest last, and a reset counter counts from zero",
          "[unit]") {
  History history(10'000, 3);
  HistoryReading r;
  for (int i = 1; i <= 5; ++i) {
    r.warm_starts = static_cast<std::uint64_t>(10 * i);
    history.record(i * 10'000, r);
  }
  auto points = history.points();
  REQUIRE(points.size() == 3);
  CHECK(points.front().end_ms == 30'000);
  CHECK(points.back().end_ms == 50'000);
  CHECK(points.back().warm == 10);

  r.warm_starts = 4;  // went back: e.g. the counters' source restarted
  history.record(60'000, r);
  CHECK(history.points().back().warm == 4);
}

TEST_CASE("history JSON lists points after `since` with null for an empty mean", "[unit]") {
  History history(5'000, 10);
  HistoryReading r;
  history.record(5'000, r);
  r.commits = 1;
  r.commit_seconds = 2;
  history.record(10'000, r);

  const auto all = history.to_json();
  CHECK(all["interval_ms"] == 5'000);
  REQUIRE(all["points"].size() == 2);
  CHECK(all["points"][0]["t"] == 5'000);
  CHECK(all["points"][0]["commit_ms"].is_null());
  CHECK(all["points"][1]["commit_ms"].get<double>() == Approx(2000.0));
  for (const char* field : {"queue_depth", "running", "warm", "cold", "fallback", "commits",
                            "dispatches", "dispatch_ms", "saved_s"}) {
    CHECK(all["points"][1].contains(field));
  }
  const auto newer = history.to_json(5'000);
  REQUIRE(newer["points"].size() == 1);
  CHECK(newer["points"][0]["t"] == 10'000);
}

TEST_CASE("metrics feed the history from their own counters", "[unit]") {
  Metrics metrics;
  metrics.queue_depth().Set(5);
  metrics.running_containers().Set(2);
  metrics.job_starts(StartKind::warm).Increment(3);
  metrics.job_starts(StartKind::cold).Increment(1);
  metrics.job_starts(StartKind::fallback).Increment(2);
  metrics.snapshot_commit_duration().Observe(1.0);
  metrics.snapshot_commit_duration().Observe(3.0);
  metrics.dispatch_latency().Observe(0.1);
  metrics.snapshot_time_saved().Increment(42);
  metrics.record_history(1'000);

  const auto points = metrics.history().points();
  REQUIRE(points.size() == 1);
  const HistoryPoint& p = points[0];
  CHECK(p.queue_depth == 5);
  CHECK(p.running == 2);
  CHECK(p.warm == 3);
  CHECK(p.cold == 1);
  CHECK(p.fallback == 2);
  CHECK(p.commits == 2);
  CHECK(*p.commit_ms == Approx(2000.0));
  CHECK(p.dispatches == 1);
  CHECK(*p.dispatch_ms == Approx(100.0));
  CHECK(p.saved_s == Approx(42.0));
  const std::string text = metrics.serialize();
  CHECK(text.find("warmstart_job_starts_total{start=\"warm\"} 3") != std::string::npos);
  CHECK(text.find("warmstart_snapshot_time_saved_seconds_total 42") != std::string::npos);
}
