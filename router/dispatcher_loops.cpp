// The dispatcher's loops: claim, leases, housekeeping (promote, reclaim,
// missed exits, orphan sweep), snapshot gc, and recovery at start.
#include "common/log.hpp"
#include "common/time.hpp"
#include "router/dispatcher.hpp"
#include "router/outcome.hpp"
#include "router/wait_signal.hpp"

#include <algorithm>
#include <utility>

namespace warmstart::router {

using queue::JobState;
using namespace std::chrono;

namespace {

ObservedContainer observed(const container::ContainerSummary& c) {
  ObservedContainer oc;
  oc.id = c.id;
  auto job = c.labels.find("warmstart.job");
  if (job != c.labels.end()) oc.job_id = job->second;
  auto attempt = c.labels.find("warmstart.attempt");
  if (attempt != c.labels.end()) oc.attempt = std::atoi(attempt->second.c_str());
  oc.state = c.state;
  oc.created_unix_ms = c.created_unix * 1000;
  return oc;
}

}  // namespace

// --- claim -------------------------------------------------------------------

awaitable<void> Dispatcher::claim_loop() {
  auto self = shared_from_this();
  Duration backoff = 100ms;
  while (!draining_ && !stopping_) {
    const int want = capacity_.free_slots();
    if (want <= 0 || !may_claim()) {
      co_await wait_signal(claimer_wake_, 1s);
      continue;
    }
    // The queue reads every configured stream in one XREADGROUP; jobs whose
    // concurrency key is busy never come back from it (queue.hpp). The
    // containers of the jobs read are created while their claim runs
    // (precreate.hpp): by job id, what each claim should confirm.
    std::map<std::string, PrecreatedPtr> precreated;
    auto seen = [&](const queue::EntrySeen& e) { precreate(e, want, precreated); };
    claimed_since_housekeeping_ = claim_in_flight_ = true;
    auto op = deps_.queue->claim(consumer_, static_cast<std::size_t>(want), 1s, seen);
    auto claimed = co_await attempt(std::move(op));
    claim_in_flight_ = false;
    if (!claimed) {
      for (auto& [id, p] : precreated) discard(std::move(p), "the claim failed");
      log::warn("claim failed", {{"error", claimed.error}, {"retry_in_ms", backoff.count()}});
      co_await sleep_for(backoff);
      backoff = std::min<Duration>(backoff * 2, 5s);
      continue;
    }
    backoff = 100ms;
    for (auto& c : *claimed.value) {
      PrecreatedPtr pre;
      if (auto it = precreated.find(c.record.id);
          it != precreated.end() && it->second->attempt() == c.lease.attempt) {
        pre = std::move(it->second);
        precreated.erase(it);
      }
      if (!may_claim()) {
        // Claimed while a drain began or the engine went away: given back
        // unspent at once, for another router (or this one once its engine is
        // back), rather than held until its lease runs out. Should that fail,
        // the lease running out is what frees it.
        if (pre) discard(std::move(pre), "claimed while not dispatching");
        net::co_spawn(io_, executor_.give_back(c.lease, "claimed while not dispatching"),
                      [self = shared_from_this(), id = c.record.id](std::exception_ptr e,
                                                                    const Outcome<void>& handed) {
                        if (e || !handed) {
                          log::warn("hand-back failed; the job's lease running out frees it",
                                    {{"job", id}, {"error", e ? describe(e) : handed.error}});
                        }
                      });
        continue;
      }
      admit(std::move(c), StartMode::fresh, "", std::move(pre));
    }
    for (auto& [id, p] : precreated) discard(std::move(p), "the claim did not run it");
  }
}

void Dispatcher::precreate(const queue::EntrySeen& entry, int room,
                           std::map<std::string, PrecreatedPtr>& out) {
  // Never more than the claim may take, nor a second one for a job.
  if (std::cmp_greater_equal(out.size(), room) || out.count(entry.job_id) != 0 ||
      jobs_.count(entry.job_id) != 0 || !may_claim()) {
    return;
  }
  if (!entry.spec.concurrency_key.empty()) return;  // may be parked: not worth a container
  // The spec a claim of this entry gives the run (a claimed job is not cancelled).
  auto p = executor_.precreate(io_, run_spec(entry.job_id, entry.attempt, entry.spec, false),
                               entry.spec);
  if (!p) return;
  out.emplace(entry.job_id, p);
  net::co_spawn(io_, executor_.send_create(std::move(p)),
                [self = shared_from_this()](std::exception_ptr) {});
}

void Dispatcher::discard(PrecreatedPtr unused, const char* why) {
  if (!unused) return;
  net::co_spawn(io_, executor_.discard(std::move(unused), why),
                [self = shared_from_this()](std::exception_ptr) {});
}

// --- leases ------------------------------------------------------------------

// One round trip renews every lease, learns which were lost, and which jobs
// were cancelled (so a lost cancel message costs at most one period).
awaitable<void> Dispatcher::lease_loop() {
  auto self = shared_from_this();
  const Duration period = std::max<Duration>(
      std::min<Duration>(config_.lease_timeout / 3, config_.reconcile_interval), 50ms);
  while (!stopping_) {
    co_await sleep_for(period);
    if (jobs_.empty()) continue;
    std::vector<queue::LeaseHandle> leases;
    for (const auto& [id, job] : jobs_) leases.push_back(job->claimed.lease);
    auto op = deps_.queue->renew_leases(consumer_, leases);
    auto report = co_await attempt(std::move(op));
    if (report) {
      on_lease_report(*report.value);
    } else {
      log::warn("lease renewal failed", {{"error", report.error}});
    }
  }
}

// --- housekeeping ------------------------------------------------------------

awaitable<void> Dispatcher::housekeeping_loop() {
  auto self = shared_from_this();
  while (!stopping_) {
    co_await sleep_for(config_.reconcile_interval);
    if (stopping_) break;
    auto round = co_await attempt(housekeeping_round());
    if (!round) log::warn("housekeeping failed", {{"error", round.error}});
  }
}

awaitable<void> Dispatcher::housekeeping_round() {
  // A claim promotes due retries first, and a blocked one wakes up to do it
  // (queue.hpp): the round promotes only when no claim is blocked or ran since
  // the last round (slots full, draining, engine down), so that their records
  // still turn queued on time.
  if (!claim_in_flight_ && !claimed_since_housekeeping_) co_await deps_.queue->promote_due();
  claimed_since_housekeeping_ = false;
  const int want = capacity_.free_slots();
  // An expired lease is one idle for lease_timeout: scanning for them more
  // often than every third of it only costs round trips (3 a scan, an idle
  // router's largest cost at reconcile_interval 1 s; bench/RESULTS.md).
  if (may_claim() && want > 0 && Clock::now() >= next_reclaim_) {
    next_reclaim_ = Clock::now() + std::max(config_.reconcile_interval, config_.lease_timeout / 3);
    auto reclaimed = co_await deps_.queue->reclaim_expired(consumer_, want);
    for (auto& c : reclaimed) {
      log::info("reclaimed a job whose router stopped heartbeating", {{"job", c.record.id}});
      admit(std::move(c), StartMode::fresh);
    }
  }
  if (!engine_up_) co_return;  // the probe brings it back first
  auto watched = co_await attempt(watch_containers());
  if (!watched && watched.fault == Fault::engine_down) engine_failed(watched.error);
  if (!watched && watched.fault != Fault::engine_down) {
    log::warn("container watch failed", {{"error", watched.error}});
  }
}

// One list of this router's containers: a watched container that no longer
// runs counts as exited (its die event may have been lost), and containers
// no active job owns are swept as orphans.
awaitable<void> Dispatcher::watch_containers() {
  // Only containers already running before the list was asked for: one
  // started while the list is in flight is missing from it, not gone.
  std::map<std::string, ActiveJobPtr> watched;
  for (const auto& [id, job] : by_container_) {
    if (job->run.container_started()) watched.emplace(id, job);
  }
  std::vector<std::string> mine{"warmstart.router=" + config_.router_id};
  auto list = co_await deps_.runtime->list_containers(mine, true);
  std::map<std::string, std::string> state;
  for (const auto& c : list) state[c.id] = c.state;
  for (const auto& [id, job] : watched) {
    auto it = state.find(id);
    if (it != state.end() && it->second != "exited" && it->second != "dead") continue;
    log::info("exit seen by the container list", {{"job", job->id()}, {"container", id}});
    job->run.note_exit();
    job->signal();
  }
  co_await sweep_orphans(list);
}

awaitable<void> Dispatcher::sweep_orphans(const std::vector<container::ContainerSummary>& mine) {
  RecoveryInput input;
  input.now_unix_ms = unix_ms_now();
  input.orphan_grace_ms = duration_cast<milliseconds>(config_.orphan_grace).count();
  for (const auto& c : mine) {
    ObservedContainer oc = observed(c);
    if (jobs_.count(oc.job_id) != 0) continue;  // an active job's (any attempt)
    input.containers.push_back(std::move(oc));
  }
  if (input.containers.empty()) co_return;
  for (const auto& c : input.containers) {
    if (c.job_id.empty()) continue;
    auto rec = co_await deps_.queue->get(c.job_id);
    ObservedJob other;
    other.job_id = c.job_id;
    if (rec) other.state = std::string(queue::to_string(rec->state));
    input.other_jobs.push_back(std::move(other));
  }
  for (const auto& step : plan_recovery(input).steps) {
    if (step.kind != RecoveryStep::Kind::remove || jobs_.count(step.job_id) != 0) continue;
    auto op = deps_.runtime->remove_container(step.container_id, true);
    auto removed = co_await attempt(std::move(op));
    if (removed) ++orphans_removed_;
    log::info("orphan container removed", {{"container", step.container_id},
                                           {"job", step.job_id},
                                           {"reason", step.reason},
                                           {"error", removed.error}});
  }
}

// --- heartbeat -----------------------------------------------------------------

// The fleet view: this router's record every heartbeat_period(); a router
// silent past its lease shows as lost, past fleet_keep() it is forgotten.
// A conflict that appears later (another engine started under this identity
// while Redis was away) is logged on every round: the router keeps serving
// its running jobs.
awaitable<void> Dispatcher::heartbeat_loop() {
  auto self = shared_from_this();
  while (!stopping_) {
    if (deps_.snapshots) {
      auto count_snapshots = deps_.snapshots->totals();
      auto totals = co_await attempt(std::move(count_snapshots));
      if (totals) {
        snapshot_count_ = totals.value->count;
        snapshot_bytes_ = totals.value->bytes;
      }
    }
    queue::RouterRecord mine = fleet_record();
    auto list_op = deps_.queue->routers();
    auto listed = co_await attempt(std::move(list_op));
    if (listed) {
      if (auto other = queue::host_identity_conflict(mine, *listed.value, mine.last_seen)) {
        log::error("host identity conflict",
                   {{"error", queue::describe_host_identity_conflict(mine, *other)}});
      }
    }
    auto beat_op = deps_.queue->heartbeat(std::move(mine), fleet_keep(config_));
    auto beat = co_await attempt(std::move(beat_op));
    if (!beat) log::warn("heartbeat failed", {{"error", beat.error}});
    co_await wait_signal(stopped_, heartbeat_period(config_));
  }
}

awaitable<void> Dispatcher::gc_loop() {
  auto self = shared_from_this();
  while (!stopping_) {
    co_await sleep_for(config_.snapshot_gc_interval);
    if (stopping_ || !deps_.snapshots) break;
    auto op = deps_.snapshots->gc();
    auto report = co_await attempt(std::move(op));
    if (!report) {
      log::warn("snapshot gc failed", {{"error", report.error}});
    } else if (report.value->images_removed > 0) {
      log::info("snapshot gc", {{"images_removed", report.value->images_removed}});
    }
  }
}

// --- recovery ----------------------------------------------------------------

awaitable<void> Dispatcher::recover() {
  std::map<std::string, queue::ClaimedJob> held;
  RecoveryInput input = co_await observe_for_recovery(held);
  recovery_plan_ = plan_recovery(input);
  if (!recovery_plan_.steps.empty()) {
    log::info("recovery plan",
              {{"router", config_.router_id}, {"plan", recovery_plan_.to_string()}});
  }
  co_await execute_recovery(held);
}

awaitable<RecoveryInput> Dispatcher::observe_for_recovery(
    std::map<std::string, queue::ClaimedJob>& held) {
  RecoveryInput input;
  input.now_unix_ms = unix_ms_now();
  input.orphan_grace_ms = duration_cast<milliseconds>(config_.orphan_grace).count();
  std::vector<std::string> mine{"warmstart.router=" + config_.router_id};
  // (Not `for (x : co_await ...)`: g++ 12 miscompiles it.)
  auto containers = co_await deps_.runtime->list_containers(mine, true);
  for (const auto& c : containers) input.containers.push_back(observed(c));
  auto held_jobs = co_await deps_.queue->held_by(consumer_);
  for (auto& claimed : held_jobs) {
    ObservedClaim claim;
    claim.job_id = claimed.record.id;
    claim.attempt = claimed.lease.attempt;
    claim.container_id = claimed.record.container_id;
    claim.cancel_requested = claimed.record.state == JobState::cancelled;
    if (claimed.record.started_at && claimed.record.state != JobState::queued) {
      claim.deadline_unix_ms =
          *claimed.record.started_at + effective_timeout_s(claimed.record.spec, config_) * 1000;
    }
    input.claims.push_back(claim);
    held.emplace(claimed.record.id, std::move(claimed));
  }
  for (const auto& c : input.containers) {
    if (held.count(c.job_id) != 0 || c.job_id.empty()) continue;
    auto rec = co_await deps_.queue->get(c.job_id);
    ObservedJob other;
    other.job_id = c.job_id;
    if (rec) other.state = std::string(queue::to_string(rec->state));
    input.other_jobs.push_back(std::move(other));
  }
  co_return input;
}

awaitable<void> Dispatcher::execute_recovery(std::map<std::string, queue::ClaimedJob>& held) {
  using Kind = RecoveryStep::Kind;
  for (const auto& step : recovery_plan_.steps) {
    switch (step.kind) {
      case Kind::reattach:
      case Kind::stop:  // the run sees the cancel or the passed deadline and stops it
        admit(held.at(step.job_id), StartMode::reattach, step.container_id);
        break;
      case Kind::finalize:
        admit(held.at(step.job_id), StartMode::finalize, step.container_id);
        break;
      case Kind::requeue:
        admit(held.at(step.job_id), StartMode::fresh);
        break;
      case Kind::remove: {
        auto op = deps_.runtime->remove_container(step.container_id, true);
        auto removed = co_await attempt(std::move(op));
        if (!removed && removed.fault != Fault::not_found) {
          log::warn("container remove failed",
                    {{"container", step.container_id}, {"error", removed.error}});
        }
        break;
      }
      case Kind::keep:
        break;
    }
  }
}

}  // namespace warmstart::router
