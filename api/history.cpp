#include "api/history.hpp"

#include <algorithm>

namespace warmstart::api {
namespace {

// What a cumulative counter gained; from zero when it went back.
std::uint64_t gained(std::uint64_t now, std::uint64_t before) {
  return now >= before ? now - before : now;
}

double gained(double now, double before) {
  return now >= before ? now - before : now;
}

// The mean in ms of the samples a histogram gained, none without one.
std::optional<double> mean_ms(std::uint64_t count, std::uint64_t count_before, double sum,
                              double sum_before) {
  const bool reset = count < count_before;
  const std::uint64_t n = reset ? count : count - count_before;
  if (n == 0) return std::nullopt;
  const double total = reset ? sum : std::max(0.0, sum - sum_before);
  return total * 1000.0 / static_cast<double>(n);
}

nlohmann::json or_null(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

History::History(std::int64_t interval_ms, std::size_t capacity)
    : interval_ms_(std::max<std::int64_t>(1, interval_ms)),
      capacity_(std::max<std::size_t>(1, capacity)) {}

void History::record(std::int64_t now_ms, const HistoryReading& r) {
  std::lock_guard lock(mutex_);
  HistoryPoint p;
  p.end_ms = now_ms;
  p.queue_depth = r.queue_depth;
  p.running = r.running;
  p.warm = gained(r.warm_starts, last_.warm_starts);
  p.cold = gained(r.cold_starts, last_.cold_starts);
  p.fallback = gained(r.fallback_starts, last_.fallback_starts);
  p.commits = gained(r.commits, last_.commits);
  p.commit_ms = mean_ms(r.commits, last_.commits, r.commit_seconds, last_.commit_seconds);
  p.dispatches = gained(r.dispatches, last_.dispatches);
  p.dispatch_ms =
      mean_ms(r.dispatches, last_.dispatches, r.dispatch_seconds, last_.dispatch_seconds);
  p.saved_s = gained(r.time_saved_seconds, last_.time_saved_seconds);
  last_ = r;
  points_.push_back(p);
  while (points_.size() > capacity_) points_.pop_front();
}

std::vector<HistoryPoint> History::points() const {
  std::lock_guard lock(mutex_);
  return {points_.begin(), points_.end()};
}

nlohmann::json History::to_json(std::int64_t since_ms) const {
  nlohmann::json points = nlohmann::json::array();
  for (const HistoryPoint& p : History::points()) {
    if (p.end_ms <= since_ms) continue;
    points.push_back({{"t", p.end_ms},
                      {"queue_depth", p.queue_depth},
                      {"running", p.running},
                      {"warm", p.warm},
                      {"cold", p.cold},
                      {"fallback", p.fallback},
                      {"commits", p.commits},
                      {"commit_ms", or_null(p.commit_ms)},
                      {"dispatches", p.dispatches},
                      {"dispatch_ms", or_null(p.dispatch_ms)},
                      {"saved_s", p.saved_s}});
  }
  return {{"interval_ms", interval_ms_}, {"points", std::move(points)}};
}

}  // namespace warmstart::api
