// pipeline_bench [--rounds R] [--reconcile DURATION|default] [JOBS] [PARALLELISM...]
// Throughput of trivial jobs (`true`, base image, no snapshot) through the real
// `warmstart router` (concurrency P) versus the raw Engine API doing
// create/start/wait/remove with P coroutines on DockerClient (NetworkMode none,
// same image), in the same run. One JSON line per parallelism, plus the router
// process's CPU per job and peak RSS.
//
// Definitions (also in each JSON line, "definitions"):
// With --rounds R, each parallelism runs R rounds of (raw phase, router phase),
// alternating so that a change in the load of a shared machine hits both; times
// are summed over the rounds and the per-round ratios are listed.
// --reconcile sets the router's reconcile_interval (default 1s, the other
// benches' value; `default`: the router's own, 5s, as load_bench runs it):
// the lease renewals and container lists it paces are part of the CPU per job.
//   raw_s      wall time of the P raw workers for all JOBS (steady clock).
//   warmstart_s  from just before the first enqueue (client wall clock) to the
//              latest finished_at of the JOBS records (the router sets it after
//              the container is removed and the job acked). All JOBS are
//              enqueued up front; the router runs P at a time.
//   ratio      (JOBS / warmstart_s) / (JOBS / raw_s).
//   overhead_ms_per_job  (warmstart_s - raw_s) * P / JOBS: the extra wall time
//              the router adds to one job's slot.
//   raw_job_ms_p50  create..remove of one raw job.
//   ws_job_ms_p50   started_at..finished_at of one job record (started_at is
//              recorded after the container start, so this misses create+start;
//              the records have ms resolution).
//   router_cpu_ms_per_job  on-CPU time of the router process (schedstat, ns) over the phase
//              (after the warm-up job) / JOBS.
//   raw_client_cpu_ms_per_job  on-CPU time of this bench process over a raw
//              phase / JOBS: the same four engine calls per job, made by a
//              minimal client of the same library (the floor the router's
//              engine work is measured against; it does no Redis work).
//   router_wakeups_per_job, raw_client_wakeups_per_job  voluntary context
//              switches of the process's main thread / JOBS: how often it
//              blocked and was woken.
//   router_vmhwm_kb  peak RSS of the router process at the end of the phase.
#include "bench/bench_support.hpp"

#include <algorithm>
#include <numeric>

using namespace warmstart;
using namespace warmstart::bench;

namespace {

struct RawResult {
  double wall_s = 0;
  std::vector<double> job_ms;
  double cpu_ms_per_job = 0;   // this process's on-CPU time: the raw client's
  double wakeups_per_job = 0;  // this process's voluntary context switches
};

awaitable<RawResult> run_raw(container::DockerClient& docker, const BenchEnv& env, int jobs,
                             int parallelism) {
  auto ex = co_await net::this_coro::executor;
  RawResult out;
  int next = 0;
  int active = parallelism;
  std::exception_ptr failure;
  net::steady_timer done(ex, Clock::time_point::max());
  const double cpu0 = process_cpu_ms(::getpid());
  const long switches0 = process_status_kb(::getpid(), "voluntary_ctxt_switches");
  const auto start = Clock::now();
  for (int w = 0; w < parallelism; ++w) {
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          while (next < jobs && !failure) {
            ++next;
            container::ContainerSpec spec;
            spec.image = env.base_image;
            spec.cmd = {"true"};
            spec.labels["warmstart.bench"] = "raw";
            const auto t0 = Clock::now();
            std::string id = co_await docker.create_container(std::move(spec));
            int code = -1;
            std::exception_ptr step_failed;
            try {
              co_await docker.start_container(id);
              code = co_await docker.wait_container(id, Duration(60s));
            } catch (...) {
              step_failed = std::current_exception();
            }
            // A failed start or wait leaves no container behind (forced: it may run).
            co_await docker.remove_container(id, step_failed != nullptr);
            if (step_failed) std::rethrow_exception(step_failed);
            if (code != 0) throw std::runtime_error("raw container exited " + std::to_string(code));
            out.job_ms.push_back(
                std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
          }
          if (--active == 0) done.cancel();
        },
        [&](std::exception_ptr e) {
          if (e && !failure) failure = e;
          if (e && --active == 0) done.cancel();
        });
  }
  co_await done.async_wait(net::as_tuple(use_awaitable));
  out.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  out.cpu_ms_per_job = (process_cpu_ms(::getpid()) - cpu0) / jobs;
  out.wakeups_per_job =
      static_cast<double>(process_status_kb(::getpid(), "voluntary_ctxt_switches") - switches0) /
      jobs;
  if (failure) std::rethrow_exception(failure);
  co_return out;
}

struct WsResult {
  double wall_s = 0;
  std::vector<double> job_ms;
  double cpu_ms_per_job = 0;
  double wakeups_per_job = 0;
  long vmhwm_kb = 0;
  long vmrss_kb = 0;
  int failed = 0;
};

awaitable<WsResult> run_warmstart(const BenchEnv& env, int jobs, int parallelism,
                                  std::string reconcile_interval) {
  auto ex = co_await net::this_coro::executor;
  RouterChildOptions options;
  options.concurrency = parallelism;
  options.reconcile_interval = std::move(reconcile_interval);
  RouterChild router(env, options, "pipe" + std::to_string(parallelism));
  queue::RedisQueue q(ex, queue_options(env, router.key_prefix()));
  co_await wait_router_ready(q, router.id());
  WsResult out;
  const double cpu0 = process_cpu_ms(router.pid());
  const long switches0 = process_status_kb(router.pid(), "voluntary_ctxt_switches");
  const std::int64_t t0 = unix_ms_now();
  std::vector<std::string> ids;
  for (int i = 0; i < jobs; ++i) {
    queue::JobSpec s;
    s.id = "p-" + std::to_string(i);
    s.cmd = {"true"};
    ids.push_back(s.id);
    co_await q.enqueue(std::move(s));
  }
  auto recs = co_await wait_all(q, ids, 20ms, Duration(600s));
  const double cpu1 = process_cpu_ms(router.pid());
  const long switches1 = process_status_kb(router.pid(), "voluntary_ctxt_switches");
  out.vmhwm_kb = process_status_kb(router.pid(), "VmHWM");
  out.vmrss_kb = process_status_kb(router.pid(), "VmRSS");
  std::int64_t last = t0;
  for (const auto& r : recs) {
    if (r.state != queue::JobState::succeeded) ++out.failed;
    if (r.finished_at) last = std::max(last, *r.finished_at);
    if (r.started_at && r.finished_at)
      out.job_ms.push_back(static_cast<double>(*r.finished_at - *r.started_at));
  }
  out.wall_s = static_cast<double>(last - t0) / 1000.0;
  out.cpu_ms_per_job = (cpu1 - cpu0) / jobs;
  out.wakeups_per_job = static_cast<double>(switches1 - switches0) / jobs;
  co_await delete_prefix(*q.client(), router.key_prefix());
  q.close();
  router.stop();
  co_return out;
}

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

}  // namespace

int main(int argc, char** argv) {
  log::init(log::Level::warn);
  int first = 1;
  int rounds = 1;
  std::string reconcile = "1s";
  while (first + 1 < argc && std::string(argv[first]).rfind("--", 0) == 0) {
    const std::string flag = argv[first];
    const std::string value = argv[first + 1];
    if (flag == "--rounds") {
      rounds = std::max(1, std::atoi(value.c_str()));
    } else if (flag == "--reconcile") {
      reconcile = value == "default" ? "" : value;
    } else {
      std::fprintf(stderr, "pipeline_bench: unknown option %s\n", flag.c_str());
      return 2;
    }
    first += 2;
  }
  const int jobs = argc > first ? std::atoi(argv[first]) : 100;
  std::vector<int> parallelisms;
  for (int i = first + 1; i < argc; ++i) parallelisms.push_back(std::atoi(argv[i]));
  if (parallelisms.empty()) parallelisms = {1, 4, 16};
  const BenchEnv env;
  bool ok = true;
  try {
    run_main([&]() -> awaitable<void> {
      container::DockerClientOptions o;
      o.socket_path = env.docker_socket;
      auto docker = container::DockerClient::create(co_await net::this_coro::executor, o);
      co_await docker->ping();
      for (int p : parallelisms) {
        // Raw and router phases alternate (ABAB...) so that a change in the
        // load of a shared machine hits both; the ratio is also given per round.
        RawResult raw;
        WsResult ws;
        std::vector<double> round_ratios;
        std::vector<double> round_cpu_ms;
        std::vector<double> round_raw_cpu_ms;
        std::vector<double> round_wakeups;
        std::vector<double> round_raw_wakeups;
        for (int r = 0; r < rounds; ++r) {
          // One untimed raw container first: the engine's caches are warm for both.
          co_await run_raw(*docker, env, 1, 1);
          RawResult raw_round = co_await run_raw(*docker, env, jobs, p);
          WsResult ws_round = co_await run_warmstart(env, jobs, p, reconcile);
          round_ratios.push_back(ws_round.wall_s > 0 ? raw_round.wall_s / ws_round.wall_s : 0);
          raw.wall_s += raw_round.wall_s;
          raw.job_ms.insert(raw.job_ms.end(), raw_round.job_ms.begin(), raw_round.job_ms.end());
          ws.wall_s += ws_round.wall_s;
          ws.job_ms.insert(ws.job_ms.end(), ws_round.job_ms.begin(), ws_round.job_ms.end());
          ws.failed += ws_round.failed;
          ws.vmhwm_kb = std::max(ws.vmhwm_kb, ws_round.vmhwm_kb);
          ws.vmrss_kb = ws_round.vmrss_kb;
          round_cpu_ms.push_back(ws_round.cpu_ms_per_job);
          round_raw_cpu_ms.push_back(raw_round.cpu_ms_per_job);
          round_wakeups.push_back(ws_round.wakeups_per_job);
          round_raw_wakeups.push_back(raw_round.wakeups_per_job);
        }
        ws.cpu_ms_per_job = mean(round_cpu_ms);
        const int total = jobs * rounds;
        const double raw_tput = total / raw.wall_s;
        const double ws_tput = ws.wall_s > 0 ? total / ws.wall_s : 0;
        nlohmann::json line = {
            {"bench", "pipeline"},
            {"jobs", jobs},
            {"rounds", rounds},
            {"parallelism", p},
            {"reconcile_interval", reconcile.empty() ? "router default" : reconcile},
            {"raw_s", raw.wall_s},
            {"raw_jobs_per_s", raw_tput},
            {"warmstart_s", ws.wall_s},
            {"warmstart_jobs_per_s", ws_tput},
            {"ratio", raw_tput > 0 ? ws_tput / raw_tput : 0},
            {"round_ratios", round_ratios},
            {"ratio_median", percentile(round_ratios, 50)},
            {"ratio_min", *std::min_element(round_ratios.begin(), round_ratios.end())},
            {"ratio_max", *std::max_element(round_ratios.begin(), round_ratios.end())},
            {"ratio_target", 0.98},
            {"overhead_ms_per_job", (ws.wall_s - raw.wall_s) * 1000.0 * p / total},
            {"raw_job_ms_p50", percentile(raw.job_ms, 50)},
            {"raw_job_ms_p99", percentile(raw.job_ms, 99)},
            {"ws_job_ms_p50", percentile(ws.job_ms, 50)},
            {"ws_job_ms_p99", percentile(ws.job_ms, 99)},
            {"router_cpu_ms_per_job", ws.cpu_ms_per_job},
            {"router_cpu_ms_per_job_min",
             *std::min_element(round_cpu_ms.begin(), round_cpu_ms.end())},
            {"router_cpu_ms_per_job_max",
             *std::max_element(round_cpu_ms.begin(), round_cpu_ms.end())},
            {"raw_client_cpu_ms_per_job", mean(round_raw_cpu_ms)},
            {"raw_client_cpu_ms_per_job_min",
             *std::min_element(round_raw_cpu_ms.begin(), round_raw_cpu_ms.end())},
            {"raw_client_cpu_ms_per_job_max",
             *std::max_element(round_raw_cpu_ms.begin(), round_raw_cpu_ms.end())},
            {"router_wakeups_per_job", mean(round_wakeups)},
            {"raw_client_wakeups_per_job", mean(round_raw_wakeups)},
            {"router_vmhwm_kb", ws.vmhwm_kb},
            {"router_vmrss_kb", ws.vmrss_kb},
            {"failed", ws.failed},
            {"loadavg_1m", load_average_1m()},
            {"cores", static_cast<int>(std::thread::hardware_concurrency())},
            {"definitions",
             "per round: raw phase then router phase; raw_s/warmstart_s summed over rounds; "
             "warmstart_s: client clock before first enqueue .. max(finished_at); raw_s: P "
             "coroutines create/start/wait/remove; ratio = raw_s / warmstart_s; "
             "overhead_ms_per_job = (warmstart_s - raw_s) * P / (jobs * rounds); "
             "ws_job_ms = started_at..finished_at (ms records, after container start); "
             "raw_job_ms = create..remove; router_cpu = on-CPU time (schedstat) of the router "
             "process over the phase / jobs (mean of rounds); raw_client_cpu = on-CPU time of "
             "this bench process over the raw phase / jobs (mean of rounds): the same engine "
             "calls made by a minimal client of the same library; *_wakeups_per_job = "
             "voluntary context switches (/proc/<pid>/status, main thread) / jobs, mean of "
             "rounds: how often the process slept and was woken"}};
        std::printf("%s\n", line.dump().c_str());
        std::fflush(stdout);
        if (ws.failed != 0) ok = false;
      }
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipeline_bench: %s\n", e.what());
    return 1;
  }
  return ok ? 0 : 1;
}
