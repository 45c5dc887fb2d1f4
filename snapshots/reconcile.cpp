#include "snapshots/reconcile.hpp"

#include <algorithm>

namespace warmstart::snapshots {

std::string ReconcilePlan::to_text() const {
  std::string out;
  for (const auto& op : ops) {
    switch (op.kind) {
      case ReconcileOp::Kind::drop_entry:
        out += "drop-entry ";
        break;
      case ReconcileOp::Kind::remove_image:
        out += "remove-image ";
        break;
      case ReconcileOp::Kind::keep_image:
        out += "keep-image ";
        break;
    }
    out += op.key + " " + op.image + " reason=" + op.reason + "\n";
  }
  return out;
}

ReconcilePlan plan_reconcile(const ReconcileInput& input) {
  std::set<std::string> present = input.also_present_ids;
  for (const auto& image : input.images) present.insert(image.id);
  std::set<std::string> registered;
  for (const auto& e : input.entries) registered.insert(e.image_id);

  ReconcilePlan plan;
  auto entries = input.entries;
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.key < b.key; });
  for (const auto& e : entries) {
    if (present.count(e.image_id) == 0) {
      plan.ops.push_back(
          {ReconcileOp::Kind::drop_entry, e.key, e.image, e.image_id, "image_missing"});
    }
  }

  auto images = input.images;
  std::sort(images.begin(), images.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  const std::int64_t grace_s =
      std::chrono::duration_cast<std::chrono::seconds>(input.orphan_grace).count();
  for (const auto& image : images) {
    if (registered.count(image.id) > 0) continue;
    ReconcileOp op{ReconcileOp::Kind::remove_image, image.key, image.id, image.id, "unregistered"};
    if (input.in_use_image_ids.count(image.id) > 0) {
      op.kind = ReconcileOp::Kind::keep_image;
      op.reason = "in_use";
    } else if (input.pending.count(image.id) > 0 || input.pending.count(image.ref) > 0) {
      op.kind = ReconcileOp::Kind::keep_image;
      op.reason = "pending";
    } else if (input.now_ms / 1000 - image.created_unix < grace_s) {
      op.kind = ReconcileOp::Kind::keep_image;
      op.reason = "grace";
    }
    plan.ops.push_back(std::move(op));
  }
  return plan;
}

}  // namespace warmstart::snapshots
