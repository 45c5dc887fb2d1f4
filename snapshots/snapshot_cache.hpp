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
#include "snapshots/cache.hpp"
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
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace warmstart::snapshots {

// The documented default of `[snapshots] exclude` (docs/snapshots.md): common
// credential files under /root and /home/*, and scratch directories.
std::vector<std::string> default_snapshot_exclude();
container::TarFilterOptions default_snapshot_filter();

struct SnapshotCacheOptions {
  RegistryOptions registry;  // Redis key prefix of the registry
  // The registry namespace: the Docker host's identity ([router] host_id).
  // Empty = the engine ID that docker info reports.
  std::string host_id;
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

class SnapshotCache final : public Cache {
 public:
  SnapshotCache(container::RuntimePtr runtime, redis::ClientPtr redis,
                SnapshotCacheOptions options = {});

  // Reads the engine ID (the registry namespace) and reconciles the registry
  // with the engine. Call once before serving jobs.
  awaitable<ReconcilePlan> start();

  // The Cache port (cache.hpp). gc()'s reconciliation spares unregistered
  // images younger than `orphan_grace`.
  awaitable<Choice> choose_image(std::string key, std::string base_image,
                                 bool reuse = true) override;
  awaitable<CommitResult> commit(CommitRequest request) override;
  awaitable<bool> invalidate(std::string key, std::string reason,
                             std::string only_if_image_id = "") override;
  awaitable<GcReport> gc() override;
  awaitable<std::size_t> release_unused() override;
  awaitable<std::vector<SnapshotEntry>> list() override;
  awaitable<Totals> totals() override;
  CacheMetrics metrics() const override;

  // Drops entries whose image is gone and removes unregistered snapshot images
  // of this namespace (grace `orphan_grace`; start() uses none).
  awaitable<ReconcilePlan> reconcile(Duration orphan_grace);

  // The registry (after start() or any other call has read the engine ID).
  SnapshotRegistry& registry();
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
  // Images left behind because a running container used them: image id ->
  // what remove_image_unless_running() was asked (release_unused() retries).
  struct Deferred {
    std::string ref, key, why;
  };
  std::map<std::string, Deferred> deferred_;

  struct Counters {
    std::atomic<std::uint64_t> commits{0}, commit_failures{0}, commit_races_lost{0}, flattens{0},
        hits{0}, misses{0}, invalidations{0}, evictions{0};
    std::atomic<std::int64_t> bytes_cached{0}, last_commit_ms{0}, total_commit_ms{0};
    std::atomic<std::uint64_t> filtered_entries{0}, git_configs_rewritten{0};
  } counters_;
};

}  // namespace warmstart::snapshots
