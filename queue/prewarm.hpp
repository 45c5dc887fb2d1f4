// Pre-warming (docs/snapshots.md): a builder job whose only product is its
// snapshot key's snapshot. The CLI (`warmstart prewarm`), the HTTP API
// (`POST /v1/snapshots/{key}/prewarm`) and webhooks with `prewarm = true`
// submit it here, so a prewarm while the key already has a builder is
// coalesced into that build instead of running a second one.
#pragma once
#include "queue/queue.hpp"

namespace warmstart::queue {

struct PrewarmResult {
  std::string job_id;      // the prewarm job, or the builder it was coalesced into
  bool coalesced = false;  // the key had a builder: nothing was enqueued
  bool created = false;    // enqueued now (false: the id existed, or coalesced)
};

// `spec.snapshot` must be set; it becomes a prewarm (snapshot.prewarm, commit on).
awaitable<PrewarmResult> submit_prewarm(Queue& queue, JobSpec spec);

}  // namespace warmstart::queue
