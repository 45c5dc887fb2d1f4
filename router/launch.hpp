// What the router asks the engine for: a pure mapping from a job attempt to a
// container spec with warmstart's labels, worker environment and secure defaults.
#pragma once
#include "container/runtime.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::router {

// What every job container gets whatever the job asks ([limits] in the router
// config): a bounded json-file log and an open-files limit.
struct ContainerCaps {
  std::string log_max_size = "10m";  // json-file max-size (Docker's size syntax)
  int log_max_files = 3;             // json-file max-file: rotated files kept
  // RLIMIT_NOFILE, soft = hard. Must not exceed the engine's own hard limit
  // (runc cannot raise it without CAP_SYS_RESOURCE: the container fails to start).
  std::int64_t nofile = 16384;
  bool operator==(const ContainerCaps&) const = default;
};

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
  container::Resources resources;          // memory_swap_bytes is set to memory_bytes (no swap)
  std::string network_mode = "none";
  ContainerCaps caps;
};

// Container name: unique per job attempt, so a second create for the same
// attempt answers 409 instead of starting a duplicate. Injective: job ids are
// [A-Za-z0-9._:-], names [a-zA-Z0-9_.-]; '_' is written "__" and ':' "_c".
std::string container_name(const std::string& job_id, int attempt);

container::ContainerSpec make_container_spec(const LaunchRequest& request);

}  // namespace warmstart::router
