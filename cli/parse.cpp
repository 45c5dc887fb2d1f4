#include "cli/parse.hpp"

#include <CLI/CLI.hpp>

#include <sstream>

namespace warmstart::cli {
namespace {

// One value per occurrence, repeatable: a multi-value option would swallow
// "--" and the command after it ("--env A=1 -- sh -c 'exit 0'").
CLI::Option* repeatable(CLI::Option* option) {
  // expected(1) alone keeps a vector option's allow_extra_args (CLI11 2.1).
  return option->expected(1)->allow_extra_args(false)->multi_option_policy(
      CLI::MultiOptionPolicy::TakeAll);
}

// "--env --" would take "--" as the value: refuse anything but K=V here.
std::string env_pair_problem(const std::string& value) {
  const auto eq = value.find('=');
  if (eq == std::string::npos || eq == 0) return "expected K=V, got \"" + value + "\"";
  return {};
}

}  // namespace

ParseOutcome parse_command_line(int argc, const char* const* argv, const Common& defaults) {
  CLI::App app{"warmstart: a job router for container workloads"};
  app.set_version_flag("--version", "warmstart 0.1.0");
  app.require_subcommand(1);

  Invocation inv;
  inv.common = defaults;
  auto add_redis = [&](CLI::App* sub) {
    sub->add_option("--redis", inv.common.redis_url, "Redis URL (env WARMSTART_REDIS_URL)");
  };

  RouterFlags& r = inv.router;
  auto* router_cmd = app.add_subcommand("router", "run the router daemon");
  router_cmd->add_option("--config", r.config_file, "TOML configuration file");
  router_cmd->add_option("--redis", r.redis, "Redis URL (env WARMSTART_REDIS_URL)");
  router_cmd->add_option("--docker-host", r.docker_host, "unix:///var/run/docker.sock");
  router_cmd->add_option("--base-image", r.base_image, "worker base image");
  router_cmd->add_option("--concurrency", r.concurrency, "containers running at once");
  router_cmd->add_option("--listen", r.listen, "HTTP address (127.0.0.1:8080); empty: none");
  router_cmd->add_option("--router-id", r.router_id,
                         "stable id of this router (default: host name)");
  repeatable(router_cmd->add_option("--queue", r.queues, "queue to serve (repeatable)"));

  EnqueueOptions& eo = inv.enqueue;
  // enqueue and prewarm share the job's options (only one of them parses).
  auto job_options = [&](CLI::App* sub) {
    add_redis(sub);
    sub->add_option("--id", eo.id, "idempotency key [A-Za-z0-9._:-]{1,128}");
    sub->add_option("--queue", eo.queue, "queue name");
    sub->add_option("--image", eo.image, "image (must match the router's allowlist)");
    sub->add_option("--timeout", eo.timeout, "e.g. 30m");
    sub->add_option("--max-attempts", eo.max_attempts, "attempts before failing");
    sub->add_option("--concurrency-key", eo.concurrency_key, "jobs sharing it run one at a time");
    repeatable(sub->add_option("--env", eo.env, "K=V (repeatable, one per --env)"))
        ->check(std::function<std::string(const std::string&)>(env_pair_problem), "K=V");
    sub->add_option("--memory", eo.memory, "memory limit, e.g. 512m");
    sub->add_option("--cpus", eo.cpus, "CPU limit, e.g. 1.5");
    sub->add_option("--pids", eo.pids, "process limit");
  };
  auto* enqueue = app.add_subcommand("enqueue", "enqueue a job; prints its id");
  job_options(enqueue);
  enqueue->add_option("--snapshot-key", eo.snapshot_key, "snapshot key");
  enqueue->add_flag("--no-reuse", eo.no_reuse, "do not start from the snapshot");
  enqueue->add_flag("--no-commit", eo.no_commit, "do not commit a snapshot on success");
  enqueue->add_option("cmd", eo.cmd, "-- CMD [ARG...]")->required();

  auto* prewarm = app.add_subcommand(
      "prewarm", "build a snapshot key's snapshot ahead of its jobs; prints the job id");
  job_options(prewarm);
  prewarm->add_option("--snapshot-key", eo.snapshot_key, "snapshot key")->required();
  prewarm->add_flag("--no-reuse", eo.no_reuse, "build from the base image, not the last snapshot");
  prewarm->add_option("cmd", eo.cmd, "-- SETUP [ARG...]")->required();

  auto* status = app.add_subcommand("status", "show a job");
  add_redis(status);
  status->add_option("job", inv.job_id)->required();
  status->add_flag("--json", inv.json, "the job record as JSON");

  auto* wait = app.add_subcommand("wait", "wait for a job to finish (exit 0 = succeeded)");
  add_redis(wait);
  wait->add_option("job", inv.job_id)->required();
  wait->add_option("--timeout", inv.timeout, "give up after this long (exit 1)");

  auto* logs = app.add_subcommand("logs", "print the tail of a job's output");
  add_redis(logs);
  logs->add_option("job", inv.job_id)->required();

  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  add_redis(cancel);
  cancel->add_option("job", inv.job_id)->required();

  auto* jobs = app.add_subcommand("jobs", "list jobs");
  add_redis(jobs);
  jobs->add_option("--state", inv.state,
                   "queued|scheduled|running|succeeded|failed|timed_out|cancelled");
  jobs->add_flag("--json", inv.json);

  auto* snapshots = app.add_subcommand("snapshots", "the snapshot cache of a Docker host");
  add_redis(snapshots);
  snapshots->add_option("--docker-host", inv.common.docker_host, "unix:///var/run/docker.sock");
  snapshots->add_option("--host-id", inv.common.host_id,
                        "the router's [router] host_id (default: the engine ID)");
  snapshots->require_subcommand(1);
  snapshots->fallthrough();  // --redis and --docker-host also after list|rm|gc
  auto* snap_list = snapshots->add_subcommand("list", "list snapshots");
  snap_list->add_flag("--json", inv.json);
  auto* snap_rm = snapshots->add_subcommand("rm", "invalidate a snapshot and delete its image");
  snap_rm->add_option("key", inv.snapshot_key)->required();
  auto* snap_gc = snapshots->add_subcommand("gc", "run eviction now");

  auto* events = app.add_subcommand("events", "print events (retained ones, then exit)");
  add_redis(events);
  events->add_flag("--follow", inv.follow, "keep printing new events");
  events->add_flag("--json", inv.json);

  auto* routers = app.add_subcommand("routers", "the routers on this Redis (the fleet)");
  add_redis(routers);
  routers->add_flag("--json", inv.json);

  ParseOutcome out;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help, --version
      std::ostringstream text, ignored;
      app.exit(e, text, ignored);
      out.output = text.str();
      out.exit_code = ok;
      return out;
    }
    out.error = e.what();
    out.exit_code = usage;
    return out;
  }

  const std::pair<CLI::App*, Command> commands[] = {
      {router_cmd, Command::router},
      {enqueue, Command::enqueue},
      {prewarm, Command::prewarm},
      {status, Command::status},
      {wait, Command::wait},
      {logs, Command::logs},
      {cancel, Command::cancel},
      {jobs, Command::jobs},
      {snap_list, Command::snapshots_list},
      {snap_rm, Command::snapshots_rm},
      {snap_gc, Command::snapshots_gc},
      {events, Command::events},
      {routers, Command::routers},
  };
  for (const auto& [sub, command] : commands) {
    if (sub->parsed()) {
      inv.command = command;
      out.invocation = std::move(inv);
      return out;
    }
  }
  out.error = "no subcommand";
  out.exit_code = usage;
  return out;
}

}  // namespace warmstart::cli
