// warmstart: the router daemon and its command-line client. Flag parsing only;
// the subcommands live in cli/commands.hpp.
#include "cli/commands.hpp"
#include "common/log.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

using namespace warmstart;

namespace {

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::move(fallback);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"warmstart: a job router for container workloads"};
  app.set_version_flag("--version", "warmstart 0.1.0");
  app.require_subcommand(1);

  cli::Common common;
  common.redis_url = env_or("WARMSTART_REDIS_URL", "redis://127.0.0.1:6379/0");
  common.docker_host = env_or("WARMSTART_DOCKER_HOST", "unix:///var/run/docker.sock");
  common.key_prefix = env_or("WARMSTART_KEY_PREFIX", "ws:");
  auto add_redis = [&](CLI::App* sub) {
    sub->add_option("--redis", common.redis_url, "Redis URL (env WARMSTART_REDIS_URL)");
  };

  // router
  router::RouterConfig config;
  std::string config_file;
  std::optional<std::string> r_redis, r_docker, r_base, r_listen, r_id;
  std::optional<int> r_concurrency;
  std::vector<std::string> r_queues;
  auto* router_cmd = app.add_subcommand("router", "run the router daemon");
  router_cmd->add_option("--config", config_file, "TOML configuration file");
  router_cmd->add_option("--redis", r_redis, "Redis URL (env WARMSTART_REDIS_URL)");
  router_cmd->add_option("--docker-host", r_docker, "unix:///var/run/docker.sock");
  router_cmd->add_option("--base-image", r_base, "worker base image");
  router_cmd->add_option("--concurrency", r_concurrency, "containers running at once");
  router_cmd->add_option("--listen", r_listen, "HTTP address (127.0.0.1:8080); empty: none");
  router_cmd->add_option("--router-id", r_id, "stable id of this router (default: host name)");
  router_cmd->add_option("--queue", r_queues, "queue to serve (repeatable)");

  // enqueue
  cli::EnqueueOptions eo;
  auto* enqueue = app.add_subcommand("enqueue", "enqueue a job; prints its id");
  add_redis(enqueue);
  enqueue->add_option("--id", eo.id, "idempotency key [A-Za-z0-9._:-]{1,128}");
  enqueue->add_option("--queue", eo.queue, "queue name");
  enqueue->add_option("--image", eo.image, "image (must match the router's allowlist)");
  enqueue->add_option("--snapshot-key", eo.snapshot_key, "snapshot key");
  enqueue->add_flag("--no-reuse", eo.no_reuse, "do not start from the snapshot");
  enqueue->add_flag("--no-commit", eo.no_commit, "do not commit a snapshot on success");
  enqueue->add_option("--timeout", eo.timeout, "e.g. 30m");
  enqueue->add_option("--max-attempts", eo.max_attempts, "attempts before failing");
  enqueue->add_option("--concurrency-key", eo.concurrency_key, "jobs sharing it run one at a time");
  enqueue->add_option("--env", eo.env, "K=V (repeatable)");
  enqueue->add_option("--memory", eo.memory, "memory limit, e.g. 512m");
  enqueue->add_option("--cpus", eo.cpus, "CPU limit, e.g. 1.5");
  enqueue->add_option("--pids", eo.pids, "process limit");
  enqueue->add_option("cmd", eo.cmd, "-- CMD [ARG...]")->required();

  std::string job_id, timeout = "10m";
  bool json = false, follow = false;
  std::optional<std::string> state;

  auto* status = app.add_subcommand("status", "show a job");
  add_redis(status);
  status->add_option("job", job_id)->required();
  status->add_flag("--json", json, "the job record as JSON");

  auto* wait = app.add_subcommand("wait", "wait for a job to finish (exit 0 = succeeded)");
  add_redis(wait);
  wait->add_option("job", job_id)->required();
  wait->add_option("--timeout", timeout, "give up after this long (exit 1)");

  auto* logs = app.add_subcommand("logs", "print the tail of a job's output");
  add_redis(logs);
  logs->add_option("job", job_id)->required();

  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  add_redis(cancel);
  cancel->add_option("job", job_id)->required();

  auto* jobs = app.add_subcommand("jobs", "list jobs");
  add_redis(jobs);
  jobs->add_option("--state", state,
                   "queued|scheduled|running|succeeded|failed|timed_out|cancelled");
  jobs->add_flag("--json", json);

  std::string snapshot_key;
  auto* snapshots = app.add_subcommand("snapshots", "the snapshot cache of a Docker host");
  add_redis(snapshots);
  snapshots->add_option("--docker-host", common.docker_host, "unix:///var/run/docker.sock");
  snapshots->require_subcommand(1);
  snapshots->fallthrough();  // --redis and --docker-host also after list|rm|gc
  auto* snap_list = snapshots->add_subcommand("list", "list snapshots");
  snap_list->add_flag("--json", json);
  auto* snap_rm = snapshots->add_subcommand("rm", "invalidate a snapshot and delete its image");
  snap_rm->add_option("key", snapshot_key)->required();
  auto* snap_gc = snapshots->add_subcommand("gc", "run eviction now");

  auto* events = app.add_subcommand("events", "print events (retained ones, then exit)");
  add_redis(events);
  events->add_flag("--follow", follow, "keep printing new events");
  events->add_flag("--json", json);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "warmstart: " << e.what() << "\n";
    return cli::usage;
  }

  try {
    if (router_cmd->parsed()) {
      if (!config_file.empty()) router::load_config_file(config_file, config);
      router::apply_environment(config);
      if (r_redis) config.redis_url = *r_redis;
      if (r_docker) config.docker_host = *r_docker;
      if (r_base) config.base_image = *r_base;
      if (r_concurrency) config.concurrency = *r_concurrency;
      if (r_listen) config.listen = *r_listen;
      if (r_id) config.router_id = *r_id;
      if (!r_queues.empty()) config.queues = r_queues;
      router::validate(config);
      return cli::run_router(config_file, config);
    }
    if (enqueue->parsed()) return cli::run_enqueue(common, eo);
    if (status->parsed()) return cli::run_status(common, job_id, json);
    if (wait->parsed()) return cli::run_wait(common, job_id, timeout);
    if (logs->parsed()) return cli::run_logs(common, job_id);
    if (cancel->parsed()) return cli::run_cancel(common, job_id);
    if (jobs->parsed()) return cli::run_jobs(common, state, json);
    if (snap_list->parsed()) return cli::run_snapshots_list(common, json);
    if (snap_rm->parsed()) return cli::run_snapshots_rm(common, snapshot_key);
    if (snap_gc->parsed()) return cli::run_snapshots_gc(common);
    if (events->parsed()) return cli::run_events(common, follow, json);
  } catch (const std::invalid_argument& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return cli::usage;
  }
  return cli::usage;
}
