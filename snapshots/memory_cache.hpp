// MemoryCache: the in-memory test double of the snapshots::Cache port, for
// router unit tests. Entries live in a map; a commit creates the snapshot
// image in the given engine (a container::MemoryRuntime in tests) so a later
// job can really be created from it. Like the registry, a commit whose
// expected_image_id is not the registered image loses the race. Failures are
// scripted.
#pragma once
#include "container/runtime.hpp"
#include "snapshots/cache.hpp"

#include <exception>
#include <map>
#include <string>

namespace warmstart::snapshots {

class MemoryCache final : public Cache {
 public:
  explicit MemoryCache(container::RuntimePtr runtime = nullptr) : runtime_(std::move(runtime)) {}

  awaitable<Choice> choose_image(std::string key, std::string base_image,
                                 bool reuse = true) override;
  awaitable<CommitResult> commit(CommitRequest request) override;
  awaitable<bool> invalidate(std::string key, std::string reason,
                             std::string only_if_image_id = "") override;
  awaitable<GcReport> gc() override;
  // Nothing is ever left behind here (no image is "in use"): counts the calls.
  awaitable<std::size_t> release_unused() override;
  awaitable<std::vector<SnapshotEntry>> list() override;
  awaitable<Totals> totals() override;
  CacheMetrics metrics() const override { return metrics_; }

  // Scripting.
  // A registered snapshot.
  void put(const std::string& key, const std::string& image, std::int64_t size_bytes = 0);
  void fail_commits(std::string error) { commit_error_ = std::move(error); }
  void fail_choose(std::exception_ptr error) { choose_error_ = std::move(error); }
  void fail_totals(std::exception_ptr error) { totals_error_ = std::move(error); }  // null: heal
  // Inspection.
  std::optional<SnapshotEntry> entry(const std::string& key) const;
  int commits_tried() const { return commits_tried_; }
  int release_calls() const { return release_calls_; }
  const std::vector<std::string>& invalidated() const { return invalidated_; }

 private:
  container::RuntimePtr runtime_;
  std::map<std::string, SnapshotEntry> entries_;
  std::string commit_error_;
  std::exception_ptr choose_error_;
  std::exception_ptr totals_error_;
  int commits_tried_ = 0;
  int release_calls_ = 0;
  std::vector<std::string> invalidated_;  // "key:reason"
  CacheMetrics metrics_;
};

}  // namespace warmstart::snapshots
