// How snapshot images are named and labelled, and the Dockerfile instructions
// that re-apply a base image's config on import. Pure: no engine, no Redis.
#pragma once
#include "container/runtime.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::snapshots {

// Labels on every snapshot image. `registry` scopes the image to one registry
// namespace (the Redis key prefix), so reconciliation of one namespace never
// removes another's images on a shared engine.
namespace label {
inline constexpr std::string_view key = "warmstart.snapshot.key";
inline constexpr std::string_view base = "warmstart.snapshot.base";
inline constexpr std::string_view engine = "warmstart.snapshot.engine";
inline constexpr std::string_view registry = "warmstart.snapshot.registry";
inline constexpr std::string_view generation = "warmstart.snapshot.generation";
inline constexpr std::string_view job = "warmstart.snapshot.job";
}  // namespace label

// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

struct ImageName {
  std::string repo;  // "warmstart-snapshot/<20 hex>"
  std::string tag;   // "g<generation>"
  std::string ref() const { return repo + ":" + tag; }
};

// Keys are user strings ("repo-42/branch-main", any bytes), and Docker repo
// names allow only [a-z0-9._-/]: the repo is a hash of namespace and key. The
// namespace is hashed in so two registries on one engine never share a name.
ImageName snapshot_image_name(std::string_view repo_prefix, std::string_view registry_namespace,
                              std::string_view key, std::int64_t generation);

struct SnapshotLabelValues {
  std::string key;
  std::string base_image_id;
  std::string engine_id;
  std::string registry_namespace;
  std::int64_t generation = 0;
  std::string job;
};
container::Labels snapshot_labels(const SnapshotLabelValues& values);

// Quotes a value for ENV/LABEL in a Dockerfile instruction: inside double
// quotes the builder still expands `$VAR` and unescapes `\"` and `\\`.
std::string dockerfile_quote(std::string_view value);

// Dockerfile instructions that give an imported image `config` (ENV, CMD,
// ENTRYPOINT, USER, WORKDIR, LABEL), in a stable order.
std::vector<std::string> import_changes(const container::ImageConfig& config);

}  // namespace warmstart::snapshots
