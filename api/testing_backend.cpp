#include "api/testing_backend.hpp"

#include "api/sse.hpp"
#include "common/time.hpp"

#include <algorithm>
#include <regex>

namespace warmstart::api {

using nlohmann::json;

class TestingBackend::TestingSubscription : public Subscription {
 public:
  TestingSubscription(TestingBackend& backend, std::uint64_t token)
      : backend_(backend), token_(token) {}
  ~TestingSubscription() override { backend_.unsubscribe(token_); }

 private:
  TestingBackend& backend_;
  std::uint64_t token_;
};

namespace {

bool is_terminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "timed_out" || state == "cancelled";
}

}  // namespace

awaitable<EnqueueResult> TestingBackend::enqueue(json job_body) {
  static const std::regex id_pattern("[A-Za-z0-9._:-]{1,128}");
  if (!job_body.is_object()) throw BackendError(400, "job must be a JSON object");
  const auto cmd = job_body.find("cmd");
  if (cmd == job_body.end() || !cmd->is_array() || cmd->empty()) {
    throw BackendError(400, "job.cmd must be a non-empty array of strings");
  }
  std::lock_guard lock(mutex_);
  std::string id;
  if (job_body.contains("id")) {
    if (!job_body["id"].is_string() ||
        !std::regex_match(job_body["id"].get<std::string>(), id_pattern)) {
      throw BackendError(400, "job.id must match [A-Za-z0-9._:-]{1,128}");
    }
    id = job_body["id"].get<std::string>();
  } else {
    id = "job-" + std::to_string(next_job_++);
  }
  ++enqueue_calls_;
  if (auto it = jobs_.find(id); it != jobs_.end()) co_return EnqueueResult{it->second, false};
  json record = {{"id", id},
                 {"state", "queued"},
                 {"attempts", 0},
                 {"created_at", rfc3339_now()},
                 {"started_at", nullptr},
                 {"finished_at", nullptr},
                 {"exit_code", nullptr},
                 {"error", nullptr},
                 {"image", job_body.value("image", "warmstart-worker:latest")},
                 {"from_snapshot", false},
                 {"snapshot_fallback", false},
                 {"container_id", nullptr},
                 {"router_id", nullptr},
                 {"spec", job_body}};
  jobs_[id] = record;
  job_order_.push_back(id);
  append_event_locked("job.queued", {{"job", id}});
  co_return EnqueueResult{record, true};
}

awaitable<json> TestingBackend::get_job(std::string id) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw BackendError(404, "no such job: " + id);
  co_return it->second;
}

awaitable<std::vector<json>> TestingBackend::list_jobs(std::optional<std::string> state,
                                                       std::size_t limit) {
  std::lock_guard lock(mutex_);
  std::vector<json> out;
  for (auto it = job_order_.rbegin(); it != job_order_.rend() && out.size() < limit; ++it) {
    const json& job = jobs_.at(*it);
    if (!state || job["state"] == *state) out.push_back(job);
  }
  co_return out;
}

awaitable<std::string> TestingBackend::job_logs(std::string id) {
  std::lock_guard lock(mutex_);
  if (!jobs_.contains(id)) throw BackendError(404, "no such job: " + id);
  auto it = logs_.find(id);
  co_return it == logs_.end() ? std::string() : it->second;
}

awaitable<json> TestingBackend::cancel_job(std::string id) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw BackendError(404, "no such job: " + id);
  const std::string state = it->second["state"];
  if (is_terminal(state)) throw BackendError(409, "job " + id + " already " + state);
  it->second["state"] = "cancelled";
  it->second["finished_at"] = rfc3339_now();
  append_event_locked("job.cancelled", {{"job", id}});
  co_return it->second;
}

awaitable<std::vector<json>> TestingBackend::list_snapshots() {
  std::lock_guard lock(mutex_);
  std::vector<json> out;
  for (const auto& [key, snapshot] : snapshots_) out.push_back(snapshot);
  co_return out;
}

awaitable<std::vector<json>> TestingBackend::list_routers() {
  std::lock_guard lock(mutex_);
  co_return routers_;
}

void TestingBackend::set_routers(std::vector<json> routers) {
  std::lock_guard lock(mutex_);
  routers_ = std::move(routers);
}

awaitable<json> TestingBackend::invalidate_snapshot(std::string key) {
  std::lock_guard lock(mutex_);
  if (snapshots_.erase(key) == 0) throw BackendError(404, "no such snapshot: " + key);
  append_event_locked("snapshot.invalidated", {{"key", key}, {"reason", "api"}});
  co_return json{{"key", key}, {"invalidated", true}};
}

awaitable<std::vector<json>> TestingBackend::read_events(std::string after_id, std::size_t max) {
  std::function<void()> hook;
  {
    std::lock_guard lock(mutex_);
    ++read_events_calls_;
    hook = read_hook_;
  }
  if (hook) hook();
  std::lock_guard lock(mutex_);
  std::vector<json> out;
  for (const json& event : events_) {
    if (out.size() >= max) break;
    if (event_id_less(after_id, event["id"].get<std::string>())) out.push_back(event);
  }
  co_return out;
}

SubscriptionPtr TestingBackend::subscribe_events(EventHandler handler) {
  std::lock_guard lock(mutex_);
  const std::uint64_t token = next_subscriber_++;
  subscribers_[token] = std::move(handler);
  return std::make_unique<TestingSubscription>(*this, token);
}

void TestingBackend::unsubscribe(std::uint64_t token) {
  std::lock_guard lock(mutex_);
  subscribers_.erase(token);
}

awaitable<ReadyStatus> TestingBackend::check_ready() {
  std::lock_guard lock(mutex_);
  co_return ready_;
}

awaitable<bool> TestingBackend::webhook_seen(std::string delivery_key, Duration /*ttl*/) {
  std::lock_guard lock(mutex_);
  co_return !seen_deliveries_.insert(delivery_key).second;
}

std::string TestingBackend::append_event(const std::string& type, json fields) {
  std::lock_guard lock(mutex_);
  return append_event_locked(type, std::move(fields));
}

// Handlers run under the lock: that is what makes "never called after the
// handle is destroyed" and "in id order" hold for the double.
std::string TestingBackend::append_event_locked(const std::string& type, json fields) {
  json event = {
      {"id", std::to_string(next_event_++) + "-0"}, {"ts", rfc3339_now()}, {"type", type}};
  if (fields.is_object()) {
    for (const auto& [k, v] : fields.items()) event[k] = v;
  }
  events_.push_back(event);
  for (const auto& [token, handler] : subscribers_) handler(event);
  return event["id"];
}

void TestingBackend::set_job_state(const std::string& id, const std::string& state) {
  std::lock_guard lock(mutex_);
  jobs_.at(id)["state"] = state;
}

void TestingBackend::set_job_logs(const std::string& id, std::string logs) {
  std::lock_guard lock(mutex_);
  logs_[id] = std::move(logs);
}

void TestingBackend::add_snapshot(json snapshot) {
  std::lock_guard lock(mutex_);
  const std::string key = snapshot.at("key").get<std::string>();
  snapshots_[key] = std::move(snapshot);
}

void TestingBackend::set_ready(ReadyStatus status) {
  std::lock_guard lock(mutex_);
  ready_ = status;
}

void TestingBackend::on_read_events(std::function<void()> hook) {
  std::lock_guard lock(mutex_);
  read_hook_ = std::move(hook);
}

std::size_t TestingBackend::enqueue_calls() const {
  std::lock_guard lock(mutex_);
  return enqueue_calls_;
}
std::size_t TestingBackend::job_count() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}
std::size_t TestingBackend::subscriber_count() const {
  std::lock_guard lock(mutex_);
  return subscribers_.size();
}
std::size_t TestingBackend::read_events_calls() const {
  std::lock_guard lock(mutex_);
  return read_events_calls_;
}

}  // namespace warmstart::api
