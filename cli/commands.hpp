// The warmstart subcommands. main.cpp parses flags into these option structs;
// each run_* returns the process exit code (see ExitCode).
#pragma once
#include "common/net.hpp"
#include "router/config.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::cli {

enum ExitCode : int {
  ok = 0,
  failed = 1,       // job or operation failed
  usage = 2,        // usage or bad input (one-line reason on stderr)
  unreachable = 3,  // cannot reach Redis or Docker
};

struct Common {
  std::string redis_url;    // --redis / WARMSTART_REDIS_URL
  std::string docker_host;  // --docker-host / WARMSTART_DOCKER_HOST (snapshots only)
  // --host-id / WARMSTART_HOST_ID (snapshots only): the router's [router]
  // host_id, the snapshot namespace; empty = the engine's ID.
  std::string host_id;
  std::string key_prefix = "ws:";
  // How long a command rides out a Redis that does not answer (restart, AOF
  // loading, failover) before it gives up with exit 3; `wait` uses its --timeout.
  Duration redis_timeout = std::chrono::seconds(30);
};

struct EnqueueOptions {
  std::optional<std::string> id;
  std::string queue = "default";
  std::optional<std::string> image;
  std::optional<std::string> snapshot_key;
  bool no_reuse = false;
  bool no_commit = false;
  std::optional<std::string> timeout;  // "30m"
  std::optional<int> max_attempts;
  std::optional<std::string> concurrency_key;
  std::vector<std::string> env;       // K=V
  std::optional<std::string> memory;  // "512m"
  std::optional<double> cpus;
  std::optional<int> pids;
  std::vector<std::string> cmd;
  bool prewarm = false;  // `warmstart prewarm`: a builder job of --snapshot-key
};

int run_router(const std::string& config_file, router::RouterConfig config);
int run_enqueue(const Common& common, const EnqueueOptions& options);
int run_status(const Common& common, const std::string& job_id, bool json);
int run_wait(const Common& common, const std::string& job_id, const std::string& timeout);
int run_logs(const Common& common, const std::string& job_id);
int run_cancel(const Common& common, const std::string& job_id);
int run_jobs(const Common& common, const std::optional<std::string>& state, bool json);
// The fleet: one line per router (or a JSON array), lost ones included.
int run_routers(const Common& common, bool json);
int run_snapshots_list(const Common& common, bool json);
int run_snapshots_rm(const Common& common, const std::string& key);
int run_snapshots_gc(const Common& common);
int run_events(const Common& common, bool follow, bool json);

}  // namespace warmstart::cli
