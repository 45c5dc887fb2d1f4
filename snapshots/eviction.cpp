#include "snapshots/eviction.hpp"

#include <algorithm>
#include <tuple>

namespace warmstart::snapshots {

std::string_view to_string(EvictionReason reason) {
  switch (reason) {
    case EvictionReason::ttl:
      return "ttl";
    case EvictionReason::count:
      return "count";
    case EvictionReason::bytes:
      return "bytes";
  }
  return "unknown";
}

std::string EvictionPlan::to_text() const {
  std::string out;
  for (const auto& e : evictions) {
    out += "evict " + e.key + " " + e.image + " reason=" + std::string(to_string(e.reason)) + "\n";
  }
  for (const auto& k : kept_in_use) out += "keep " + k + " in_use\n";
  return out;
}

EvictionPlan plan_evictions(std::vector<SnapshotEntry> entries,
                            const std::set<std::string>& in_use_image_ids,
                            const EvictionPolicy& policy, std::int64_t now_ms) {
  // Least recently used first; ties broken by age then key so plans are stable.
  std::sort(entries.begin(), entries.end(), [](const SnapshotEntry& a, const SnapshotEntry& b) {
    return std::tie(a.last_used_ms, a.created_ms, a.key) <
           std::tie(b.last_used_ms, b.created_ms, b.key);
  });

  EvictionPlan plan;
  std::vector<bool> gone(entries.size(), false);
  std::size_t count = entries.size();
  std::int64_t bytes = 0;
  for (const auto& e : entries) bytes += e.size_bytes;

  auto evict = [&](std::size_t i, EvictionReason reason) {
    const auto& e = entries[i];
    plan.evictions.push_back({e.key, e.image, e.image_id, reason});
    gone[i] = true;
    --count;
    bytes -= e.size_bytes;
  };
  auto in_use = [&](std::size_t i) { return in_use_image_ids.count(entries[i].image_id) > 0; };
  auto keep = [&](std::size_t i, EvictionReason reason) {
    plan.kept_in_use.push_back(entries[i].key + " (" + std::string(to_string(reason)) + ")");
  };

  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const std::int64_t ttl_ms = e.ttl_ms > 0 ? e.ttl_ms : policy.ttl.count();
    const std::int64_t last = std::max(e.last_used_ms, e.created_ms);
    if (now_ms - last <= ttl_ms) continue;
    if (in_use(i)) {
      keep(i, EvictionReason::ttl);
    } else {
      evict(i, EvictionReason::ttl);
    }
  }

  auto over_count = [&] { return policy.max_count > 0 && count > policy.max_count; };
  auto over_bytes = [&] { return policy.max_bytes > 0 && bytes > policy.max_bytes; };
  for (std::size_t i = 0; i < entries.size() && (over_count() || over_bytes()); ++i) {
    if (gone[i]) continue;
    const auto reason = over_count() ? EvictionReason::count : EvictionReason::bytes;
    if (in_use(i)) {
      keep(i, reason);
    } else {
      evict(i, reason);
    }
  }
  return plan;
}

}  // namespace warmstart::snapshots
