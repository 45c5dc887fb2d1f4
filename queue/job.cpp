#include "queue/job.hpp"

#include "common/digest.hpp"
#include "common/time.hpp"
#include "queue/validation.hpp"

#include <cstdio>
#include <ctime>
#include <stdexcept>

namespace warmstart::queue {

std::string_view to_string(JobState state) {
  switch (state) {
    case JobState::queued:
      return "queued";
    case JobState::scheduled:
      return "scheduled";
    case JobState::running:
      return "running";
    case JobState::succeeded:
      return "succeeded";
    case JobState::failed:
      return "failed";
    case JobState::timed_out:
      return "timed_out";
    case JobState::cancelled:
      return "cancelled";
  }
  return "?";
}

std::optional<JobState> parse_state(std::string_view text) {
  for (JobState s : kAllStates) {
    if (to_string(s) == text) return s;
  }
  return std::nullopt;
}

bool is_terminal(JobState state) {
  return state == JobState::succeeded || state == JobState::failed ||
         state == JobState::timed_out || state == JobState::cancelled;
}

nlohmann::json JobSpec::to_json() const {
  nlohmann::json j = {
      {"id", id},
      {"queue", queue},
      {"cmd", cmd},
      {"env", env},
      {"max_attempts", max_attempts},
      {"resources",
       {{"memory_mb", resources.memory_mb}, {"cpus", resources.cpus}, {"pids", resources.pids}}},
      {"labels", labels}};
  if (!image.empty()) j["image"] = image;
  if (snapshot) {
    j["snapshot"] = {
        {"key", snapshot->key}, {"reuse", snapshot->reuse}, {"commit", snapshot->commit}};
  }
  if (!concurrency_key.empty()) j["concurrency_key"] = concurrency_key;
  if (timeout_s > 0) j["timeout_s"] = timeout_s;
  return j;
}

std::string JobSpec::fingerprint() const {
  nlohmann::json j = to_json();
  j.erase("id");
  // nlohmann's objects keep their keys sorted: the dump is canonical.
  return sha256_hex(j.dump());
}

JobSpec JobSpec::from_json(const nlohmann::json& j) {
  ValidationOptions options;
  options.generate_id = false;
  Validated v = validate_job(j, options);
  if (!v.ok()) throw std::invalid_argument(v.reason);
  return std::move(*v.spec);
}

namespace {

nlohmann::json time_or_null(const std::optional<std::int64_t>& ms) {
  return ms ? nlohmann::json(rfc3339(*ms)) : nlohmann::json(nullptr);
}
nlohmann::json string_or_null(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}

// Inverse of rfc3339(): "YYYY-MM-DDTHH:MM:SS.mmmZ" (milliseconds optional).
std::optional<std::int64_t> parse_rfc3339(const nlohmann::json& v) {
  if (!v.is_string()) return std::nullopt;
  const std::string& s = v.get_ref<const std::string&>();
  std::tm tm{};
  int ms = 0;
  char z = 0;
  int n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                      &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z);
  if (n != 8) {
    ms = 0;
    n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z);
    if (n != 7) throw std::invalid_argument("not an RFC 3339 UTC timestamp: " + s);
  }
  if (z != 'Z') throw std::invalid_argument("timestamp must be UTC (Z): " + s);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + ms;
}

}  // namespace

nlohmann::json JobRecord::to_json() const {
  return {{"id", id},
          {"state", to_string(state)},
          {"attempts", attempts},
          {"created_at", rfc3339(created_at)},
          {"started_at", time_or_null(started_at)},
          {"finished_at", time_or_null(finished_at)},
          {"exit_code", exit_code ? nlohmann::json(*exit_code) : nlohmann::json(nullptr)},
          {"error", string_or_null(error)},
          {"image", string_or_null(image)},
          {"from_snapshot", from_snapshot},
          {"snapshot_fallback", snapshot_fallback},
          {"container_id", string_or_null(container_id)},
          {"router_id", string_or_null(router_id)},
          {"snapshot_error", string_or_null(snapshot_error)},
          {"waiting_for_key", string_or_null(waiting_for_key)},
          {"spec", spec.to_json()},
          {"log_tail", log_tail}};
}

JobRecord JobRecord::from_json(const nlohmann::json& j) {
  JobRecord r;
  r.id = j.at("id").get<std::string>();
  auto state = parse_state(j.at("state").get<std::string>());
  if (!state) throw std::invalid_argument("unknown job state: " + j.at("state").dump());
  r.state = *state;
  r.attempts = j.at("attempts").get<int>();
  r.created_at = parse_rfc3339(j.at("created_at")).value_or(0);
  r.started_at = parse_rfc3339(j.value("started_at", nlohmann::json()));
  r.finished_at = parse_rfc3339(j.value("finished_at", nlohmann::json()));
  if (auto e = j.value("exit_code", nlohmann::json()); e.is_number_integer())
    r.exit_code = e.get<int>();
  auto str = [&](const char* key) {
    auto v = j.value(key, nlohmann::json());
    return v.is_string() ? v.get<std::string>() : std::string();
  };
  r.error = str("error");
  r.image = str("image");
  r.container_id = str("container_id");
  r.router_id = str("router_id");
  r.log_tail = str("log_tail");
  r.snapshot_error = str("snapshot_error");
  r.waiting_for_key = str("waiting_for_key");
  r.from_snapshot = j.value("from_snapshot", false);
  r.snapshot_fallback = j.value("snapshot_fallback", false);
  r.spec = JobSpec::from_json(j.at("spec"));
  return r;
}

}  // namespace warmstart::queue
