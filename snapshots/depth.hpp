// Commit strategy: a layered `docker commit` or a flatten (export -> import).
// Pure.
#pragma once
#include <cstddef>
#include <string_view>

namespace warmstart::snapshots {

enum class CommitMode { layered, flatten };
inline std::string_view to_string(CommitMode mode) {
  return mode == CommitMode::layered ? "layered" : "flatten";
}

struct DepthPolicy {
  // Docker 20.10's commit merges the container's Env into the new image's
  // Config and stores the whole container config (Env, Cmd) as
  // ContainerConfig (daemon/commit.go), so a layered commit would keep the
  // job's env in the image. Only enable it for workloads without secrets.
  bool layered_commit = false;
  // Overlay2 refuses to mount past ~125 layers ("max depth exceeded"); a chain
  // is flattened well before that.
  std::size_t max_layer_depth = 64;
};

struct CommitDecision {
  CommitMode mode = CommitMode::flatten;
  std::string_view reason;       // "layered", "depth_limit", "layered_disabled"
  std::size_t result_depth = 0;  // RootFS layers of the new image
};

// `source_layers`: RootFS layers of the image the container runs. A commit adds
// exactly one layer; an import yields a single layer.
inline CommitDecision decide_commit(std::size_t source_layers, const DepthPolicy& policy) {
  if (!policy.layered_commit) return {CommitMode::flatten, "layered_disabled", 1};
  if (source_layers + 1 > policy.max_layer_depth) {
    return {CommitMode::flatten, "depth_limit", 1};
  }
  return {CommitMode::layered, "layered", source_layers + 1};
}

}  // namespace warmstart::snapshots
