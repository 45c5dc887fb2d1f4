// warmstart: the router daemon and its command-line client. The flags are
// parsed by cli/parse.cpp; the subcommands live in cli/commands.hpp.
#include "cli/commands.hpp"
#include "cli/parse.hpp"

#include <cstdlib>
#include <iostream>

using namespace warmstart;

namespace {

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : std::move(fallback);
}

int run(const cli::Invocation& inv) {
  const cli::Common& common = inv.common;
  switch (inv.command) {
    case cli::Command::router: {
      const cli::RouterFlags& f = inv.router;
      router::RouterConfig config;
      if (!f.config_file.empty()) router::load_config_file(f.config_file, config);
      router::apply_environment(config);
      if (f.redis) config.redis_url = *f.redis;
      if (f.docker_host) config.docker_host = *f.docker_host;
      if (f.base_image) config.base_image = *f.base_image;
      if (f.concurrency) config.concurrency = *f.concurrency;
      if (f.listen) config.listen = *f.listen;
      if (f.router_id) config.router_id = *f.router_id;
      if (!f.queues.empty()) config.queues = f.queues;
      router::validate(config);
      return cli::run_router(f.config_file, config);
    }
    case cli::Command::enqueue:
      return cli::run_enqueue(common, inv.enqueue);
    case cli::Command::prewarm: {
      cli::EnqueueOptions prewarm = inv.enqueue;
      prewarm.prewarm = true;
      return cli::run_enqueue(common, prewarm);
    }
    case cli::Command::status:
      return cli::run_status(common, inv.job_id, inv.json);
    case cli::Command::wait:
      return cli::run_wait(common, inv.job_id, inv.timeout);
    case cli::Command::logs:
      return cli::run_logs(common, inv.job_id);
    case cli::Command::cancel:
      return cli::run_cancel(common, inv.job_id);
    case cli::Command::jobs:
      return cli::run_jobs(common, inv.state, inv.json);
    case cli::Command::snapshots_list:
      return cli::run_snapshots_list(common, inv.json);
    case cli::Command::snapshots_rm:
      return cli::run_snapshots_rm(common, inv.snapshot_key);
    case cli::Command::snapshots_gc:
      return cli::run_snapshots_gc(common);
    case cli::Command::events:
      return cli::run_events(common, inv.follow, inv.json);
    case cli::Command::routers:
      return cli::run_routers(common, inv.json);
  }
  return cli::usage;
}

}  // namespace

int main(int argc, char** argv) {
  cli::Common defaults;
  defaults.redis_url = env_or("WARMSTART_REDIS_URL", "redis://127.0.0.1:6379/0");
  defaults.docker_host = env_or("WARMSTART_DOCKER_HOST", "unix:///var/run/docker.sock");
  defaults.key_prefix = env_or("WARMSTART_KEY_PREFIX", "ws:");
  defaults.host_id = env_or("WARMSTART_HOST_ID", "");

  const cli::ParseOutcome parsed = cli::parse_command_line(argc, argv, defaults);
  if (!parsed.invocation) {
    std::cout << parsed.output;
    if (!parsed.error.empty()) std::cerr << "warmstart: " << parsed.error << "\n";
    return parsed.exit_code;
  }
  try {
    return run(*parsed.invocation);
  } catch (const std::invalid_argument& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return cli::usage;
  }
}
