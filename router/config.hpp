// Router configuration: defaults < TOML file (--config) < environment < flags.
// Every default is written next to its field.
#pragma once
#include "common/net.hpp"
#include "queue/validation.hpp"
#include "router/launch.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::router {

struct RouterConfig {
  std::string redis_url = "redis://127.0.0.1:6379/0";       // WARMSTART_REDIS_URL
  std::string docker_host = "unix:///var/run/docker.sock";  // WARMSTART_DOCKER_HOST
  std::string router_id;  // default: the host name (stable across restarts)
  // The Docker host's identity: its snapshot namespace in Redis, and what the
  // start-up check refuses when a live router of another engine claims it.
  std::string host_id;                                 // default: the engine ID (docker info)
  std::vector<std::string> queues = {"default"};       // queues this router claims from
  std::string base_image = "warmstart-worker:latest";  // image when a job names none
  // Images a job may ask for (globs, '*' and '?'). The base image is always allowed.
  std::vector<std::string> image_allowlist;
  int concurrency = 4;                    // containers running at once
  int concurrency_key_limit = 1;          // jobs sharing a concurrency_key running at once,
                                          // fleet-wide: every router on a Redis needs the same
  std::string network_mode = "none";      // NetworkMode of job containers ("host" is refused)
  std::string listen = "127.0.0.1:8080";  // HTTP front; empty disables it
  std::string key_prefix = "ws:";         // Redis key namespace
  // Where the router keeps its own files (the generated API token). Empty =
  // default_state_dir(). WARMSTART_STATE_DIR overrides the file.
  std::string state_dir;

  // [redis] replicas_ack: enqueue and job results wait (WAIT) until this many
  // replicas have them, and report failure when they do not within
  // replicas_timeout, so an acknowledged write survives a failover. 0 = off.
  // WARMSTART_REDIS_REPLICAS_ACK overrides (the CLI reads it too).
  int redis_replicas_ack = 0;
  Duration redis_replicas_timeout = 1s;

  Duration lease_timeout = 30s;  // a dead router's jobs are reclaimed after this
  // Snapshot affinity (docs/fleet.md): a job whose snapshot another live host
  // holds waits this long for that host before any router may run it; 0
  // turns affinity off (no hints written, routed jobs released at once).
  Duration affinity_wait = 10s;
  Duration stop_grace = 10s;         // SIGTERM -> SIGKILL on timeout and cancel
  Duration default_timeout = 30min;  // per job, when the job sets none
  Duration drain_deadline = 0s;      // on SIGTERM: 0 = leave jobs running, re-attach later
  Duration reconcile_interval = 5s;  // batched container list catching missed events
  Duration orphan_grace = 60s;       // managed containers of no job are removed after this
  Duration docker_timeout = 30s;     // per Docker API call
  // Container creates and starts in flight at once: the rest wait their turn
  // (their docker_timeout runs from their own call, not from the wait).
  int start_concurrency = 8;
  std::size_t log_tail_bytes = 64 * 1024;  // [limits] log_tail: log tail kept in the job record

  // [limits]: operator ceilings. A job asking for more is refused (API 400,
  // CLI exit 2, or failed at claim when it was written to Redis directly).
  queue::JobLimits job_limits;   // memory, cpus, pids, timeout
  ContainerCaps container_caps;  // json-file log cap and nofile of every container

  // Snapshot cache.
  Duration snapshot_ttl = 24h;                   // unused snapshots expire after this
  int snapshot_max_count = 100;                  // per engine
  std::int64_t snapshot_max_bytes = 20LL << 30;  // per engine
  Duration snapshot_gc_interval = 10min;         // periodic eviction
  // Single-flight cold starts: how long a job waits for another job's build of
  // its key's first snapshot before it starts cold anyway (0: never waits).
  Duration snapshot_coalesce_wait = 5min;
  std::string snapshot_work_dir = "/var/tmp/warmstart";  // leftover temp tars swept at start
  // Paths (globs) never kept in a snapshot; nullopt = the documented default
  // list (snapshots::default_snapshot_exclude(), docs/snapshots.md).
  std::optional<std::vector<std::string>> snapshot_exclude;
  bool snapshot_strip_git_credentials = true;  // tokens in */.git/config remote URLs

  std::string log_level = "info";
};

// The fleet view (docs/fleet.md): a router writes its record every
// heartbeat_period (lease_timeout / 3, 100 ms..5 s), so a live router never
// looks lost; a silent one shows as lost after lease_timeout and is forgotten
// after fleet_keep (10 x lease_timeout, at least 5 min).
Duration heartbeat_period(const RouterConfig& config);
Duration fleet_keep(const RouterConfig& config);

// /var/lib/warmstart for root; otherwise $XDG_STATE_HOME/warmstart, else
// $HOME/.local/state/warmstart. Throws std::invalid_argument when none applies.
std::string default_state_dir();

// Reads a TOML file into `config` (fields absent from the file keep their value).
// Throws std::invalid_argument naming the file, key and reason.
void load_config_file(const std::string& path, RouterConfig& config);
// Applies WARMSTART_* environment variables.
void apply_environment(RouterConfig& config);
// WARMSTART_REDIS_REPLICAS_ACK alone (the CLI's commands honour it too).
void apply_replicas_ack_environment(RouterConfig& config);
// Checks ranges and combinations; throws std::invalid_argument with the reason.
void validate(const RouterConfig& config);

// "unix:///path" or "/path" -> "/path". Throws std::invalid_argument otherwise
// (tcp:// is not supported: the engine is reached over its unix socket).
std::string docker_socket_path(const std::string& docker_host);

}  // namespace warmstart::router
