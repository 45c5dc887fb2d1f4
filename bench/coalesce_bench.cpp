// coalesce_bench [JOBS] [SETUP_S] [MEGABYTES] [CPU_MB]
// Single-flight cold starts (docs/snapshots.md) through the real router: JOBS
// (default 6) jobs of one fresh snapshot key enqueued together at concurrency
// JOBS, each with a setup of SETUP_S seconds (default 5) that writes MEGABYTES
// (default 20) to /work and that a warm start skips; with CPU_MB (default 0)
// the setup also hashes CPU_MB MiB of zeros (CPU work, as an install or a
// build: parallel cold starts then compete for the cores). Run twice, one router
// after the other against the same engine and Redis:
//   single_flight: the router's defaults (one job builds, the others wait for
//                  its snapshot);
//   off:           `[snapshots] coalesce_wait = "0s"` (every job that finds no
//                  snapshot starts cold, as before).
// Per run:
//   wall_ms        client clock before the first enqueue .. the latest
//                  finished_at of the JOBS records.
//   cold_runs      records that started on the base image (ran the setup).
//   container_s    sum of the records' finished_at - started_at: the engine's
//                  container time (includes each job's commit, which a job
//                  waits for before its record turns succeeded).
//   commits        "snapshot commit" lines of the router's log with status
//                  committed or lost_race: images the engine wrote.
// The snapshot images are removed at the end.
#include "bench/bench_support.hpp"

#include <iostream>

using namespace warmstart;
using namespace warmstart::bench;

namespace {

struct RunFigures {
  double wall_ms = 0;
  int cold_runs = 0;
  double container_s = 0;
  int commits = 0;
  int attempts = 0;
};

struct Setup {
  int jobs = 6;
  int seconds = 5;
  int megabytes = 20;
  int cpu_mb = 0;
};

awaitable<RunFigures> fan_out(const BenchEnv& env, const std::string& mode, Setup setup,
                              const std::string& snapshots_toml) {
  const int jobs = setup.jobs;
  auto ex = co_await net::this_coro::executor;
  RouterChildOptions options;
  options.concurrency = jobs;
  options.snapshots_toml = snapshots_toml;
  RouterChild router(env, options, "coalesce-" + mode);
  queue::RedisQueue q(ex, queue_options(env, router.key_prefix()));
  co_await wait_router_ready(q, router.id());
  const std::string key = "bench-fanout-" + router.id();
  std::vector<std::string> ids;
  const std::int64_t t0 = unix_ms_now();
  for (int i = 0; i < jobs; ++i) {
    queue::JobSpec s;
    s.id = mode + "-" + std::to_string(i);
    std::string work =
        "sleep " + std::to_string(setup.seconds) +
        "; dd if=/dev/zero of=/work/blob bs=1M count=" + std::to_string(setup.megabytes) +
        " 2>/dev/null";
    if (setup.cpu_mb > 0) {
      work += "; head -c " + std::to_string(setup.cpu_mb) + "m /dev/zero | sha256sum";
    }
    s.cmd = {
        "sh", "-c",
        "if [ -f /work/ready ]; then echo warm; else " + work + "; echo built > /work/ready; fi"};
    queue::SnapshotSpec snap;
    snap.key = key;
    s.snapshot = snap;
    s.timeout_s = 600;
    ids.push_back(s.id);
    co_await q.enqueue(std::move(s));
  }
  auto recs = co_await wait_all(q, ids, 20ms, Duration(600s));
  RunFigures out;
  std::int64_t last = t0;
  for (const auto& rec : recs) {
    if (rec.state != queue::JobState::succeeded) {
      throw std::runtime_error("job " + rec.id + " ended " +
                               std::string(queue::to_string(rec.state)) + ": " + rec.error);
    }
    last = std::max(last, rec.finished_at.value_or(t0));
    if (!rec.from_snapshot) ++out.cold_runs;
    out.attempts += rec.attempts;
    if (rec.started_at && rec.finished_at) {
      out.container_s += static_cast<double>(*rec.finished_at - *rec.started_at) / 1000.0;
    }
  }
  out.wall_ms = static_cast<double>(last - t0);
  std::istringstream log_lines(router.log());
  for (std::string l; std::getline(log_lines, l);) {
    auto j = nlohmann::json::parse(l, nullptr, false);
    if (j.is_discarded() || j.value("msg", "") != "snapshot commit") continue;
    const std::string status = j.value("status", "");
    if (status == "committed" || status == "lost_race") ++out.commits;
  }
  // The engine is left clean: this run's snapshot images go.
  container::DockerClientOptions o;
  o.socket_path = env.docker_socket;
  auto docker = container::DockerClient::create(ex, o);
  std::vector<std::string> labels = {"warmstart.snapshot.key=" + key};
  auto images = co_await docker->list_images(std::move(labels));
  for (const auto& img : images) co_await docker->remove_image(img.id, true);
  co_return out;
}

nlohmann::json to_json(const RunFigures& f) {
  return {{"wall_ms", f.wall_ms},
          {"cold_runs", f.cold_runs},
          {"container_s", f.container_s},
          {"commits", f.commits},
          {"attempts", f.attempts}};
}

}  // namespace

int main(int argc, char** argv) {
  log::init(log::Level::warn);
  Setup setup;
  if (argc > 1) setup.jobs = std::atoi(argv[1]);
  if (argc > 2) setup.seconds = std::atoi(argv[2]);
  if (argc > 3) setup.megabytes = std::atoi(argv[3]);
  if (argc > 4) setup.cpu_mb = std::atoi(argv[4]);
  const BenchEnv env;
  nlohmann::json line;
  try {
    run_main([&]() -> awaitable<void> {
      auto on = co_await fan_out(env, "sf", setup, "");
      auto off = co_await fan_out(env, "off", setup, "coalesce_wait = \"0s\"");
      line = {{"bench", "coalesce"},
              {"jobs", setup.jobs},
              {"setup_s", setup.seconds},
              {"megabytes", setup.megabytes},
              {"cpu_mb", setup.cpu_mb},
              {"single_flight", to_json(on)},
              {"off", to_json(off)},
              {"wall_ratio", off.wall_ms > 0 ? on.wall_ms / off.wall_ms : 0.0},
              {"container_s_ratio", off.container_s > 0 ? on.container_s / off.container_s : 0.0},
              {"loadavg_1m", load_average_1m()}};
    });
  } catch (const std::exception& e) {
    std::cerr << "coalesce_bench: " << e.what() << "\n";
    return 1;
  }
  std::cout << line.dump() << std::endl;
  return 0;
}
