#include "queue/job.hpp"

#include "common/digest.hpp"
#include "common/json_limits.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "queue/validation.hpp"

#include <charconv>
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
    // Only when set: the JSON (and the fingerprint) of other jobs stays as it was.
    if (snapshot->prewarm) j["snapshot"]["prewarm"] = true;
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

std::string JobRecord::affinity() const {
  if (affinity_host.empty() || host.empty()) return "";
  return host == affinity_host ? "hit" : "miss";
}

std::string keep_tail(std::string text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  std::size_t start = text.size() - max_bytes;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
  return text.substr(start);
}

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
          {"waiting_for_snapshot", string_or_null(waiting_for_snapshot)},
          {"host", string_or_null(host)},
          {"affinity_host", string_or_null(affinity_host)},
          {"affinity", string_or_null(affinity())},
          {"spec", spec.to_json()},
          {"log_tail", log_tail}};
}

JobRecord JobRecord::from_json(const nlohmann::json& j) {
  JobRecord r;
  r.id = j.at("id").get<std::string>();
  auto state = parse_state(j.at("state").get<std::string>());
  if (!state) throw std::invalid_argument("unknown job state: " + j.at("state").dump());
  r.state = *state;
  const auto& attempts = j.at("attempts");
  if (!attempts.is_number_integer() || attempts.get<std::int64_t>() < 0 ||
      attempts.get<std::int64_t>() > INT32_MAX) {
    throw std::invalid_argument("attempts must be a non-negative integer: " + attempts.dump());
  }
  r.attempts = attempts.get<int>();
  r.created_at = parse_rfc3339(j.at("created_at")).value_or(0);
  r.started_at = parse_rfc3339(j.value("started_at", nlohmann::json()));
  r.finished_at = parse_rfc3339(j.value("finished_at", nlohmann::json()));
  if (auto e = j.value("exit_code", nlohmann::json()); e.is_number_integer() &&
                                                       e.get<std::int64_t>() >= INT32_MIN &&
                                                       e.get<std::int64_t>() <= INT32_MAX) {
    r.exit_code = e.get<int>();
  }
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
  r.waiting_for_snapshot = str("waiting_for_snapshot");
  r.host = str("host");
  r.affinity_host = str("affinity_host");
  r.from_snapshot = j.value("from_snapshot", false);
  r.snapshot_fallback = j.value("snapshot_fallback", false);
  r.spec = JobSpec::from_json(j.at("spec"));
  return r;
}

}  // namespace warmstart::queue

namespace warmstart::queue {
namespace {

std::optional<std::int64_t> to_int(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

int to_int32(std::optional<std::int64_t> v) {
  if (!v || *v < INT32_MIN || *v > INT32_MAX) return 0;
  return static_cast<int>(*v);
}

}  // namespace

JobRecord JobRecord::from_hash(
    const std::unordered_map<std::string_view, std::string_view>& fields) {
  auto get = [&](std::string_view key) -> std::string {
    auto it = fields.find(key);
    return it == fields.end() ? std::string() : std::string(it->second);
  };
  JobRecord r;
  r.id = get("id");
  r.state = parse_state(get("state")).value_or(JobState::failed);
  r.attempts = to_int32(to_int(get("attempts")));
  r.created_at = to_int(get("created_at")).value_or(0);
  r.started_at = to_int(get("started_at"));
  r.finished_at = to_int(get("finished_at"));
  if (auto code = to_int(get("exit_code")); code && *code >= INT32_MIN && *code <= INT32_MAX) {
    r.exit_code = static_cast<int>(*code);
  }
  r.error = get("error");
  r.image = get("image");
  r.from_snapshot = get("from_snapshot") == "1";
  r.snapshot_fallback = get("snapshot_fallback") == "1";
  r.container_id = get("container_id");
  r.router_id = get("router_id");
  r.log_tail = get("log_tail");
  r.due_at = to_int(get("due_at"));
  r.snapshot_error = get("snapshot_error");
  r.waiting_for_key = get("parked");
  r.waiting_for_snapshot = get("buildwait");
  r.host = get("host");
  r.affinity_host = get("affhost");
  r.snapshot_seen = get("snapseen");
  r.snapshot_build_ms = to_int(get("snapbuild_ms")).value_or(0);
  const std::string spec = get("spec");
  if (!spec.empty()) {
    // Written by the queue after validation; unreadable means corrupted or
    // written by something else.
    std::string reason;
    auto parsed = parse_bounded(spec, JsonLimits{}, &reason);
    try {
      if (!parsed) throw std::invalid_argument("spec " + reason);
      r.spec = JobSpec::from_json(*parsed);
    } catch (const std::exception& e) {
      log::error("job record has an unreadable spec", {{"job", r.id}, {"error", e.what()}});
    }
  }
  if (r.spec.id.empty()) r.spec.id = r.id;
  std::string queue = get("queue");
  if (!queue.empty()) r.spec.queue = queue;
  return r;
}

}  // namespace warmstart::queue
