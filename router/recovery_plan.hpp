// Startup reconciliation as a pure function: observed state -> plan.
//
// On start (and after a crash) the router observes the containers labelled with
// its id, the jobs it holds claims on, and the state of every job those
// containers name. plan_recovery() turns that into small operations, each with
// its reason; the router executes them (independent steps in parallel). The
// plan prints as text so tests compare plans as strings.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::router {

struct ObservedContainer {
  std::string id;
  std::string job_id;  // label warmstart.job ("" when missing)
  int attempt = 0;     // label warmstart.attempt
  std::string state;   // engine state: created, running, exited, dead, ...
  std::int64_t created_unix_ms = 0;
};

struct ObservedClaim {
  std::string job_id;
  int attempt = 0;           // attempts recorded on the job
  std::string container_id;  // recorded on the job when it started ("" if never)
  bool cancel_requested = false;
  std::int64_t deadline_unix_ms = 0;  // 0 = none (not started yet)
};

// State of a job that a container names but this router holds no claim on.
struct ObservedJob {
  std::string job_id;
  std::string state;  // queued, running, succeeded, ... or "" when the record is gone
};

struct RecoveryInput {
  std::vector<ObservedContainer> containers;
  std::vector<ObservedClaim> claims;
  std::vector<ObservedJob> other_jobs;
  std::int64_t now_unix_ms = 0;
  std::int64_t orphan_grace_ms = 60'000;
};

struct RecoveryStep {
  enum class Kind {
    reattach,  // container running: monitor it again, do not re-run
    finalize,  // container exited while we were away: read its exit code, finish the job
    stop,      // container running but cancelled or past its deadline: stop, then finalize
    requeue,   // claimed job with no usable container: give it back to the queue
    remove,    // container that no job needs
    keep,      // orphan younger than the grace period: look again later
  };
  Kind kind;
  std::string job_id;
  std::string container_id;
  std::string reason;
};

struct RecoveryPlan {
  std::vector<RecoveryStep> steps;
  std::string to_string() const;  // one line per step, in a stable order
};

RecoveryPlan plan_recovery(const RecoveryInput& input);

const char* to_string(RecoveryStep::Kind kind);

}  // namespace warmstart::router
