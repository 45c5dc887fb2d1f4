// One snapshot registry entry: what the cache knows about the snapshot image of
// one key on one Docker engine.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace warmstart::snapshots {

struct SnapshotEntry {
  std::string key;                // user's snapshot key, e.g. "repo-42/branch-main"
  std::string image;              // repo:tag, e.g. "warmstart-snapshot/3f2a...:g7"
  std::string image_id;           // "sha256:..." of `image` when it was registered
  std::string base_image_id;      // id of the base image the chain started from
  std::string source_job;         // job whose container was committed
  std::int64_t created_ms = 0;    // Unix ms of the commit
  std::int64_t last_used_ms = 0;  // Unix ms of the last hit (= created_ms at first)
  std::int64_t uses = 0;          // hits since the commit
  std::int64_t size_bytes = 0;    // engine-reported image size (includes base layers)
  std::int64_t layer_depth = 0;   // RootFS layers of the image
  std::int64_t generation = 0;    // per key, strictly increasing
  std::int64_t ttl_ms = 0;        // per-key TTL override; 0 = the policy's default
  // What the snapshot holds in run time: the source job's run plus, when that
  // job started warm, the build_ms of the snapshot it started from. A warm
  // start from this entry saves about this much (0 = unknown, e.g. older entries).
  std::int64_t build_ms = 0;
  // The host whose engine holds the image (the registry's namespace, filled
  // in by list(); not a registry field).
  std::string host;

  bool operator==(const SnapshotEntry&) const = default;
};

// How many entries a registry holds and their images' bytes.
struct Totals {
  std::int64_t count = 0;
  std::int64_t bytes = 0;
};

// The JSON shape of `warmstart snapshots list --json` and GET /v1/snapshots.
inline nlohmann::json to_json(const SnapshotEntry& e) {
  return {{"key", e.key},
          {"image", e.image},
          {"image_id", e.image_id},
          {"base_image_id", e.base_image_id},
          {"source_job", e.source_job},
          {"created_ms", e.created_ms},
          {"last_used_ms", e.last_used_ms},
          {"uses", e.uses},
          {"size_bytes", e.size_bytes},
          {"layer_depth", e.layer_depth},
          {"generation", e.generation},
          {"ttl_ms", e.ttl_ms},
          {"build_ms", e.build_ms},
          {"host", e.host}};
}

// The rows of `snapshots list --json` and GET /v1/snapshots: each entry with
// "builder" (the job id building its next generation, else null), then a row
// {"key", "builder"} for each key whose first build is running. `builders`
// maps key -> builder job id (queue::Queue::builds()).
inline nlohmann::json snapshot_listing(const std::vector<SnapshotEntry>& entries,
                                       const std::map<std::string, std::string>& builders) {
  nlohmann::json rows = nlohmann::json::array();
  std::set<std::string> listed;
  for (const auto& e : entries) {
    nlohmann::json row = to_json(e);
    const auto builder = builders.find(e.key);
    row["builder"] =
        builder == builders.end() ? nlohmann::json(nullptr) : nlohmann::json(builder->second);
    rows.push_back(std::move(row));
    listed.insert(e.key);
  }
  for (const auto& [key, builder] : builders) {
    if (listed.count(key) == 0) rows.push_back({{"key", key}, {"builder", builder}});
  }
  return rows;
}

}  // namespace warmstart::snapshots
