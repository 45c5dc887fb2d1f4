// snapshot_bench [MEGABYTES]
// Snapshot warm start through the real router: a job whose "setup" writes
// MEGABYTES (default 200) to /work/blob and then runs a small step, with a
// snapshot key.
//   cold: first run on the base image: writes the blob, succeeds, is committed.
//         Its time includes the commit (a job turns succeeded only after its
//         commit is registered, docs/router.md).
//   warm: same key, reuse on, commit off: starts from the snapshot, finds the
//         blob, runs only the step.
// Times are client wall clock before enqueue .. the record's finished_at (ms).
// commit_ms is took_ms of the router's "snapshot commit" log line.
// Target: warm_ms <= 25% of cold_ms. The snapshot images are removed at the end.
#include "bench/bench_support.hpp"

using namespace warmstart;
using namespace warmstart::bench;

namespace {

awaitable<queue::JobRecord> run_job(queue::RedisQueue& q, const std::string& id,
                                    const std::string& key, bool commit, int megabytes,
                                    double& elapsed_ms) {
  queue::JobSpec s;
  s.id = id;
  s.cmd = {"sh", "-c",
           "[ -f /work/blob ] || dd if=/dev/zero of=/work/blob bs=1M count=" +
               std::to_string(megabytes) + " 2>/dev/null; ls -l /work/blob; echo step"};
  queue::SnapshotSpec snap;
  snap.key = key;
  snap.reuse = true;
  snap.commit = commit;
  s.snapshot = snap;
  s.timeout_s = 600;
  const std::int64_t t0 = unix_ms_now();
  co_await q.enqueue(std::move(s));
  std::vector<std::string> ids = {id};
  auto recs = co_await wait_all(q, std::move(ids), 10ms, Duration(600s));
  const queue::JobRecord rec = recs.at(0);
  if (rec.state != queue::JobState::succeeded) {
    throw std::runtime_error("job " + id + " ended " + std::string(queue::to_string(rec.state)) +
                             ": " + rec.error);
  }
  elapsed_ms = static_cast<double>(rec.finished_at.value_or(t0) - t0);
  co_return rec;
}

}  // namespace

int main(int argc, char** argv) {
  log::init(log::Level::warn);
  const int megabytes = argc > 1 ? std::atoi(argv[1]) : 200;
  const BenchEnv env;
  nlohmann::json line;
  try {
    run_main([&]() -> awaitable<void> {
      auto ex = co_await net::this_coro::executor;
      RouterChild router(env, 2, "snap");
      queue::RedisQueue q(ex, queue_options(env, router.key_prefix()));
      co_await wait_router_ready(q, router.id());
      const std::string key = "bench-snap-" + router.id();
      double cold_ms = 0;
      double warm_ms = 0;
      double warm2_ms = 0;
      auto cold = co_await run_job(q, "cold", key, true, megabytes, cold_ms);
      auto warm = co_await run_job(q, "warm", key, false, megabytes, warm_ms);
      auto warm2 = co_await run_job(q, "warm2", key, false, megabytes, warm2_ms);

      double commit_ms = -1;
      std::string commit_status;
      std::istringstream log_lines(router.log());
      std::string l;
      while (std::getline(log_lines, l)) {
        auto j = nlohmann::json::parse(l, nullptr, false);
        if (j.is_discarded() || j.value("msg", "") != "snapshot commit") continue;
        if (j.value("job", "") != "cold") continue;
        commit_ms = j.value("took_ms", -1.0);
        commit_status = j.value("status", "");
      }

      // Remove the snapshot images so the engine is left clean.
      container::DockerClientOptions o;
      o.socket_path = env.docker_socket;
      auto docker = container::DockerClient::create(ex, o);
      std::vector<std::string> labels = {"warmstart.snapshot.key"};
      auto images = co_await docker->list_images(std::move(labels));
      int images_removed = 0;
      std::int64_t image_bytes = 0;
      for (const auto& img : images) {
        image_bytes += img.size_bytes;
        co_await docker->remove_image(img.id, true);
        ++images_removed;
      }
      co_await delete_prefix(*q.client(), router.key_prefix());
      q.close();
      router.stop();

      const auto span = [](const queue::JobRecord& r) {
        return static_cast<double>(r.finished_at.value_or(0) - r.started_at.value_or(0));
      };
      line = {{"bench", "snapshot"},
              {"megabytes", megabytes},
              {"cold_ms", cold_ms},
              {"cold_run_ms", span(cold)},
              {"commit_ms", commit_ms},
              {"commit_status", commit_status},
              {"cold_without_commit_ms", commit_ms >= 0 ? cold_ms - commit_ms : -1.0},
              {"warm_ms", warm_ms},
              {"warm_run_ms", span(warm)},
              {"warm2_ms", warm2_ms},
              {"warm_from_snapshot", warm.from_snapshot && warm2.from_snapshot},
              {"warm_over_cold", cold_ms > 0 ? warm_ms / cold_ms : 0},
              {"warm_over_cold_without_commit",
               commit_ms >= 0 && cold_ms > commit_ms ? warm_ms / (cold_ms - commit_ms) : 0},
              {"target_ratio", 0.25},
              {"snapshot_image_bytes", image_bytes},
              {"images_removed", images_removed},
              {"loadavg_1m", load_average_1m()},
              {"definitions",
               "*_ms: client clock before enqueue .. finished_at; *_run_ms: started_at .. "
               "finished_at; cold includes the commit (succeeded only after it); warm runs "
               "with commit off; commit_ms: took_ms of the router's 'snapshot commit' line"}};
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snapshot_bench: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", line.dump().c_str());
  return line.value("warm_from_snapshot", false) ? 0 : 1;
}
