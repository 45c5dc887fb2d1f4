#include "queue/state_machine.hpp"

namespace warmstart::queue {

std::string_view to_string(JobEvent event) {
  switch (event) {
    case JobEvent::claimed:
      return "claimed";
    case JobEvent::started:
      return "started";
    case JobEvent::succeeded:
      return "succeeded";
    case JobEvent::failed:
      return "failed";
    case JobEvent::timed_out:
      return "timed_out";
    case JobEvent::cancel:
      return "cancel";
    case JobEvent::retry_scheduled:
      return "retry_scheduled";
    case JobEvent::retry_due:
      return "retry_due";
    case JobEvent::reclaimed:
      return "reclaimed";
    case JobEvent::handed_back:
      return "handed_back";
  }
  return "?";
}

std::optional<JobState> transition(JobState from, JobEvent event) {
  using S = JobState;
  using E = JobEvent;
  switch (from) {
    case S::queued:
      switch (event) {
        case E::claimed:
          return S::running;
        case E::cancel:
          return S::cancelled;
        // A job that turns out invalid when claimed (raw stream entries) never runs.
        case E::failed:
          return S::failed;
        default:
          return std::nullopt;
      }
    case S::scheduled:
      switch (event) {
        case E::retry_due:
          return S::queued;
        case E::cancel:
          return S::cancelled;
        default:
          return std::nullopt;
      }
    case S::running:
      switch (event) {
        case E::started:
          return S::running;
        case E::reclaimed:
          return S::running;
        case E::succeeded:
          return S::succeeded;
        case E::failed:
          return S::failed;
        case E::timed_out:
          return S::timed_out;
        case E::cancel:
          return S::cancelled;
        case E::retry_scheduled:
          return S::scheduled;
        case E::handed_back:
          return S::scheduled;
        default:
          return std::nullopt;
      }
    case S::succeeded:
    case S::failed:
    case S::timed_out:
    case S::cancelled:
      return std::nullopt;
  }
  return std::nullopt;
}

std::string lua_transition_table() {
  std::string lua = "local TRANSITIONS = {";
  for (JobState from : kAllStates) {
    lua += std::string(to_string(from)) + " = {";
    for (JobEvent ev : kAllEvents) {
      if (auto to = transition(from, ev)) {
        lua += std::string(to_string(ev)) + " = \"" + std::string(to_string(*to)) + "\", ";
      }
    }
    lua += "}, ";
  }
  lua += "}\n";
  return lua;
}

}  // namespace warmstart::queue
