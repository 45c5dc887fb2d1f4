#include "snapshots/snapshot_cache.hpp"

#include "common/log.hpp"
#include "common/time.hpp"
#include "snapshots/naming.hpp"

#include <stdexcept>

namespace warmstart::snapshots {
namespace {

// Builds a JSON object from alternating keys and values. g++ 12 rejects
// braced JSON initializer lists inside coroutines, so they are built here.
inline void put_fields(nlohmann::json&) {}
template <typename V, typename... Rest>
void put_fields(nlohmann::json& j, const char* key, V&& value, Rest&&... rest) {
  j[key] = std::forward<V>(value);
  put_fields(j, std::forward<Rest>(rest)...);
}
template <typename... Args>
nlohmann::json fields(Args&&... args) {
  nlohmann::json j = nlohmann::json::object();
  put_fields(j, std::forward<Args>(args)...);
  return j;
}

}  // namespace

std::vector<std::string> default_snapshot_exclude() {
  std::vector<std::string> out;
  // Credentials a job may leave in a home directory.
  for (const char* file :
       {".netrc", ".git-credentials", ".docker/config.json", ".ssh/id_*", ".aws/credentials",
        ".config/gh/hosts.yml", ".npmrc", ".pypirc", ".kube/config"}) {
    out.push_back(std::string("/root/") + file);
    out.push_back(std::string("/home/*/") + file);
  }
  // Scratch space: kept as empty directories.
  for (const char* dir : {"/tmp", "/var/tmp", "/run/secrets"}) out.emplace_back(dir);
  return out;
}

container::TarFilterOptions default_snapshot_filter() {
  container::TarFilterOptions o;
  o.exclude = default_snapshot_exclude();
  o.strip_git_credentials = true;
  return o;
}

std::string_view to_string(CommitResult::Status status) {
  switch (status) {
    case CommitResult::Status::committed:
      return "committed";
    case CommitResult::Status::lost_race:
      return "lost_race";
    case CommitResult::Status::failed:
      return "failed";
  }
  return "unknown";
}

// What a commit has made so far, visible to commit() even when the steps
// threw or were cancelled by the deadline.
struct SnapshotCache::CommitProgress {
  std::string image_ref;  // known before the engine creates the image
  std::string image_id;   // set once the engine made it
  bool registered = false;
};

SnapshotCache::SnapshotCache(container::RuntimePtr runtime, redis::ClientPtr redis,
                             SnapshotCacheOptions options)
    : runtime_(std::move(runtime)), redis_(std::move(redis)), options_(std::move(options)) {}

SnapshotRegistry& SnapshotCache::registry() {
  if (!registry_) throw std::logic_error("SnapshotCache::registry() before start()");
  return *registry_;
}

CacheMetrics SnapshotCache::metrics() const {
  CacheMetrics m;
  m.commits = counters_.commits;
  m.commit_failures = counters_.commit_failures;
  m.commit_races_lost = counters_.commit_races_lost;
  m.flattens = counters_.flattens;
  m.hits = counters_.hits;
  m.misses = counters_.misses;
  m.invalidations = counters_.invalidations;
  m.evictions = counters_.evictions;
  m.bytes_cached = counters_.bytes_cached;
  m.last_commit_ms = counters_.last_commit_ms;
  m.total_commit_ms = counters_.total_commit_ms;
  m.filtered_entries = counters_.filtered_entries;
  m.git_configs_rewritten = counters_.git_configs_rewritten;
  return m;
}

void SnapshotCache::emit(nlohmann::json event) {
  event["ts"] = rfc3339_now();
  log::info(event.value("type", "snapshot event"), event);
  if (!options_.on_event) return;
  try {
    options_.on_event(std::move(event));
  } catch (const std::exception& e) {
    // An event lost is a gap on the dashboard, not a reason to fail a cache operation.
    log::warn("snapshot event sink failed", fields("error", e.what()));
  }
}

awaitable<SnapshotRegistry*> SnapshotCache::ensure_registry() {
  if (!registry_) {
    std::string id = options_.host_id;
    if (id.empty()) {
      auto info = co_await runtime_->info();
      if (info.id.empty()) throw std::runtime_error("docker /info returned no engine ID");
      id = info.id;
    }
    if (!registry_) registry_.emplace(redis_, id, options_.registry);
  }
  co_return &*registry_;
}

void SnapshotCache::sweep_work_dir() {
  // Flatten tarballs of earlier versions (whole filesystems, possibly with
  // credentials) that a crash left behind.
  std::error_code ec;
  std::filesystem::directory_iterator it(options_.work_dir, ec);
  if (ec) return;  // no such directory: nothing to sweep
  for (const auto& file : it) {
    const std::string name = file.path().filename().string();
    if (name.rfind("warmstart-flatten-", 0) != 0 || !name.ends_with(".tar")) continue;
    std::error_code removed;
    std::filesystem::remove(file.path(), removed);
    if (removed) {
      log::warn("leftover snapshot tarball not removed",
                fields("path", file.path().string(), "error", removed.message()));
    } else {
      log::info("leftover snapshot tarball removed", fields("path", file.path().string()));
    }
  }
}

awaitable<ReconcilePlan> SnapshotCache::start() {
  sweep_work_dir();
  co_await ensure_registry();
  // At start nothing of this router is between commit and registration.
  co_return co_await reconcile(Duration{0});
}

awaitable<std::vector<SnapshotEntry>> SnapshotCache::list() {
  auto* reg = co_await ensure_registry();
  auto entries = co_await reg->list();
  for (auto& e : entries) e.host = reg->engine_id();
  co_return entries;
}

awaitable<Totals> SnapshotCache::totals() {
  auto* reg = co_await ensure_registry();
  co_return co_await reg->totals();
}

awaitable<Choice> SnapshotCache::choose_image(std::string key, std::string base_image, bool reuse) {
  Choice choice;
  choice.image = base_image;
  auto base = co_await runtime_->inspect_image(base_image);
  choice.base_image_id = base.id;

  std::optional<SnapshotEntry> entry;
  std::string registry_error;
  try {
    auto* reg = co_await ensure_registry();
    // A hit is counted in the lookup's own round trip (the job starts from it).
    if (reuse) {
      entry = co_await reg->lookup_and_use(key, base.id, unix_ms_now());
    } else {
      entry = co_await reg->lookup(key);
    }
  } catch (const redis::Error& e) {
    registry_error = e.what();
  }
  if (!registry_error.empty()) {
    // Without the registry the job still runs, cold.
    log::warn("snapshot lookup failed, starting from the base image",
              fields("key", key, "error", registry_error));
    ++counters_.misses;
    choice.reason = "registry_error";
    co_return choice;
  }

  const auto decision = decide_lookup(entry, base.id, reuse);
  choice.outcome = decision.outcome;
  choice.reason = std::string(decision.reason);
  switch (decision.outcome) {
    case LookupOutcome::hit:
      ++counters_.hits;
      choice.image = entry->image;
      choice.observed_image_id = entry->image_id;
      choice.entry = std::move(entry);
      break;
    case LookupOutcome::base_changed:
      ++counters_.misses;
      try {
        co_await invalidate(key, "base_changed", entry->image_id);
      } catch (const std::exception& e) {
        // The job starts from the base either way; the next lookup retries.
        log::warn("stale snapshot not invalidated", fields("key", key, "error", e.what()));
      }
      break;
    case LookupOutcome::miss:
      ++counters_.misses;
      if (entry) choice.observed_image_id = entry->image_id;
      break;
  }
  co_return choice;
}

awaitable<CommitResult> SnapshotCache::commit(CommitRequest request) {
  const auto started = Clock::now();
  CommitProgress progress;
  CommitResult result;
  std::string error;
  try {
    // Every step is bounded by its adapter's deadline (DockerClient's request
    // and transfer timeouts, the Redis client's command timeout).
    result = co_await commit_steps(request, progress);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    result = CommitResult{};
    result.status = CommitResult::Status::failed;
    result.error = error;
    ++counters_.commit_failures;
    log::error("snapshot commit failed",
               fields("job", request.job_id, "container", request.container_id, "key", request.key,
                      "error", error));
    emit({{"type", "snapshot.commit_failed"},
          {"key", request.key},
          {"job", request.job_id},
          {"reason", error}});
    // An image the registry never got would only wait for the next gc.
    if (!progress.image_id.empty() && !progress.registered) {
      co_await remove_image_unless_running(progress.image_id, "", request.key, "commit_failed");
    }
  }
  pending_.erase(progress.image_ref);
  pending_.erase(progress.image_id);
  result.took = std::chrono::duration_cast<Duration>(Clock::now() - started);
  if (result.status == CommitResult::Status::committed) {
    counters_.last_commit_ms = result.took.count();
    counters_.total_commit_ms += result.took.count();
  }
  co_return result;
}

awaitable<CommitResult> SnapshotCache::commit_steps(CommitRequest request,
                                                    CommitProgress& progress) {
  auto* reg = co_await ensure_registry();
  auto base = co_await runtime_->inspect_image(request.base_image);

  std::string expected;
  if (request.expected_image_id) {
    expected = *request.expected_image_id;
  } else if (auto current = co_await reg->lookup(request.key)) {
    expected = current->image_id;
  }

  auto container = co_await runtime_->inspect_container(request.container_id);
  if (container.state.running || container.state.exit_code != 0) {
    throw std::runtime_error("container " + request.container_id +
                             " has not exited with 0 (status " + container.state.status +
                             ", exit " + std::to_string(container.state.exit_code) + ")");
  }
  auto source = co_await runtime_->inspect_image(container.image_id);
  auto decision = decide_commit(source.layer_count, options_.depth);
  if (decision.mode == CommitMode::layered && options_.filter.active()) {
    // A layered commit cannot leave files out: the filter wins.
    decision = CommitDecision{CommitMode::flatten, "filter_active", 1};
  }

  const auto generation = co_await reg->next_generation(request.key);
  const auto name =
      snapshot_image_name(options_.image_repo, reg->key_prefix(), request.key, generation);
  progress.image_ref = name.ref();
  pending_.insert(progress.image_ref);

  // The base's config, never the container's: the job's env and cmd stay out.
  container::ImageConfig config = base.config;
  SnapshotLabelValues label_values;
  label_values.key = request.key;
  label_values.base_image_id = base.id;
  label_values.engine_id = reg->engine_id();
  label_values.registry_namespace = reg->key_prefix();
  label_values.generation = generation;
  label_values.job = request.job_id;
  for (auto& [k, v] : snapshot_labels(label_values)) {
    config.labels[k] = v;
  }

  CommitResult result;
  result.mode = decision.mode;
  if (decision.mode == CommitMode::layered) {
    container::CommitOptions commit_options;
    commit_options.repo = name.repo;
    commit_options.tag = name.tag;
    commit_options.comment = "warmstart snapshot of job " + request.job_id;
    commit_options.pause = false;  // the container has exited
    commit_options.config = config;
    commit_options.scrub_container_config = false;  // layered is the point; see DepthPolicy
    progress.image_id = co_await runtime_->commit_container(request.container_id, commit_options);
  } else {
    // Export -> filter -> import in one stream: nothing of the filesystem
    // touches the router's disk, and excluded files never reach the image.
    container::FilteredImport made = co_await runtime_->export_import(
        request.container_id, name.repo, name.tag, import_changes(config), options_.filter);
    progress.image_id = made.image_id;
    ++counters_.flattens;
    counters_.filtered_entries += made.filter.entries_dropped;
    counters_.git_configs_rewritten += made.filter.git_configs_rewritten;
    if (made.filter.entries_dropped > 0 || made.filter.git_configs_rewritten > 0) {
      log::info("snapshot filtered",
                fields("job", request.job_id, "key", request.key, "entries_dropped",
                       made.filter.entries_dropped, "bytes_dropped", made.filter.bytes_dropped,
                       "git_configs_rewritten", made.filter.git_configs_rewritten));
    }
  }
  pending_.insert(progress.image_id);
  auto image = co_await runtime_->inspect_image(progress.image_id);

  SnapshotEntry entry;
  entry.key = request.key;
  entry.image = name.ref();
  entry.image_id = image.id;
  entry.base_image_id = base.id;
  entry.source_job = request.job_id;
  entry.created_ms = unix_ms_now();
  entry.last_used_ms = entry.created_ms;
  entry.size_bytes = image.size_bytes;
  entry.layer_depth = static_cast<std::int64_t>(image.layer_count);
  entry.generation = generation;
  entry.ttl_ms = request.ttl.count();
  entry.build_ms = request.build_ms;

  result.image = entry.image;
  result.image_id = entry.image_id;
  result.size_bytes = entry.size_bytes;
  result.layer_depth = entry.layer_depth;
  result.generation = generation;

  auto cas = co_await reg->register_cas(entry, expected);
  if (!cas.won) {
    // Another commit of this key registered first: exactly one image per key
    // survives, so this one goes.
    ++counters_.commit_races_lost;
    std::string winner;  // (no ?: with class operands in coroutines: g++ 12 bug)
    if (cas.current) winner = cas.current->image;
    log::info("snapshot commit lost the race", fields("job", request.job_id, "key", request.key,
                                                      "image", entry.image, "winner", winner));
    co_await remove_image_unless_running(progress.image_id, "", request.key, "lost_race");
    progress.image_id.clear();
    result.status = CommitResult::Status::lost_race;
    co_return result;
  }
  progress.registered = true;
  result.status = CommitResult::Status::committed;
  ++counters_.commits;
  counters_.bytes_cached += entry.size_bytes - (cas.previous ? cas.previous->size_bytes : 0);
  emit(fields("type", "snapshot.committed", "job", request.job_id, "key", request.key, "image",
              entry.image, "size", entry.size_bytes, "generation", generation, "layers",
              entry.layer_depth, "mode", to_string(decision.mode)));
  if (cas.previous && cas.previous->image_id != entry.image_id) {
    co_await remove_image_unless_running(cas.previous->image_id, cas.previous->image, request.key,
                                         "superseded");
  }
  co_return result;
}

awaitable<std::set<std::string>> SnapshotCache::running_image_ids() {
  std::set<std::string> ids;
  std::vector<std::string> any_labels;
  for (const auto& c : co_await runtime_->list_containers(std::move(any_labels), false)) {
    ids.insert(c.image_id);
  }
  co_return ids;
}

awaitable<bool> SnapshotCache::remove_image_unless_running(const std::string& image_id,
                                                           const std::string& ref,
                                                           const std::string& key,
                                                           const std::string& why) {
  std::string error;
  bool removed = false;
  try {
    auto running = co_await running_image_ids();
    if (running.count(image_id) > 0) {
      // Deleting it would only untag it under the running job; gc removes it
      // as unregistered once the container is gone.
      log::info("snapshot image in use, left for gc",
                fields("key", key, "image", image_id, "why", why));
      deferred_[image_id] = Deferred{ref, key, why};
      co_return false;
    }
    // force: a stopped container (the job just committed) must not pin it.
    std::string target = ref;  // (no ?: with class operands in coroutines: g++ 12 bug)
    if (target.empty()) target = image_id;
    co_await runtime_->remove_image(target, true);
    removed = true;
  } catch (const container::ApiError& e) {
    if (e.is_not_found()) {
      removed = true;  // already gone: the goal is reached
    } else {
      error = e.what();
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (removed) deferred_.erase(image_id);
  if (!error.empty()) {
    log::warn("snapshot image removal failed",
              fields("key", key, "image", image_id, "why", why, "error", error));
  }
  co_return removed;
}

awaitable<std::size_t> SnapshotCache::release_unused() {
  if (deferred_.empty()) co_return 0;
  std::size_t removed = 0;
  // A copy: the removals suspend, and a commit may defer another image meanwhile.
  const auto waiting = deferred_;
  for (const auto& [image_id, d] : waiting) {
    if (co_await remove_image_unless_running(image_id, d.ref, d.key, d.why)) ++removed;
  }
  if (removed > 0) log::info("snapshot images released", fields("removed", removed));
  co_return removed;
}

awaitable<bool> SnapshotCache::invalidate(std::string key, std::string reason,
                                          std::string only_if_image_id) {
  auto* reg = co_await ensure_registry();
  auto removed = co_await reg->remove(key, only_if_image_id);
  if (!removed) co_return false;
  ++counters_.invalidations;
  counters_.bytes_cached -= removed->size_bytes;
  emit(fields("type", "snapshot.invalidated", "key", key, "reason", reason, "image",
              removed->image));
  co_await remove_image_unless_running(removed->image_id, removed->image, key, reason);
  co_return true;
}

awaitable<GcReport> SnapshotCache::gc() {
  auto* reg = co_await ensure_registry();
  GcReport report;
  auto entries = co_await reg->list();
  auto running = co_await running_image_ids();
  report.eviction = plan_evictions(entries, running, options_.eviction, unix_ms_now());
  for (const auto& eviction : report.eviction.evictions) {
    // Only the generation that was planned: a commit may have replaced it since.
    auto removed = co_await reg->remove(eviction.key, eviction.image_id);
    if (!removed) continue;
    ++counters_.evictions;
    counters_.bytes_cached -= removed->size_bytes;
    emit(fields("type", "snapshot.evicted", "key", eviction.key, "image", eviction.image, "reason",
                to_string(eviction.reason)));
    if (co_await remove_image_unless_running(eviction.image_id, eviction.image, eviction.key,
                                             "evicted")) {
      ++report.images_removed;
    } else {
      ++report.failures;
    }
  }
  report.reconcile = co_await reconcile(options_.orphan_grace);
  co_return report;
}

awaitable<ReconcilePlan> SnapshotCache::reconcile(Duration orphan_grace) {
  auto* reg = co_await ensure_registry();
  ReconcileInput input;
  input.entries = co_await reg->list();
  std::vector<std::string> filter{std::string(label::registry) + "=" + reg->key_prefix(),
                                  std::string(label::engine) + "=" + reg->engine_id()};
  std::set<std::string> listed;
  for (const auto& image : co_await runtime_->list_images(filter)) {
    ObservedImage observed;
    observed.id = image.id;
    observed.ref = "<none>";
    if (!image.repo_tags.empty()) observed.ref = image.repo_tags.front();
    auto key = image.labels.find(std::string(label::key));
    if (key != image.labels.end()) observed.key = key->second;
    observed.created_unix = image.created_unix;
    listed.insert(image.id);
    input.images.push_back(std::move(observed));
  }
  // The engine does not list an image that has children; ask before dropping.
  for (const auto& entry : input.entries) {
    if (listed.count(entry.image_id) > 0) continue;
    bool present = true;  // in doubt, keep the entry: a 404 fallback will catch it
    try {
      co_await runtime_->inspect_image(entry.image_id);
    } catch (const container::ApiError& e) {
      if (e.is_not_found()) present = false;
    } catch (const container::TransportError&) {
    }
    if (present) input.also_present_ids.insert(entry.image_id);
  }
  input.in_use_image_ids = co_await running_image_ids();
  input.pending = pending_;
  input.now_ms = unix_ms_now();
  input.orphan_grace = orphan_grace;
  auto plan = plan_reconcile(input);
  if (!plan.ops.empty()) log::info("snapshot reconcile plan", fields("plan", plan.to_text()));

  for (const auto& op : plan.ops) {
    if (op.kind == ReconcileOp::Kind::drop_entry) {
      if (auto removed = co_await reg->remove(op.key, op.image_id)) {
        ++counters_.invalidations;
        emit(fields("type", "snapshot.invalidated", "key", op.key, "reason", op.reason, "image",
                    removed->image));
      }
    } else if (op.kind == ReconcileOp::Kind::remove_image) {
      co_await remove_image_unless_running(op.image_id, "", op.key, op.reason);
    }
  }
  // The bytes of what the plan left (the gauge), counted by the registry.
  auto totals = co_await reg->totals();
  counters_.bytes_cached = totals.bytes;
  co_return plan;
}

}  // namespace warmstart::snapshots
