#include "router/job_run.hpp"

#include <algorithm>

namespace warmstart::router {

using Kind = Action::Kind;
using queue::JobState;

namespace {
// A container being removed is waited for this long between creates, at most
// this many times (a minute; an engine stuck in a removal fails the attempt).
constexpr Duration kRemovalWait = 2s;
constexpr int kMaxRemovalWaits = 30;
}  // namespace

std::string_view to_string(Fault fault) {
  switch (fault) {
    case Fault::none:
      return "ok";
    case Fault::image_not_found:
      return "404";
    case Fault::not_found:
      return "gone";
    case Fault::conflict:
      return "409";
    case Fault::engine_down:
      return "down";
    case Fault::lease_lost:
      return "lost";
    case Fault::redis:
      return "redis";
    case Fault::other:
      return "err";
  }
  return "?";
}

std::string_view to_string(Action::Kind kind) {
  switch (kind) {
    case Kind::choose_image:
      return "choose";
    case Kind::create:
      return "create";
    case Kind::invalidate:
      return "invalidate";
    case Kind::adopt:
      return "adopt";
    case Kind::start:
      return "start";
    case Kind::mark_running:
      return "mark";
    case Kind::wait:
      return "wait";
    case Kind::stop:
      return "stop";
    case Kind::collect:
      return "collect";
    case Kind::free_slot:
      return "free-slot";
    case Kind::commit:
      return "commit";
    case Kind::record:
      return "record";
    case Kind::hand_back:
      return "hand-back";
    case Kind::wait_build:
      return "wait-build";
    case Kind::end_build:
      return "end-build";
    case Kind::remove:
      return "remove";
    case Kind::done:
      return "done";
  }
  return "?";
}

Duration step_backoff(int retries) {
  Duration d = 100ms;
  for (int i = 0; i < retries && d < 5s; ++i) d *= 2;
  return std::min<Duration>(d, 5s);
}

// --- facts -------------------------------------------------------------------

void JobRun::note_exit() {
  exited_ = true;
}
void JobRun::note_cancel() {
  cancel_ = true;
}
void JobRun::note_timeout() {
  timed_out_ = true;
}
void JobRun::note_lease_lost() {
  lease_lost_ = true;
}

// --- helpers -----------------------------------------------------------------

Action JobRun::next(Action action) {
  if (action.kind != in_flight_) retries_ = 0;
  in_flight_ = action.kind;
  // Returned once record, hand_back or wait_build is sent, and only while the
  // run winds up after it: a build wait that answered over or builder_gone
  // goes on working under its lease.
  const bool returns = action.kind == Kind::record || action.kind == Kind::hand_back ||
                       action.kind == Kind::wait_build;
  const bool winds_up =
      action.kind == Kind::end_build || action.kind == Kind::remove || action.kind == Kind::done;
  lease_returned_ = returns || (lease_returned_ && winds_up);
  current_ = action;
  if (!trace_.empty()) trace_ += ' ';
  trace_ += to_string(action.kind);
  if (action.kind == Kind::create) {
    if (action.from_snapshot) {
      trace_ += "(snapshot)";
    } else {
      trace_ += spec_.on_base ? "(base)" : "(image)";
    }
  } else if (action.kind == Kind::record) {
    trace_ += "(" + std::string(queue::to_string(action.result.state));
    if (action.retry) trace_ += ",retry";
    trace_ += ")";
  }
  return action;
}

// The same step again after a backoff: the failure was the environment's, and
// the work already done (a running container) must not be thrown away.
// Only the first retry of a step shows in the trace ("record(succeeded)->redis
// record(succeeded)"): an outage of minutes must not grow it without bound.
Action JobRun::retry_same(const Input& in) {
  Action again = current_;
  again.delay = step_backoff(retries_);
  const int retries = retries_ + 1;
  if (retries == 1) {
    trace_ += "->" + std::string(to_string(in.fault));
    next(again);
  }
  retries_ = retries;
  current_ = again;
  return again;
}

Action JobRun::create_on(std::string image, bool from_snapshot) {
  Action a{Kind::create};
  a.image = std::move(image);
  a.from_snapshot = from_snapshot;
  image_ = a.image;
  from_snapshot_ = from_snapshot;
  return next(std::move(a));
}

// The attempt failed before or around the container's run.
Action JobRun::fail(std::string error, bool retryable) {
  result_ = queue::JobResult{JobState::failed, std::nullopt, std::move(error)};
  retryable_ = retryable;
  return record_result();
}

Action JobRun::record_result() {
  Action a{Kind::record};
  a.result = *result_;
  a.retry = a.result.state == JobState::failed && retryable_ && spec_.attempt < spec_.max_attempts;
  return next(std::move(a));
}

Action JobRun::after_recorded() {
  return wind_up(false);
}

// The result is recorded or the job handed back: a builder ends its build
// first (its waiters wake: to its snapshot, or to take the build over), then
// the container goes unless the next claim of this attempt adopts it.
Action JobRun::wind_up(bool keep_container) {
  if (builder_ && !build_ended_) {
    build_ended_ = true;
    keep_container_ = keep_container;
    Action a{Kind::end_build};
    a.snapshot_made = committed_;
    return next(std::move(a));
  }
  if (container_ && !keep_container) return next(Action{Kind::remove});
  return next(Action{Kind::done});
}

// Another router owns the job: stop and remove what is ours, record nothing.
Action JobRun::abandon() {
  if (container_ && started_ && !exited_ && in_flight_ != Kind::stop) {
    return next(Action{Kind::stop});
  }
  if (container_) return next(Action{Kind::remove});
  return next(Action{Kind::done});
}

// The container runs (or ran): wait for it, or stop it when told to.
Action JobRun::after_container_ran() {
  if (lease_lost_) return abandon();
  if (exited_) return next(Action{Kind::collect});
  if (cancel_ || timed_out_) return next(Action{Kind::stop});
  return next(Action{Kind::wait});
}

// --- begin -------------------------------------------------------------------

Action JobRun::begin(StartMode mode) {
  cancel_ = cancel_ || spec_.cancelled;
  switch (mode) {
    case StartMode::fresh:
      trace_ = "claim";
      if (!spec_.refused.empty()) return fail(spec_.refused, false);
      if (spec_.prewarm && !spec_.commit) {
        return fail("a prewarm commits a snapshot, and snapshots are made on the base image only",
                    false);
      }
      if (cancel_) {
        result_ = queue::JobResult{JobState::cancelled, std::nullopt, "cancelled before start"};
        return record_result();
      }
      if (spec_.on_base && !spec_.snapshot_key.empty()) return next(Action{Kind::choose_image});
      return create_on(spec_.image, false);
    case StartMode::reattach:
      trace_ = "reattach";
      container_ = started_ = true;
      return after_container_ran();
    case StartMode::finalize:
      trace_ = "finalize";
      container_ = started_ = exited_ = true;
      return after_container_ran();
  }
  return next(Action{Kind::done});
}

// --- resume ------------------------------------------------------------------

Action JobRun::resume(const Input& in) {
  switch (in_flight_) {
    case Kind::choose_image:
      return after_choose(in);
    case Kind::create:
      return after_create(in);
    case Kind::invalidate:
      // Whether or not the entry could be dropped, the job runs on the base image.
      if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
      return create_on(spec_.image, false);
    case Kind::adopt:
      return after_adopt(in);
    case Kind::start:
      return after_start(in);
    case Kind::mark_running:
      return after_mark(in);
    case Kind::wait:
      if (exited_) trace_ += " exit";
      if (lease_lost_) trace_ += " lost";
      if (cancel_ && !exited_) trace_ += " cancel";
      if (timed_out_ && !exited_ && !cancel_) trace_ += " timeout";
      return after_container_ran();
    case Kind::stop:
      return after_stop(in);
    case Kind::collect:
      return after_collect(in);
    case Kind::free_slot:
      return next(Action{Kind::commit});
    case Kind::commit:
      if (in.fault == Fault::none) {
        committed_ = true;
        return record_result();
      }
      trace_ += "->" + std::string(to_string(in.fault));
      // A prewarm's product was the snapshot: it fails. Any other job fails
      // loud but keeps its own result: its work succeeded.
      if (spec_.prewarm) return fail(in.error, true);
      result_->snapshot_error = in.error;
      return record_result();
    case Kind::record:
      return after_record(in);
    case Kind::hand_back:
      return after_hand_back(in);
    case Kind::wait_build:
      return after_wait_build(in);
    case Kind::end_build:
      // Best effort: a marker left behind runs out with the lease.
      if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
      return wind_up(keep_container_);
    case Kind::remove:
      if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
      return next(Action{Kind::done});
    case Kind::done:
      return current_;
  }
  return next(Action{Kind::done});
}

Action JobRun::after_choose(const Input& in) {
  switch (in.fault) {
    case Fault::none:
      if (!in.snapshot_image.empty()) {
        trace_ += "->hit";
        return create_on(in.snapshot_image, true);
      }
      builder_ = !in.builder.empty() && in.builder == spec_.job_id;
      trace_ += builder_ ? "->build" : "->miss";
      if (!builder_ && !in.builder.empty() && spec_.reuse && spec_.coalesce) {
        // Another job is making this key's first snapshot: wait for it
        // rather than repeat its cold start.
        Action a{Kind::wait_build};
        a.builder = in.builder;
        a.reason = "waiting for snapshot " + spec_.snapshot_key + " (job " + in.builder + ")";
        return next(std::move(a));
      }
      return create_on(spec_.image, false);
    case Fault::engine_down: {
      trace_ += "->down";
      Action a{Kind::hand_back};
      a.reason = "engine unreachable: " + in.error;
      return next(std::move(a));
    }
    case Fault::image_not_found:
      trace_ += "->404";
      return fail("image not found: " + spec_.image, true);
    case Fault::redis:
      // The registry or the build marker unreachable: nothing runs yet, and
      // a Redis blip is not the job's failure.
      return retry_same(in);
    default:
      trace_ += "->" + std::string(to_string(in.fault));
      return fail("snapshot lookup failed: " + in.error, true);
  }
}

Action JobRun::after_create(const Input& in) {
  if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
  switch (in.fault) {
    case Fault::none:
      container_ = true;
      if (lease_lost_) return abandon();
      return next(Action{Kind::start});
    case Fault::image_not_found:
      if (from_snapshot_ && !fallback_) {
        // The snapshot image vanished (pruned, deleted by hand): drop the
        // entry and run on the base image. Commit stays on, so a fresh
        // snapshot replaces the stale one.
        fallback_ = true;
        Action a{Kind::invalidate};
        a.image = image_;
        a.reason = "image_missing";
        return next(std::move(a));
      }
      return fail("image not found: " + image_, true);
    case Fault::conflict:
      // The container of this very attempt exists (created before a crash or
      // an outage): take it over instead of running the job twice.
      return next(Action{Kind::adopt});
    case Fault::engine_down: {
      Action a{Kind::hand_back};
      a.reason = "engine unreachable: " + in.error;
      return next(std::move(a));
    }
    default:
      return fail("container create failed: " + in.error, true);
  }
}

Action JobRun::after_adopt(const Input& in) {
  if (in.fault == Fault::engine_down) {
    trace_ += "->down";
    Action a{Kind::hand_back};
    a.reason = "engine unreachable: " + in.error;
    return next(std::move(a));
  }
  if (in.fault != Fault::none) {
    trace_ += "->" + std::string(to_string(in.fault));
    return fail("container create conflict: " + in.error, true);
  }
  trace_ += "->" + in.container_state;
  if (in.container_state == "removing") {
    // On its way out (an orphan sweep after this job was handed back, or a
    // user's rm): adopting it ends in "container vanished". Create anew once
    // it is gone; until then create answers 409 and we come back here.
    if (++removal_waits_ > kMaxRemovalWaits) {
      return fail("the container of this attempt stays in removal", true);
    }
    Action a{Kind::create};
    a.image = image_;
    a.from_snapshot = from_snapshot_;
    a.delay = kRemovalWait;
    return next(std::move(a));
  }
  container_ = true;
  if (lease_lost_) return abandon();
  if (in.container_state == "created") return next(Action{Kind::start});
  started_ = true;
  if (in.container_state == "exited" || in.container_state == "dead") exited_ = true;
  return next(Action{Kind::mark_running});
}

Action JobRun::after_start(const Input& in) {
  if (in.fault == Fault::none) {
    started_ = true;
    if (lease_lost_) return abandon();
    return next(Action{Kind::mark_running});
  }
  trace_ += "->" + std::string(to_string(in.fault));
  if (in.fault == Fault::engine_down) {
    // The created container stays: the next claim of this attempt adopts it (409).
    Action a{Kind::hand_back};
    a.reason = "engine unreachable: " + in.error;
    return next(std::move(a));
  }
  return fail("container start failed: " + in.error, true);
}

Action JobRun::after_mark(const Input& in) {
  switch (in.fault) {
    case Fault::none:
      if (in.cancelled) cancel_ = true;
      return after_container_ran();
    case Fault::redis:
      // The container runs: never abandon it for a Redis blip.
      return retry_same(in);
    default:
      // Lost (or the record moved on): the job is not ours any more.
      trace_ += "->" + std::string(to_string(in.fault));
      lease_lost_ = true;
      return abandon();
  }
}

Action JobRun::after_stop(const Input& in) {
  if (in.fault == Fault::engine_down) return retry_same(in);
  if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
  exited_ = true;
  if (lease_lost_) return next(Action{Kind::remove});
  return next(Action{Kind::collect});
}

Action JobRun::after_collect(const Input& in) {
  if (in.fault == Fault::engine_down) return retry_same(in);
  if (in.fault == Fault::none && in.still_running) {
    // Not exited after all: keep waiting, or stop it again (a stop that did
    // not take), after a pause.
    trace_ += "->running";
    exited_ = false;
    Action again = after_container_ran();
    if (again.kind == Kind::stop) again.delay = 1s;
    current_ = again;
    return again;
  }
  if (lease_lost_) {
    trace_ += " lost";
    return abandon();
  }
  return conclude(in);
}

void JobRun::note_result(const Input& in) {
  using queue::JobResult;
  retryable_ = false;
  if (cancel_) {
    result_ = JobResult{JobState::cancelled, in.exit_code, "cancelled"};
  } else if (timed_out_) {
    result_ = JobResult{JobState::timed_out, in.exit_code,
                        "timed out after " + std::to_string(spec_.timeout_s) + " s"};
  } else if (in.fault != Fault::none) {
    result_ = JobResult{JobState::failed, std::nullopt, "container vanished: " + in.error};
    retryable_ = true;
  } else if (in.exit_code == 0 && !in.oom_killed) {
    result_ = JobResult{JobState::succeeded, 0, ""};
  } else {
    const int code = in.exit_code.value_or(-1);
    std::string error = "exit code " + std::to_string(code);
    if (in.oom_killed) error += " (OOM killed)";
    result_ = JobResult{JobState::failed, code, error};
    retryable_ = true;
  }
}

// The container stopped: decide the result, commit when due, record.
Action JobRun::conclude(const Input& in) {
  note_result(in);
  if (in.fault != Fault::none) {
    trace_ += "->" + std::string(to_string(in.fault));
  } else {
    trace_ += "(" + (in.exit_code ? std::to_string(*in.exit_code) : std::string("?"));
    if (in.oom_killed) trace_ += ",oom";
    trace_ += ")";
  }
  if (result_->state == JobState::succeeded && spec_.commit) {
    // The slot is free once the container stopped: the next job may start
    // while the engine writes the snapshot. The claim (and the concurrency
    // key) are held until the result is recorded after the commit, so a job
    // of the same key that waits for this one starts from the new snapshot.
    return next(Action{Kind::free_slot});
  }
  return record_result();
}

Action JobRun::after_record(const Input& in) {
  switch (in.fault) {
    case Fault::none:
      return after_recorded();
    case Fault::redis:
      // The container is kept until the result is recorded: a Redis outage
      // here never turns a finished job into a re-run.
      return retry_same(in);
    default:
      trace_ += "->" + std::string(to_string(in.fault));
      lease_lost_ = lease_lost_ || in.fault == Fault::lease_lost;
      if (container_) return next(Action{Kind::remove});
      return next(Action{Kind::done});
  }
}

Action JobRun::after_hand_back(const Input& in) {
  if (in.fault == Fault::redis) return retry_same(in);
  if (in.fault != Fault::none) trace_ += "->" + std::string(to_string(in.fault));
  return wind_up(true);
}

Action JobRun::after_wait_build(const Input& in) {
  if (in.fault == Fault::redis) return retry_same(in);
  if (in.fault != Fault::none) {
    trace_ += "->" + std::string(to_string(in.fault));
    return next(Action{Kind::done});
  }
  switch (in.build_wait) {
    case queue::BuildWait::waiting:
      return next(Action{Kind::done});
    case queue::BuildWait::builder_gone:
      // It ended between the lookup and the wait: its snapshot may be there
      // now, or the build is free to take. Look again (bounded: then cold).
      trace_ += "->gone";
      if (++builder_looks_ < 3) return next(Action{Kind::choose_image});
      return create_on(spec_.image, false);
    case queue::BuildWait::over:
      trace_ += "->over";
      return create_on(spec_.image, false);
  }
  return create_on(spec_.image, false);
}

}  // namespace warmstart::router
