#include "router/recovery_plan.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::router;

namespace {
constexpr std::int64_t now = 1'000'000;
}

TEST_CASE("recovery: running re-attached, exited finalized, missing requeued", "[unit][recovery]") {
  RecoveryInput in;
  in.now_unix_ms = now;
  in.containers = {
      {"c1", "job-a", 1, "running", now - 5'000},
      {"c2", "job-b", 1, "exited", now - 5'000},
  };
  in.claims = {
      {"job-a", 1, "c1", false, now + 60'000},
      {"job-b", 1, "c2", false, now + 60'000},
      {"job-c", 1, "", false, 0},
  };
  CHECK(plan_recovery(in).to_string() ==
        "reattach job=job-a container=c1 (running)\n"
        "finalize job=job-b container=c2 (exited while away)\n"
        "requeue job=job-c (claimed, no container)\n");
}

TEST_CASE("recovery: cancelled or overdue running jobs are stopped", "[unit][recovery]") {
  RecoveryInput in;
  in.now_unix_ms = now;
  in.containers = {{"c1", "job-a", 1, "running", now - 5'000},
                   {"c2", "job-b", 2, "running", now - 5'000}};
  in.claims = {{"job-a", 1, "c1", true, now + 60'000}, {"job-b", 2, "c2", false, now - 1}};
  CHECK(plan_recovery(in).to_string() ==
        "stop job=job-a container=c1 (cancel requested)\n"
        "stop job=job-b container=c2 (timeout passed)\n");
}

TEST_CASE("recovery: container found by attempt when the record has no id yet",
          "[unit][recovery]") {
  RecoveryInput in;
  in.now_unix_ms = now;
  // Crash between create and recording the container id: attempt 2's container
  // is the current one, attempt 1's is a leftover.
  in.containers = {{"old", "job-a", 1, "exited", now - 50'000},
                   {"new", "job-a", 2, "running", now - 1'000}};
  in.claims = {{"job-a", 2, "", false, 0}};
  CHECK(plan_recovery(in).to_string() ==
        "reattach job=job-a container=new (running)\n"
        "remove job=job-a container=old (container of an earlier attempt)\n");
}

TEST_CASE("recovery: created-but-never-started containers are replaced", "[unit][recovery]") {
  RecoveryInput in;
  in.now_unix_ms = now;
  in.containers = {{"c1", "job-a", 1, "created", now - 1'000}};
  in.claims = {{"job-a", 1, "c1", false, 0}};
  CHECK(plan_recovery(in).to_string() ==
        "remove job=job-a container=c1 (never started: created)\n"
        "requeue job=job-a (container never started)\n");
}

TEST_CASE("recovery: containers of no claim are cleaned up after the grace", "[unit][recovery]") {
  RecoveryInput in;
  in.now_unix_ms = now;
  in.orphan_grace_ms = 60'000;
  in.containers = {
      {"c1", "done", 1, "exited", now - 1'000},
      {"c2", "lost", 1, "running", now - 120'000},
      {"c3", "young", 1, "running", now - 1'000},
      {"c4", "elsewhere", 1, "exited", now - 90'000},
      {"c5", "handed-back", 1, "running", now - 120'000},
  };
  in.other_jobs = {{"done", "succeeded"}, {"elsewhere", "running"}, {"handed-back", "queued"}};
  CHECK(plan_recovery(in).to_string() ==
        "remove job=done container=c1 (job already succeeded)\n"
        "remove job=elsewhere container=c4 (orphan: job running elsewhere)\n"
        "keep job=handed-back container=c5 (job queued: its next claim adopts this container)\n"
        "remove job=lost container=c2 (orphan: no job record)\n"
        "keep job=young container=c3 (orphan within grace period)\n");
}

TEST_CASE("recovery: nothing observed, nothing to do", "[unit][recovery]") {
  CHECK(plan_recovery(RecoveryInput{}).steps.empty());
}
