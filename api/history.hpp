// The router's own recent history, for the dashboard's charts: one point per
// fixed interval over the last hour, kept in memory (360 points of a dozen
// numbers: ~40 KB). Each point holds the gauges at its end (queue depth,
// running containers) and what happened during it (starts by kind, commits and
// dispatches with their mean latency, run time saved by warm starts), derived
// from cumulative readings of the router's counters. Pure: no clock, no I/O
// (the caller passes the time); thread-safe.
#pragma once
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace warmstart::api {

// Cumulative counters (since the process started) and gauges at one instant.
struct HistoryReading {
  double queue_depth = 0;
  double running = 0;
  std::uint64_t warm_starts = 0;
  std::uint64_t cold_starts = 0;
  std::uint64_t fallback_starts = 0;
  std::uint64_t commits = 0;
  double commit_seconds = 0;  // sum over `commits`
  std::uint64_t dispatches = 0;
  double dispatch_seconds = 0;  // sum over `dispatches` (queued -> started)
  double time_saved_seconds = 0;
};

// One interval, ending at `end_ms`.
struct HistoryPoint {
  std::int64_t end_ms = 0;
  double queue_depth = 0;
  double running = 0;
  std::uint64_t warm = 0;
  std::uint64_t cold = 0;
  std::uint64_t fallback = 0;
  std::uint64_t commits = 0;
  std::optional<double> commit_ms;  // mean of the interval's commits; none without one
  std::uint64_t dispatches = 0;
  std::optional<double> dispatch_ms;
  double saved_s = 0;

  bool operator==(const HistoryPoint&) const = default;
};

class History {
 public:
  static constexpr std::int64_t default_interval_ms = 10'000;
  static constexpr std::size_t default_capacity = 360;  // one hour at 10 s

  explicit History(std::int64_t interval_ms = default_interval_ms,
                   std::size_t capacity = default_capacity);

  std::int64_t interval_ms() const { return interval_ms_; }

  // Adds the point ending at `now_ms`: the gauges of `reading` and what its
  // counters gained since the previous record (since zero for the first one; a
  // counter that went back, e.g. after a restart, counts from zero again).
  // Drops the oldest point beyond the capacity.
  void record(std::int64_t now_ms, const HistoryReading& reading);

  std::vector<HistoryPoint> points() const;

  // GET /v1/history: {"interval_ms", "points": [{"t", "queue_depth", "running",
  // "warm", "cold", "fallback", "commits", "commit_ms", "dispatches",
  // "dispatch_ms", "saved_s"}, ...]} oldest first, points after `since_ms`
  // only; a mean without samples is null.
  nlohmann::json to_json(std::int64_t since_ms = 0) const;

 private:
  const std::int64_t interval_ms_;
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<HistoryPoint> points_;
  HistoryReading last_;
};

}  // namespace warmstart::api
