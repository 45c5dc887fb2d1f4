#include "queue/state_machine.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::queue;

namespace {
// The whole table as text: one line per state, "event->state" for legal events.
std::string table() {
  std::string out;
  for (JobState from : kAllStates) {
    out += std::string(to_string(from)) + ":";
    for (JobEvent ev : kAllEvents) {
      if (auto to = transition(from, ev)) {
        out += " " + std::string(to_string(ev)) + "->" + std::string(to_string(*to));
      }
    }
    out += "\n";
  }
  return out;
}
}  // namespace

TEST_CASE("the transition table is exactly the documented one", "[unit][state_machine]") {
  CHECK(table() ==
        "queued: claimed->running failed->failed cancel->cancelled\n"
        "scheduled: cancel->cancelled retry_due->queued\n"
        "running: started->running succeeded->succeeded failed->failed timed_out->timed_out "
        "cancel->cancelled retry_scheduled->scheduled reclaimed->running "
        "handed_back->scheduled\n"
        "succeeded:\n"
        "failed:\n"
        "timed_out:\n"
        "cancelled:\n");
}

TEST_CASE("illegal transitions are rejected", "[unit][state_machine]") {
  CHECK_FALSE(transition(JobState::queued, JobEvent::succeeded));
  CHECK_FALSE(transition(JobState::queued, JobEvent::started));
  CHECK_FALSE(transition(JobState::scheduled, JobEvent::claimed));
  CHECK_FALSE(transition(JobState::running, JobEvent::claimed));
  CHECK_FALSE(transition(JobState::running, JobEvent::retry_due));
  CHECK_FALSE(transition(JobState::cancelled, JobEvent::cancel));
  CHECK_FALSE(transition(JobState::succeeded, JobEvent::failed));
}

TEST_CASE("terminal states have no way out", "[unit][state_machine]") {
  for (JobState s : kAllStates) {
    if (!is_terminal(s)) continue;
    for (JobEvent ev : kAllEvents) CHECK_FALSE(transition(s, ev));
  }
}

TEST_CASE("every non-terminal state can be cancelled", "[unit][state_machine]") {
  for (JobState s : kAllStates) {
    if (is_terminal(s)) continue;
    CHECK(transition(s, JobEvent::cancel) == JobState::cancelled);
  }
}

TEST_CASE("the Lua table is generated from the C++ table", "[unit][state_machine]") {
  std::string lua = lua_transition_table();
  CHECK(lua.rfind("local TRANSITIONS = {", 0) == 0);
  CHECK(
      lua.find("queued = {claimed = \"running\", failed = \"failed\", cancel = \"cancelled\", }") !=
      std::string::npos);
  CHECK(lua.find("scheduled = {cancel = \"cancelled\", retry_due = \"queued\", }") !=
        std::string::npos);
  CHECK(lua.find("succeeded = {}") != std::string::npos);
  // One entry per legal transition.
  std::size_t arrows = 0;
  for (std::size_t p = lua.find(" = \""); p != std::string::npos; p = lua.find(" = \"", p + 1)) {
    ++arrows;
  }
  std::size_t legal = 0;
  for (JobState s : kAllStates) {
    for (JobEvent ev : kAllEvents) legal += transition(s, ev).has_value();
  }
  CHECK(arrows == legal);
  CHECK(legal == 13);
}
