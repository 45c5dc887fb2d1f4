// The one place job state transitions are decided. The Redis adapter's Lua
// scripts do not carry their own copy: they are prefixed with the table that
// lua_transition_table() generates from this one.
#pragma once
#include "queue/job.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace warmstart::queue {

enum class JobEvent {
  claimed,          // a router took the job off the stream
  started,          // its container is running
  succeeded,        // exit code 0
  failed,           // non-zero exit, invalid job, or attempts spent
  timed_out,        // the attempt ran past timeout_s
  cancel,           // a user asked to cancel
  retry_scheduled,  // the attempt failed and another one is due after a backoff
  retry_due,        // the backoff is over: back on the stream
  reclaimed,        // another router took over an expired lease
  handed_back,      // the router gave it back unspent (its engine was unreachable)
};

inline constexpr std::array<JobEvent, 10> kAllEvents = {
    JobEvent::claimed,   JobEvent::started,    JobEvent::succeeded,       JobEvent::failed,
    JobEvent::timed_out, JobEvent::cancel,     JobEvent::retry_scheduled, JobEvent::retry_due,
    JobEvent::reclaimed, JobEvent::handed_back};

std::string_view to_string(JobEvent event);

// The next state, or nullopt when `event` is illegal in `from`.
std::optional<JobState> transition(JobState from, JobEvent event);

// Lua source defining `TRANSITIONS[from][event] = to` for every legal
// transition, e.g. `TRANSITIONS = {queued = {claimed = "running", ...}, ...}`.
std::string lua_transition_table();

}  // namespace warmstart::queue
