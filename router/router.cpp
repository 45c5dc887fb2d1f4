#include "router/router.hpp"

#include "common/log.hpp"
#include "common/time.hpp"
#include "router/launch.hpp"

#include <algorithm>

namespace warmstart::router {

using queue::JobState;
using namespace std::chrono;

// One claimed job on this router, from claim to ack.
struct Router::ActiveJob {
  explicit ActiveJob(net::any_io_executor ex) : wake(ex, Clock::time_point::max()) {}
  queue::ClaimedJob claimed;
  std::string container_id;
  bool waiting_for_key = false;
  bool exited = false;            // the engine reported (or the list showed) the exit
  bool cancel_requested = false;  // a cancel arrived (pub/sub or the record says so)
  bool timed_out = false;
  bool lease_lost = false;  // another router took the job over
  bool commit = false;      // commit a snapshot on success
  bool from_snapshot = false;
  bool fallback = false;
  std::string image;
  std::optional<snapshots::Choice> choice;
  Clock::time_point deadline = Clock::time_point::max();
  net::steady_timer wake;  // cancelled to signal; expires at the deadline

  const std::string& id() const { return claimed.record.id; }
  const queue::JobSpec& spec() const { return claimed.record.spec; }
  std::string snapshot_key() const { return spec().snapshot ? spec().snapshot->key : ""; }
  void signal() { wake.cancel(); }
};

namespace {

// Cancels a timer used as a broadcast signal.
void notify_all(net::steady_timer& t) {
  t.cancel();
}

awaitable<void> wait_signal(net::steady_timer& t, Duration limit) {
  // The signal timers stay at time_point::max(); a bounded wait keeps every loop
  // re-checking its conditions even if a wake-up were missed.
  net::steady_timer bound(co_await net::this_coro::executor, limit);
  using namespace net::experimental::awaitable_operators;
  co_await (t.async_wait(net::as_tuple(use_awaitable)) ||
            bound.async_wait(net::as_tuple(use_awaitable)));
}

double seconds_between(std::int64_t from_ms, std::int64_t to_ms) {
  return static_cast<double>(std::max<std::int64_t>(0, to_ms - from_ms)) / 1000.0;
}

}  // namespace

Router::Router(net::any_io_executor executor, RouterConfig config, RouterDeps deps)
    : executor_(executor),
      config_(std::move(config)),
      deps_(std::move(deps)),
      policy_(config_.base_image, config_.image_allowlist),
      capacity_(config_.concurrency, config_.concurrency_key_limit),
      consumer_(config_.router_id),
      claimer_wake_(executor, Clock::time_point::max()),
      key_freed_(executor, Clock::time_point::max()),
      stopped_(executor, Clock::time_point::max()) {}

Router::~Router() {
  if (engine_events_) engine_events_->stop();
}

void Router::emit(nlohmann::json event) {
  net::co_spawn(
      executor_,
      [queue = deps_.queue, event = std::move(event)]() -> awaitable<void> {
        co_await queue->append_event(event);
      },
      [type = event.value("type", "")](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::warn("event not recorded", {{"type", type}, {"error", ex.what()}});
        }
      });
}

void Router::wake_claimer() {
  notify_all(claimer_wake_);
}

awaitable<void> Router::run() {
  auto self = shared_from_this();
  std::weak_ptr<Router> weak = self;

  // Subscribe before recovering, so an exit during recovery is not missed.
  container::EventFilter filter;
  filter.types = {"container"};
  filter.labels = {"warmstart.router=" + config_.router_id};
  filter.events = {"die"};
  const auto since_ns =
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count() - 1'000'000'000;
  engine_events_ = deps_.runtime->subscribe_events(filter, since_ns, [weak](const auto& ev) {
    if (auto r = weak.lock()) r->on_engine_event(ev);
  });
  cancels_ =
      deps_.queue->subscribe_cancellations([weak](const std::string& job_id, const std::string&) {
        if (auto r = weak.lock()) r->on_cancel(job_id);
      });
  if (!co_await cancels_->wait_ready(5s)) log::warn("cancel subscription not ready after 5 s");

  co_await recover();

  emit({{"type", "router.started"}, {"router", config_.router_id}});
  log::info("router started", {{"router", config_.router_id},
                               {"concurrency", config_.concurrency},
                               {"queues", config_.queues},
                               {"base_image", config_.base_image}});

  auto spawn = [&](awaitable<void> loop, const char* name) {
    net::co_spawn(executor_, std::move(loop), [self, name](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("router loop ended", {{"loop", name}, {"error", ex.what()}});
      }
    });
  };
  spawn(claim_loop(), "claim");
  spawn(heartbeat_loop(), "heartbeat");
  spawn(housekeeping_loop(), "housekeeping");
  spawn(gc_loop(), "snapshot gc");

  while (!stopping_) co_await wait_signal(stopped_, 1s);
  if (engine_events_) engine_events_->stop();
  log::info("router stopped", {{"router", config_.router_id}, {"jobs_left_running", jobs_.size()}});
}

void Router::drain() {
  if (draining_) return;
  draining_ = true;
  stats_.draining = true;
  wake_claimer();
  emit({{"type", "router.draining"}, {"router", config_.router_id}});
  log::info("draining",
            {{"running", jobs_.size()}, {"deadline_ms", config_.drain_deadline.count()}});
  if (config_.drain_deadline <= Duration::zero()) {
    // Leave the containers running: the next start re-attaches them.
    stop_now();
    return;
  }
  net::co_spawn(
      executor_,
      [self = shared_from_this()]() -> awaitable<void> {
        const auto until = Clock::now() + self->config_.drain_deadline;
        while (!self->jobs_.empty() && Clock::now() < until) co_await sleep_for(100ms);
        self->stop_now();
      },
      net::detached);
}

void Router::stop_now() {
  stopping_ = true;
  notify_all(stopped_);
  wake_claimer();
}

// --- recovery ---------------------------------------------------------------

awaitable<void> Router::recover() {
  RecoveryInput input;
  input.now_unix_ms = unix_ms_now();
  input.orphan_grace_ms = duration_cast<milliseconds>(config_.orphan_grace).count();

  std::vector<std::string> mine{"warmstart.router=" + config_.router_id};
  auto containers = co_await deps_.runtime->list_containers(mine, true);
  for (const auto& c : containers) {
    ObservedContainer oc;
    oc.id = c.id;
    auto job = c.labels.find("warmstart.job");
    if (job != c.labels.end()) oc.job_id = job->second;
    auto attempt = c.labels.find("warmstart.attempt");
    if (attempt != c.labels.end()) oc.attempt = std::atoi(attempt->second.c_str());
    oc.state = c.state;
    oc.created_unix_ms = c.created_unix * 1000;
    input.containers.push_back(std::move(oc));
  }

  std::map<std::string, queue::ClaimedJob> held;
  auto held_jobs = co_await deps_.queue->held_by(consumer_);
  for (auto& claimed : held_jobs) {
    ObservedClaim claim;
    claim.job_id = claimed.record.id;
    claim.attempt = claimed.lease.attempt;
    claim.container_id = claimed.record.container_id;
    claim.cancel_requested = claimed.record.state == JobState::cancelled;
    if (claimed.record.started_at && claimed.record.state != JobState::queued) {
      claim.deadline_unix_ms = *claimed.record.started_at + claimed.record.spec.timeout_s * 1000;
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

  recovery_plan_ = plan_recovery(input);
  if (!recovery_plan_.steps.empty()) {
    log::info("recovery plan",
              {{"router", config_.router_id}, {"plan", recovery_plan_.to_string()}});
  }
  for (const auto& step : recovery_plan_.steps) {
    using Kind = RecoveryStep::Kind;
    switch (step.kind) {
      case Kind::reattach:
      case Kind::stop:
        start_job(held.at(step.job_id), Start::reattach, step.container_id);
        break;
      case Kind::finalize:
        start_job(held.at(step.job_id), Start::finalize, step.container_id);
        break;
      case Kind::requeue:
        start_job(held.at(step.job_id), Start::fresh);
        break;
      case Kind::remove:
        co_await remove_container_quietly(step.container_id);
        break;
      case Kind::keep:
        break;
    }
  }
}

// --- loops -------------------------------------------------------------------

awaitable<void> Router::claim_loop() {
  auto self = shared_from_this();
  Duration backoff = 100ms;
  while (!draining_ && !stopping_) {
    const int want = std::min(capacity_.free_slots(), config_.concurrency - stats_.waiting_for_key);
    if (want <= 0) {
      co_await wait_signal(claimer_wake_, 1s);
      continue;
    }
    std::vector<queue::ClaimedJob> claimed;
    bool claim_failed = false;
    try {
      // The queue reads every configured stream in one XREADGROUP.
      claimed = co_await deps_.queue->claim(consumer_, static_cast<std::size_t>(want), 1s);
      backoff = 100ms;
    } catch (const std::exception& e) {
      log::warn("claim failed", {{"error", e.what()}, {"retry_in_ms", backoff.count()}});
      claim_failed = true;
    }
    if (claim_failed) {
      co_await sleep_for(backoff);
      backoff = std::min<Duration>(backoff * 2, 5s);
      continue;
    }
    for (auto& c : claimed) {
      if (draining_ || stopping_) {
        // Claimed while a drain began: the lease expires and another router (or
        // the next start) takes it; nothing ran.
        log::info("claimed during drain; left for the next start", {{"job", c.record.id}});
        continue;
      }
      start_job(std::move(c), Start::fresh);
    }
  }
}

awaitable<void> Router::heartbeat_loop() {
  auto self = shared_from_this();
  const Duration period = std::max<Duration>(config_.lease_timeout / 3, 100ms);
  while (!stopping_) {
    co_await sleep_for(period);
    if (jobs_.empty()) continue;
    std::vector<queue::LeaseHandle> leases;
    for (const auto& [id, job] : jobs_) leases.push_back(job->claimed.lease);
    try {
      auto lost = co_await deps_.queue->renew_leases(consumer_, leases);
      for (const auto& id : lost) {
        auto it = jobs_.find(id);
        if (it == jobs_.end()) continue;
        log::warn("lease lost: another router owns the job now", {{"job", id}});
        it->second->lease_lost = true;
        it->second->signal();
      }
    } catch (const std::exception& e) {
      log::warn("lease renewal failed", {{"error", e.what()}});
    }
  }
}

awaitable<void> Router::housekeeping_loop() {
  auto self = shared_from_this();
  while (!stopping_) {
    co_await sleep_for(config_.reconcile_interval);
    if (stopping_) break;
    try {
      co_await deps_.queue->promote_due();
      if (!draining_) {
        const int want =
            std::min(capacity_.free_slots(), config_.concurrency - stats_.waiting_for_key);
        if (want > 0) {
          auto reclaimed = co_await deps_.queue->reclaim_expired(consumer_, want);
          for (auto& c : reclaimed) {
            log::info("reclaimed a job whose router stopped heartbeating", {{"job", c.record.id}});
            start_job(std::move(c), Start::fresh);
          }
        }
      }
      co_await sync_containers();
    } catch (const std::exception& e) {
      log::warn("housekeeping failed", {{"error", e.what()}});
    }
  }
}

awaitable<void> Router::gc_loop() {
  auto self = shared_from_this();
  while (!stopping_) {
    co_await sleep_for(config_.snapshot_gc_interval);
    if (stopping_ || !deps_.snapshots) break;
    try {
      auto report = co_await deps_.snapshots->gc();
      if (report.images_removed > 0) {
        log::info("snapshot gc", {{"images_removed", report.images_removed}});
      }
    } catch (const std::exception& e) {
      log::warn("snapshot gc failed", {{"error", e.what()}});
    }
  }
}

// One batched list instead of an inspect per container: any watched container
// that is no longer running counts as exited (its exit event may have been lost).
awaitable<void> Router::sync_containers() {
  if (by_container_.empty()) co_return;
  std::vector<std::string> mine{"warmstart.router=" + config_.router_id};
  auto list = co_await deps_.runtime->list_containers(mine, true);
  std::map<std::string, std::string> state;
  for (const auto& c : list) state[c.id] = c.state;
  for (const auto& [id, job] : by_container_) {
    auto it = state.find(id);
    const bool gone = it == state.end();
    if (job->exited) continue;
    if (gone || it->second == "exited" || it->second == "dead") {
      log::info("exit seen by the container list", {{"job", job->id()}, {"container", id}});
      job->exited = true;
      job->signal();
    }
  }
}

void Router::on_engine_event(const container::Event& event) {
  if (event.action != "die") return;
  auto it = by_container_.find(event.id);
  if (it == by_container_.end()) return;
  it->second->exited = true;
  it->second->signal();
}

void Router::on_cancel(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  log::info("cancel requested", {{"job", job_id}});
  it->second->cancel_requested = true;
  it->second->signal();
  notify_all(key_freed_);  // a job waiting for its key re-checks too
}

// --- one job ---------------------------------------------------------------

void Router::start_job(queue::ClaimedJob claimed, Start how, std::string container_id) {
  const std::string id = claimed.record.id;
  if (jobs_.count(id) != 0) {
    // The same job delivered twice (claim plus reclaim, or a recovery step plus a
    // claim): one container per job on this router, never a second.
    log::warn("job already active on this router; duplicate delivery ignored", {{"job", id}});
    return;
  }
  auto job = std::make_shared<ActiveJob>(executor_);
  job->claimed = std::move(claimed);
  job->container_id = std::move(container_id);
  jobs_[id] = job;
  if (how != Start::fresh) {
    capacity_.force_slot(id);
    capacity_.acquire_key(id, job->spec().concurrency_key);
  } else if (capacity_.key_has_room(job->spec().concurrency_key) && capacity_.free_slots() > 0) {
    capacity_.acquire_slot(id);
    capacity_.acquire_key(id, job->spec().concurrency_key);
  } else {
    job->waiting_for_key = true;
    ++stats_.waiting_for_key;
  }
  stats_.running = static_cast<int>(jobs_.size()) - stats_.waiting_for_key;
  if (!job->container_id.empty()) by_container_[job->container_id] = job;

  net::co_spawn(
      executor_, run_job(job, how), [self = shared_from_this(), job](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log::error("job coroutine failed", {{"job", job->id()}, {"error", ex.what()}});
          }
        }
        self->forget(job);
      });
}

void Router::forget(const ActiveJobPtr& job) {
  if (job->waiting_for_key) {
    job->waiting_for_key = false;
    --stats_.waiting_for_key;
  }
  capacity_.release(job->id());
  auto it = jobs_.find(job->id());
  if (it != jobs_.end() && it->second == job) jobs_.erase(it);
  if (!job->container_id.empty()) {
    auto c = by_container_.find(job->container_id);
    if (c != by_container_.end() && c->second == job) by_container_.erase(c);
  }
  stats_.running = static_cast<int>(jobs_.size()) - stats_.waiting_for_key;
  notify_all(key_freed_);
  wake_claimer();
}

awaitable<void> Router::run_job(ActiveJobPtr job, Start how) {
  if (how == Start::fresh) {
    // Wait for the concurrency key (and a slot) without failing: the job stays
    // claimed and heartbeated meanwhile.
    while (job->waiting_for_key) {
      if (job->cancel_requested || job->lease_lost || stopping_) break;
      if (capacity_.key_has_room(job->spec().concurrency_key) && capacity_.free_slots() > 0) {
        capacity_.acquire_slot(job->id());
        capacity_.acquire_key(job->id(), job->spec().concurrency_key);
        job->waiting_for_key = false;
        --stats_.waiting_for_key;
        break;
      }
      co_await wait_signal(key_freed_, 1s);
    }
    if (stopping_ || job->lease_lost) co_return;
    if (job->cancel_requested) {
      queue::JobResult cancelled{JobState::cancelled, std::nullopt, "cancelled before start"};
      co_await deps_.queue->finish(job->claimed.lease, cancelled);
      co_return;
    }
    if (!co_await launch(job)) co_return;
  } else {
    const auto& rec = job->claimed.record;
    job->image = rec.image;
    job->from_snapshot = rec.from_snapshot;
    job->fallback = rec.snapshot_fallback;
    job->commit = rec.spec.snapshot && rec.spec.snapshot->commit &&
                  !rec.spec.snapshot->key.empty() &&
                  (rec.spec.image.empty() || rec.spec.image == config_.base_image);
    job->cancel_requested = rec.state == JobState::cancelled;
    if (rec.started_at) {
      const auto ends_ms = *rec.started_at + rec.spec.timeout_s * 1000;
      job->deadline =
          Clock::now() + milliseconds(std::max<std::int64_t>(0, ends_ms - unix_ms_now()));
    }
    if (how == Start::finalize) job->exited = true;
    const char* what = "re-attached to a running job";
    if (how == Start::finalize) what = "finalizing a job that exited while away";
    log::info(what, {{"job", job->id()}, {"container", job->container_id}});
  }
  co_await monitor(job);
  if (stopping_) co_return;  // leave it running; the next start re-attaches it
  co_await complete(job);
}

awaitable<void> Router::fail(ActiveJobPtr job, std::string reason, bool retryable) {
  log::warn("job attempt failed", {{"job", job->id()},
                                   {"attempt", job->claimed.lease.attempt},
                                   {"error", reason},
                                   {"retryable", retryable}});
  try {
    co_await deps_.queue->fail_attempt(job->claimed.lease, reason, retryable);
  } catch (const queue::LeaseLost&) {
    log::warn("lease lost while failing the job", {{"job", job->id()}});
  }
}

awaitable<bool> Router::launch(ActiveJobPtr job) {
  const auto& rec = job->claimed.record;
  const auto& spec = rec.spec;
  std::string reason;
  auto image = policy_.resolve(spec.image, &reason);
  if (!image) {
    co_await fail(job, reason, false);
    co_return false;
  }
  const std::string key = job->snapshot_key();
  const bool on_base = *image == config_.base_image;
  job->commit = !key.empty() && spec.snapshot->commit && on_base && deps_.snapshots != nullptr;

  LaunchRequest req;
  req.router_id = config_.router_id;
  req.job_id = rec.id;
  req.attempt = job->claimed.lease.attempt;
  req.image = *image;
  req.snapshot_key = key;
  req.commit_on_success = job->commit;
  req.cmd = spec.cmd;
  req.env = spec.env;
  req.resources.memory_bytes = spec.resources.memory_mb * 1024 * 1024;
  req.resources.nano_cpus = static_cast<std::int64_t>(spec.resources.cpus * 1e9);
  req.resources.pids_limit = spec.resources.pids;
  req.network_mode = config_.network_mode;

  std::string failure;
  if (!key.empty() && on_base && deps_.snapshots) {
    std::optional<container::ApiError> api_error;
    try {
      job->choice =
          co_await deps_.snapshots->choose_image(key, config_.base_image, spec.snapshot->reuse);
      if (job->choice->outcome == snapshots::LookupOutcome::hit) {
        req.image = job->choice->image;
        req.from_snapshot = true;
      }
    } catch (const container::ApiError& e) {
      api_error = e;
    }
    if (api_error) {
      std::string why = api_error->what();
      if (api_error->is_image_not_found()) why = "image not found: " + config_.base_image;
      co_await fail(job, why, true);
      co_return false;
    }
  }

  // Create; a 404 "No such image" for a snapshot image falls back to the base
  // image once (invalidating the snapshot); for the base image it fails the attempt.
  std::string container_id;
  for (int round = 0; round < 2 && container_id.empty(); ++round) {
    std::optional<container::ApiError> api_error;
    std::string other_error;
    const auto t0 = Clock::now();
    try {
      container_id = co_await deps_.runtime->create_container(make_container_spec(req));
      if (observers_.create_latency) {
        observers_.create_latency(duration<double>(Clock::now() - t0).count());
      }
    } catch (const container::ApiError& e) {
      api_error = e;
    } catch (const std::exception& e) {
      other_error = e.what();
    }
    if (!container_id.empty()) break;
    if (!other_error.empty()) {
      co_await fail(job, "container create failed: " + other_error, true);
      co_return false;
    }
    if (api_error->is_image_not_found() && req.from_snapshot) {
      const std::string stale = req.image;
      log::warn("snapshot image vanished; falling back to the base image",
                {{"job", rec.id}, {"snapshot_key", key}, {"image", stale}});
      std::string only_if;
      if (job->choice && job->choice->entry) only_if = job->choice->entry->image_id;
      co_await deps_.snapshots->invalidate(key, "image_missing", only_if);
      emit({{"type", "job.snapshot_fallback"}, {"job", rec.id}, {"key", key}, {"image", stale}});
      ++stats_.snapshot_fallbacks;
      job->fallback = true;
      req.image = config_.base_image;
      req.from_snapshot = false;  // commit stays on: a fresh snapshot replaces the stale one
      if (job->choice) job->choice->observed_image_id.clear();
      continue;
    }
    if (api_error->is_image_not_found()) {
      co_await fail(job, "image not found: " + req.image, true);
      co_return false;
    }
    if (api_error->is_conflict()) {
      // A container of this very attempt exists (created before a crash, or a
      // duplicate trigger): adopt it instead of running the job twice.
      std::optional<container::ContainerInfo> existing;
      try {
        existing = co_await deps_.runtime->inspect_container(container_name(rec.id, req.attempt));
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (existing) {
        container_id = existing->id;
        log::info("adopted the existing container of this attempt",
                  {{"job", rec.id}, {"container", container_id}});
        break;
      }
    }
    co_await fail(job, std::string(api_error->what()), true);
    co_return false;
  }
  if (container_id.empty()) {
    co_await fail(job, "image not found: " + config_.base_image, true);
    co_return false;
  }

  job->container_id = container_id;
  job->image = req.image;
  job->from_snapshot = req.from_snapshot;
  by_container_[container_id] = job;

  const auto t_start = Clock::now();
  std::string start_error;
  try {
    co_await deps_.runtime->start_container(container_id);
  } catch (const std::exception& e) {
    start_error = e.what();
  }
  if (!start_error.empty()) {
    co_await remove_container_quietly(container_id);
    co_await fail(job, "container start failed: " + start_error, true);
    co_return false;
  }
  if (observers_.start_latency) {
    observers_.start_latency(duration<double>(Clock::now() - t_start).count());
  }

  queue::RunInfo info{req.image, req.from_snapshot, job->fallback, container_id, config_.router_id};
  bool lease_lost = false;
  try {
    auto updated = co_await deps_.queue->mark_running(job->claimed.lease, info);
    if (updated.state == JobState::cancelled) job->cancel_requested = true;
    if (observers_.dispatch_latency) {
      observers_.dispatch_latency(seconds_between(rec.created_at, unix_ms_now()));
    }
  } catch (const queue::LeaseLost&) {
    lease_lost = true;
  }
  if (lease_lost) {
    job->lease_lost = true;
    co_return true;  // complete() stops and removes the container
  }
  ++stats_.dispatched;
  job->deadline = Clock::now() + seconds(spec.timeout_s);
  log::info("job started", {{"job", rec.id},
                            {"container", container_id},
                            {"image", req.image},
                            {"from_snapshot", req.from_snapshot},
                            {"snapshot_fallback", job->fallback},
                            {"attempt", req.attempt}});
  co_return true;
}

awaitable<void> Router::monitor(ActiveJobPtr job) {
  while (!job->exited && !job->cancel_requested && !job->lease_lost && !stopping_) {
    if (Clock::now() >= job->deadline) {
      job->timed_out = true;
      break;
    }
    job->wake.expires_at(job->deadline);
    co_await job->wake.async_wait(net::as_tuple(use_awaitable));
  }
}

awaitable<void> Router::complete(ActiveJobPtr job) {
  const auto& rec = job->claimed.record;
  const std::string& cid = job->container_id;
  const auto stop_timeout = config_.stop_grace + config_.docker_timeout;

  if (!job->exited && (job->cancel_requested || job->timed_out || job->lease_lost)) {
    std::string error;
    try {
      co_await with_deadline(
          deps_.runtime->stop_container(cid, duration_cast<seconds>(config_.stop_grace)),
          stop_timeout, "container stop");
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) log::warn("container stop failed", {{"job", rec.id}, {"error", error}});
  }
  if (job->lease_lost) {
    co_await remove_container_quietly(cid);
    co_return;
  }

  queue::JobResult result;
  std::optional<container::ContainerInfo> info;
  std::string inspect_error;
  try {
    info = co_await deps_.runtime->inspect_container(cid);
  } catch (const std::exception& e) {
    inspect_error = e.what();
  }
  std::string tail;
  if (info) {
    try {
      auto logs = co_await deps_.runtime->container_logs(cid, config_.log_tail_bytes);
      tail = std::move(logs.combined);
    } catch (const std::exception& e) {
      log::warn("could not read container logs", {{"job", rec.id}, {"error", e.what()}});
    }
  }

  // (No ?: with class-type operands in coroutines: g++ 12 miscompiles them.)
  std::optional<int> exit_code;
  if (info) exit_code = info->state.exit_code;
  if (job->cancel_requested) {
    result = {JobState::cancelled, exit_code, "cancelled"};
  } else if (job->timed_out) {
    result = {JobState::timed_out, exit_code,
              "timed out after " + std::to_string(rec.spec.timeout_s) + " s"};
  } else if (!info) {
    result = {JobState::failed, std::nullopt, "container vanished: " + inspect_error};
  } else if (info->state.exit_code == 0 && !info->state.oom_killed) {
    result = {JobState::succeeded, 0, ""};
  } else {
    std::string error = "exit code " + std::to_string(info->state.exit_code);
    if (info->state.oom_killed) error += " (OOM killed)";
    result = {JobState::failed, info->state.exit_code, error};
  }

  const bool commit_due = result.state == JobState::succeeded && job->commit;
  if (commit_due) {
    // The slot is free once the container stopped running: the next job may
    // start while the engine writes the snapshot (seconds for a large one). The
    // concurrency key and the job's claim are kept until the commit is
    // registered, so a job waiting for the same key starts from the new snapshot.
    capacity_.release_slot(job->id());
    wake_claimer();
    snapshots::CommitRequest req;
    req.container_id = cid;
    req.job_id = rec.id;
    req.key = job->snapshot_key();
    req.base_image = config_.base_image;
    if (job->choice) req.expected_image_id = job->choice->observed_image_id;
    auto commit = co_await deps_.snapshots->commit(req);
    log::info("snapshot commit", {{"job", rec.id},
                                  {"key", req.key},
                                  {"status", snapshots::to_string(commit.status)},
                                  {"image", commit.image},
                                  {"took_ms", duration_cast<milliseconds>(commit.took).count()},
                                  {"error", commit.error}});
    co_await remove_container_quietly(cid);
  } else {
    // Without a commit the slot is held until the container is gone, so the
    // engine never holds more than `concurrency` containers of this router.
    co_await remove_container_quietly(cid);
    capacity_.release_slot(job->id());
    wake_claimer();
  }

  try {
    if (!tail.empty()) co_await deps_.queue->set_log_tail(rec.id, tail);
    const bool attempts_left = job->claimed.lease.attempt < rec.spec.max_attempts;
    if (result.state == JobState::failed && attempts_left) {
      co_await deps_.queue->fail_attempt(job->claimed.lease, result.error, true);
    } else {
      co_await deps_.queue->finish(job->claimed.lease, result);
    }
    ++stats_.finished;
    nlohmann::json exit_json = nullptr;
    if (result.exit_code) exit_json = *result.exit_code;
    log::info("job finished", {{"job", rec.id},
                               {"container", cid},
                               {"state", std::string(queue::to_string(result.state))},
                               {"exit_code", exit_json},
                               {"error", result.error}});
  } catch (const queue::LeaseLost&) {
    log::warn("lease lost before the job could be finished", {{"job", rec.id}});
  }
}

awaitable<void> Router::remove_container_quietly(std::string id) {
  if (id.empty()) co_return;
  try {
    co_await deps_.runtime->remove_container(id, true);
  } catch (const container::ApiError& e) {
    if (!e.is_not_found())
      log::warn("container remove failed", {{"container", id}, {"error", e.what()}});
  } catch (const std::exception& e) {
    log::warn("container remove failed", {{"container", id}, {"error", e.what()}});
  }
}

}  // namespace warmstart::router
