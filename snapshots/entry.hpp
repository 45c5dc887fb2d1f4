// One snapshot registry entry: what the cache knows about the snapshot image of
// one key on one Docker engine.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

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

  bool operator==(const SnapshotEntry&) const = default;
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
          {"ttl_ms", e.ttl_ms}};
}

}  // namespace warmstart::snapshots
