#include "queue/fleet.hpp"

#include <algorithm>

namespace warmstart::queue {

nlohmann::json to_json(const RouterRecord& r) {
  return {{"id", r.id},
          {"host_id", r.host_id},
          {"engine_id", r.engine_id},
          {"host_name", r.host_name},
          {"docker_host", r.docker_host},
          {"version", r.version},
          {"instance", r.instance},
          {"queues", r.queues},
          {"capacity", r.capacity},
          {"running", r.running},
          {"snapshot_count", r.snapshot_count},
          {"snapshot_bytes", r.snapshot_bytes},
          {"draining", r.draining},
          {"engine_up", r.engine_up},
          {"lease_ms", r.lease_ms},
          {"started_at", r.started_at},
          {"last_seen", r.last_seen}};
}

std::optional<RouterRecord> router_record_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) return std::nullopt;
  RouterRecord r;
  try {
    r.id = j.at("id").get<std::string>();
    r.host_id = j.value("host_id", "");
    r.engine_id = j.value("engine_id", "");
    r.host_name = j.value("host_name", "");
    r.docker_host = j.value("docker_host", "");
    r.version = j.value("version", "");
    r.instance = j.value("instance", "");
    r.queues = j.value("queues", std::vector<std::string>{});
    r.capacity = j.value("capacity", 0);
    r.running = j.value("running", 0);
    r.snapshot_count = j.value("snapshot_count", std::int64_t{0});
    r.snapshot_bytes = j.value("snapshot_bytes", std::int64_t{0});
    r.draining = j.value("draining", false);
    r.engine_up = j.value("engine_up", true);
    r.lease_ms = j.value("lease_ms", std::int64_t{30000});
    r.started_at = j.value("started_at", std::int64_t{0});
    r.last_seen = j.value("last_seen", std::int64_t{0});
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // a field of the wrong type
  }
  return r;
}

std::string router_status(const RouterRecord& r, std::int64_t now_ms) {
  if (now_ms - r.last_seen > r.lease_ms) return "lost";
  return r.draining ? "draining" : "live";
}

nlohmann::json describe(const RouterRecord& r, std::int64_t now_ms) {
  nlohmann::json j = to_json(r);
  j.erase("instance");  // internal: tells a restart from a twin
  j["status"] = router_status(r, now_ms);
  j["last_seen_ago_ms"] = std::max<std::int64_t>(0, now_ms - r.last_seen);
  return j;
}

std::optional<RouterRecord> host_identity_conflict(const RouterRecord& mine,
                                                   const std::vector<RouterRecord>& fleet,
                                                   std::int64_t now_ms) {
  for (const auto& other : fleet) {
    if (other.host_id != mine.host_id) continue;
    if (other.instance == mine.instance && !mine.instance.empty()) continue;  // ourselves
    if (router_status(other, now_ms) == "lost") continue;  // a dead router claims nothing
    const bool same_engine = other.engine_id == mine.engine_id &&
                             other.host_name == mine.host_name &&
                             other.docker_host == mine.docker_host;
    if (!same_engine) return other;
  }
  return std::nullopt;
}

std::string describe_host_identity_conflict(const RouterRecord& mine, const RouterRecord& other) {
  return "host identity \"" + mine.host_id + "\" is claimed by live router \"" + other.id +
         "\" (engine " + other.engine_id + " at " + other.docker_host + " on " + other.host_name +
         ", seen " + std::to_string(mine.last_seen - other.last_seen) +
         " ms ago); this router has engine " + mine.engine_id + " at " + mine.docker_host + " on " +
         mine.host_name +
         ". Two engines under one identity would share one snapshot namespace: give each "
         "Docker host its own [router] host_id (and engines cloned from one image their own "
         "trust key, so their engine IDs differ)";
}

}  // namespace warmstart::queue
