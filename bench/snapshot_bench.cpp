// snapshot_bench [MEGABYTES]
// Snapshot warm start through the real router: a job whose "setup" writes
// MEGABYTES (default 200) to /work/blob and then runs a small step, with a
// snapshot key.
//   cold: first run on the base image: writes the blob, succeeds, is committed.
//         Its time includes the commit (a job turns succeeded only after its
//         commit is registered, docs/router.md).
//   warm: same key, reuse on, commit off: starts from the snapshot, finds the
//         blob, runs only the step.
//   warm2: the same again (a second warm start).
// Three rounds, each under a key of its own; every figure is the median over
// the rounds (the per-round values are in *_rounds).
// Times are client wall clock before enqueue .. the record's finished_at (ms).
// commit_ms is took_ms of the router's "snapshot commit" log line of a cold job.
// Target: warm_over_cold (the median of the rounds' warm_ms / cold_ms) <= 25%.
// The snapshot images are removed at the end.
//
// Dispatch while a commit runs (concurrency 2): a job under a second key
// ("commit-probe", same setup, commit on) is committed; from the engine's
// `export` event of its container (the flatten's export starts) until the
// `import` event of the new image (the import is done), small `true` probe
// jobs are enqueued one at a time, each followed by a raw create (the
// engine's share). The same is done first on the idle router.
//   dispatch_*_ms          client clock before enqueue .. the engine's create
//                          event of the probe's container (as dispatch_bench).
//   dispatch_*_started_ms  .. the probe record's started_at (ms, after start).
//   raw_create_*_ms        client clock before create_container .. its event.
// Only probes enqueued after the export event whose container was created
// before the import event count as "during commit". Three such commits.
//   healthz_*_ms           GET /healthz on the router's HTTP front (loopback)
//                          every 50 ms: its one event loop's responsiveness,
//                          independent of the engine.
//
// The commit against doing it by hand: a raw container runs the same setup
// (MEGABYTES to /work/blob); its filesystem is made an image by the docker CLI,
// `docker export C | docker import - R:T` (what the router's flatten does,
// without its filter and registry), and by a plain `docker commit` (layered,
// no flatten), three alternating rounds. *_mb_per_s = MEGABYTES / median time.
// commit_speed_vs_export_import = hand-run export|import time / the router's
// commit time (target >= 0.8).
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

// Engine events seen so far (engine clock, ns; same host as the client).
struct Seen {
  std::map<std::string, std::int64_t> job_created;   // job id -> create
  std::map<std::string, std::string> job_container;  // job id -> container id
  std::map<std::string, std::int64_t> raw_created;   // container id -> create
  std::map<std::string, std::int64_t> exported;      // container id -> export
  std::vector<std::int64_t> imports;                 // image import events
};

awaitable<std::int64_t> await_key(const std::map<std::string, std::int64_t>& m,
                                  const std::string& key, const char* what) {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  for (int i = 0; i < 12000; ++i) {  // 60 s
    auto it = m.find(key);
    if (it != m.end()) co_return it->second;
    timer.expires_after(5ms);
    co_await timer.async_wait(use_awaitable);
  }
  throw std::runtime_error(std::string("no ") + what + " event for " + key);
}

struct Probe {
  std::int64_t enqueued_ns = 0;
  std::int64_t created_ns = 0;
  double to_create_ms = 0;
  double to_started_ms = -1;
  double raw_create_ms = 0;
};

// One probe job (enqueue .. create event, .. started_at; waits until it ended)
// then one raw create (call .. create event; removed).
awaitable<Probe> probe(queue::RedisQueue& q, container::DockerClient& docker, const BenchEnv& env,
                       Seen& seen, const std::string& id) {
  Probe out;
  queue::JobSpec s;
  s.id = id;
  s.cmd = {"true"};
  out.enqueued_ns = unix_ns_now();
  co_await q.enqueue(std::move(s));
  out.created_ns = co_await await_key(seen.job_created, id, "create");
  out.to_create_ms = static_cast<double>(out.created_ns - out.enqueued_ns) / 1e6;
  std::vector<std::string> ids = {id};
  auto recs = co_await wait_all(q, std::move(ids), 5ms, Duration(60s));
  if (recs.at(0).state != queue::JobState::succeeded) {
    throw std::runtime_error("probe " + id + " ended " + recs.at(0).error);
  }
  if (recs.at(0).started_at) {
    out.to_started_ms =
        static_cast<double>(*recs.at(0).started_at) - static_cast<double>(out.enqueued_ns) / 1e6;
  }
  container::ContainerSpec spec;
  spec.image = env.base_image;
  spec.cmd = {"true"};
  spec.labels["warmstart.bench"] = "snapshot-raw";
  const std::int64_t t0 = unix_ns_now();
  std::string cid = co_await docker.create_container(std::move(spec));
  const std::int64_t created = co_await await_key(seen.raw_created, cid, "create");
  co_await docker.remove_container(cid, true);
  out.raw_create_ms = static_cast<double>(created - t0) / 1e6;
  co_return out;
}

struct ByHand {
  std::vector<double> export_import_ms;
  std::vector<double> plain_commit_ms;
};

double elapsed_ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

// See the header. Blocks the calling thread during each CLI pipeline (the
// router is stopped by then). Removes its container and images.
awaitable<ByHand> by_hand(container::DockerClient& docker, const BenchEnv& env, int megabytes,
                          const std::string& repo) {
  container::ContainerSpec spec;
  spec.image = env.base_image;
  spec.cmd = {"sh", "-c",
              "mkdir -p /work && dd if=/dev/zero of=/work/blob bs=1M count=" +
                  std::to_string(megabytes) + " 2>/dev/null"};
  spec.labels["warmstart.bench"] = "snapshot-by-hand";
  const std::string cid = co_await docker.create_container(std::move(spec));
  ByHand out;
  std::vector<std::string> images;
  std::exception_ptr failure;
  try {
    co_await docker.start_container(cid);
    if (co_await docker.wait_container(cid, Duration(600s)) != 0) {
      throw std::runtime_error("by-hand setup container failed");
    }
    const std::string cli = "docker -H unix://" + env.docker_socket;
    for (int round = 0; round < 3; ++round) {
      const std::string flat = repo + ":flat" + std::to_string(round);
      const std::string command =
          cli + " export " + cid + " | " + cli + " import - " + flat + " >/dev/null";
      auto t0 = Clock::now();
      if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
      out.export_import_ms.push_back(elapsed_ms(t0));
      images.push_back(flat);

      container::CommitOptions options;
      options.repo = repo;
      options.tag = "layer" + std::to_string(round);
      options.pause = false;  // the container has exited
      t0 = Clock::now();
      images.push_back(co_await docker.commit_container(cid, options));
      out.plain_commit_ms.push_back(elapsed_ms(t0));
    }
  } catch (...) {
    failure = std::current_exception();
  }
  co_await docker.remove_container(cid, true);
  for (const auto& image : images) co_await docker.remove_image(image, true);
  if (failure) std::rethrow_exception(failure);
  co_return out;
}

double max_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}

constexpr int kCommitRounds = 3;
constexpr int kWarmRounds = 3;

// GET /healthz on the router every 50 ms until `stop`: (send time ns, ms).
struct HealthTicker {
  explicit HealthTicker(net::any_io_executor ex) : done(ex, Clock::time_point::max()) {}
  std::vector<std::pair<std::int64_t, double>> samples;
  bool stop = false;
  int errors = 0;
  net::steady_timer done;

  awaitable<double> once(unsigned short port) {
    auto ex = co_await net::this_coro::executor;
    net::ip::tcp::socket sock(ex);
    const auto t0 = Clock::now();
    net::ip::tcp::endpoint ep(net::ip::address_v4::loopback(), port);
    co_await sock.async_connect(ep, use_awaitable);
    const std::string req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    co_await net::async_write(sock, net::buffer(req), use_awaitable);
    std::string resp;
    auto read =
        co_await net::async_read(sock, net::dynamic_buffer(resp), net::as_tuple(use_awaitable));
    (void)read;  // ends with eof (Connection: close)
    if (resp.rfind("HTTP/1.1 200", 0) != 0)
      throw std::runtime_error("healthz: " + resp.substr(0, 40));
    co_return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }

  awaitable<void> run(unsigned short port) {
    auto ex = co_await net::this_coro::executor;
    net::steady_timer t(ex);
    while (!stop) {
      const std::int64_t sent = unix_ns_now();
      bool ok = true;
      double ms = 0;
      try {
        ms = co_await once(port);
      } catch (const std::exception&) {
        ok = false;
      }
      if (ok)
        samples.emplace_back(sent, ms);
      else
        ++errors;
      t.expires_after(50ms);
      co_await t.async_wait(use_awaitable);
    }
    done.cancel();
  }
};

struct ProbeStats {
  std::vector<double> to_create;
  std::vector<double> to_started;
  std::vector<double> raw;
  void add(const Probe& p) {
    to_create.push_back(p.to_create_ms);
    if (p.to_started_ms >= 0) to_started.push_back(p.to_started_ms);
    raw.push_back(p.raw_create_ms);
  }
};

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
      // kWarmRounds rounds, each under a key of its own: cold (committed),
      // then two warm runs. The figures are medians over the rounds.
      std::vector<double> cold_rounds, warm_rounds, warm2_rounds, ratio_rounds;
      std::vector<double> cold_run_rounds, warm_run_rounds;
      bool from_snapshot = true;
      const auto span = [](const queue::JobRecord& r) {
        return static_cast<double>(r.finished_at.value_or(0) - r.started_at.value_or(0));
      };
      for (int round = 0; round < kWarmRounds; ++round) {
        const std::string n = std::to_string(round);
        double cold_ms = 0;
        double warm_ms = 0;
        double warm2_ms = 0;
        auto cold = co_await run_job(q, "cold-" + n, key + "-" + n, true, megabytes, cold_ms);
        auto warm = co_await run_job(q, "warm-" + n, key + "-" + n, false, megabytes, warm_ms);
        auto warm2 = co_await run_job(q, "warm2-" + n, key + "-" + n, false, megabytes, warm2_ms);
        from_snapshot = from_snapshot && warm.from_snapshot && warm2.from_snapshot;
        cold_rounds.push_back(cold_ms);
        warm_rounds.push_back(warm_ms);
        warm2_rounds.push_back(warm2_ms);
        ratio_rounds.push_back(cold_ms > 0 ? warm_ms / cold_ms : 0.0);
        cold_run_rounds.push_back(span(cold));
        warm_run_rounds.push_back(span(warm));
      }

      // --- dispatch on an idle router, then while a commit runs ------------
      container::DockerClientOptions po;
      po.socket_path = env.docker_socket;
      auto probe_docker = container::DockerClient::create(ex, po);
      Seen seen;
      container::EventFilter filter;
      filter.types.push_back("container");
      filter.types.push_back("image");
      filter.events.push_back("create");
      filter.events.push_back("export");
      filter.events.push_back("import");
      auto sub = probe_docker->subscribe_events(filter, 0, [&](const container::Event& e) {
        if (e.type == "image") {
          if (e.action == "import") seen.imports.push_back(e.time_nano);
          return;
        }
        if (e.action == "export") {
          seen.exported[e.id] = e.time_nano;
          return;
        }
        auto job = e.attributes.find("warmstart.job");
        if (job != e.attributes.end()) {
          seen.job_created[job->second] = e.time_nano;
          seen.job_container[job->second] = e.id;
        }
        seen.raw_created[e.id] = e.time_nano;
      });
      // The router's /healthz every 50 ms throughout: its event loop's
      // responsiveness, apart from the engine.
      HealthTicker health(ex);
      net::co_spawn(ex, health.run(router.listen_port()), net::detached);
      net::steady_timer pause(ex);
      ProbeStats idle;
      for (int i = 0; i < 6; ++i) {
        pause.expires_after(200ms);  // back in its blocking claim
        co_await pause.async_wait(use_awaitable);
        const std::string probe_id = "idle-" + std::to_string(i);
        Probe pr = co_await probe(q, *probe_docker, env, seen, probe_id);
        if (i > 0) idle.add(pr);  // the first also proves the subscription is live
      }
      const std::int64_t idle_end_ns = unix_ns_now();

      // Commit rounds: each commits a fresh key while probes run.
      std::vector<Probe> during;
      std::vector<std::pair<std::int64_t, std::int64_t>> windows;  // export .. import (ns)
      for (int round = 0; round < kCommitRounds; ++round) {
        queue::JobSpec cs;
        cs.id = "commit-probe-" + std::to_string(round);
        cs.cmd = {"sh", "-c",
                  "dd if=/dev/zero of=/work/blob bs=1M count=" + std::to_string(megabytes) +
                      " 2>/dev/null; echo step"};
        queue::SnapshotSpec csnap;
        csnap.key = key + "-commit-" + std::to_string(round);
        csnap.reuse = true;
        csnap.commit = true;
        cs.snapshot = csnap;
        cs.timeout_s = 600;
        const std::size_t imports_before = seen.imports.size();
        const std::string commit_job = cs.id;
        co_await q.enqueue(std::move(cs));
        co_await await_key(seen.job_created, commit_job, "create");
        const std::string commit_cid = seen.job_container.at(commit_job);
        const std::int64_t export_ns = co_await await_key(seen.exported, commit_cid, "export");
        for (int i = 0; i < 50 && seen.imports.size() == imports_before; ++i) {
          const std::string probe_id = "during-" + std::to_string(round) + "-" + std::to_string(i);
          Probe pr = co_await probe(q, *probe_docker, env, seen, probe_id);
          during.push_back(pr);
        }
        std::vector<std::string> commit_ids = {commit_job};
        auto commit_recs = co_await wait_all(q, std::move(commit_ids), 10ms, Duration(600s));
        if (commit_recs.at(0).state != queue::JobState::succeeded) {
          throw std::runtime_error(commit_job + " ended " + commit_recs.at(0).error);
        }
        std::int64_t import_ns = 0;
        if (seen.imports.size() > imports_before) import_ns = seen.imports[imports_before];
        if (import_ns > 0) windows.emplace_back(export_ns, import_ns);
      }
      sub->stop();
      health.stop = true;
      co_await health.done.async_wait(net::as_tuple(use_awaitable));
      const auto in_window = [&](std::int64_t from, std::int64_t to) {
        for (const auto& [a, b] : windows) {
          if (from >= a && to <= b) return true;
        }
        return false;
      };
      ProbeStats in_commit;
      for (const auto& pr : during) {
        if (in_window(pr.enqueued_ns, pr.created_ns)) in_commit.add(pr);
      }
      std::vector<double> window_ms;
      for (const auto& [a, b] : windows) window_ms.push_back(static_cast<double>(b - a) / 1e6);
      std::vector<double> health_idle;
      std::vector<double> health_commit;
      for (const auto& [sent, ms] : health.samples) {
        const auto done_ns = sent + static_cast<std::int64_t>(ms * 1e6);
        if (sent < idle_end_ns)
          health_idle.push_back(ms);
        else if (in_window(sent, done_ns))
          health_commit.push_back(ms);
      }

      std::vector<double> cold_commit_rounds;
      std::vector<double> probe_commit_ms;
      std::string commit_status;
      std::istringstream log_lines(router.log());
      std::string l;
      while (std::getline(log_lines, l)) {
        auto j = nlohmann::json::parse(l, nullptr, false);
        if (j.is_discarded() || j.value("msg", "") != "snapshot commit") continue;
        if (j.value("job", "").rfind("commit-probe", 0) == 0)
          probe_commit_ms.push_back(j.value("took_ms", -1.0));
        if (j.value("job", "").rfind("cold-", 0) != 0) continue;
        cold_commit_rounds.push_back(j.value("took_ms", -1.0));
        if (commit_status.empty() || commit_status == "committed")
          commit_status = j.value("status", "");  // the first that was not "committed"
      }
      const double commit_ms = std::cmp_equal(cold_commit_rounds.size(), kWarmRounds)
                                   ? percentile(cold_commit_rounds, 50)
                                   : -1.0;

      // Remove the snapshot images so the engine is left clean.
      container::DockerClientOptions o;
      o.socket_path = env.docker_socket;
      auto docker = container::DockerClient::create(ex, o);
      std::vector<std::string> labels = {"warmstart.snapshot.key"};
      auto images = co_await docker->list_images(std::move(labels));
      int images_removed = 0;
      std::int64_t image_bytes = 0;
      for (const auto& img : images) {
        auto k = img.labels.find("warmstart.snapshot.key");
        if (k != img.labels.end() && k->second == key + "-0") image_bytes += img.size_bytes;
        co_await docker->remove_image(img.id, true);
        ++images_removed;
      }
      co_await delete_prefix(*q.client(), router.key_prefix());
      q.close();
      router.stop();

      const ByHand hand = co_await by_hand(*docker, env, megabytes, "bench-by-hand-" + router.id());
      const double hand_ms = percentile(hand.export_import_ms, 50);
      const double plain_ms = percentile(hand.plain_commit_ms, 50);
      const auto mb_per_s = [megabytes](double ms) {
        return ms > 0 ? static_cast<double>(megabytes) * 1000.0 / ms : 0.0;
      };

      const double cold_ms = percentile(cold_rounds, 50);
      const double warm_ms = percentile(warm_rounds, 50);
      line = {{"bench", "snapshot"},
              {"megabytes", megabytes},
              {"cold_ms", cold_ms},
              {"cold_ms_rounds", cold_rounds},
              {"cold_run_ms", percentile(cold_run_rounds, 50)},
              {"commit_ms", commit_ms},
              {"commit_ms_rounds", cold_commit_rounds},
              {"commit_status", commit_status},
              {"commit_mb_per_s", mb_per_s(commit_ms)},
              {"export_import_ms", hand_ms},
              {"export_import_ms_rounds", hand.export_import_ms},
              {"export_import_mb_per_s", mb_per_s(hand_ms)},
              {"plain_commit_ms", plain_ms},
              {"plain_commit_ms_rounds", hand.plain_commit_ms},
              {"plain_commit_mb_per_s", mb_per_s(plain_ms)},
              {"commit_speed_vs_export_import", commit_ms > 0 ? hand_ms / commit_ms : 0.0},
              {"commit_speed_vs_plain_commit", commit_ms > 0 ? plain_ms / commit_ms : 0.0},
              {"commit_speed_target", 0.8},
              {"cold_without_commit_ms", commit_ms >= 0 ? cold_ms - commit_ms : -1.0},
              {"warm_ms", warm_ms},
              {"warm_ms_rounds", warm_rounds},
              {"warm_run_ms", percentile(warm_run_rounds, 50)},
              {"warm2_ms", percentile(warm2_rounds, 50)},
              {"warm2_ms_rounds", warm2_rounds},
              {"warm_from_snapshot", from_snapshot},
              {"warm_over_cold", percentile(ratio_rounds, 50)},
              {"warm_over_cold_rounds", ratio_rounds},
              {"warm_over_cold_min", *std::min_element(ratio_rounds.begin(), ratio_rounds.end())},
              {"warm_over_cold_max", max_of(ratio_rounds)},
              {"warm_rounds", kWarmRounds},
              {"warm_over_cold_without_commit",
               commit_ms >= 0 && cold_ms > commit_ms ? warm_ms / (cold_ms - commit_ms) : 0},
              {"target_ratio", 0.25},
              {"snapshot_image_bytes", image_bytes},
              {"images_removed", images_removed},
              {"dispatch_idle_ms", percentile(idle.to_create, 50)},
              {"dispatch_idle_ms_max", max_of(idle.to_create)},
              {"dispatch_idle_started_ms", percentile(idle.to_started, 50)},
              {"raw_create_idle_ms", percentile(idle.raw, 50)},
              {"dispatch_during_commit_ms", percentile(in_commit.to_create, 50)},
              {"dispatch_during_commit_ms_max", max_of(in_commit.to_create)},
              {"dispatch_during_commit_started_ms", percentile(in_commit.to_started, 50)},
              {"raw_create_during_commit_ms", percentile(in_commit.raw, 50)},
              {"dispatch_probes_idle", idle.to_create.size()},
              {"dispatch_probes_during_commit", in_commit.to_create.size()},
              {"commit_rounds", kCommitRounds},
              {"probe_commit_window_ms", percentile(window_ms, 50)},
              {"probe_commit_ms", percentile(probe_commit_ms, 50)},
              {"healthz_idle_ms", percentile(health_idle, 50)},
              {"healthz_idle_ms_max", max_of(health_idle)},
              {"healthz_during_commit_ms", percentile(health_commit, 50)},
              {"healthz_during_commit_ms_p99", percentile(health_commit, 99)},
              {"healthz_during_commit_ms_max", max_of(health_commit)},
              {"healthz_samples_during_commit", health_commit.size()},
              {"loadavg_1m", load_average_1m()},
              {"definitions",
               "*_ms: client clock before enqueue .. finished_at; *_run_ms: started_at .. "
               "finished_at; cold includes the commit (succeeded only after it); warm runs "
               "with commit off; 3 rounds of cold, warm, warm2 under a key each, medians "
               "(per round in *_rounds), warm_over_cold: median of the rounds' warm/cold; "
               "commit_ms: took_ms of the cold jobs' 'snapshot commit' lines, median; "
               "dispatch_*: probe `true` jobs one at a time, client clock before enqueue .. "
               "engine create event of the probe's container (p50; _started: .. started_at), "
               "idle = on the idle router (5 probes), during_commit = enqueued after the export "
               "event of a second committed job's container and created before its image "
               "import event (router concurrency 2); raw_create_*: client clock before "
               "create_container .. its create event, right after each probe; "
               "snapshot_image_bytes: the first key's image only; 3 commit rounds; healthz_*: "
               "GET /healthz on the router every 50 ms, connect .. response (idle: during the "
               "idle probes; during_commit: sent and answered inside an export..import window); "
               "export_import_ms: `docker export C | docker import -` by the CLI of a raw "
               "container with the same MEGABYTES, plain_commit_ms: POST /commit of it (layered), "
               "medians of 3 alternating rounds; *_mb_per_s: MEGABYTES / that time; "
               "commit_speed_vs_*: that time / commit_ms"}};
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snapshot_bench: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", line.dump().c_str());
  return line.value("warm_from_snapshot", false) &&
                 line.value("dispatch_probes_during_commit", 0) > 0
             ? 0
             : 1;
}
