#include "cli/services.hpp"

#include "common/log.hpp"

#include <iostream>

namespace warmstart::cli {

redis::ClientOptions redis_options(const std::string& url) {
  redis::ClientOptions o;
  o.url = redis::Url::parse(url);  // throws std::invalid_argument -> exit 2
  if (o.url.tls) {
    throw std::invalid_argument("TLS (rediss://) is not supported: hiredis 0.14 has no TLS");
  }
  return o;
}

queue::RedisQueueOptions queue_options(const router::RouterConfig& config) {
  queue::RedisQueueOptions o;
  o.redis = redis_options(config.redis_url);
  o.key_prefix = config.key_prefix;
  o.queues = config.queues;
  o.lease_timeout = config.lease_timeout;
  o.log_tail_max_bytes = config.log_tail_bytes;
  // Enqueue (API, CLI) and claim hold jobs to the ceilings.
  o.validation.limits = config.job_limits;
  return o;
}

snapshots::SnapshotCacheOptions snapshot_options(const router::RouterConfig& config) {
  snapshots::SnapshotCacheOptions o;
  o.registry.key_prefix = config.key_prefix + "snapshots:";
  o.depth.max_layer_depth = static_cast<std::size_t>(config.snapshot_max_depth);
  o.eviction.ttl = std::chrono::duration_cast<std::chrono::milliseconds>(config.snapshot_ttl);
  o.eviction.max_count = static_cast<std::size_t>(config.snapshot_max_count);
  o.eviction.max_bytes = config.snapshot_max_bytes;
  o.work_dir = config.snapshot_work_dir;
  return o;
}

int report_error(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::invalid_argument& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return usage;
  } catch (const queue::InvalidJob& e) {
    std::cerr << "warmstart: invalid job: " << e.what() << "\n";
    return usage;
  } catch (const redis::ConnectionError& e) {
    std::cerr << "warmstart: cannot reach Redis: " << e.what() << "\n";
    return unreachable;
  } catch (const container::TransportError& e) {
    std::cerr << "warmstart: cannot reach Docker: " << e.what() << "\n";
    return unreachable;
  } catch (const DeadlineExceeded& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return unreachable;
  } catch (const std::exception& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return failed;
  }
}

int run_command(net::io_context& io, std::function<awaitable<int>()> body) {
  int code = failed;
  net::co_spawn(io, body(), [&](std::exception_ptr e, int result) {
    code = e ? report_error(e) : result;
    io.stop();
  });
  io.run();
  return code;
}

}  // namespace warmstart::cli
