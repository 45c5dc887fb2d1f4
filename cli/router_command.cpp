// `warmstart router`: wires Redis, the Docker engine, the snapshot cache, the
// dispatcher and the HTTP front onto one io_context, handles signals (first
// SIGTERM drains, the second exits at once) and tells systemd when it is ready.
#include "api/config.hpp"
#include "api/http_server.hpp"
#include "api/metrics.hpp"
#include "cli/commands.hpp"
#include "cli/services.hpp"
#include "cli/version.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "router/api_backend.hpp"
#include "router/dispatcher.hpp"

#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iostream>

namespace warmstart::cli {
namespace {

using nlohmann::json;

constexpr Duration metrics_period = 2s;   // gauges from Redis and the router's stats
constexpr Duration http_stop_grace = 3s;  // in-flight requests finishing at exit

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "router";
  return buf;
}

// [api] and [webhooks.*] of the same file, the listen address from the router's
// config, the token from WARMSTART_API_TOKEN, [api] token_file or the state
// directory (generated there at first start). Throws std::invalid_argument
// (exit 2) for options that cannot be served safely.
api::ServerOptions http_options(const std::string& config_file,
                                const router::RouterConfig& config) {
  api::ServerOptions options;
  if (config_file.empty()) {
    api::load_api_config(toml::table{}, options);
  } else {
    api::load_api_config_file(config_file, options);
  }
  options.listen = config.listen;
  if (options.listen.empty()) return options;  // no HTTP front
  if (options.auth == api::AuthMode::token) {
    const std::string state_dir =
        config.state_dir.empty() ? router::default_state_dir() : config.state_dir;
    std::optional<std::string> path;
    try {
      path = api::ensure_api_token(options, state_dir);
    } catch (const std::runtime_error& e) {
      throw std::invalid_argument(std::string("api token: ") + e.what());
    }
    // Where the token is, never what it is.
    if (path) log::info("api token file (send it as Authorization: Bearer)", {{"path", *path}});
  } else {
    log::warn("api auth is off ([api] auth = \"none\"): loopback callers need no token",
              {{"listen", options.listen}});
  }
  api::validate_server_options(options);
  return options;
}

// Every connection, event stream and engine request is a descriptor: take the
// hard limit, so the connection caps (not EMFILE) decide who is refused.
void raise_open_file_limit(const api::ServerOptions& options, int concurrency) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = before;
  }
  const auto needed = static_cast<rlim_t>(options.max_connections + options.max_event_streams +
                                          4 * static_cast<std::size_t>(concurrency) + 64);
  json fields = {{"before", before}, {"now", limit.rlim_cur}, {"needed", needed}};
  if (limit.rlim_cur < needed) {
    log::warn("open file limit below what the connection caps need", fields);
  } else {
    log::debug("open file limit", fields);
  }
}

// Prometheus counters only go up: add what a cumulative source gained.
// Adds what a cumulative count gained since `last` to `counter`, in the
// counter's unit: `scale` units per count (e.g. 0.001 for ms counted into s).
void advance(prometheus::Counter& counter, std::uint64_t now, std::uint64_t& last,
             double scale = 1.0) {
  if (now > last) counter.Increment(static_cast<double>(now - last) * scale);
  last = now;
}

void hook_router_metrics(router::Dispatcher& router, api::Metrics& metrics) {
  auto& observers = router.observers();
  observers.dispatch_latency = [&metrics](double s) { metrics.dispatch_latency().Observe(s); };
  observers.create_latency = [&metrics](double s) {
    metrics.container_create_latency().Observe(s);
  };
  observers.start_latency = [&metrics](double s) { metrics.container_start_latency().Observe(s); };
}

// Every `period`: jobs by state and queue depth from Redis, running containers
// and fallbacks from the router, the snapshot cache's counters; and a point of
// the dashboard's history every History::interval_ms().
awaitable<void> publish_metrics(std::shared_ptr<queue::Queue> queue,
                                std::shared_ptr<router::Dispatcher> router,
                                std::shared_ptr<snapshots::SnapshotCache> cache,
                                api::Metrics& metrics, Duration period) {
  snapshots::CacheMetrics last;
  std::uint64_t last_fallbacks = 0;
  std::uint64_t last_handed_back = 0;
  std::uint64_t last_claim_creates = 0;
  std::uint64_t last_claim_creates_unused = 0;
  std::uint64_t last_coalesced = 0;
  std::uint64_t last_affinity_hits = 0;
  std::uint64_t last_affinity_misses = 0;
  std::uint64_t last_warm = 0;
  std::uint64_t last_cold = 0;
  std::uint64_t last_fallback_starts = 0;
  std::uint64_t last_saved_ms = 0;
  const Duration history_interval{metrics.history().interval_ms()};
  auto next_history = Clock::now();
  bool failing = false;
  for (;;) {
    std::optional<queue::QueueCounts> counts;
    std::string error;
    try {
      counts = co_await queue->counts();
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (counts) {
      for (const auto& [state, n] : counts->by_state) {
        metrics.jobs(queue::to_string(state)).Set(static_cast<double>(n));
      }
      std::int64_t depth = 0;
      for (const auto& [name, n] : counts->depth) depth += n;
      metrics.queue_depth().Set(static_cast<double>(depth));
      if (failing) log::info("metrics: queue counts readable again");
    } else if (!failing) {
      log::warn("metrics: queue counts unavailable", {{"error", error}});
    }
    failing = !counts;

    const router::RouterStats stats = router->stats();
    metrics.running_containers().Set(stats.running);
    metrics.engine_up().Set(stats.engine_up ? 1 : 0);
    advance(metrics.snapshot_fallbacks(), stats.snapshot_fallbacks, last_fallbacks);
    advance(metrics.jobs_handed_back(), stats.handed_back, last_handed_back);
    advance(metrics.claim_creates(), stats.precreated, last_claim_creates);
    advance(metrics.claim_creates_unused(), stats.precreated_unused, last_claim_creates_unused);
    advance(metrics.snapshot_coalesced(), stats.coalesced, last_coalesced);
    advance(metrics.affinity(true), stats.affinity_hits, last_affinity_hits);
    advance(metrics.affinity(false), stats.affinity_misses, last_affinity_misses);
    advance(metrics.job_starts(api::StartKind::warm), stats.warm_starts, last_warm);
    advance(metrics.job_starts(api::StartKind::cold), stats.cold_starts, last_cold);
    advance(metrics.job_starts(api::StartKind::fallback), stats.fallback_starts,
            last_fallback_starts);
    advance(metrics.snapshot_time_saved(), stats.time_saved_ms, last_saved_ms, 1e-3);

    const snapshots::CacheMetrics now = cache->metrics();
    advance(metrics.snapshot_hits(), now.hits, last.hits);
    advance(metrics.snapshot_misses(), now.misses, last.misses);
    advance(metrics.snapshot_commit_failures(), now.commit_failures, last.commit_failures);
    advance(metrics.snapshot_evictions(), now.evictions, last.evictions);
    if (now.commits > last.commits) {
      // The cache keeps a total, not each duration: the period's commits are
      // observed at their mean.
      const auto commits = now.commits - last.commits;
      const double mean_s =
          static_cast<double>(now.total_commit_ms - last.total_commit_ms) / 1000.0 / commits;
      for (std::uint64_t i = 0; i < commits; ++i)
        metrics.snapshot_commit_duration().Observe(mean_s);
    }
    advance(metrics.snapshot_commits(), now.commits, last.commits);
    last.total_commit_ms = now.total_commit_ms;
    metrics.snapshot_bytes_cached().Set(static_cast<double>(now.bytes_cached));

    if (const auto at = Clock::now(); at >= next_history) {
      metrics.record_history(unix_ms_now());
      while (next_history <= at) next_history += history_interval;
    }
    co_await sleep_for(period);
  }
}

// Stops accepting, ends event streams, lets in-flight requests finish (bounded).
awaitable<void> stop_http(api::HttpServer& http, Duration grace) {
  http.stop();
  const auto until = Clock::now() + grace;
  while (http.connection_count() > 0 && Clock::now() < until) co_await sleep_for(50ms);
  if (http.connection_count() > 0) {
    log::warn("http connections still open at exit", {{"connections", http.connection_count()}});
  }
}

// With WatchdogSec= in the unit, systemd restarts a router whose event loop
// stops turning: WATCHDOG=1 from the loop itself, twice per period.
awaitable<void> feed_watchdog() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) co_return;
  const auto period = std::chrono::duration_cast<Duration>(std::chrono::microseconds(usec / 2));
  for (;;) {
    sd_notify(0, "WATCHDOG=1");
    co_await sleep_for(period);
  }
}

}  // namespace

int run_router(const std::string& config_file, router::RouterConfig config) {
  log::init(log::parse_level(config.log_level));
  if (config.router_id.empty()) config.router_id = host_name();
  // The snapshot registry's namespace and the router's fleet identity are one:
  // [router] host_id, else the engine ID (SnapshotCache reads it itself).
  // Read before connecting anything: a bad [api]/[webhooks] section is a usage error.
  const api::ServerOptions server_options = http_options(config_file, config);
  raise_open_file_limit(server_options, config.concurrency);

  net::io_context io(1);
  auto ex = io.get_executor();

  auto queue = std::make_shared<queue::RedisQueue>(ex, queue_options(config));
  auto docker = container::DockerClient::create(ex, docker_options(config));
  auto redis = redis::Client::create(ex, redis_options(config.redis_url));

  auto sopts = snapshot_options(config);
  sopts.on_event = [ex, queue](nlohmann::json event) {
    net::co_spawn(
        ex, [queue, event]() -> awaitable<void> { co_await queue->append_event(event); },
        net::detached);
  };
  auto snapshots = std::make_shared<snapshots::SnapshotCache>(docker, redis, sopts);

  router::RouterDeps deps{queue, docker, snapshots};
  auto router = std::make_shared<router::Dispatcher>(ex, config, deps);

  api::Metrics metrics;
  hook_router_metrics(*router, metrics);
  router::ApiBackendOptions backend_options;
  backend_options.key_prefix = config.key_prefix;
  router::ApiBackend backend(ex, router::ApiBackendDeps{queue, snapshots, docker, redis, router},
                             router::ImagePolicy(config.base_image, config.image_allowlist),
                             backend_options);
  std::unique_ptr<api::HttpServer> http;
  if (!server_options.listen.empty()) {
    http = std::make_unique<api::HttpServer>(io, backend, metrics, server_options);
  }

  net::signal_set signals(io, SIGINT, SIGTERM);
  int signal_count = 0;
  std::function<void()> arm = [&] {
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      ++signal_count;
      if (signal_count == 1) {
        log::info("signal received: draining (a second signal exits at once)", {{"signal", sig}});
        sd_notify(0, "STOPPING=1");
        router->drain();
        arm();
      } else {
        log::warn("second signal: exiting now", {{"signal", sig}});
        router->stop_now();
        io.stop();
      }
    });
  };
  arm();

  int code = ok;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await with_deadline(docker->ping(), 10s, "docker ping");
        auto info = co_await docker->info();
        co_await with_deadline(redis->connect(), 10s, "redis connect");
        co_await queue->publish_limits();  // the CLI refuses what this router would
        // Before the snapshot registry is touched: two engines under one host
        // identity would share (and wipe) one snapshot namespace.
        router::HostIdentity identity;
        identity.host_id = config.host_id;
        identity.engine_id = info.id;
        identity.host_name = host_name();
        identity.version = std::string(version);
        router->identify(identity);
        co_await router->claim_host_identity();
        co_await snapshots->start();
        log::info("connected", {{"docker_engine", info.id},
                                {"host_id", router->fleet_record().host_id},
                                {"docker_version", info.server_version},
                                {"api_version", info.api_version},
                                {"redis", redis::Url::parse(config.redis_url).redacted()},
                                {"limits", queue::describe(config.job_limits)},
                                {"config_file", config_file}});
        if (http) http->start();  // throws when the address cannot be bound
        net::co_spawn(ex, publish_metrics(queue, router, snapshots, metrics, metrics_period),
                      net::detached);
        sd_notify(0, "READY=1");
        net::co_spawn(ex, feed_watchdog(), net::detached);
        co_await router->run();
        // /readyz answered 503 "draining" meanwhile; now the front goes away.
        if (http) co_await stop_http(*http, http_stop_grace);
      },
      [&](std::exception_ptr e) {
        if (e) code = report_error(e);
        io.stop();
      });
  io.run();
  // A command still waiting on Redis (the claim loop's blocking read, a
  // subscription) holds its coroutine in hiredis, outside the io_context, and
  // the coroutine holds the client: closing the clients hands each one back to
  // the io_context as failed, whose destructor then frees it.
  queue->close();
  redis->close();
  log::info("router exited", {{"router", config.router_id}, {"exit_code", code}});
  return code;
}

}  // namespace warmstart::cli
