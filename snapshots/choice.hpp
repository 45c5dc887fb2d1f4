// The lookup decision: given the registry entry of a key (if any) and the
// current base image id, may the job start from the snapshot? Pure.
#pragma once
#include "snapshots/entry.hpp"

#include <optional>
#include <string_view>

namespace warmstart::snapshots {

enum class LookupOutcome {
  hit,           // start from the snapshot image
  miss,          // no entry (or reuse disabled): start from the base image
  base_changed,  // entry built on another base image: invalidate it, start from base
};
std::string_view to_string(LookupOutcome outcome);

struct LookupDecision {
  LookupOutcome outcome = LookupOutcome::miss;
  std::string_view reason;  // "entry", "no_entry", "reuse_disabled", "base_changed"
};

// A snapshot is only valid on top of the exact base image it was made from: a
// base rebuilt under the same tag (new id) must not be masked by old snapshots.
LookupDecision decide_lookup(const std::optional<SnapshotEntry>& entry,
                             std::string_view current_base_image_id, bool reuse = true);

}  // namespace warmstart::snapshots
