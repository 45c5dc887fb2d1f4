// The client subcommands: thin over queue::Queue and snapshots::SnapshotCache.
#include "cli/commands.hpp"
#include "cli/services.hpp"
#include "common/json_limits.hpp"
#include "common/retry.hpp"
#include "common/time.hpp"
#include "queue/prewarm.hpp"
#include "queue/validation.hpp"

#include <cstdio>
#include <iostream>
#include <map>

namespace warmstart::cli {
namespace {

using nlohmann::json;
using queue::JobState;

router::RouterConfig config_of(const Common& common) {
  router::RouterConfig c;
  c.redis_url = common.redis_url;
  c.docker_host = common.docker_host;
  c.host_id = common.host_id;
  c.key_prefix = common.key_prefix;
  router::apply_replicas_ack_environment(c);
  return c;
}

std::shared_ptr<queue::RedisQueue> open_queue(net::io_context& io, const Common& common) {
  return std::make_shared<queue::RedisQueue>(io.get_executor(), queue_options(config_of(common)));
}

std::int64_t parse_memory_mb(const std::string& text) {
  // "512m", "2g", "1024" (MiB)
  if (text.empty()) throw std::invalid_argument("--memory: empty");
  constexpr std::int64_t max_mb = std::int64_t{1} << 40;  // far past any ceiling, no overflow
  std::string digits = text;
  std::int64_t factor_mb = 1;
  const char unit = static_cast<char>(std::tolower(static_cast<unsigned char>(digits.back())));
  if (unit == 'g') factor_mb = 1024;
  if (unit == 'm' || unit == 'g') digits.pop_back();
  std::size_t used = 0;
  std::int64_t n = 0;
  try {
    n = std::stoll(digits, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != digits.size() || n <= 0 || n > max_mb / factor_mb) {
    throw std::invalid_argument("--memory: not a size: \"" + text + "\" (use e.g. 512m, 2g)");
  }
  return n * factor_mb;
}

std::string state_line(const queue::JobRecord& r) {
  std::string line = r.id + "  " + std::string(queue::to_string(r.state));
  if (r.exit_code) line += "  exit=" + std::to_string(*r.exit_code);
  line += "  attempts=" + std::to_string(r.attempts);
  if (!r.image.empty()) line += "  image=" + r.image;
  if (r.from_snapshot) line += "  from_snapshot";
  if (r.snapshot_fallback) line += "  snapshot_fallback";
  if (!r.error.empty()) line += "  error=\"" + r.error + "\"";
  return line;
}

// Every Redis call of a command rides out transient failures (a restart
// still loading its AOF, a failover, a dropped connection) with backoff until
// the command's deadline; past it the last error stands (exit 3).
Clock::time_point redis_deadline(const Common& common) {
  return Clock::now() + common.redis_timeout;
}

awaitable<queue::JobRecord> must_get(queue::Queue& q, const std::string& id,
                                     Clock::time_point until) {
  auto rec = co_await retry_until([&] { return q.get(id); }, until);
  if (!rec) throw std::runtime_error("no such job: " + id);
  co_return *rec;
}

}  // namespace

int run_enqueue(const Common& common, const EnqueueOptions& o) {
  json job = {{"queue", o.queue}, {"cmd", o.cmd}};
  if (o.id) job["id"] = *o.id;
  if (o.image) job["image"] = *o.image;
  if (o.snapshot_key) {
    job["snapshot"] = {{"key", *o.snapshot_key}, {"reuse", !o.no_reuse}, {"commit", !o.no_commit}};
    if (o.prewarm) job["snapshot"]["prewarm"] = true;
  }
  try {
    if (o.timeout) {
      auto d = parse_duration(*o.timeout);
      if (!d || d->count() < 1000) {
        throw std::invalid_argument("--timeout: not a duration of at least 1s: \"" + *o.timeout +
                                    "\"");
      }
      job["timeout_s"] = std::chrono::duration_cast<std::chrono::seconds>(*d).count();
    }
    if (o.max_attempts) job["max_attempts"] = *o.max_attempts;
    if (o.concurrency_key) job["concurrency_key"] = *o.concurrency_key;
    json env = json::object();
    for (const auto& kv : o.env) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw std::invalid_argument("--env: expected K=V, got \"" + kv + "\"");
      }
      env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    if (!env.empty()) job["env"] = env;
    json resources = json::object();
    if (o.memory) resources["memory_mb"] = parse_memory_mb(*o.memory);
    if (o.cpus) resources["cpus"] = *o.cpus;
    if (o.pids) resources["pids"] = *o.pids;
    if (!resources.empty()) job["resources"] = resources;
  } catch (const std::invalid_argument& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return usage;
  }
  auto checked = queue::validate_job(job);
  if (!checked.ok()) {
    std::cerr << "warmstart: invalid job: " << checked.reason << "\n";
    return usage;
  }
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    // The ceilings a router published: refuse here what it would refuse at claim.
    const auto until = redis_deadline(common);
    co_await retry_until([&] { return q->adopt_published_limits(); }, until);
    auto capped = queue::validate_job(job, q->options().validation);
    if (!capped.ok()) {
      std::cerr << "warmstart: invalid job: " << capped.reason << "\n";
      co_return usage;
    }
    // The id is fixed before the first try: a retry after a lost reply finds
    // the job it created (same id, same spec) instead of making a second one.
    const queue::JobSpec& spec = *capped.spec;
    std::optional<queue::PrewarmResult> enqueued;
    std::string conflict;
    try {
      enqueued = co_await retry_until(
          [&]() -> awaitable<queue::PrewarmResult> {
            if (o.prewarm) co_return co_await queue::submit_prewarm(*q, spec);
            auto result = co_await q->enqueue(spec);
            co_return queue::PrewarmResult{result.record.id, false, result.created};
          },
          until);
    } catch (const queue::IdConflict& e) {
      conflict = e.what();
    }
    if (!enqueued) {
      std::cerr << "warmstart: " << conflict << "; not enqueued\n";
      co_return failed;
    }
    std::cout << enqueued->job_id << std::endl;
    if (enqueued->coalesced) {
      std::cerr << "warmstart: job " << enqueued->job_id << " builds snapshot "
                << spec.snapshot->key << " already; the prewarm joins it\n";
    } else if (!enqueued->created) {
      std::cerr << "warmstart: job " << enqueued->job_id << " already exists; not enqueued again\n";
    }
    co_return ok;
  });
}

int run_status(const Common& common, const std::string& job_id, bool as_json) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    auto rec = co_await must_get(*q, job_id, redis_deadline(common));
    if (as_json) {
      std::cout << dump_lossy(rec.to_json()) << std::endl;
    } else {
      std::cout << state_line(rec) << std::endl;
    }
    co_return ok;
  });
}

int run_wait(const Common& common, const std::string& job_id, const std::string& timeout) {
  auto limit = parse_duration(timeout);
  if (!limit) {
    std::cerr << "warmstart: --timeout: not a duration: \"" << timeout << "\"\n";
    return usage;
  }
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    const auto until = Clock::now() + *limit;
    Duration poll = 50ms;
    while (true) {
      // Keeps waiting across a Redis restart: only past --timeout is an
      // unreachable Redis an error (exit 3, never 1: 1 means the job failed).
      auto rec = co_await must_get(*q, job_id, until);
      if (queue::is_terminal(rec.state)) {
        if (rec.state == JobState::succeeded) co_return ok;
        std::cerr << "warmstart: " << state_line(rec) << "\n";
        co_return failed;
      }
      if (Clock::now() >= until) {
        std::cerr << "warmstart: gave up waiting after " << timeout << ": " << state_line(rec)
                  << "\n";
        co_return failed;
      }
      co_await sleep_for(poll);
      poll = std::min<Duration>(poll * 2, 500ms);
    }
  });
}

int run_logs(const Common& common, const std::string& job_id) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    auto rec = co_await must_get(*q, job_id, redis_deadline(common));
    std::cout << rec.log_tail;
    if (!rec.log_tail.empty() && rec.log_tail.back() != '\n') std::cout << '\n';
    co_return ok;
  });
}

int run_cancel(const Common& common, const std::string& job_id) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    auto r = co_await retry_until([&] { return q->cancel(job_id); }, redis_deadline(common));
    switch (r.outcome) {
      case queue::CancelOutcome::cancelled:
        std::cout << job_id << " cancelled\n";
        co_return ok;
      case queue::CancelOutcome::router_notified:
        std::cout << job_id << " cancelled (its router stops the container)\n";
        co_return ok;
      case queue::CancelOutcome::already_finished:
        std::cerr << "warmstart: job " << job_id << " already finished ("
                  << (r.previous_state ? queue::to_string(*r.previous_state) : "?") << ")\n";
        co_return failed;
      case queue::CancelOutcome::not_found:
        break;
    }
    std::cerr << "warmstart: no such job: " << job_id << "\n";
    co_return failed;
  });
}

int run_jobs(const Common& common, const std::optional<std::string>& state, bool as_json) {
  std::vector<JobState> states;
  if (state) {
    auto s = queue::parse_state(*state);
    if (!s) {
      std::cerr << "warmstart: unknown state \"" << *state << "\"\n";
      return usage;
    }
    states.push_back(*s);
  } else {
    states.assign(queue::kAllStates.begin(), queue::kAllStates.end());
  }
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    json all = json::array();
    const auto until = redis_deadline(common);
    for (auto s : states) {
      auto records = co_await retry_until([&] { return q->list(s, 1000); }, until);
      for (const auto& rec : records) {
        if (as_json) {
          all.push_back(rec.to_json());
        } else {
          std::cout << state_line(rec) << "\n";
        }
      }
    }
    if (as_json) std::cout << dump_lossy(all) << std::endl;
    co_return ok;
  });
}

int run_routers(const Common& common, bool as_json) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    auto records = co_await retry_until([&] { return q->routers(); }, redis_deadline(common));
    const std::int64_t now = unix_ms_now();
    if (as_json) {
      json all = json::array();
      for (const auto& r : records) all.push_back(queue::describe(r, now));
      std::cout << dump_lossy(all) << std::endl;
      co_return ok;
    }
    std::printf("%-24s %-9s %-20s %-16s %8s %9s %10s %9s\n", "ROUTER", "STATUS", "HOST", "ENGINE",
                "RUNNING", "SNAPSHOTS", "SIZE(MB)", "SEEN(s)");
    for (const auto& r : records) {
      const std::string engine = r.engine_id.substr(0, 14);
      const std::string running = std::to_string(r.running) + "/" + std::to_string(r.capacity);
      std::printf("%-24s %-9s %-20s %-16s %8s %9lld %10.1f %9.1f\n", r.id.c_str(),
                  queue::router_status(r, now).c_str(), r.host_id.substr(0, 20).c_str(),
                  engine.c_str(), running.c_str(), static_cast<long long>(r.snapshot_count),
                  static_cast<double>(r.snapshot_bytes) / (1024.0 * 1024.0),
                  static_cast<double>(now - r.last_seen) / 1000.0);
    }
    co_return ok;
  });
}

namespace {

int with_snapshots(const Common& common,
                   std::function<awaitable<int>(snapshots::SnapshotCache&)> body) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto config = config_of(common);
    auto docker = container::DockerClient::create(io.get_executor(), docker_options(config));
    co_await docker->ping();
    auto redis = redis::Client::create(io.get_executor(), redis_options(config.redis_url));
    co_await redis->connect();
    snapshots::SnapshotCache cache(docker, redis, snapshot_options(config));
    co_return co_await body(cache);
  });
}

}  // namespace

int run_snapshots_list(const Common& common, bool as_json) {
  // The keys being built now (single-flight), from the queue.
  std::map<std::string, std::string> builds;
  {
    net::io_context io;
    const int rc = run_command(io, [&]() -> awaitable<int> {
      auto q = open_queue(io, common);
      builds = co_await retry_until([&] { return q->builds(); }, redis_deadline(common));
      co_return ok;
    });
    if (rc != ok) return rc;
  }
  return with_snapshots(common, [&](snapshots::SnapshotCache& cache) -> awaitable<int> {
    const auto rows = snapshots::snapshot_listing(co_await cache.list(), builds);
    if (as_json) {
      std::cout << dump_lossy(rows) << std::endl;
      co_return ok;
    }
    const auto now = unix_ms_now();
    // HITS: warm starts since the commit; HOST: whose engine holds the image.
    std::printf("%-32s %4s %-44s %10s %8s %6s %6s %-16s %s\n", "KEY", "GEN", "IMAGE", "SIZE(MB)",
                "AGE(s)", "HITS", "DEPTH", "HOST", "BUILDER");
    for (const auto& row : rows) {
      const std::string key = row.at("key").get<std::string>();
      const std::string builder =
          row.at("builder").is_string() ? row.at("builder").get<std::string>() : "-";
      if (!row.contains("image")) {  // a key whose first build is running
        std::printf("%-32s %4s %-44s %10s %8s %6s %6s %-16s %s\n", key.c_str(), "-",
                    "(first build)", "-", "-", "-", "-", "-", builder.c_str());
        continue;
      }
      const auto number = [&](const char* field) { return row.at(field).get<long long>(); };
      std::printf("%-32s %4lld %-44s %10.1f %8lld %6lld %6lld %-16s %s\n", key.c_str(),
                  number("generation"), row.at("image").get<std::string>().c_str(),
                  static_cast<double>(number("size_bytes")) / (1024.0 * 1024.0),
                  (static_cast<long long>(now) - number("created_ms")) / 1000, number("uses"),
                  number("layer_depth"), row.at("host").get<std::string>().substr(0, 16).c_str(),
                  builder.c_str());
    }
    co_return ok;
  });
}

int run_snapshots_rm(const Common& common, const std::string& key) {
  return with_snapshots(common, [&](snapshots::SnapshotCache& cache) -> awaitable<int> {
    if (co_await cache.invalidate(key, "manual")) {
      std::cout << "snapshot " << key << " invalidated\n";
      co_return ok;
    }
    std::cerr << "warmstart: no snapshot with key " << key << "\n";
    co_return failed;
  });
}

int run_snapshots_gc(const Common& common) {
  return with_snapshots(common, [&](snapshots::SnapshotCache& cache) -> awaitable<int> {
    auto report = co_await cache.gc();
    std::cout << "evicted " << report.eviction.evictions.size() << ", images removed "
              << report.images_removed << ", failures " << report.failures << "\n";
    co_return report.failures == 0 ? ok : failed;
  });
}

int run_events(const Common& common, bool follow, bool as_json) {
  net::io_context io;
  return run_command(io, [&]() -> awaitable<int> {
    auto q = open_queue(io, common);
    std::string after = "0";
    while (true) {
      auto batch =
          co_await retry_until([&] { return q->read_events(after, 500); }, redis_deadline(common));
      for (const auto& ev : batch) {
        after = ev.id;
        if (as_json) {
          std::cout << dump_lossy(ev.body) << "\n";
        } else {
          std::string line = ev.body.value("ts", "") + "  " + ev.body.value("type", "");
          for (const auto& [k, v] : ev.body.items()) {
            if (k == "ts" || k == "type" || k == "id") continue;
            std::string value = dump_lossy(v);
            if (v.is_string()) value = v.get<std::string>();
            line += "  " + k + "=" + value;
          }
          std::cout << line << "\n";
        }
      }
      std::cout.flush();
      if (batch.size() == 500) continue;
      if (!follow) co_return ok;
      co_await sleep_for(250ms);
    }
  });
}

}  // namespace warmstart::cli
