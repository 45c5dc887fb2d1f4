// Connections the subcommands share: the job queue on Redis and, for the
// snapshot commands, the Docker engine and the snapshot cache.
#pragma once
#include "cli/commands.hpp"
#include "common/net.hpp"
#include "common/redis.hpp"
#include "container/docker_client.hpp"
#include "queue/redis_queue.hpp"
#include "router/config.hpp"
#include "router/wiring.hpp"
#include "snapshots/snapshot_cache.hpp"

#include <exception>
#include <memory>
#include <optional>
#include <string>

namespace warmstart::cli {

using router::docker_options;
using router::queue_options;
using router::redis_options;
using router::snapshot_options;

// Maps an exception from a subcommand to its exit code and prints one line.
int report_error(std::exception_ptr error);

// Runs a coroutine to completion on `io` and returns its exit code; errors are
// reported through report_error().
int run_command(net::io_context& io, std::function<awaitable<int>()> body);

}  // namespace warmstart::cli
