#include "router/dispatcher.hpp"

#include "common/log.hpp"
#include "common/time.hpp"
#include "router/outcome.hpp"
#include "router/wait_signal.hpp"

#include <algorithm>
#include <random>

namespace warmstart::router {

using queue::JobState;
using namespace std::chrono;

Dispatcher::Dispatcher(net::any_io_executor executor, RouterConfig config, RouterDeps deps)
    : io_(executor),
      config_(std::move(config)),
      deps_(std::move(deps)),
      policy_(config_.base_image, config_.image_allowlist),
      capacity_(config_.concurrency),
      executor_(config_, ExecutorPorts{deps_.queue, deps_.runtime, deps_.snapshots}, hooks()),
      consumer_(config_.router_id),
      started_at_(unix_ms_now()),
      claimer_wake_(executor, Clock::time_point::max()),
      stopped_(executor, Clock::time_point::max()) {
  identity_.host_id = config_.host_id;
  std::random_device random;
  instance_ = std::to_string(random()) + "-" + std::to_string(random());
}

// The executor's calls back into the dispatcher. `this` is safe: job runs
// keep the dispatcher alive (admit()'s completion handler holds it).
ExecutorHooks Dispatcher::hooks() {
  ExecutorHooks h;
  h.container_known = [this](const ActiveJobPtr& job) { by_container_[job->container_id] = job; };
  h.slot_freed = [this](const ActiveJobPtr& job) {
    capacity_.release_slot(job->id());
    wake_claimer();
  };
  h.engine_down = [this](const std::string& error) { engine_failed(error); };
  h.stopping = [this] { return stopping_; };
  h.emit = [this](nlohmann::json event) { emit(std::move(event)); };
  h.host_id = [this] { return identity_.host_id; };
  return h;
}

Dispatcher::~Dispatcher() {
  if (engine_events_) engine_events_->stop();
}

RouterStats Dispatcher::stats() const {
  RouterStats s;
  s.running = capacity_.held();
  static_cast<ExecutorStats&>(s) = executor_.stats();
  s.orphans_removed = orphans_removed_;
  s.leases_lost = leases_lost_;
  s.draining = draining_;
  s.engine_up = engine_up_;
  return s;
}

// --- the fleet view ------------------------------------------------------------

void Dispatcher::identify(HostIdentity identity) {
  identity_ = std::move(identity);
  if (identity_.host_id.empty()) identity_.host_id = identity_.engine_id;
}

queue::RouterRecord Dispatcher::fleet_record() const {
  queue::RouterRecord r;
  r.id = config_.router_id;
  r.host_id = identity_.host_id;
  r.engine_id = identity_.engine_id;
  r.host_name = identity_.host_name;
  r.docker_host = config_.docker_host;
  r.version = identity_.version;
  r.instance = instance_;
  r.queues = config_.queues;
  r.capacity = config_.concurrency;
  r.running = capacity_.held();
  r.snapshot_count = snapshot_count_;
  r.snapshot_bytes = snapshot_bytes_;
  r.draining = draining_;
  r.engine_up = engine_up_;
  r.lease_ms = duration_cast<milliseconds>(config_.lease_timeout).count();
  r.started_at = started_at_;
  r.last_seen = unix_ms_now();
  return r;
}

awaitable<void> Dispatcher::claim_host_identity() {
  queue::RouterRecord mine = fleet_record();
  auto fleet = co_await deps_.queue->routers();
  if (auto other = queue::host_identity_conflict(mine, fleet, mine.last_seen)) {
    throw HostIdentityConflict(queue::describe_host_identity_conflict(mine, *other));
  }
  auto beat = deps_.queue->heartbeat(std::move(mine), fleet_keep(config_));
  co_await std::move(beat);
}

void Dispatcher::emit(nlohmann::json event) {
  net::co_spawn(
      io_,
      [queue = deps_.queue, event = std::move(event)]() -> awaitable<void> {
        co_await queue->append_event(event);
      },
      [type = event.value("type", "")](std::exception_ptr e) {
        if (e) log::warn("event not recorded", {{"type", type}, {"error", describe(e)}});
      });
}

void Dispatcher::wake_claimer() {
  claimer_wake_.cancel();
}

void Dispatcher::spawn(awaitable<void> loop, const char* name) {
  net::co_spawn(io_, std::move(loop), [self = shared_from_this(), name](std::exception_ptr e) {
    if (e) log::error("router loop ended", {{"loop", name}, {"error", describe(e)}});
  });
}

awaitable<void> Dispatcher::run() {
  auto self = shared_from_this();
  std::weak_ptr<Dispatcher> weak = self;
  // Subscribe before recovering, so an exit during recovery is not missed.
  container::EventFilter filter;
  filter.types = {"container"};
  filter.labels = {"warmstart.router=" + config_.router_id};
  filter.events = {"oom", "die"};
  const auto since_ns =
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count() - 1'000'000'000;
  engine_events_ = deps_.runtime->subscribe_events(filter, since_ns, [weak](const auto& ev) {
    if (auto d = weak.lock()) d->on_engine_event(ev);
  });
  cancels_ =
      deps_.queue->subscribe_cancellations([weak](const std::string& job_id, const std::string&) {
        if (auto d = weak.lock()) d->on_cancel(job_id, "cancel message received");
      });
  if (!co_await cancels_->wait_ready(5s)) log::warn("cancel subscription not ready after 5 s");

  co_await recover();
  emit({{"type", "router.started"}, {"router", config_.router_id}});
  log::info("router started", {{"router", config_.router_id},
                               {"concurrency", config_.concurrency},
                               {"queues", config_.queues},
                               {"base_image", config_.base_image}});
  spawn(claim_loop(), "claim");
  spawn(lease_loop(), "lease");
  spawn(housekeeping_loop(), "housekeeping");
  spawn(gc_loop(), "snapshot gc");
  spawn(heartbeat_loop(), "heartbeat");

  while (!stopping_) co_await wait_signal(stopped_, 1s);
  if (engine_events_) engine_events_->stop();
  // A run waiting on its container ends on the next turn, leaving it running;
  // one in the middle of a step (a create, a result) finishes the step first.
  const auto until = Clock::now() + 1s;
  while (!jobs_.empty() && Clock::now() < until) co_await sleep_for(10ms);
  log::info("router stopped", {{"router", config_.router_id},
                               {"jobs_left_running", executor_.stats().left_running},
                               {"jobs_in_flight", jobs_.size()}});
}

void Dispatcher::drain() {
  if (draining_) return;
  draining_ = true;
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
      io_,
      [self = shared_from_this()]() -> awaitable<void> {
        const auto until = Clock::now() + self->config_.drain_deadline;
        while (!self->jobs_.empty() && Clock::now() < until) co_await sleep_for(100ms);
        self->stop_now();
      },
      net::detached);
}

void Dispatcher::stop_now() {
  stopping_ = true;
  stopped_.cancel();
  wake_claimer();
  for (const auto& [id, job] : jobs_) job->signal();
}

// --- engine health -------------------------------------------------------------

// A call got no answer: no new claims until a ping answers again. Jobs in
// flight hand themselves back (JobRun), running containers are waited for.
void Dispatcher::engine_failed(const std::string& error) {
  if (engine_up_) {
    engine_up_ = false;
    log::error("engine unreachable: claiming paused", {{"error", error}});
    emit({{"type", "router.engine_down"}, {"router", config_.router_id}, {"error", error}});
  }
  if (!probing_) {
    probing_ = true;
    spawn(probe_engine(), "engine probe");
  }
}

awaitable<void> Dispatcher::probe_engine() {
  auto self = shared_from_this();
  Duration delay = 200ms;
  while (!stopping_) {
    co_await sleep_for(delay);
    auto op = deps_.runtime->ping();
    auto pinged = co_await attempt(std::move(op));
    if (pinged) break;
    delay = std::min<Duration>(delay * 2, 5s);
  }
  probing_ = false;
  if (stopping_) co_return;
  engine_up_ = true;
  log::info("engine reachable again: claiming resumed", {{"router", config_.router_id}});
  emit({{"type", "router.engine_up"}, {"router", config_.router_id}});
  wake_claimer();
}

// --- signals from outside ----------------------------------------------------

ActiveJobPtr Dispatcher::find(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

void Dispatcher::on_engine_event(const container::Event& event) {
  auto it = by_container_.find(event.id);
  if (it == by_container_.end()) return;
  ActiveJob& job = *it->second;
  if (event.action == "oom") {
    job.oom_seen = true;  // the engine sends it before the container's die
    return;
  }
  if (event.action != "die") return;
  job.exit_code_seen = exit_code_of(event);
  job.run.note_exit();
  job.signal();
}

void Dispatcher::on_cancel(const std::string& job_id, const char* how) {
  if (auto job = find(job_id)) {
    log::info(how, {{"job", job_id}});
    job->run.note_cancel();
    job->signal();
  }
}

void Dispatcher::on_lease_report(const queue::LeaseReport& report) {
  for (const auto& id : report.lost) {
    if (auto job = find(id)) {
      // Its result (or hand-back) went to the queue and acked the entry: the
      // lease ended there, between the renewal's snapshot of jobs_ and now.
      // A lease lost before that shows in the script's own answer.
      if (job->run.lease_returned()) continue;
      log::warn("lease lost: another router owns the job now", {{"job", id}});
      ++leases_lost_;
      job->run.note_lease_lost();
      job->signal();
    }
  }
  // A cancel whose message never arrived (the subscriber was reconnecting).
  for (const auto& id : report.cancelled) on_cancel(id, "cancel seen by the lease renewal");
}

// --- one job ---------------------------------------------------------------

RunSpec Dispatcher::run_spec(const std::string& job_id, int attempt, const queue::JobSpec& spec,
                             bool cancelled) const {
  RunSpec r;
  r.job_id = job_id;
  r.attempt = attempt;
  r.max_attempts = spec.max_attempts;
  std::string refused;
  if (auto image = policy_.resolve(spec.image, &refused)) {
    r.image = *image;
  } else {
    r.refused = refused;
  }
  r.on_base = r.image == config_.base_image;
  if (spec.snapshot && deps_.snapshots) {
    r.snapshot_key = spec.snapshot->key;
    r.reuse = spec.snapshot->reuse;
    r.commit = !r.snapshot_key.empty() && spec.snapshot->commit && r.on_base;
    r.coalesce = !r.snapshot_key.empty() && config_.snapshot_coalesce_wait > Duration::zero();
    r.prewarm = spec.snapshot->prewarm;
  }
  r.timeout_s = effective_timeout_s(spec, config_);
  r.cancelled = cancelled;
  return r;
}

void Dispatcher::admit(queue::ClaimedJob claimed, StartMode mode, std::string container_id,
                       PrecreatedPtr precreated) {
  const std::string id = claimed.record.id;
  if (jobs_.count(id) != 0) {
    // The same job delivered twice (claim plus reclaim, or a recovery step plus a
    // claim): one container per job on this router, never a second.
    log::warn("job already active on this router; duplicate delivery ignored", {{"job", id}});
    discard(std::move(precreated), "the job is already active here");
    return;
  }
  RunSpec spec = run_spec(id, claimed.lease.attempt, claimed.record.spec,
                          claimed.record.state == JobState::cancelled);
  auto job = std::make_shared<ActiveJob>(io_, std::move(claimed), std::move(spec));
  job->container_id = std::move(container_id);
  job->precreated = std::move(precreated);
  if (mode != StartMode::fresh) {
    const auto& rec = job->claimed.record;
    // What the run's lookup saw (kept by mark_running): its commit replaces
    // that generation, not "no entry", and adds to its build time.
    job->snapshot_image_id = rec.snapshot_seen;
    job->snapshot_build_ms = rec.snapshot_build_ms;
    if (rec.started_at) {
      const auto ends_ms = *rec.started_at + job->run.spec().timeout_s * 1000;
      job->deadline =
          Clock::now() + milliseconds(std::max<std::int64_t>(0, ends_ms - unix_ms_now()));
    }
    by_container_[job->container_id] = job;
  }
  jobs_[id] = job;
  capacity_.force_slot(id);
  net::co_spawn(io_, executor_.execute(job, mode),
                [self = shared_from_this(), job](std::exception_ptr e) {
                  if (e) log::error("job run failed", {{"job", job->id()}, {"error", describe(e)}});
                  self->release(job);
                });
}

void Dispatcher::release(const ActiveJobPtr& job) {
  // A run that ended before its create (cancelled, refused) leaves it unused.
  discard(std::exchange(job->precreated, nullptr), "the run ended without creating");
  capacity_.release_slot(job->id());
  auto it = jobs_.find(job->id());
  if (it != jobs_.end() && it->second == job) jobs_.erase(it);
  auto c = by_container_.find(job->container_id);
  if (c != by_container_.end() && c->second == job) by_container_.erase(c);
  wake_claimer();
}

}  // namespace warmstart::router
