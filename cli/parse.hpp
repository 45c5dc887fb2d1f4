// The command line of `warmstart` (DESIGN.md "CLI") parsed into what to run,
// without running it: main.cpp dispatches, cli_test.cpp checks every
// documented form without Redis or Docker.
#pragma once
#include "cli/commands.hpp"

#include <optional>
#include <string>
#include <vector>

namespace warmstart::cli {

enum class Command {
  router,
  enqueue,
  prewarm,
  status,
  wait,
  logs,
  cancel,
  jobs,
  snapshots_list,
  snapshots_rm,
  snapshots_gc,
  events,
  routers,
};

// `warmstart router` flags; unset ones leave the config file's value.
struct RouterFlags {
  std::string config_file;
  std::optional<std::string> redis, docker_host, base_image, listen, router_id;
  std::optional<int> concurrency;
  std::vector<std::string> queues;  // --queue, once per queue
};

struct Invocation {
  Command command = Command::status;
  Common common;  // --redis (and --docker-host for snapshots) over the environment's defaults
  RouterFlags router;
  EnqueueOptions enqueue;
  std::string job_id;                // status, wait, logs, cancel
  std::string timeout = "10m";       // wait --timeout
  bool json = false;                 // status, jobs, snapshots list, events, routers
  bool follow = false;               // events
  std::optional<std::string> state;  // jobs --state
  std::string snapshot_key;          // snapshots rm
};

struct ParseOutcome {
  std::optional<Invocation> invocation;  // set when there is something to run
  int exit_code = ok;                    // otherwise: 0 after --help/--version, 2 on bad usage
  std::string output;                    // help or version text (stdout)
  std::string error;                     // one line (stderr), without the "warmstart: " prefix
};

// `defaults` carries the environment's values (WARMSTART_REDIS_URL, ...).
ParseOutcome parse_command_line(int argc, const char* const* argv, const Common& defaults);

}  // namespace warmstart::cli
