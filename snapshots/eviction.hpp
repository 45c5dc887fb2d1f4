// Eviction planning: which snapshots to delete, in which order, and why. Pure:
// entries + images in use + policy + now -> ordered evictions.
#pragma once
#include "snapshots/entry.hpp"

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::snapshots {

struct EvictionPolicy {
  // Idle time since the last use (or the commit) after which a snapshot goes;
  // an entry's ttl_ms overrides it.
  std::chrono::milliseconds ttl = std::chrono::hours(24);
  std::size_t max_count = 200;                         // snapshots per engine; 0 = unlimited
  std::int64_t max_bytes = 50LL * 1024 * 1024 * 1024;  // sum of size_bytes; 0 = unlimited
};

enum class EvictionReason { ttl, count, bytes };
std::string_view to_string(EvictionReason reason);

struct Eviction {
  std::string key;
  std::string image;
  std::string image_id;
  EvictionReason reason = EvictionReason::ttl;
};

struct EvictionPlan {
  std::vector<Eviction> evictions;  // in execution order
  // Entries the policy would evict but a running container uses: kept, and
  // retried by the next gc. One line each: "<key> (<reason>)".
  std::vector<std::string> kept_in_use;
  // One line per decision, for logs and golden tests.
  std::string to_text() const;
};

// TTL first (every expired entry), then least recently used first until both
// the count and the byte budget hold. Entries in use still count against the
// budgets (their bytes are on disk) but are never chosen.
EvictionPlan plan_evictions(std::vector<SnapshotEntry> entries,
                            const std::set<std::string>& in_use_image_ids,
                            const EvictionPolicy& policy, std::int64_t now_ms);

}  // namespace warmstart::snapshots
