#include "snapshots/memory_cache.hpp"

namespace warmstart::snapshots {

void MemoryCache::put(const std::string& key, const std::string& image, std::int64_t size_bytes) {
  SnapshotEntry e;
  e.key = key;
  e.image = image;
  e.size_bytes = size_bytes;
  e.image_id = "sha256:" + image;
  e.generation = entries_.count(key) != 0 ? entries_[key].generation + 1 : 1;
  entries_[key] = e;
}

std::optional<SnapshotEntry> MemoryCache::entry(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

awaitable<Choice> MemoryCache::choose_image(std::string key, std::string base_image, bool reuse) {
  if (choose_error_) std::rethrow_exception(choose_error_);
  Choice choice;
  choice.image = base_image;
  auto it = entries_.find(key);
  if (it != entries_.end()) choice.observed_image_id = it->second.image_id;
  if (reuse && it != entries_.end()) {
    choice.image = it->second.image;
    choice.outcome = LookupOutcome::hit;
    choice.reason = "entry";
    choice.entry = it->second;
    ++metrics_.hits;
  } else {
    choice.reason = reuse ? "no_entry" : "reuse_disabled";
    ++metrics_.misses;
  }
  co_return choice;
}

awaitable<CommitResult> MemoryCache::commit(CommitRequest request) {
  ++commits_tried_;
  CommitResult result;
  if (!commit_error_.empty()) {
    result.status = CommitResult::Status::failed;
    result.error = commit_error_;
    ++metrics_.commit_failures;
    co_return result;
  }
  // The registry's compare-and-set: only over the image the job saw ("" none).
  auto current = entries_.find(request.key);
  const std::string current_id = current != entries_.end() ? current->second.image_id : "";
  if (request.expected_image_id && *request.expected_image_id != current_id) {
    result.status = CommitResult::Status::lost_race;
    ++metrics_.commit_races_lost;
    co_return result;
  }
  const std::int64_t generation =
      entries_.count(request.key) != 0 ? entries_[request.key].generation + 1 : 1;
  const std::string repo = "snapshot-" + request.key;
  const std::string tag = "g" + std::to_string(generation);
  if (runtime_) {
    container::CommitOptions options;
    options.repo = repo;
    options.tag = tag;
    result.image_id = co_await runtime_->commit_container(request.container_id, options);
  }
  put(request.key, repo + ":" + tag);
  if (!result.image_id.empty()) entries_[request.key].image_id = result.image_id;
  entries_[request.key].source_job = request.job_id;
  entries_[request.key].build_ms = request.build_ms;
  result.status = CommitResult::Status::committed;
  result.image = repo + ":" + tag;
  result.generation = generation;
  ++metrics_.commits;
  co_return result;
}

awaitable<bool> MemoryCache::invalidate(std::string key, std::string reason,
                                        std::string only_if_image_id) {
  invalidated_.push_back(key + ":" + reason);
  auto it = entries_.find(key);
  if (it == entries_.end()) co_return false;
  if (!only_if_image_id.empty() && it->second.image_id != only_if_image_id) co_return false;
  entries_.erase(it);
  ++metrics_.invalidations;
  co_return true;
}

awaitable<GcReport> MemoryCache::gc() {
  co_return GcReport{};
}

awaitable<std::size_t> MemoryCache::release_unused() {
  ++release_calls_;
  co_return 0;
}

awaitable<std::vector<SnapshotEntry>> MemoryCache::list() {
  std::vector<SnapshotEntry> out;
  for (const auto& [key, e] : entries_) out.push_back(e);
  co_return out;
}

awaitable<Totals> MemoryCache::totals() {
  if (totals_error_) std::rethrow_exception(totals_error_);
  Totals t;
  for (const auto& [key, e] : entries_) {
    ++t.count;
    t.bytes += e.size_bytes;
  }
  co_return t;
}

}  // namespace warmstart::snapshots
