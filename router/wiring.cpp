#include "router/wiring.hpp"

#include <algorithm>

namespace warmstart::router {

redis::ClientOptions redis_options(const std::string& url) {
  redis::ClientOptions o;
  o.url = redis::Url::parse(url);  // throws std::invalid_argument -> exit 2
  if (o.url.tls) {
    throw std::invalid_argument(
        "TLS (rediss://) is not supported: Debian 12's hiredis (0.14) has no TLS; reach Redis "
        "over loopback or a private link, or through a local TLS tunnel (e.g. stunnel) with "
        "redis://127.0.0.1:<port>");
  }
  return o;
}

queue::RedisQueueOptions queue_options(const RouterConfig& config) {
  queue::RedisQueueOptions o;
  o.redis = redis_options(config.redis_url);
  o.key_prefix = config.key_prefix;
  o.queues = config.queues;
  o.lease_timeout = config.lease_timeout;
  o.affinity_wait = config.affinity_wait;
  o.concurrency_key_limit = config.concurrency_key_limit;
  o.log_tail_max_bytes = config.log_tail_bytes;
  o.replicas_ack = config.redis_replicas_ack;
  o.replicas_timeout = config.redis_replicas_timeout;
  // Enqueue (API, CLI) and claim hold jobs to the ceilings.
  o.validation.limits = config.job_limits;
  return o;
}

snapshots::SnapshotCacheOptions snapshot_options(const RouterConfig& config) {
  snapshots::SnapshotCacheOptions o;
  o.registry.key_prefix = config.key_prefix + "snapshots:";
  o.host_id = config.host_id;
  o.eviction.ttl = std::chrono::duration_cast<std::chrono::milliseconds>(config.snapshot_ttl);
  o.eviction.max_count = static_cast<std::size_t>(config.snapshot_max_count);
  o.eviction.max_bytes = config.snapshot_max_bytes;
  o.work_dir = config.snapshot_work_dir;
  if (config.snapshot_exclude) o.filter.exclude = *config.snapshot_exclude;
  o.filter.strip_git_credentials = config.snapshot_strip_git_credentials;
  return o;
}

container::DockerClientOptions docker_options(const RouterConfig& config) {
  container::DockerClientOptions o;
  o.socket_path = docker_socket_path(config.docker_host);
  o.request_timeout = config.docker_timeout;
  // One idle connection per job that may call the engine at once (plus the
  // events stream and housekeeping): beyond the cache, every concurrent request
  // opens and closes a unix-socket connection (bench/RESULTS.md, load_bench).
  o.max_cached_connections =
      std::max<long>(o.max_cached_connections, static_cast<long>(config.concurrency) + 8);
  return o;
}

}  // namespace warmstart::router
