// From RouterConfig to the options of the parts the router is built from:
// the one place a configuration key reaches the component it changes
// (wiring_test.cpp checks every documented key lands where it must).
#pragma once
#include "common/redis.hpp"
#include "container/docker_client.hpp"
#include "queue/redis_queue.hpp"
#include "router/config.hpp"
#include "snapshots/snapshot_cache.hpp"

#include <string>

namespace warmstart::router {

// Throws std::invalid_argument for a malformed URL or rediss:// (no TLS in hiredis 0.14).
redis::ClientOptions redis_options(const std::string& url);
queue::RedisQueueOptions queue_options(const RouterConfig& config);
snapshots::SnapshotCacheOptions snapshot_options(const RouterConfig& config);
container::DockerClientOptions docker_options(const RouterConfig& config);

}  // namespace warmstart::router
