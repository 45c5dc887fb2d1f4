// The life of one job attempt on a router, as a pure state machine in the
// style of Boost.Redis's *_fsm: `resume(Input) -> Action`, no I/O, no clock.
//
// The executor (job_executor.hpp) performs each Action against the ports
// (engine, queue, snapshot cache) and feeds back what happened as an Input.
// Outside facts that arrive at any time (the container exited, a cancel, the
// deadline, a lost lease) are noted with note_*() and taken into account at
// the next decision. Every decision of a run lives here: which image, the 404
// fallback, adopt on 409, what an outage costs, commit or not, the result,
// retry or not, the order of record and remove. docs/router.md has the table.
//
// Each run keeps a one-line trace of its actions and their results, e.g.
//   claim choose->hit create(snapshot)->404 invalidate create(base) start mark wait exit
//   collect(0) free-slot commit record(succeeded) remove done
// which the golden tests compare and the router logs when the run ends.
#pragma once
#include "common/net.hpp"
#include "queue/job.hpp"
#include "queue/queue.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace warmstart::router {

// Why a step failed, as the executor classified the error (outcome.hpp). The
// classification, not the exception type, is what the policy looks at.
enum class Fault {
  none,             // the step succeeded
  image_not_found,  // engine 404 "No such image"
  not_found,        // engine 404 for the container
  conflict,         // engine 409: the attempt's container exists already
  engine_down,      // no answer from the engine (socket, reset, deadline)
  lease_lost,       // another router owns the job now
  redis,            // transient Redis failure (connection, LOADING, READONLY, deadline)
  other,            // anything else: counted against the job's attempt
};
std::string_view to_string(Fault fault);

enum class StartMode {
  fresh,     // claimed from the queue: nothing exists yet
  reattach,  // after a restart: the attempt's container is running
  finalize,  // after a restart: the attempt's container exited while we were away
};

// What a run needs to know about its job; fixed for the attempt.
struct RunSpec {
  std::string job_id;
  int attempt = 1;
  int max_attempts = 1;
  std::string image;         // the job's own image (allowed) or the router's base image
  std::string refused;       // non-empty: the image is not allowed; the engine is never asked
  bool on_base = true;       // `image` is the base image (snapshots apply only then)
  std::string snapshot_key;  // "" = no snapshot
  bool reuse = true;         // start from the key's snapshot when there is one
  bool commit = false;       // commit the container after a success
  // Single-flight cold starts: rather than start cold while another job builds
  // the key's first snapshot, wait for it (off the queue, no slot held).
  bool coalesce = false;
  // A prewarm: the snapshot is the product, so a failed commit fails the attempt.
  bool prewarm = false;
  std::int64_t timeout_s = 0;  // the attempt's wall-clock limit (the router's default applied)
  bool cancelled = false;      // the record said `cancelled` when the run began
};

struct Action {
  enum class Kind {
    choose_image,  // ask the snapshot cache: snapshot image or base image
    create,        // create the container from `image`
    invalidate,    // drop the key's vanished snapshot (then create on the base image)
    adopt,         // 409: inspect the attempt's existing container and take it over
    start,         // start the created container
    mark_running,  // record image/container/router on the job
    wait,          // until the container exits, a cancel, the deadline or a lost lease
    stop,          // SIGTERM, grace, SIGKILL
    collect,       // exit code, OOM flag and log tail of the stopped container
    free_slot,     // the container stopped: its capacity slot may serve another job
    commit,        // commit the container as the key's next snapshot
    record,        // the result into the queue: finish, or fail_attempt when retried
    hand_back,     // give the job back to the queue without spending its attempt
    wait_build,    // give the job back until `builder` made the key's snapshot
    end_build,     // this run built the key's snapshot (or failed to): wake its waiters
    remove,        // remove the container
    done,          // nothing left: release the claim's bookkeeping
  };
  Kind kind = Kind::done;
  Duration delay{0};  // wait this long before performing it (a retried step)
  // create
  std::string image;
  bool from_snapshot = false;
  // record
  queue::JobResult result;
  bool retry = false;  // record: a retryable failure with attempts left -> fail_attempt
  // hand_back / invalidate: why
  std::string reason;
  // wait_build: the job building the key's snapshot
  std::string builder;
  // end_build: this run committed the key's new snapshot
  bool snapshot_made = false;
};
std::string_view to_string(Action::Kind kind);

// What performing the last action gave.
struct Input {
  Fault fault = Fault::none;  // none = the action succeeded
  std::string error;          // the failure, as text (for the record and the logs)
  // choose_image
  std::string snapshot_image;  // non-empty: a snapshot to start from
  std::string builder;         // no snapshot: the job building the key's first one ("" none)
  // wait_build
  queue::BuildWait build_wait = queue::BuildWait::waiting;
  // adopt: the existing container's engine state (created, running, exited, ...)
  std::string container_state;
  // collect
  std::optional<int> exit_code;
  bool oom_killed = false;
  bool still_running = false;  // the exit was noted by mistake (a stale list)
  // mark_running: the record says `cancelled` (a cancel won the race)
  bool cancelled = false;

  static Input ok() { return {}; }
  static Input failed(Fault fault, std::string error) {
    Input in;
    in.fault = fault;
    in.error = std::move(error);
    return in;
  }
};

class JobRun {
 public:
  explicit JobRun(RunSpec spec) : spec_(std::move(spec)) {}

  // The first action.
  Action begin(StartMode mode);
  // The next action, given what the last one gave.
  Action resume(const Input& in);

  // Facts that may arrive at any time; they count from the next decision.
  void note_exit();
  void note_cancel();
  void note_timeout();
  void note_lease_lost();

  const RunSpec& spec() const { return spec_; }
  // The image the container was created from, and how.
  const std::string& image() const { return image_; }
  bool from_snapshot() const { return from_snapshot_; }
  bool snapshot_fallback() const { return fallback_; }
  bool container_started() const { return started_; }
  // This run took the build of its key's first snapshot (single-flight).
  bool builder() const { return builder_; }
  bool finished() const { return in_flight_ == Action::Kind::done; }
  // The run has given the job back to the queue (record, hand_back or
  // wait_build sent, in flight or done): that script acks the stream entry,
  // so the lease ends with it, and a renewal that finds it gone says nothing
  // about another router. A build wait that answered over or builder_gone
  // changed nothing: the lease is the run's again.
  bool lease_returned() const { return lease_returned_; }
  // The result once known (collect, or a failure before the container ran).
  const std::optional<queue::JobResult>& result() const { return result_; }
  const std::string& trace() const { return trace_; }

 private:
  Action next(Action action);
  Action retry_same(const Input& in);
  Action create_on(std::string image, bool from_snapshot);
  Action fail(std::string error, bool retryable);
  Action record_result();
  Action after_recorded();
  Action abandon();
  Action after_container_ran();
  Action conclude(const Input& in);
  Action after_choose(const Input& in);
  Action after_create(const Input& in);
  Action after_adopt(const Input& in);
  Action after_start(const Input& in);
  Action after_mark(const Input& in);
  Action after_stop(const Input& in);
  Action after_collect(const Input& in);
  Action after_record(const Input& in);
  Action after_hand_back(const Input& in);
  Action after_wait_build(const Input& in);
  Action wind_up(bool keep_container);
  void note_result(const Input& in);

  RunSpec spec_;
  Action current_;
  Action::Kind in_flight_ = Action::Kind::done;
  int retries_ = 0;  // consecutive retries of the step in flight (backoff)

  std::string image_;
  bool from_snapshot_ = false;
  bool fallback_ = false;
  bool container_ = false;  // a container of this attempt exists
  bool started_ = false;    // it was started (it may be running)
  bool exited_ = false;
  bool cancel_ = false;
  bool timed_out_ = false;
  bool lease_lost_ = false;
  bool lease_returned_ = false;  // record / hand_back / wait_build was sent
  bool retryable_ = false;       // the result's failure may be retried
  bool builder_ = false;         // builds the key's first snapshot: end_build when done
  bool build_ended_ = false;
  bool committed_ = false;       // the commit made the key's new snapshot
  bool keep_container_ = false;  // handed back: the created container stays for the next claim
  int builder_looks_ = 0;        // choose_image again because the builder ended meanwhile
  int removal_waits_ = 0;        // create again: the attempt's container was being removed
  std::optional<queue::JobResult> result_;
  std::string trace_;
};

// Backoff of a retried step: 100 ms doubling to 5 s.
Duration step_backoff(int retries);

}  // namespace warmstart::router
