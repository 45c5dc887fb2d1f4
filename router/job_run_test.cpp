// Golden tests of a job's run: each case is one line of the product's spec.
// A scripted world answers the actions (unscripted ones succeed; a wait ends
// with the container's exit, a collect finds exit code 0) and the run's trace
// is compared as text.
#include "router/job_run.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

using namespace warmstart;
using namespace warmstart::router;
using Kind = Action::Kind;

namespace {

Input fault(Fault f, std::string error = "boom") {
  return Input::failed(f, std::move(error));
}
Input exited(int code, bool oom = false) {
  Input in;
  in.exit_code = code;
  in.oom_killed = oom;
  return in;
}
Input hit(std::string image) {
  Input in;
  in.snapshot_image = std::move(image);
  return in;
}
Input built_by(std::string builder) {
  Input in;
  in.builder = std::move(builder);
  return in;
}
Input build_wait(queue::BuildWait outcome) {
  Input in;
  in.build_wait = outcome;
  return in;
}
Input adopted(std::string state) {
  Input in;
  in.container_state = std::move(state);
  return in;
}

struct Script {
  std::map<Kind, std::deque<Input>> answers;
  std::function<void(JobRun&)> during_wait = [](JobRun& run) { run.note_exit(); };
  std::vector<Action> actions;  // every action performed, in order

  Script& on(Kind kind, Input in) {
    answers[kind].push_back(std::move(in));
    return *this;
  }
  Input answer(JobRun& run, const Action& action) {
    auto& queue = answers[action.kind];
    if (!queue.empty()) {
      Input in = queue.front();
      queue.pop_front();
      return in;
    }
    if (action.kind == Kind::wait) during_wait(run);
    if (action.kind == Kind::collect) return exited(0);
    return Input::ok();
  }
};

RunSpec job(std::string key = "", bool commit = true) {
  RunSpec spec;
  spec.job_id = "j1";
  spec.image = "base:latest";
  spec.snapshot_key = std::move(key);
  spec.commit = !spec.snapshot_key.empty() && commit;
  spec.timeout_s = 60;
  return spec;
}

RunSpec coalescing(std::string key = "k") {
  RunSpec spec = job(std::move(key));
  spec.coalesce = true;
  return spec;
}

struct Run {
  std::string trace;
  std::optional<queue::JobResult> result;
  std::vector<Action> actions;
  bool fallback = false;
};

Run drive(RunSpec spec, Script script, StartMode mode = StartMode::fresh) {
  JobRun run(std::move(spec));
  Action action = run.begin(mode);
  for (int steps = 0; action.kind != Kind::done; ++steps) {
    REQUIRE(steps < 100);
    script.actions.push_back(action);
    action = run.resume(script.answer(run, action));
  }
  return {run.trace(), run.result(), script.actions, run.snapshot_fallback()};
}

const Action* find(const Run& r, Kind kind) {
  for (const auto& a : r.actions)
    if (a.kind == kind) return &a;
  return nullptr;
}

}  // namespace

TEST_CASE("cold run without a snapshot key", "[unit][job_run]") {
  auto r = drive(job(), Script{});
  CHECK(r.trace ==
        "claim create(base) start mark wait exit collect(0) record(succeeded) remove done");
  CHECK(r.result->state == queue::JobState::succeeded);
}

TEST_CASE("cold run of a new key commits its snapshot before recording", "[unit][job_run]") {
  auto r = drive(job("k"), Script{});
  CHECK(r.trace ==
        "claim choose->miss create(base) start mark wait exit collect(0) free-slot commit "
        "record(succeeded) remove done");
}

TEST_CASE("warm run starts from the key's snapshot", "[unit][job_run]") {
  auto r = drive(job("k"), Script{}.on(Kind::choose_image, hit("snap:g1")));
  CHECK(r.trace ==
        "claim choose->hit create(snapshot) start mark wait exit collect(0) free-slot commit "
        "record(succeeded) remove done");
  CHECK(find(r, Kind::create)->image == "snap:g1");
}

TEST_CASE("a vanished snapshot image falls back to the base image once", "[unit][job_run]") {
  auto r = drive(job("k"), Script{}
                               .on(Kind::choose_image, hit("snap:g1"))
                               .on(Kind::create, fault(Fault::image_not_found)));
  CHECK(r.trace ==
        "claim choose->hit create(snapshot)->404 invalidate create(base) start mark wait exit "
        "collect(0) free-slot commit record(succeeded) remove done");
  CHECK(r.fallback);
  CHECK(find(r, Kind::invalidate)->image == "snap:g1");
  CHECK(find(r, Kind::invalidate)->reason == "image_missing");
}

TEST_CASE("a missing base image fails the attempt without a second fallback", "[unit][job_run]") {
  auto r = drive(job("k"), Script{}
                               .on(Kind::choose_image, hit("snap:g1"))
                               .on(Kind::create, fault(Fault::image_not_found))
                               .on(Kind::create, fault(Fault::image_not_found)));
  CHECK(r.trace ==
        "claim choose->hit create(snapshot)->404 invalidate create(base)->404 record(failed) done");
  CHECK(r.result->error == "image not found: base:latest");

  auto plain = drive(job(), Script{}.on(Kind::create, fault(Fault::image_not_found)));
  CHECK(plain.trace == "claim create(base)->404 record(failed) done");
}

TEST_CASE("failures with attempts left are recorded as retries", "[unit][job_run]") {
  RunSpec spec = job();
  spec.max_attempts = 3;
  auto r = drive(spec, Script{}.on(Kind::collect, exited(2)));
  CHECK(r.trace ==
        "claim create(base) start mark wait exit collect(2) record(failed,retry) remove done");
  CHECK(r.result->error == "exit code 2");
  spec.attempt = 3;
  auto last = drive(spec, Script{}.on(Kind::collect, exited(2)));
  CHECK(last.trace ==
        "claim create(base) start mark wait exit collect(2) record(failed) remove done");
}

TEST_CASE("a 409 adopts the attempt's existing container", "[unit][job_run]") {
  auto created = drive(
      job(), Script{}.on(Kind::create, fault(Fault::conflict)).on(Kind::adopt, adopted("created")));
  CHECK(created.trace ==
        "claim create(base)->409 adopt->created start mark wait exit collect(0) "
        "record(succeeded) remove done");
  auto running = drive(
      job(), Script{}.on(Kind::create, fault(Fault::conflict)).on(Kind::adopt, adopted("running")));
  CHECK(running.trace ==
        "claim create(base)->409 adopt->running mark wait exit collect(0) record(succeeded) "
        "remove done");
  auto exited_already = drive(
      job(), Script{}.on(Kind::create, fault(Fault::conflict)).on(Kind::adopt, adopted("exited")));
  CHECK(exited_already.trace ==
        "claim create(base)->409 adopt->exited mark collect(0) record(succeeded) remove done");
}

TEST_CASE("a container being removed is not adopted: create again once it is gone",
          "[unit][job_run]") {
  // E.g. an orphan sweep removes the container of a handed-back job while the
  // next claim's create meets it (409): adopting it would end in "vanished".
  Script script;
  script.on(Kind::create, fault(Fault::conflict))
      .on(Kind::adopt, adopted("removing"))
      .on(Kind::create, fault(Fault::conflict))
      .on(Kind::adopt, adopted("removing"));
  auto r = drive(job(), script);
  CHECK(r.trace ==
        "claim create(base)->409 adopt->removing create(base)->409 adopt->removing create(base) "
        "start mark wait exit collect(0) record(succeeded) remove done");
  CHECK(r.result->state == queue::JobState::succeeded);
  int creates = 0;
  for (const auto& a : r.actions) {
    if (a.kind != Kind::create) continue;
    ++creates;
    CHECK(a.image == "base:latest");
    if (creates > 1) CHECK(a.delay >= 1s);
  }
  CHECK(creates == 3);

  // An engine that never finishes the removal fails the attempt (retryable).
  Script stuck;
  for (int i = 0; i < 40; ++i) {
    stuck.on(Kind::create, fault(Fault::conflict)).on(Kind::adopt, adopted("removing"));
  }
  auto s = drive(job(), stuck);
  REQUIRE(s.result);
  CHECK(s.result->state == queue::JobState::failed);
  CHECK(s.result->error == "the container of this attempt stays in removal");
}

TEST_CASE("an unreachable engine hands the job back without spending its attempt",
          "[unit][job_run]") {
  auto at_create = drive(job(), Script{}.on(Kind::create, fault(Fault::engine_down)));
  CHECK(at_create.trace == "claim create(base)->down hand-back done");
  CHECK_FALSE(at_create.result);
  CHECK_THAT(find(at_create, Kind::hand_back)->reason, Catch::StartsWith("engine unreachable"));

  auto at_choose = drive(job("k"), Script{}.on(Kind::choose_image, fault(Fault::engine_down)));
  CHECK(at_choose.trace == "claim choose->down hand-back done");

  // Created but not started: left in place, the next claim adopts it (409).
  auto at_start = drive(job(), Script{}.on(Kind::start, fault(Fault::engine_down)));
  CHECK(at_start.trace == "claim create(base) start->down hand-back done");
}

TEST_CASE("Redis errors after the container started are retried, never abandoned",
          "[unit][job_run]") {
  auto mark = drive(job(), Script{}
                               .on(Kind::mark_running, fault(Fault::redis))
                               .on(Kind::mark_running, fault(Fault::redis)));
  CHECK(mark.trace ==
        "claim create(base) start mark->redis mark wait exit collect(0) record(succeeded) "
        "remove done");
  int marks = 0;
  for (const auto& a : mark.actions) marks += a.kind == Kind::mark_running;
  CHECK(marks == 3);

  // The result is recorded before the container is removed: an outage at the
  // record keeps the container and retries, so a succeeded job never re-runs.
  auto record = drive(job(), Script{}
                                 .on(Kind::record, fault(Fault::redis))
                                 .on(Kind::record, fault(Fault::redis))
                                 .on(Kind::record, fault(Fault::redis)));
  CHECK(record.trace ==
        "claim create(base) start mark wait exit collect(0) record(succeeded)->redis "
        "record(succeeded) remove done");
  std::vector<Duration> delays;
  for (const auto& a : record.actions)
    if (a.kind == Kind::record) delays.push_back(a.delay);
  CHECK(delays == std::vector<Duration>{0ms, 100ms, 200ms, 400ms});
}

TEST_CASE("a cancel stops the container and records cancelled", "[unit][job_run]") {
  Script s;
  s.during_wait = [](JobRun& run) { run.note_cancel(); };
  s.on(Kind::collect, exited(137));
  auto r = drive(job("k"), s);
  CHECK(r.trace ==
        "claim choose->miss create(base) start mark wait cancel stop collect(137) "
        "record(cancelled) remove done");
  CHECK(r.result->state == queue::JobState::cancelled);

  // The cancel won the race with mark_running (or was only recorded: its
  // message lost and the lease renewal reported it): same path.
  Input cancelled;
  cancelled.cancelled = true;
  auto raced = drive(job(), Script{}.on(Kind::mark_running, cancelled));
  CHECK(raced.trace ==
        "claim create(base) start mark stop collect(0) record(cancelled) remove done");
}

TEST_CASE("a job cancelled before it started never reaches the engine", "[unit][job_run]") {
  RunSpec spec = job("k");
  spec.cancelled = true;
  auto r = drive(spec, Script{});
  CHECK(r.trace == "claim record(cancelled) done");
}

TEST_CASE("the deadline stops the container and records timed_out", "[unit][job_run]") {
  Script s;
  s.during_wait = [](JobRun& run) { run.note_timeout(); };
  auto r = drive(job("k"), s);
  CHECK(r.trace ==
        "claim choose->miss create(base) start mark wait timeout stop collect(0) "
        "record(timed_out) remove done");
  CHECK(r.result->error == "timed out after 60 s");
}

TEST_CASE("an OOM kill fails the attempt and commits nothing", "[unit][job_run]") {
  auto r = drive(job("k"), Script{}.on(Kind::collect, exited(137, true)));
  CHECK(r.trace ==
        "claim choose->miss create(base) start mark wait exit collect(137,oom) record(failed) "
        "remove done");
  CHECK(r.result->error == "exit code 137 (OOM killed)");
}

TEST_CASE("a lost lease stops and removes the container and records nothing", "[unit][job_run]") {
  Script s;
  s.during_wait = [](JobRun& run) { run.note_lease_lost(); };
  auto r = drive(job("k"), s);
  CHECK(r.trace == "claim choose->miss create(base) start mark wait lost stop remove done");
  CHECK(find(r, Kind::record) == nullptr);

  auto at_mark = drive(job(), Script{}.on(Kind::mark_running, fault(Fault::lease_lost)));
  CHECK(at_mark.trace == "claim create(base) start mark->lost stop remove done");
  auto at_record = drive(job(), Script{}.on(Kind::record, fault(Fault::lease_lost)));
  CHECK(at_record.trace ==
        "claim create(base) start mark wait exit collect(0) record(succeeded)->lost remove done");
}

// Which steps hold the lease: lease_returned() as each action is performed.
std::string lease_trace(RunSpec spec, Script script) {
  JobRun run(std::move(spec));
  std::string out;
  Action action = run.begin(StartMode::fresh);
  for (int steps = 0; action.kind != Kind::done; ++steps) {
    REQUIRE(steps < 100);
    out += std::string(to_string(action.kind)) + (run.lease_returned() ? "-" : "+") + " ";
    action = run.resume(script.answer(run, action));
  }
  return out + (run.lease_returned() ? "done-" : "done+");
}

TEST_CASE("the lease is the run's until its result, hand-back or build wait goes to the queue",
          "[unit][job_run]") {
  // The renewal ignores a "lost" for a run that returned the job: its own
  // script acked the entry (Dispatcher::on_lease_report).
  CHECK(lease_trace(job(), Script{}) ==
        "create+ start+ mark+ wait+ collect+ record- remove- done-");
  CHECK(lease_trace(job(), Script{}.on(Kind::start, fault(Fault::engine_down))) ==
        "create+ start+ hand-back- done-");
  Script lost;
  lost.during_wait = [](JobRun& run) { run.note_lease_lost(); };
  CHECK(lease_trace(job(), lost) == "create+ start+ mark+ wait+ stop+ remove+ done+");
  // A build wait hands the job back; one that changed nothing (over, or the
  // builder gone) leaves it the run's, so a lost lease while it then runs is heard.
  auto waits = [](queue::BuildWait answer) {
    return Script{}.on(Kind::choose_image, built_by("j0")).on(Kind::wait_build, build_wait(answer));
  };
  CHECK(lease_trace(coalescing(), waits(queue::BuildWait::waiting)) == "choose+ wait-build- done-");
  CHECK(lease_trace(coalescing(), waits(queue::BuildWait::over)) ==
        "choose+ wait-build- create+ start+ mark+ wait+ collect+ free-slot+ commit+ "
        "record- remove- done-");
}

TEST_CASE("a failed commit is recorded on the job, which keeps its success", "[unit][job_run]") {
  auto r = drive(job("k"), Script{}.on(Kind::commit, fault(Fault::other, "disk full")));
  CHECK(r.trace ==
        "claim choose->miss create(base) start mark wait exit collect(0) free-slot commit->err "
        "record(succeeded) remove done");
  CHECK(r.result->state == queue::JobState::succeeded);
  CHECK(r.result->snapshot_error == "disk full");
}

TEST_CASE("the engine lost mid-run: stop and collect wait for it", "[unit][job_run]") {
  Script s;
  s.during_wait = [](JobRun& run) { run.note_cancel(); };
  s.on(Kind::stop, fault(Fault::engine_down)).on(Kind::collect, fault(Fault::engine_down));
  auto r = drive(job(), s);
  CHECK(r.trace ==
        "claim create(base) start mark wait cancel stop->down stop collect->down collect(0) "
        "record(cancelled) remove done");
}

TEST_CASE("an image outside the allowlist fails without touching the engine", "[unit][job_run]") {
  RunSpec spec = job();
  spec.refused = "image not allowed: evil:latest";
  spec.max_attempts = 3;
  auto r = drive(spec, Script{});
  CHECK(r.trace == "claim record(failed) done");
  CHECK(r.result->error == "image not allowed: evil:latest");
}

TEST_CASE("other create and start failures spend the attempt", "[unit][job_run]") {
  auto create = drive(job(), Script{}.on(Kind::create, fault(Fault::other, "HTTP 500")));
  CHECK(create.trace == "claim create(base)->err record(failed) done");
  CHECK(create.result->error == "container create failed: HTTP 500");
  auto start = drive(job(), Script{}.on(Kind::start, fault(Fault::other, "HTTP 500")));
  CHECK(start.trace == "claim create(base) start->err record(failed) remove done");
}

TEST_CASE("after a restart: re-attach a running container, finalize an exited one",
          "[unit][job_run]") {
  auto reattach = drive(job("k"), Script{}, StartMode::reattach);
  CHECK(reattach.trace ==
        "reattach wait exit collect(0) free-slot commit record(succeeded) remove done");
  auto finalize = drive(job(), Script{}.on(Kind::collect, exited(3)), StartMode::finalize);
  CHECK(finalize.trace == "finalize collect(3) record(failed) remove done");
  RunSpec cancelled = job();
  cancelled.cancelled = true;
  auto stop = drive(cancelled, Script{}, StartMode::reattach);
  CHECK(stop.trace == "reattach stop collect(0) record(cancelled) remove done");
}

TEST_CASE("an exit noted by a stale list is checked before it counts", "[unit][job_run]") {
  Input running = exited(0);
  running.still_running = true;
  auto r = drive(job(), Script{}.on(Kind::collect, running));
  CHECK(r.trace ==
        "claim create(base) start mark wait exit collect->running wait exit collect(0) "
        "record(succeeded) remove done");
}

// --- single-flight cold starts ---------------------------------------------------

TEST_CASE("the first cold run of a key builds its snapshot, then wakes the waiters",
          "[unit][job_run][single_flight]") {
  auto r = drive(coalescing(), Script{}.on(Kind::choose_image, built_by("j1")));
  CHECK(r.trace ==
        "claim choose->build create(base) start mark wait exit collect(0) free-slot commit "
        "record(succeeded) end-build remove done");
  CHECK(find(r, Kind::end_build)->snapshot_made);
}

TEST_CASE("a job of a key another job builds waits for it off the queue",
          "[unit][job_run][single_flight]") {
  auto r = drive(coalescing(), Script{}.on(Kind::choose_image, built_by("j0")));
  CHECK(r.trace == "claim choose->miss wait-build done");
  CHECK(find(r, Kind::wait_build)->builder == "j0");
  CHECK(find(r, Kind::create) == nullptr);
  CHECK_FALSE(r.result.has_value());
}

TEST_CASE("a waiter whose wait is spent starts cold", "[unit][job_run][single_flight]") {
  auto r = drive(coalescing(), Script{}
                                   .on(Kind::choose_image, built_by("j0"))
                                   .on(Kind::wait_build, build_wait(queue::BuildWait::over)));
  CHECK(r.trace ==
        "claim choose->miss wait-build->over create(base) start mark wait exit collect(0) "
        "free-slot commit record(succeeded) remove done");
}

TEST_CASE("a builder that ended meanwhile: look again", "[unit][job_run][single_flight]") {
  auto r = drive(coalescing(), Script{}
                                   .on(Kind::choose_image, built_by("j0"))
                                   .on(Kind::wait_build, build_wait(queue::BuildWait::builder_gone))
                                   .on(Kind::choose_image, hit("snap:g1")));
  CHECK(r.trace ==
        "claim choose->miss wait-build->gone choose->hit create(snapshot) start mark wait exit "
        "collect(0) free-slot commit record(succeeded) remove done");
  // Bounded: a builder that keeps changing under it does not keep the job looking.
  Script churn;
  for (int i = 0; i < 5; ++i) {
    churn.on(Kind::choose_image, built_by("j" + std::to_string(10 + i)));
    churn.on(Kind::wait_build, build_wait(queue::BuildWait::builder_gone));
  }
  auto bounded = drive(coalescing(), churn);
  CHECK(bounded.trace.find("create(base)") != std::string::npos);
  CHECK(std::count_if(bounded.actions.begin(), bounded.actions.end(),
                      [](const Action& a) { return a.kind == Kind::choose_image; }) == 3);
}

TEST_CASE("a failed builder ends its build, so a waiter takes it over",
          "[unit][job_run][single_flight]") {
  RunSpec spec = coalescing();
  spec.max_attempts = 2;
  auto r =
      drive(spec, Script{}.on(Kind::choose_image, built_by("j1")).on(Kind::collect, exited(1)));
  CHECK(r.trace ==
        "claim choose->build create(base) start mark wait exit collect(1) "
        "record(failed,retry) end-build remove done");
  CHECK_FALSE(find(r, Kind::end_build)->snapshot_made);
  // Handed back (the engine is down): the build ends, the created container stays.
  auto down = drive(
      coalescing(),
      Script{}.on(Kind::choose_image, built_by("j1")).on(Kind::start, fault(Fault::engine_down)));
  CHECK(down.trace == "claim choose->build create(base) start->down hand-back end-build done");
}

TEST_CASE("a prewarm's product is its snapshot: a failed commit fails it",
          "[unit][job_run][single_flight]") {
  RunSpec spec = coalescing();
  spec.prewarm = true;
  spec.max_attempts = 2;
  auto r = drive(spec, Script{}
                           .on(Kind::choose_image, built_by("j1"))
                           .on(Kind::commit, fault(Fault::other, "disk full")));
  CHECK(r.trace ==
        "claim choose->build create(base) start mark wait exit collect(0) free-slot "
        "commit->err record(failed,retry) end-build remove done");
  CHECK(r.result->error == "disk full");
  // Not on the base image: nothing to commit, refused before the engine.
  RunSpec elsewhere = coalescing();
  elsewhere.prewarm = true;
  elsewhere.commit = false;
  auto refused = drive(elsewhere, Script{});
  CHECK(refused.trace == "claim record(failed) done");
}

TEST_CASE("without coalescing, or without reuse, a job never waits",
          "[unit][job_run][single_flight]") {
  auto off = drive(job("k"), Script{}.on(Kind::choose_image, built_by("j0")));
  CHECK(off.trace.rfind("claim choose->miss create(base)", 0) == 0);
  RunSpec fresh = coalescing();
  fresh.reuse = false;
  auto no_reuse = drive(fresh, Script{}.on(Kind::choose_image, built_by("j0")));
  CHECK(no_reuse.trace.rfind("claim choose->miss create(base)", 0) == 0);
}

// --- docs/router.md is checked against the code --------------------------------

namespace {

// A run that reaches `step` and gets `f` there (the base image, no key, two
// attempts, unless the step needs otherwise).
Run fault_at(Kind step, Fault f) {
  const bool keyed = step == Kind::choose_image || step == Kind::commit ||
                     step == Kind::wait_build || step == Kind::end_build;
  RunSpec spec = job(keyed ? "k" : "");
  spec.max_attempts = 2;
  spec.coalesce = keyed;
  Script s;
  // wait_build: another job builds the key; end_build: this one does.
  if (step == Kind::wait_build) s.on(Kind::choose_image, built_by("j0"));
  if (step == Kind::end_build) s.on(Kind::choose_image, built_by("j1"));
  if (step == Kind::adopt) s.on(Kind::create, fault(Fault::conflict));
  if (step == Kind::hand_back) s.on(Kind::create, fault(Fault::engine_down));
  if (step == Kind::stop) s.during_wait = [](JobRun& run) { run.note_cancel(); };
  s.on(step, fault(f));
  return drive(spec, s);
}

// What the run does next after `f` at `step`, as the policy table shows it.
std::string consequence(Kind step, Fault f) {
  Run r = fault_at(step, f);
  for (std::size_t i = 0; i < r.actions.size(); ++i) {
    if (r.actions[i].kind != step) continue;
    if (i + 1 == r.actions.size()) return "done";
    const Action& next = r.actions[i + 1];
    if (next.kind == step) return "retry";
    std::string out(to_string(next.kind));
    if (next.kind == Kind::record) {
      out += "(" + std::string(queue::to_string(next.result.state));
      if (next.retry) out += ",retry";
      out += ")";
      if (!next.result.snapshot_error.empty()) out += " +snapshot_error";
    }
    return out;
  }
  return "?";
}

std::string policy_table() {
  const std::vector<Kind> steps = {
      Kind::choose_image, Kind::create,    Kind::adopt,  Kind::start,  Kind::mark_running,
      Kind::stop,         Kind::collect,   Kind::commit, Kind::record, Kind::hand_back,
      Kind::wait_build,   Kind::end_build, Kind::remove};
  const std::vector<Fault> faults = {
      Fault::image_not_found, Fault::not_found, Fault::conflict, Fault::engine_down,
      Fault::lease_lost,      Fault::redis,     Fault::other};
  std::string out = "| step |";
  for (Fault f : faults) out += " " + std::string(to_string(f)) + " |";
  out += "\n|---|";
  for (std::size_t i = 0; i < faults.size(); ++i) out += "---|";
  out += "\n";
  for (Kind step : steps) {
    out += "| " + std::string(to_string(step)) + " |";
    const bool queue_step = step == Kind::mark_running || step == Kind::record ||
                            step == Kind::hand_back || step == Kind::wait_build ||
                            step == Kind::end_build;
    for (Fault f : faults) {
      // Engine calls never answer with a lost lease or a Redis error, queue
      // calls never with an engine status.
      // The snapshot lookup asks both: the registry and the build marker
      // (Redis) and the engine (is the image there).
      const bool possible = f == Fault::other ||
                            (step == Kind::choose_image && f != Fault::lease_lost) ||
                            (queue_step == (f == Fault::lease_lost || f == Fault::redis));
      out += " " + (possible ? consequence(step, f) : std::string("·")) + " |";
    }
    out += "\n";
  }
  return out;
}

std::string doc_block(const std::string& doc, const std::string& name) {
  const std::string begin = "<!-- " + name + ":begin -->\n";
  const std::string end = "<!-- " + name + ":end -->";
  auto b = doc.find(begin);
  auto e = doc.find(end);
  if (b == std::string::npos || e == std::string::npos) return "(no " + name + " block)";
  return doc.substr(b + begin.size(), e - b - begin.size());
}

std::string read_doc() {
  std::ifstream in(std::string(WARMSTART_SOURCE_DIR) + "/docs/router.md");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("docs/router.md's policy table is the one the state machine implements",
          "[unit][job_run][docs]") {
  const std::string table = policy_table();
  // WARMSTART_POLICY_OUT=FILE writes the table to regenerate the doc's block.
  if (const char* out = std::getenv("WARMSTART_POLICY_OUT")) std::ofstream(out) << table;
  INFO("regenerate the block between the policy-table markers with:\n" << table);
  CHECK(doc_block(read_doc(), "policy-table") == table);
}
