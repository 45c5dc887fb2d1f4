#include "router/launch.hpp"

namespace warmstart::router {

std::string container_name(const std::string& job_id, int attempt) {
  std::string name = "warmstart-";
  for (char c : job_id) {
    if (c == '_') {
      name += "__";
    } else if (c == ':') {
      name += "_c";
    } else {
      name += c;
    }
  }
  return name + "-" + std::to_string(attempt);
}

container::ContainerSpec make_container_spec(const LaunchRequest& r) {
  container::ContainerSpec spec;
  spec.name = container_name(r.job_id, r.attempt);
  spec.image = r.image;
  spec.cmd = r.cmd;
  // The job's env first; warmstart's own variables win over a job that sets them.
  std::map<std::string, std::string> env = r.env;
  env["WARMSTART_JOB_ID"] = r.job_id;
  env["WARMSTART_ATTEMPT"] = std::to_string(r.attempt);
  env.erase("WARMSTART_SNAPSHOT_KEY");
  env.erase("WARMSTART_SNAPSHOT_REUSE");
  env.erase("WARMSTART_SNAPSHOT_COMMIT");
  if (!r.snapshot_key.empty()) {
    env["WARMSTART_SNAPSHOT_KEY"] = r.snapshot_key;
    if (r.from_snapshot) env["WARMSTART_SNAPSHOT_REUSE"] = "1";
    if (r.commit_on_success) env["WARMSTART_SNAPSHOT_COMMIT"] = "1";
  }
  for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);

  spec.labels = {
      {"warmstart.managed", "true"},
      {"warmstart.job", r.job_id},
      {"warmstart.router", r.router_id},
      {"warmstart.attempt", std::to_string(r.attempt)},
  };
  if (!r.snapshot_key.empty()) spec.labels["warmstart.snapshot.key"] = r.snapshot_key;

  spec.resources = r.resources;
  // Memory is the whole budget: swap would let a job exceed it by the host's swap.
  spec.resources.memory_swap_bytes = r.resources.memory_bytes;
  spec.log.type = "json-file";
  spec.log.options = {{"max-size", r.caps.log_max_size},
                      {"max-file", std::to_string(r.caps.log_max_files)}};
  spec.ulimits = {{"nofile", r.caps.nofile, r.caps.nofile}};
  spec.network_mode = r.network_mode;
  spec.cap_drop = {"ALL"};
  spec.security_opt = {"no-new-privileges"};
  return spec;
}

}  // namespace warmstart::router
