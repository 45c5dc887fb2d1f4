// The fleet view: every router on one Redis writes a heartbeat record
// (Queue::heartbeat) and anyone can list them (Queue::routers). Pure types and
// decisions here; the adapters store the record as JSON (docs/fleet.md).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::queue {

// One router as its last heartbeat described it.
struct RouterRecord {
  std::string id;           // router id (its queue consumer name)
  std::string host_id;      // [router] host_id, default the engine ID: the snapshot namespace
  std::string engine_id;    // docker info .ID of its engine
  std::string host_name;    // gethostname() of the router's machine
  std::string docker_host;  // unix:///path of its engine
  std::string version;      // warmstart version
  std::string instance;     // random per process: tells a restart from a twin
  std::vector<std::string> queues;
  int capacity = 0;  // concurrency
  int running = 0;   // slots held
  std::int64_t snapshot_count = 0;
  std::int64_t snapshot_bytes = 0;
  bool draining = false;
  bool engine_up = true;
  std::int64_t lease_ms = 30000;  // silent longer than this: "lost"
  std::int64_t started_at = 0;    // Unix ms
  std::int64_t last_seen = 0;     // Unix ms of the last heartbeat
};

nlohmann::json to_json(const RouterRecord& r);
// Nullopt when `j` is not a router record (a foreign or damaged value).
std::optional<RouterRecord> router_record_from_json(const nlohmann::json& j);

// "live", "draining" or "lost" (silent past its lease) at `now_ms`.
std::string router_status(const RouterRecord& r, std::int64_t now_ms);
// to_json plus "status" and "last_seen_ago_ms" at `now_ms`: what the CLI and
// GET /v1/routers show.
nlohmann::json describe(const RouterRecord& r, std::int64_t now_ms);

// The start-up check of a router's host identity: the first live record
// (not lost at `now_ms`) that claims `mine.host_id` for another engine (its
// engine ID, its machine or its engine socket differ), or nullopt. Two engines
// under one identity would share (and wipe) one snapshot namespace.
std::optional<RouterRecord> host_identity_conflict(const RouterRecord& mine,
                                                   const std::vector<RouterRecord>& fleet,
                                                   std::int64_t now_ms);
// The error a router prints for that conflict.
std::string describe_host_identity_conflict(const RouterRecord& mine, const RouterRecord& other);

}  // namespace warmstart::queue
