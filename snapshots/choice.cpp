#include "snapshots/choice.hpp"

namespace warmstart::snapshots {

std::string_view to_string(LookupOutcome outcome) {
  switch (outcome) {
    case LookupOutcome::hit:
      return "hit";
    case LookupOutcome::miss:
      return "miss";
    case LookupOutcome::base_changed:
      return "base_changed";
  }
  return "unknown";
}

LookupDecision decide_lookup(const std::optional<SnapshotEntry>& entry,
                             std::string_view current_base_image_id, bool reuse) {
  if (!entry) return {LookupOutcome::miss, "no_entry"};
  // A stale base is reported even when reuse is off: the entry is useless
  // either way and invalidating it early frees the image.
  if (entry->base_image_id != current_base_image_id) {
    return {LookupOutcome::base_changed, "base_changed"};
  }
  if (!reuse) return {LookupOutcome::miss, "reuse_disabled"};
  return {LookupOutcome::hit, "entry"};
}

}  // namespace warmstart::snapshots
