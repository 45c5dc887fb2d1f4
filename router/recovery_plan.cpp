#include "router/recovery_plan.hpp"

#include <algorithm>
#include <map>
#include <set>

namespace warmstart::router {
namespace {

bool is_running(const std::string& state) {
  return state == "running" || state == "paused" || state == "restarting";
}
bool has_exited(const std::string& state) {
  return state == "exited" || state == "dead";
}

bool is_terminal_job_state(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "timed_out" || state == "cancelled";
}

}  // namespace

const char* to_string(RecoveryStep::Kind kind) {
  switch (kind) {
    case RecoveryStep::Kind::reattach:
      return "reattach";
    case RecoveryStep::Kind::finalize:
      return "finalize";
    case RecoveryStep::Kind::stop:
      return "stop";
    case RecoveryStep::Kind::requeue:
      return "requeue";
    case RecoveryStep::Kind::remove:
      return "remove";
    case RecoveryStep::Kind::keep:
      return "keep";
  }
  return "?";
}

std::string RecoveryPlan::to_string() const {
  std::string out;
  for (const auto& s : steps) {
    out += warmstart::router::to_string(s.kind);
    if (!s.job_id.empty()) out += " job=" + s.job_id;
    if (!s.container_id.empty()) out += " container=" + s.container_id;
    out += " (" + s.reason + ")\n";
  }
  return out;
}

namespace {

using Kind = RecoveryStep::Kind;
using Containers = std::vector<const ObservedContainer*>;

// The container of the claim's current attempt: the one the job recorded, else
// the newest of its attempt. Any other is a leftover of an old attempt.
const ObservedContainer* current_container(const ObservedClaim& claim, const Containers& all) {
  const ObservedContainer* current = nullptr;
  for (const auto* c : all) {
    if (!claim.container_id.empty() && c->id == claim.container_id) current = c;
  }
  if (current != nullptr) return current;
  for (const auto* c : all) {
    if (c->attempt != claim.attempt) continue;
    if (current == nullptr || c->created_unix_ms > current->created_unix_ms) current = c;
  }
  return current;
}

// What to do with a job this router still holds.
void plan_claim(const ObservedClaim& claim, const Containers& containers, std::int64_t now_ms,
                std::vector<RecoveryStep>& job_steps, std::vector<RecoveryStep>& cleanup) {
  const ObservedContainer* current = current_container(claim, containers);
  for (const auto* c : containers) {
    if (c != current) {
      cleanup.push_back({Kind::remove, claim.job_id, c->id, "container of an earlier attempt"});
    }
  }
  if (current == nullptr) {
    job_steps.push_back({Kind::requeue, claim.job_id, "", "claimed, no container"});
  } else if (is_running(current->state)) {
    if (claim.cancel_requested) {
      job_steps.push_back({Kind::stop, claim.job_id, current->id, "cancel requested"});
    } else if (claim.deadline_unix_ms != 0 && now_ms >= claim.deadline_unix_ms) {
      job_steps.push_back({Kind::stop, claim.job_id, current->id, "timeout passed"});
    } else {
      job_steps.push_back({Kind::reattach, claim.job_id, current->id, "running"});
    }
  } else if (has_exited(current->state)) {
    job_steps.push_back({Kind::finalize, claim.job_id, current->id, "exited while away"});
  } else {
    // "created" (never started) or "removing": no work happened in it.
    job_steps.push_back(
        {Kind::remove, claim.job_id, current->id, "never started: " + current->state});
    job_steps.push_back({Kind::requeue, claim.job_id, "", "container never started"});
  }
}

// A container of a job this router does not hold: finished, elsewhere, or gone.
RecoveryStep plan_other(const std::string& job_id, const ObservedContainer& c,
                        const std::string& state, const RecoveryInput& in) {
  if (is_terminal_job_state(state)) return {Kind::remove, job_id, c.id, "job already " + state};
  if (state == "queued") {
    // Handed back (the engine did not answer in time) or reclaimed after its
    // router's lease ran out: the next claim of this attempt adopts the
    // container (create answers 409). Removing it would undo work done, or
    // meet that claim's adoption halfway; it goes once the job moves on.
    return {Kind::keep, job_id, c.id, "job queued: its next claim adopts this container"};
  }
  if (in.now_unix_ms - c.created_unix_ms >= in.orphan_grace_ms) {
    return {Kind::remove, job_id, c.id,
            state.empty() ? "orphan: no job record" : "orphan: job " + state + " elsewhere"};
  }
  return {Kind::keep, job_id, c.id, "orphan within grace period"};
}

}  // namespace

RecoveryPlan plan_recovery(const RecoveryInput& in) {
  std::map<std::string, Containers> by_job;
  for (const auto& c : in.containers) by_job[c.job_id].push_back(&c);
  std::map<std::string, std::string> other_state;
  for (const auto& j : in.other_jobs) other_state[j.job_id] = j.state;

  std::set<std::string> claimed;
  std::vector<RecoveryStep> job_steps, cleanup_steps;
  for (const auto& claim : in.claims) {
    claimed.insert(claim.job_id);
    plan_claim(claim, by_job[claim.job_id], in.now_unix_ms, job_steps, cleanup_steps);
  }
  for (const auto& [job_id, containers] : by_job) {
    if (claimed.count(job_id) != 0) continue;
    auto st = other_state.find(job_id);
    const std::string state = st == other_state.end() ? "" : st->second;
    for (const auto* c : containers) cleanup_steps.push_back(plan_other(job_id, *c, state, in));
  }

  auto order = [](const RecoveryStep& a, const RecoveryStep& b) {
    return std::tie(a.job_id, a.container_id, a.kind) < std::tie(b.job_id, b.container_id, b.kind);
  };
  std::stable_sort(job_steps.begin(), job_steps.end(),
                   [&](const auto& a, const auto& b) { return a.job_id < b.job_id; });
  std::sort(cleanup_steps.begin(), cleanup_steps.end(), order);
  RecoveryPlan plan;
  plan.steps = std::move(job_steps);
  plan.steps.insert(plan.steps.end(), cleanup_steps.begin(), cleanup_steps.end());
  return plan;
}

}  // namespace warmstart::router
