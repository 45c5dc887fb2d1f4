// SnapshotCache: the snapshot registry (Redis) and the container engine
// (container::Runtime) together. The router asks it which image a job starts
// from, commits succeeded jobs, invalidates stale snapshots (404 fallback, base
// image change, CLI/API) and runs eviction (`gc`). Decisions come from the pure
// planners (choice.hpp, depth.hpp, eviction.hpp, reconcile.hpp); this class
// only observes and executes.
//
// Used from one executor (the router's event loop); metrics() may be read from
// any thread.
#pragma once
#include "common/net.hpp"
#include "common/redis.hpp"
#include "container/runtime.hpp"
#include "snapshots/choice.hpp"
#include "snapshots/depth.hpp"
#include "snapshots/entry.hpp"
#include "snapshots/eviction.hpp"
#include "snapshots/reconcile.hpp"
#include "snapshots/registry.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace warmstart::snapshots {

// Receives snapshot.committed / snapshot.invalidated / snapshot.evicted events
// ({"type", "ts", "key", ...}); the router wires it to the queue's events stream.
using EventSink = std::function<void(nlohmann::json)>;

// The documented default of `[snapshots] exclude` (docs/snapshots.md): common
// credential files under /root and /home/*, and scratch directories.
std::vector<std::string> default_snapshot_exclude();
container::TarFilterOptions default_snapshot_filter();

struct SnapshotCacheOptions {
  RegistryOptions registry;                       // Redis key prefix of the registry
  std::string image_repo = "warmstart-snapshot";  // repo prefix of snapshot image names
  DepthPolicy depth;                              // commit strategy and layer-depth limit
  EvictionPolicy eviction;                        // ttl 24 h, count and byte budgets
  // Earlier versions staged flatten tarballs here; start() sweeps what a crash
  // left behind. Commits stream export -> import and write nothing to disk.
  std::filesystem::path work_dir = std::filesystem::temp_directory_path();
  // What a snapshot never keeps: credential files and scratch directories
  // (default_snapshot_exclude()), credentials in */.git/config remote URLs.
  // While it is active (the default) every commit is a filtered flatten.
  container::TarFilterOptions filter = default_snapshot_filter();
  Duration orphan_grace = std::chrono::minutes(10);  // gc spares younger unregistered images
  EventSink on_event;                                // empty = events only logged
};

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
  Duration ttl{0};  // per-key TTL override; 0 = the eviction policy's ttl
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

class SnapshotCache {
 public:
  SnapshotCache(container::RuntimePtr runtime, redis::ClientPtr redis,
                SnapshotCacheOptions options = {});

  // Reads the engine ID (the registry namespace) and reconciles the registry
  // with the engine. Call once before serving jobs.
  awaitable<ReconcilePlan> start();

  // Which image the job with snapshot `key` starts from. A base_changed entry
  // is invalidated here. Registry failures degrade to a miss (logged); a
  // missing base image throws (the job cannot run at all).
  awaitable<Choice> choose_image(std::string key, std::string base_image, bool reuse = true);

  // Commits a succeeded job's container as the next generation of its key.
  // Never throws: a failure is logged with the job id, counted, and returned.
  awaitable<CommitResult> commit(CommitRequest request);

  // Drops the entry of `key` (only if its image is `only_if_image_id`, when
  // given) and deletes its image unless a running container uses it. Reasons:
  // "image_missing" (404 fallback), "base_changed", "manual". Returns whether an
  // entry was dropped.
  awaitable<bool> invalidate(std::string key, std::string reason,
                             std::string only_if_image_id = "");

  // Eviction (ttl, count, bytes; LRU first; never an image in use), then
  // reconciliation with `orphan_grace`.
  awaitable<GcReport> gc();
  // Drops entries whose image is gone and removes unregistered snapshot images
  // of this namespace (grace `orphan_grace`; start() uses none).
  awaitable<ReconcilePlan> reconcile(Duration orphan_grace);

  awaitable<std::vector<SnapshotEntry>> list();
  // The registry (after start() or any other call has read the engine ID).
  SnapshotRegistry& registry();
  CacheMetrics metrics() const;
  const SnapshotCacheOptions& options() const { return options_; }

 private:
  struct CommitProgress;
  awaitable<SnapshotRegistry*> ensure_registry();
  awaitable<CommitResult> commit_steps(CommitRequest request, CommitProgress& progress);
  awaitable<std::set<std::string>> running_image_ids();
  // Best effort: returns false (logged) when the engine refused or the image
  // is in use. Removes by `ref` when given: in a layered chain an image with
  // children is then only untagged, and the engine prunes it with its child.
  awaitable<bool> remove_image_unless_running(const std::string& image_id, const std::string& ref,
                                              const std::string& key, const std::string& why);
  awaitable<int> execute_reconcile(const ReconcilePlan& plan, GcReport* report);
  void emit(nlohmann::json event);
  void sweep_work_dir();

  container::RuntimePtr runtime_;
  redis::ClientPtr redis_;
  SnapshotCacheOptions options_;
  std::optional<SnapshotRegistry> registry_;
  std::set<std::string> pending_;  // refs and ids committed but not registered yet

  struct Counters {
    std::atomic<std::uint64_t> commits{0}, commit_failures{0}, commit_races_lost{0}, flattens{0},
        hits{0}, misses{0}, invalidations{0}, evictions{0};
    std::atomic<std::int64_t> bytes_cached{0}, last_commit_ms{0}, total_commit_ms{0};
    std::atomic<std::uint64_t> filtered_entries{0}, git_configs_rewritten{0};
  } counters_;
};

}  // namespace warmstart::snapshots
