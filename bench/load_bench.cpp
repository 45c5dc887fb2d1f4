// load_bench [RUNNING] [QUEUED] [STEADY_S] [DRAIN]   (defaults 200 10000 30 min(QUEUED, 20))
// The router under load: RUNNING containers running at once and QUEUED jobs
// waiting behind them, through the real `warmstart router` (concurrency =
// RUNNING, the router's default reconcile interval). Router CPU per job, its
// idle cost while it holds that load, and its memory.
//
// Phases (all jobs enqueued up front, in this order: RUNNING long jobs, then
// QUEUED `true` jobs; the stream is FIFO so the long jobs take every slot):
//   ramp     first enqueue .. the RUNNING-th container start event (the engine
//            creates containers one by one: 0.2-0.4 s each on a 2-core host).
//   steady   STEADY_S seconds with RUNNING containers running and QUEUED jobs
//            queued (after 2 s of settling): the router's idle cost per second.
//   cancel   the client cancels the last QUEUED - DRAIN queued jobs (a queue
//            operation: they never reach the engine; 10,000 containers at
//            ~5/s would take over half an hour).
//   finish   the client sends SIGTERM to the RUNNING containers (their command
//            traps it and exits 0, as if the work had ended); the router sees
//            the exits, completes the jobs, removes the containers, then runs
//            the DRAIN `true` jobs and skips the cancelled entries, until every
//            job is terminal.
// A long job's command: sh -c 'trap "exit 0" TERM; sleep CAP & wait', CAP a
// safety bound (the containers end by themselves if the bench dies).
//
// Figures (router = the router process, its on-CPU time from /proc/<pid>/task/*/schedstat):
//   cpu_ms_per_job  router CPU from just before the first enqueue until every
//                   job is terminal / jobs run in a container (RUNNING + DRAIN);
//                   includes holding the load for the ramp and steady phases
//                   and skipping the cancelled entries. Target <= 1 ms.
//   cpu_ms_per_job_excl_steady  the same without the steady window's CPU.
//   steady_cpu_ms_per_s  router CPU per second of the steady window.
//   router_vmhwm_kb  peak RSS at the end. Target <= 40 MB.
//   peak_running  most containers of this router running at once (engine
//                 start/die events).
// Exit status 1 when a job failed or was lost, the peak was not reached, or
// containers or Redis keys were left behind.
#include "bench/bench_support.hpp"

#include <nlohmann/json.hpp>

#include <deque>
#include <map>
#include <sstream>

using namespace warmstart;
using namespace warmstart::bench;

namespace {

struct Cpu {
  double router_ms = 0;
  double redis_ms = 0;
};

awaitable<Cpu> sample_cpu(pid_t router, redis::Client& client) {
  Cpu c;
  c.router_ms = process_cpu_ms(router);
  c.redis_ms = co_await redis_cpu_ms(client);
  co_return c;
}

awaitable<void> sleep_ms(int ms) {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer t(ex);
  t.expires_after(std::chrono::milliseconds(ms));
  co_await t.async_wait(use_awaitable);
}

int count_warnings(const std::string& log) {
  int n = 0;
  std::istringstream lines(log);
  std::string l;
  while (std::getline(lines, l)) {
    if (l.find("\"level\":\"warn\"") != std::string::npos ||
        l.find("\"level\":\"error\"") != std::string::npos)
      ++n;
  }
  return n;
}

struct Params {
  int running = 200;
  int queued = 10000;
  int steady_s = 30;
  int drain = 20;
};

// The phases; fills `line` with the figures.
awaitable<void> measure(container::DockerClient& d, RouterChild& router, queue::RedisQueue& q,
                        const Params& p, nlohmann::json& line) {
  auto* docker = &d;
  co_await wait_router_ready(q, router.id());
  redis::Client& rc = *q.client();

  // Running containers of this router, from the engine's events.
  int running = 0;
  int peak = 0;
  int starts = 0;
  int dies = 0;
  container::EventFilter filter;
  filter.types.push_back("container");
  filter.labels.push_back("warmstart.router=" + router.id());
  filter.events.push_back("start");
  filter.events.push_back("die");
  auto sub = docker->subscribe_events(filter, 0, [&](const container::Event& e) {
    if (e.action == "start") {
      ++starts;
      ++running;
      peak = std::max(peak, running);
    } else if (e.action == "die") {
      ++dies;
      --running;
    }
  });

  const int cap_s = p.steady_s + p.running * 3 + 900;
  std::vector<std::string> run_ids;
  std::vector<std::string> drain_ids;
  std::vector<std::string> cancel_ids;
  const long rss_start = process_status_kb(router.pid(), "VmRSS");

  // --- enqueue + ramp -----------------------------------------------------
  const auto wall0 = Clock::now();
  const std::int64_t t0_ms = unix_ms_now();
  const Cpu cpu0 = co_await sample_cpu(router.pid(), rc);
  for (int i = 0; i < p.running; ++i) {
    queue::JobSpec s;
    s.id = "run-" + std::to_string(i);
    s.cmd = {"sh", "-c", "trap 'exit 0' TERM; sleep " + std::to_string(cap_s) + " & wait"};
    s.timeout_s = cap_s + 60;
    run_ids.push_back(s.id);
    co_await q.enqueue(std::move(s));
  }
  for (int i = 0; i < p.queued; ++i) {
    queue::JobSpec s;
    s.id = "q-" + std::to_string(i);
    s.cmd = {"true"};
    if (i < p.drain)
      drain_ids.push_back(s.id);
    else
      cancel_ids.push_back(s.id);
    co_await q.enqueue(std::move(s));
  }
  const double enqueue_s = std::chrono::duration<double>(Clock::now() - wall0).count();

  const auto ramp_limit = Clock::now() + std::chrono::seconds(120 + p.running * 3);
  while (running < p.running) {
    if (!process_alive(router.pid())) throw std::runtime_error("the router exited during the ramp");
    if (Clock::now() > ramp_limit) {
      throw std::runtime_error("only " + std::to_string(running) + " of " +
                               std::to_string(p.running) + " containers running after the ramp");
    }
    co_await sleep_ms(100);
  }
  const double ramp_s = std::chrono::duration<double>(Clock::now() - wall0).count();
  std::fprintf(stderr, "load_bench: %d containers running after %.1f s (router pid %d)\n", running,
               ramp_s, static_cast<int>(router.pid()));

  // --- steady -------------------------------------------------------------
  co_await sleep_ms(2000);  // the router records the last starts
  const int dies_before_steady = dies;
  const Cpu cpu_s0 = co_await sample_cpu(router.pid(), rc);
  const auto steady0 = Clock::now();
  std::fprintf(stderr, "load_bench: steady window begins (%d s)\n", p.steady_s);
  int steady_min_running = running;
  long steady_rss_max = 0;
  const auto steady_end = steady0 + std::chrono::seconds(p.steady_s);
  while (Clock::now() < steady_end) {
    steady_min_running = std::min(steady_min_running, running);
    steady_rss_max = std::max(steady_rss_max, process_status_kb(router.pid(), "VmRSS"));
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady_end - Clock::now()).count();
    co_await sleep_ms(static_cast<int>(std::clamp<long long>(left, 1, 1000)));
  }
  const Cpu cpu_s1 = co_await sample_cpu(router.pid(), rc);
  const double steady_s = std::chrono::duration<double>(Clock::now() - steady0).count();
  steady_min_running = std::min(steady_min_running, running);
  const long rss_steady = process_status_kb(router.pid(), "VmRSS");
  const double loadavg_steady = load_average_1m();
  // What the engine and the queue say at the end of the steady window.
  std::vector<std::string> mine = {"warmstart.router=" + router.id()};
  auto listed = co_await docker->list_containers(mine, false);
  const int running_listed = static_cast<int>(listed.size());
  auto counts = co_await q.counts();
  const std::int64_t queued_observed = counts.by_state[queue::JobState::queued];
  const std::int64_t running_records = counts.by_state[queue::JobState::running];

  // --- cancel -------------------------------------------------------------
  std::fprintf(stderr, "load_bench: steady window ends; cancelling %zu queued jobs\n",
               cancel_ids.size());
  const Cpu cpu_c0 = co_await sample_cpu(router.pid(), rc);
  int cancel_unexpected = 0;
  co_await parallel_for(cancel_ids.size(), 8, [&](std::size_t i) -> awaitable<void> {
    auto r = co_await q.cancel(cancel_ids[i]);
    if (r.outcome != queue::CancelOutcome::cancelled) ++cancel_unexpected;
  });
  const Cpu cpu_c1 = co_await sample_cpu(router.pid(), rc);

  // --- finish -------------------------------------------------------------
  int kill_errors = 0;
  co_await parallel_for(listed.size(), 8, [&](std::size_t i) -> awaitable<void> {
    bool failed = false;
    try {
      co_await docker->kill_container(listed[i].id, "TERM");
    } catch (const std::exception&) {
      failed = true;
    }
    if (failed) ++kill_errors;
  });
  std::vector<std::string> waited = run_ids;
  waited.insert(waited.end(), drain_ids.begin(), drain_ids.end());
  auto recs = co_await wait_all(q, waited, 500ms, Duration(std::chrono::seconds(600)));
  const Cpu cpu1 = co_await sample_cpu(router.pid(), rc);
  const auto wall1 = Clock::now();
  const long vmhwm = process_status_kb(router.pid(), "VmHWM");
  const long rss_end = process_status_kb(router.pid(), "VmRSS");

  int succeeded = 0;
  int failed = 0;
  std::int64_t last_finished = t0_ms;
  for (const auto& r : recs) {
    if (r.state == queue::JobState::succeeded)
      ++succeeded;
    else
      ++failed;
    if (r.finished_at) last_finished = std::max(last_finished, *r.finished_at);
  }
  // Every cancelled job is terminal and no stream entry is left unacked.
  auto end_counts = co_await q.counts();
  const std::int64_t cancelled = end_counts.by_state[queue::JobState::cancelled];
  std::int64_t not_terminal = 0;
  for (auto s : {queue::JobState::queued, queue::JobState::scheduled, queue::JobState::running})
    not_terminal += end_counts.by_state[s];
  std::int64_t depth_left = 0;
  for (const auto& [name, n] : end_counts.depth) depth_left += n;
  const std::int64_t lost =
      not_terminal + std::max<std::int64_t>(0, static_cast<std::int64_t>(cancel_ids.size()) -
                                                   cancelled - cancel_unexpected);

  sub->stop();

  const int jobs_run = p.running + p.drain;
  const double cpu_total = cpu1.router_ms - cpu0.router_ms;
  const double cpu_steady = cpu_s1.router_ms - cpu_s0.router_ms;
  const double cpu_ramp = cpu_s0.router_ms - cpu0.router_ms;
  const double cpu_cancel = cpu_c1.router_ms - cpu_c0.router_ms;
  const double cpu_finish = cpu1.router_ms - cpu_c1.router_ms;
  const double redis_total = cpu1.redis_ms - cpu0.redis_ms;
  const double redis_steady = cpu_s1.redis_ms - cpu_s0.redis_ms;
  line = {
      {"bench", "load"},
      {"running", p.running},
      {"queued", p.queued},
      {"steady_s", steady_s},
      {"drain_jobs", p.drain},
      {"jobs_run", jobs_run},
      {"succeeded", succeeded},
      {"failed", failed},
      {"cancelled", cancelled},
      {"cancel_unexpected", cancel_unexpected},
      {"lost", lost},
      {"peak_running", peak},
      {"steady_min_running", steady_min_running},
      {"dies_before_steady", dies_before_steady},
      {"running_listed", running_listed},
      {"running_records", running_records},
      {"queued_observed", queued_observed},
      {"kill_errors", kill_errors},
      {"enqueue_s", enqueue_s},
      {"ramp_s", ramp_s},
      {"wall_s", std::chrono::duration<double>(wall1 - wall0).count()},
      {"last_finished_s", static_cast<double>(last_finished - t0_ms) / 1000.0},
      {"cpu_ms_total", cpu_total},
      {"cpu_ms_per_job", cpu_total / jobs_run},
      {"cpu_ms_per_job_excl_steady", (cpu_total - cpu_steady) / jobs_run},
      {"cpu_ms_ramp", cpu_ramp},
      {"cpu_ms_steady", cpu_steady},
      {"steady_cpu_ms_per_s", steady_s > 0 ? cpu_steady / steady_s : 0},
      {"cpu_ms_cancel", cpu_cancel},
      {"cpu_ms_finish", cpu_finish},
      {"target_cpu_ms_per_job", 1},
      {"router_vmrss_kb_start", rss_start},
      {"router_vmrss_kb_steady", rss_steady},
      {"router_vmrss_kb_steady_max", steady_rss_max},
      {"router_vmrss_kb_end", rss_end},
      {"router_vmhwm_kb", vmhwm},
      {"target_vmhwm_kb", 40 * 1024},
      {"redis_cpu_ms_per_job", redis_total / jobs_run},
      {"redis_steady_cpu_ms_per_s", steady_s > 0 ? redis_steady / steady_s : 0},
      {"depth_left", depth_left},
      {"loadavg_1m_steady", loadavg_steady},
      {"loadavg_1m", load_average_1m()},
      {"cores", static_cast<int>(std::thread::hardware_concurrency())},
      {"definitions",
       "router concurrency = running; enqueue running long jobs (sh: trap TERM -> exit 0; "
       "sleep cap) then queued `true` jobs; ramp: first enqueue .. running-th container start "
       "event; steady: steady_s with running containers up and queued jobs waiting (after 2 s "
       "settle); then the last queued-drain_jobs queued jobs are cancelled (queue op, never "
       "dispatched), the long containers get SIGTERM (exit 0) and the router completes them and "
       "runs the drain_jobs `true` jobs. cpu = router on-CPU time (schedstat); cpu_ms_per_job = "
       "router cpu first enqueue .. all terminal / jobs_run (running + drain_jobs), incl. the "
       "steady window; _excl_steady without it; steady_cpu_ms_per_s = idle cost with the load "
       "held; router_vmhwm_kb = VmHWM at the end; peak_running from engine start/die events; "
       "redis_* = Redis INFO cpu over the same windows; lost = records not terminal + cancelled "
       "jobs not confirmed; reconcile_interval = router default (5s)"}};
}

// Starts the router, measures, and always cleans up: stops the router, removes
// any container of this router left (counted: the router should have removed
// them all), deletes the router's Redis keys.
awaitable<void> run_load(const BenchEnv& env, const Params& p, nlohmann::json& line, bool& ok) {
  auto ex = co_await net::this_coro::executor;
  container::DockerClientOptions o;
  o.socket_path = env.docker_socket;
  auto docker = container::DockerClient::create(ex, o);
  co_await docker->ping();

  RouterChildOptions ro;
  ro.concurrency = p.running;
  ro.reconcile_interval = "";  // the router's default
  RouterChild router(env, ro, "load");
  queue::RedisQueue q(ex, queue_options(env, router.key_prefix()));
  std::exception_ptr failure;
  try {
    co_await measure(*docker, router, q, p, line);
  } catch (...) {
    failure = std::current_exception();
  }
  const int warnings = count_warnings(router.log());
  router.stop();

  std::vector<std::string> mine = {"warmstart.router=" + router.id()};
  auto left = co_await docker->list_containers(mine, true);
  const int containers_left = static_cast<int>(left.size());
  if (failure) {
    // What the engine held and what the router said, for the next look.
    std::map<std::string, int> states;
    for (const auto& c : left) ++states[c.state];
    for (const auto& [state, n] : states) {
      std::fprintf(stderr, "load_bench: %d containers %s at the failure\n", n, state.c_str());
    }
    std::istringstream lines(router.log());
    std::deque<std::string> noted;
    for (std::string l; std::getline(lines, l);) {
      if (l.find("\"level\":\"info\"") != std::string::npos) continue;
      noted.push_back(std::move(l));
      if (noted.size() > 40) noted.pop_front();
    }
    for (const auto& l : noted) std::fprintf(stderr, "load_bench: router: %s\n", l.c_str());
  }
  for (const auto& c : left) co_await docker->remove_container(c.id, true);
  co_await delete_prefix(*q.client(), router.key_prefix());
  auto scan_args =
      redis::make_args("SCAN", "0", "MATCH", router.key_prefix() + "*", "COUNT", 100000);
  redis::Reply scan = co_await q.client()->command(std::move(scan_args));
  const int keys_left = static_cast<int>(scan.as_array().at(1).as_array().size());
  q.close();
  if (failure) {
    std::fprintf(stderr, "load_bench: cleaned up after a failure (%d containers removed)\n",
                 containers_left);
    std::rethrow_exception(failure);
  }

  line["router_warnings"] = warnings;
  line["containers_left"] = containers_left;
  line["keys_left"] = keys_left;
  ok = line.value("failed", 1) == 0 && line.value("lost", 1) == 0 &&
       line.value("cancel_unexpected", 1) == 0 && line.value("peak_running", 0) >= p.running &&
       containers_left == 0 && keys_left == 0 && line.value("depth_left", 1) == 0 &&
       line.value("succeeded", 0) == line.value("jobs_run", -1);
}

}  // namespace

int main(int argc, char** argv) {
  log::init(log::Level::warn);
  Params p;
  if (argc > 1) p.running = std::max(1, std::atoi(argv[1]));
  if (argc > 2) p.queued = std::max(0, std::atoi(argv[2]));
  if (argc > 3) p.steady_s = std::max(1, std::atoi(argv[3]));
  p.drain = argc > 4 ? std::atoi(argv[4]) : 20;
  p.drain = std::clamp(p.drain, 0, p.queued);
  const BenchEnv env;
  nlohmann::json line;
  bool ok = false;
  try {
    run_main([&]() -> awaitable<void> { co_await run_load(env, p, line, ok); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_bench: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", line.dump().c_str());
  return ok ? 0 : 1;
}
