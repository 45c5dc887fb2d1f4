// Reconciliation planning: registry entries vs labelled images in the engine.
// Pure: observed state -> plan of operations, each with a reason. The plan
// prints as text; tests compare it as a string.
#pragma once
#include "snapshots/entry.hpp"

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace warmstart::snapshots {

// A snapshot image of this registry namespace as the engine lists it.
struct ObservedImage {
  std::string id;
  std::string ref;  // first repo:tag, or "<none>" once untagged
  std::string key;  // warmstart.snapshot.key label
  std::int64_t created_unix = 0;
};

struct ReconcileInput {
  std::vector<SnapshotEntry> entries;
  std::vector<ObservedImage> images;
  // Ids known to exist beyond `images` (e.g. confirmed by inspect): the engine
  // does not list an image that has child images.
  std::set<std::string> also_present_ids;
  std::set<std::string> in_use_image_ids;  // images of running containers
  std::set<std::string> pending;           // ids or refs being committed, not registered yet
  std::int64_t now_ms = 0;
  // An unregistered image younger than this is left alone: another router on
  // the same engine may be between its commit and its registration.
  std::chrono::milliseconds orphan_grace{0};
};

struct ReconcileOp {
  enum class Kind { drop_entry, remove_image, keep_image };
  Kind kind = Kind::drop_entry;
  std::string key;
  std::string image;  // ref for entries, id for images
  std::string image_id;
  std::string reason;  // "image_missing", "unregistered", "in_use", "pending", "grace"
};

struct ReconcilePlan {
  std::vector<ReconcileOp> ops;  // drops (by key), then image removals/keeps (by id)
  std::string to_text() const;
};

ReconcilePlan plan_reconcile(const ReconcileInput& input);

}  // namespace warmstart::snapshots
