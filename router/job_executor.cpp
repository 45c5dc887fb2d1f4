#include "router/job_executor.hpp"

#include "common/log.hpp"
#include "common/time.hpp"
#include "router/launch.hpp"
#include "router/outcome.hpp"

#include <utility>

namespace warmstart::router {

using Kind = Action::Kind;
using namespace std::chrono;

namespace {

// Handed-back jobs become due again after this: long enough not to spin on an
// engine that is still down, short enough that another router picks them up.
constexpr Duration hand_back_delay = 1s;
// A job waiting for another job's cold start of its snapshot key looks again
// after this at the latest (the builder's end wakes it sooner): a builder
// whose router died shows as its marker running out.
constexpr Duration build_poll = 5s;

double seconds_since(Clock::time_point t0) {
  return duration<double>(Clock::now() - t0).count();
}

}  // namespace

std::int64_t effective_timeout_s(const queue::JobSpec& spec, const RouterConfig& config) {
  if (spec.timeout_s > 0) return spec.timeout_s;
  // A job that names no timeout gets the router's default, never more than the
  // operator's [limits] timeout ceiling (validation only refuses explicit values).
  std::int64_t t =
      std::max<std::int64_t>(1, duration_cast<seconds>(config.default_timeout).count());
  if (config.job_limits.timeout_s > 0) t = std::min(t, config.job_limits.timeout_s);
  return t;
}

awaitable<void> JobExecutor::execute(ActiveJobPtr job, StartMode mode) {
  Action action = job->run.begin(mode);
  while (action.kind != Kind::done) {
    if (action.delay > Duration::zero()) co_await sleep_for(action.delay);
    std::optional<Input> in = co_await perform(job, action);
    if (!in) {  // stopping: the next start re-attaches
      ++stats_.left_running;
      co_return;
    }
    if (in->fault == Fault::engine_down && hooks_.engine_down) hooks_.engine_down(in->error);
    action = job->run.resume(*in);
  }
  log_end(*job);
}

awaitable<std::optional<Input>> JobExecutor::perform(const ActiveJobPtr& job,
                                                     const Action& action) {
  switch (action.kind) {
    case Kind::choose_image:
      co_return co_await choose_image(*job);
    case Kind::create:
      co_return co_await create(job, action);
    case Kind::invalidate:
      co_return co_await invalidate(*job, action);
    case Kind::adopt:
      co_return co_await adopt(job);
    case Kind::start:
      co_return co_await start(*job);
    case Kind::mark_running:
      co_return co_await mark_running(*job);
    case Kind::wait:
      co_return co_await wait(*job);
    case Kind::stop:
      co_return co_await stop(*job);
    case Kind::collect:
      co_return co_await collect(*job);
    case Kind::free_slot:
      if (hooks_.slot_freed) hooks_.slot_freed(job);
      co_return Input::ok();
    case Kind::commit:
      co_return co_await commit(*job);
    case Kind::record:
      co_return co_await record(*job, action);
    case Kind::hand_back:
      co_return co_await hand_back(*job, action);
    case Kind::wait_build:
      co_return co_await wait_build(*job, action);
    case Kind::end_build:
      co_return co_await end_build(*job, action);
    case Kind::remove:
      co_return co_await remove(*job);
    case Kind::done:
      break;
  }
  co_return Input::ok();
}

awaitable<Input> JobExecutor::choose_image(ActiveJob& job) {
  const RunSpec& spec = job.run.spec();
  auto op = ports_.snapshots->choose_image(spec.snapshot_key, config_.base_image, spec.reuse);
  auto choice = co_await attempt(std::move(op));
  if (!choice) co_return choice.input();
  job.snapshot_image_id = choice.value->observed_image_id;
  Input in;
  if (choice.value->outcome == snapshots::LookupOutcome::hit) {
    in.snapshot_image = choice.value->image;
    if (choice.value->entry) {
      job.snapshot_image_id = choice.value->entry->image_id;
      job.snapshot_build_ms = choice.value->entry->build_ms;
    }
    co_return in;
  }
  if (spec.coalesce && (spec.commit || spec.reuse)) {
    // No snapshot to start from: who makes it? A job that commits takes the
    // build when nobody has it; one that only reuses asks.
    auto ask = ports_.queue->begin_build(spec.snapshot_key, spec.job_id, spec.commit);
    auto builder = co_await attempt(std::move(ask));
    if (!builder) co_return builder.input();
    in.builder = *builder.value;
  }
  co_return in;
}

container::ContainerSpec JobExecutor::container_spec(const RunSpec& run, const queue::JobSpec& spec,
                                                     const std::string& image,
                                                     bool from_snapshot) const {
  LaunchRequest req;
  req.router_id = config_.router_id;
  req.job_id = run.job_id;
  req.attempt = run.attempt;
  req.image = image;
  req.from_snapshot = from_snapshot;
  req.snapshot_key = run.snapshot_key;
  req.commit_on_success = run.commit;
  req.cmd = spec.cmd;
  req.env = spec.env;
  req.resources.memory_bytes = spec.resources.memory_mb * 1024 * 1024;
  req.resources.nano_cpus = static_cast<std::int64_t>(spec.resources.cpus * 1e9);
  req.resources.pids_limit = spec.resources.pids;
  req.network_mode = config_.network_mode;
  req.caps = config_.container_caps;
  return make_container_spec(req);
}

PrecreatedPtr JobExecutor::precreate(const net::any_io_executor& ex, const RunSpec& run,
                                     const queue::JobSpec& spec) const {
  // JobRun::begin(fresh) goes straight to create_on(run.image) only then.
  if (!run.refused.empty() || !run.snapshot_key.empty() || run.cancelled) return nullptr;
  return std::make_shared<Precreated>(ex, run.attempt, container_spec(run, spec, run.image, false));
}

awaitable<void> JobExecutor::send_create(PrecreatedPtr p) {
  ++stats_.precreated;
  auto pass = co_await engine_start_pass();
  std::string id;
  std::exception_ptr error;
  try {
    const auto t0 = Clock::now();
    auto op = ports_.runtime->create_container(p->spec());
    id = co_await std::move(op);
    if (observers_.create_latency) observers_.create_latency(seconds_since(t0));
  } catch (...) {
    error = std::current_exception();
  }
  p->answer(std::move(id), std::move(error));
}

awaitable<void> JobExecutor::discard(PrecreatedPtr unused, std::string why) {
  ++stats_.precreated_unused;
  std::string id;
  try {
    auto answer = unused->result();
    id = co_await std::move(answer);
  } catch (...) {
    co_return;  // nothing was created (or not by us: a 409)
  }
  // Not forced: it was never started here, and a running one is not ours to stop.
  auto op = ports_.runtime->remove_container(id, false);
  auto removed = co_await attempt(std::move(op));
  log::info("container created during a claim removed unused", {{"container", id},
                                                                {"name", unused->spec().name},
                                                                {"reason", why},
                                                                {"error", removed.error}});
}

awaitable<Input> JobExecutor::create(const ActiveJobPtr& job, const Action& action) {
  const RunSpec& run = job->run.spec();
  container::ContainerSpec spec =
      container_spec(run, job->spec(), action.image, action.from_snapshot);
  PrecreatedPtr pre = std::exchange(job->precreated, nullptr);
  if (pre && (pre->attempt() != run.attempt || !(pre->spec() == spec))) {
    // Removed first: the same attempt has the same name.
    co_await discard(std::move(pre), "the run asked for another container");
    pre = nullptr;
  }
  // A precreated container went through the gate when it was sent.
  AsyncGate::Pass pass;
  if (!pre) pass = co_await engine_start_pass();
  const auto t0 = Clock::now();
  // Awaitables are built in their own statement: g++ 12 may destroy
  // temporaries of a co_await expression twice (docs/queue.md).
  auto op = pre ? pre->result() : ports_.runtime->create_container(std::move(spec));
  auto created = co_await attempt(std::move(op));
  pass.reset();
  if (!created) co_return created.input();
  // A precreated one's latency was observed when it answered (send_create).
  if (observers_.create_latency && !pre) observers_.create_latency(seconds_since(t0));
  job->container_id = *created.value;
  if (hooks_.container_known) hooks_.container_known(job);
  co_return Input::ok();
}

awaitable<Input> JobExecutor::invalidate(ActiveJob& job, const Action& action) {
  const std::string& key = job.run.spec().snapshot_key;
  log::warn("snapshot image vanished; falling back to the base image",
            {{"job", job.id()}, {"snapshot_key", key}, {"image", action.image}});
  ++stats_.snapshot_fallbacks;
  hooks_.emit({{"type", "job.snapshot_fallback"},
               {"job", job.id()},
               {"key", key},
               {"image", action.image}});
  auto op = ports_.snapshots->invalidate(key, action.reason, job.snapshot_image_id);
  auto dropped = co_await attempt(std::move(op));
  if (dropped) co_await hint_affinity(key, false);
  // The commit after this run replaces whatever is registered now.
  job.snapshot_image_id.clear();
  job.snapshot_build_ms = 0;
  co_return dropped.input();
}

awaitable<Input> JobExecutor::adopt(const ActiveJobPtr& job) {
  const RunSpec& run = job->run.spec();
  auto op = ports_.runtime->inspect_container(container_name(run.job_id, run.attempt));
  auto info = co_await attempt(std::move(op));
  if (!info) co_return info.input();
  job->container_id = info.value->id;
  if (hooks_.container_known) hooks_.container_known(job);
  log::info("adopted the existing container of this attempt",
            {{"job", job->id()}, {"container", job->container_id}});
  Input in;
  in.container_state = info.value->state.status;
  co_return in;
}

awaitable<AsyncGate::Pass> JobExecutor::engine_start_pass() {
  if (!engine_starts_) {
    engine_starts_.emplace(co_await net::this_coro::executor,
                           static_cast<std::size_t>(config_.start_concurrency));
  }
  co_return co_await engine_starts_->enter();
}

awaitable<Input> JobExecutor::start(ActiveJob& job) {
  auto pass = co_await engine_start_pass();
  const auto t0 = Clock::now();
  auto op = ports_.runtime->start_container(job.container_id);
  auto started = co_await attempt(std::move(op));
  if (started && observers_.start_latency) observers_.start_latency(seconds_since(t0));
  co_return started.input();
}

awaitable<Input> JobExecutor::mark_running(ActiveJob& job) {
  queue::RunInfo info{job.run.image(),  job.run.from_snapshot(), job.run.snapshot_fallback(),
                      job.container_id, config_.router_id,       host_id()};
  if (!job.run.spec().snapshot_key.empty()) {
    // Kept with the run: a router that re-attaches it after a restart commits
    // against what this lookup saw (Dispatcher::admit).
    info.snapshot_seen = job.snapshot_image_id;
    info.snapshot_build_ms = job.snapshot_build_ms;
  }
  auto op = ports_.queue->mark_running(job.claimed.lease, info);
  auto marked = co_await attempt(std::move(op));
  if (!marked) co_return marked.input();
  const auto& rec = job.claimed.record;
  job.claimed.record.started_at = unix_ms_now();
  job.claimed.record.host = info.host_id;
  if (!rec.affinity_host.empty()) {
    ++(rec.affinity_host == info.host_id ? stats_.affinity_hits : stats_.affinity_misses);
  }
  job.deadline = Clock::now() + seconds(job.run.spec().timeout_s);
  ++stats_.dispatched;
  if (job.run.from_snapshot()) {
    ++stats_.warm_starts;
    stats_.time_saved_ms +=
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, job.snapshot_build_ms));
  } else {
    ++(job.run.snapshot_fallback() ? stats_.fallback_starts : stats_.cold_starts);
  }
  if (observers_.dispatch_latency) {
    observers_.dispatch_latency(
        static_cast<double>(std::max<std::int64_t>(0, unix_ms_now() - rec.created_at)) / 1000.0);
  }
  log::info("job started", {{"job", rec.id},
                            {"container", job.container_id},
                            {"image", job.run.image()},
                            {"from_snapshot", job.run.from_snapshot()},
                            {"snapshot_fallback", job.run.snapshot_fallback()},
                            {"attempt", job.run.spec().attempt}});
  Input in;
  in.cancelled = *marked.value == queue::JobState::cancelled;
  co_return in;
}

awaitable<std::optional<Input>> JobExecutor::wait(ActiveJob& job) {
  if (!job.signalled) {
    if (Clock::now() < job.deadline) {
      job.wake.expires_at(job.deadline);
      co_await job.wake.async_wait(net::as_tuple(use_awaitable));
    }
  }
  job.signalled = false;
  if (hooks_.stopping && hooks_.stopping()) co_return std::nullopt;
  if (Clock::now() >= job.deadline) job.run.note_timeout();
  co_return Input::ok();
}

awaitable<Input> JobExecutor::stop(ActiveJob& job) {
  const auto grace = duration_cast<seconds>(config_.stop_grace);
  auto op = with_deadline(ports_.runtime->stop_container(job.container_id, grace),
                          config_.stop_grace + config_.docker_timeout, "container stop");
  auto stopped = co_await attempt(std::move(op));
  co_return stopped.input();
}

awaitable<Input> JobExecutor::collect(ActiveJob& job) {
  Input in;
  if (job.exit_code_seen) {
    // The die event carried the exit code (and an oom event came before it).
    in.exit_code = job.exit_code_seen;
    in.oom_killed = job.oom_seen;
  } else {
    // The exit was seen another way (the container list, a stop, a timeout).
    auto inspect = ports_.runtime->inspect_container(job.container_id);
    auto info = co_await attempt(std::move(inspect));
    if (!info) co_return info.input();
    in.exit_code = info.value->state.exit_code;
    in.oom_killed = info.value->state.oom_killed;
    in.still_running = info.value->state.running;
  }
  auto read_logs = ports_.runtime->container_logs(job.container_id, config_.log_tail_bytes);
  auto logs = co_await attempt(std::move(read_logs));
  if (logs) {
    job.log_tail = std::move(logs.value->combined);
  } else {
    log::warn("could not read container logs", {{"job", job.id()}, {"error", logs.error}});
  }
  co_return in;
}

awaitable<Input> JobExecutor::commit(ActiveJob& job) {
  snapshots::CommitRequest req;
  req.container_id = job.container_id;
  req.job_id = job.id();
  req.key = job.run.spec().snapshot_key;
  req.base_image = config_.base_image;
  req.expected_image_id = job.snapshot_image_id;
  // This run's time plus what the snapshot it started from already held
  // (snapshot_build_ms is 0 unless the run started from one; a re-attached
  // run has it from its record).
  const std::int64_t started = job.claimed.record.started_at.value_or(0);
  req.build_ms = (started > 0 ? std::max<std::int64_t>(0, unix_ms_now() - started) : 0) +
                 job.snapshot_build_ms;
  auto op = ports_.snapshots->commit(req);
  auto done = co_await attempt(std::move(op));
  if (!done) co_return done.input();
  const auto& result = *done.value;
  log::info("snapshot commit", {{"job", job.id()},
                                {"key", req.key},
                                {"status", snapshots::to_string(result.status)},
                                {"image", result.image},
                                {"took_ms", result.took.count()},
                                {"error", result.error}});
  if (result.status == snapshots::CommitResult::Status::failed) {
    co_return Input::failed(Fault::other, "snapshot commit failed: " + result.error);
  }
  if (result.status == snapshots::CommitResult::Status::committed) {
    co_await hint_affinity(req.key, true);
  }
  co_return Input::ok();
}

awaitable<void> JobExecutor::hint_affinity(const std::string& key, bool holds) {
  const std::string host = host_id();
  if (key.empty() || host.empty() || config_.affinity_wait.count() == 0) co_return;
  // Built outside the try: g++ 12 destroys temporaries of a throwing co_await twice.
  auto op = holds ? ports_.queue->set_affinity(key, host) : ports_.queue->drop_affinity(key, host);
  try {
    co_await std::move(op);
  } catch (const std::exception& e) {
    log::warn("snapshot affinity hint not recorded",
              {{"snapshot_key", key}, {"holds", holds}, {"error", e.what()}});
  }
}

awaitable<Input> JobExecutor::record(ActiveJob& job, const Action& action) {
  const auto& lease = job.claimed.lease;
  if (action.retry) {
    if (!job.log_tail.empty()) {
      auto store = ports_.queue->set_log_tail(job.id(), job.log_tail);
      auto stored = co_await attempt(std::move(store));
      if (!stored) co_return stored.input();
    }
    auto op = ports_.queue->fail_attempt(lease, action.result.error, true);
    auto failed = co_await attempt(std::move(op));
    if (!failed) co_return failed.input();
  } else {
    // The log tail rides with the result: one round trip.
    queue::JobResult result = action.result;
    result.log_tail = job.log_tail;
    auto op = ports_.queue->finish(lease, std::move(result));
    auto finished = co_await attempt(std::move(op));
    if (!finished) co_return finished.input();
  }
  ++stats_.finished;
  co_return Input::ok();
}

awaitable<Input> JobExecutor::hand_back(ActiveJob& job, const Action& action) {
  auto handed = co_await give_back(job.claimed.lease, action.reason);
  co_return handed.input();
}

awaitable<Outcome<void>> JobExecutor::give_back(queue::LeaseHandle lease, std::string reason) {
  log::warn("job handed back unspent", {{"job", lease.job_id}, {"reason", reason}});
  auto op = ports_.queue->hand_back(lease, reason, hand_back_delay);
  auto handed = co_await attempt(std::move(op));
  if (handed) ++stats_.handed_back;
  co_return handed;
}

awaitable<Input> JobExecutor::wait_build(ActiveJob& job, const Action& action) {
  const RunSpec& spec = job.run.spec();
  auto op = ports_.queue->wait_for_build(job.claimed.lease, spec.snapshot_key, action.builder,
                                         build_poll, config_.snapshot_coalesce_wait);
  auto waited = co_await attempt(std::move(op));
  if (!waited) co_return waited.input();
  Input in;
  in.build_wait = *waited.value;
  if (in.build_wait == queue::BuildWait::waiting) {
    ++stats_.coalesced;
    log::info(
        "waiting for the snapshot another job builds",
        {{"job", job.id()}, {"snapshot_key", spec.snapshot_key}, {"builder", action.builder}});
  }
  co_return in;
}

awaitable<Input> JobExecutor::end_build(ActiveJob& job, const Action& action) {
  // Waiters go to this host when it holds the new snapshot.
  std::string host;
  if (action.snapshot_made) host = host_id();
  auto op = ports_.queue->end_build(job.run.spec().snapshot_key, job.id(), host);
  auto ended = co_await attempt(std::move(op));
  if (ended && *ended.value > 0) {
    log::info("snapshot build ended; waiting jobs woken",
              {{"job", job.id()},
               {"snapshot_key", job.run.spec().snapshot_key},
               {"woken", *ended.value},
               {"snapshot_made", action.snapshot_made}});
  }
  co_return ended.input();
}

awaitable<Input> JobExecutor::remove(ActiveJob& job) {
  auto op = ports_.runtime->remove_container(job.container_id, true);
  auto removed = co_await attempt(std::move(op));
  if (!removed && removed.fault != Fault::not_found) {
    // The periodic orphan sweep removes it later.
    log::warn("container remove failed",
              {{"container", job.container_id}, {"error", removed.error}});
    co_return removed.input();
  }
  if (ports_.snapshots && !job.snapshot_image_id.empty()) {
    // This container may have been the last one on a superseded or
    // invalidated snapshot image: it goes now, not at the next gc.
    auto release = ports_.snapshots->release_unused();
    auto released = co_await attempt(std::move(release));
    if (!released) log::warn("snapshot image release failed", {{"error", released.error}});
  }
  co_return Input::ok();
}

void JobExecutor::log_end(const ActiveJob& job) const {
  const auto& result = job.run.result();
  nlohmann::json fields = {{"job", job.id()},
                           {"container", job.container_id},
                           {"attempt", job.run.spec().attempt},
                           {"run", job.run.trace()}};
  if (result) {
    fields["state"] = std::string(queue::to_string(result->state));
    fields["exit_code"] = result->exit_code ? nlohmann::json(*result->exit_code) : nullptr;
    fields["error"] = result->error;
    if (!result->snapshot_error.empty()) fields["snapshot_error"] = result->snapshot_error;
  }
  log::info("job run ended", fields);
}

}  // namespace warmstart::router
