// snapshots::Cache: the port through which the router and the HTTP front use
// the snapshot cache. SnapshotCache (snapshot_cache.hpp: the Redis registry and
// the container engine together) is the real adapter; MemoryCache
// (memory_cache.hpp) is the in-memory test double.
#pragma once
#include "common/net.hpp"
#include "snapshots/choice.hpp"
#include "snapshots/depth.hpp"
#include "snapshots/entry.hpp"
#include "snapshots/eviction.hpp"
#include "snapshots/reconcile.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::snapshots {

// Receives snapshot.committed / snapshot.invalidated / snapshot.evicted events
// ({"type", "ts", "key", ...}); the router wires it to the queue's events stream.
using EventSink = std::function<void(nlohmann::json)>;

struct Choice {
  std::string image;  // what to create the container from: snapshot ref or the base
  LookupOutcome outcome = LookupOutcome::miss;
  std::string reason;                  // LookupDecision::reason, or "registry_error"
  std::string base_image_id;           // the base image's id right now
  std::optional<SnapshotEntry> entry;  // hit: the entry started from
  // The registered image id at lookup ("" = none); pass it to commit() as
  // CommitRequest::expected_image_id.
  std::string observed_image_id;
};

struct CommitRequest {
  std::string container_id;  // the exited (exit 0) container of the job
  std::string job_id;
  std::string key;
  std::string base_image;  // the router's base image ref; its config is re-applied
  // Compare-and-set expectation: the registered image id when the job chose its
  // image (Choice::observed_image_id). nullopt = whatever is registered when
  // the commit starts.
  std::optional<std::string> expected_image_id;
  Duration ttl{0};            // per-key TTL override; 0 = the eviction policy's ttl
  std::int64_t build_ms = 0;  // SnapshotEntry::build_ms of the new entry
};

struct CommitResult {
  enum class Status { committed, lost_race, failed };
  Status status = Status::failed;
  std::string image;  // repo:tag of the new snapshot
  std::string image_id;
  std::int64_t size_bytes = 0;
  std::int64_t layer_depth = 0;
  std::int64_t generation = 0;
  CommitMode mode = CommitMode::flatten;
  std::string error;  // failed: why
  Duration took{0};
};
std::string_view to_string(CommitResult::Status status);

struct GcReport {
  EvictionPlan eviction;
  ReconcilePlan reconcile;
  std::size_t images_removed = 0;
  std::size_t failures = 0;  // operations that failed (logged; retried by the next gc)
};

// Plain copy of the counters for the HTTP layer.
struct CacheMetrics {
  std::uint64_t commits = 0;
  std::uint64_t commit_failures = 0;
  std::uint64_t commit_races_lost = 0;
  std::uint64_t flattens = 0;
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t invalidations = 0;
  std::uint64_t evictions = 0;
  std::int64_t bytes_cached = 0;  // sum of size_bytes of the entries, as last seen
  std::int64_t last_commit_ms = 0;
  std::int64_t total_commit_ms = 0;
  std::uint64_t filtered_entries = 0;  // tar entries the filter dropped, all commits
  std::uint64_t git_configs_rewritten = 0;
};

class Cache {
 public:
  virtual ~Cache() = default;

  // Which image the job with snapshot `key` starts from. A base_changed entry
  // is invalidated here. Registry failures degrade to a miss (logged); a
  // missing base image throws (the job cannot run at all).
  virtual awaitable<Choice> choose_image(std::string key, std::string base_image,
                                         bool reuse = true) = 0;
  // Commits a succeeded job's container as the next generation of its key.
  // Never throws: a failure is logged with the job id, counted, emitted as a
  // snapshot.commit_failed event, and returned.
  virtual awaitable<CommitResult> commit(CommitRequest request) = 0;
  // Drops the entry of `key` (only if its image is `only_if_image_id`, when
  // given) and deletes its image unless a running container uses it. Reasons:
  // "image_missing" (404 fallback), "base_changed", "manual". Returns whether an
  // entry was dropped.
  virtual awaitable<bool> invalidate(std::string key, std::string reason,
                                     std::string only_if_image_id = "") = 0;
  // Eviction (ttl, count, bytes; LRU first; never an image in use), then
  // reconciliation of the registry with the engine.
  virtual awaitable<GcReport> gc() = 0;
  // A container that may have pinned a snapshot image is gone: removes the
  // images commit() or invalidate() had to leave behind because a running
  // container used them, now that none does. Returns how many went. Costs
  // nothing (no engine call) when none waits. Without it they would wait for
  // gc()'s reconciliation and its orphan grace.
  virtual awaitable<std::size_t> release_unused() = 0;
  virtual awaitable<std::vector<SnapshotEntry>> list() = 0;
  // The entries list() would return, counted, without reading them all (the
  // fleet heartbeat's figures).
  virtual awaitable<Totals> totals() = 0;
  // May be read from any thread.
  virtual CacheMetrics metrics() const = 0;
};

using CachePtr = std::shared_ptr<Cache>;

}  // namespace warmstart::snapshots
