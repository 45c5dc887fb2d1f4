// What the router asks the engine for: a pure mapping from a job attempt to a
// container spec with warmstart's labels, worker environment and secure defaults.
#pragma once
#include "container/runtime.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::router {

struct LaunchRequest {
  std::string router_id;
  std::string job_id;
  int attempt = 1;
  std::string image;               // snapshot image or base image
  bool from_snapshot = false;      // WARMSTART_SNAPSHOT_REUSE=1
  std::string snapshot_key;        // "" when the job has none
  bool commit_on_success = false;  // WARMSTART_SNAPSHOT_COMMIT=1
  std::vector<std::string> cmd;
  std::map<std::string, std::string> env;  // the job's own env
  container::Resources resources;
  std::string network_mode = "none";
};

// Container name: unique per job attempt, so a second create for the same
// attempt answers 409 instead of starting a duplicate.
std::string container_name(const std::string& job_id, int attempt);

container::ContainerSpec make_container_spec(const LaunchRequest& request);

}  // namespace warmstart::router
