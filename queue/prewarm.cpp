#include "queue/prewarm.hpp"

namespace warmstart::queue {

awaitable<PrewarmResult> submit_prewarm(Queue& queue, JobSpec spec) {
  if (!spec.snapshot) throw InvalidJob("a prewarm needs a snapshot key");
  spec.snapshot->commit = true;
  spec.snapshot->prewarm = true;
  PrewarmResult out;
  auto building = co_await queue.builds();
  if (auto it = building.find(spec.snapshot->key); it != building.end()) {
    out.job_id = it->second;
    out.coalesced = true;
    co_return out;
  }
  // Two prewarms racing past this check both enqueue; the second then waits
  // for the first's build (single-flight) and runs its setup on that snapshot.
  EnqueueResult enqueued = co_await queue.enqueue(std::move(spec));
  out.job_id = enqueued.record.id;
  out.created = enqueued.created;
  co_return out;
}

}  // namespace warmstart::queue
