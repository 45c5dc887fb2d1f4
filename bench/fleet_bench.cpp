// fleet_bench --routers N [options]: N router processes on ONE Redis, each a
// real router::Dispatcher + RedisQueue on its own io_context, with the
// in-memory engine double (container::MemoryRuntime) standing in for Docker.
// Where one Redis tops out as the fleet grows (issue 13 item 5; bench/fleet
// runs it for 10, 50, 100 routers; docs/scale.md reads the numbers).
//
// The parent starts N children (this binary with --child I), all on the same
// key prefix and the queue "default", waits until all N have heartbeated, then:
//   1. idle: Redis CPU for --idle-s (10) seconds with the fleet idle (heartbeats,
//      lease renewals, housekeeping, blocked claims);
//   2. saturated: enqueues N x --jobs-per-router `true` jobs as fast as it
//      can (50 coroutines pipelined on one connection) and waits until all
//      are terminal; then reads every record;
//   3. paced: --paced-jobs jobs enqueued open-loop, evenly spaced, at
//      --paced-fraction of the saturated jobs/s, and waits until all are terminal.
// Then it stops the children (SIGTERM, SIGKILL after 5 s), deletes every key
// under the prefix and its scratch directory, and prints one JSON line.
//
// The engine double of each child: every create_container takes --create-ms,
// every start_container --start-ms, every remove_container --remove-ms
// (MemoryRuntime::set_latency); a started container exits 0 by itself after
// --run-ms. Jobs have no snapshot key (no snapshot registry: the queue's cost
// alone); concurrency --concurrency per router.
//
// What is measured:
//   jobs_per_s  saturated phase: jobs / (latest finished_at of its records -
//       client wall clock just before its first enqueue).
//   redis_cpu_ms_per_job  used_cpu_sys + used_cpu_user of INFO cpu, after the
//       last job of the saturated phase was seen terminal minus just before the
//       first enqueue, / jobs. It includes the enqueues, every claim, lease
//       renewal, mark_running, finish, the fleet's background traffic over that
//       window and the parent's completion polls (one ZCARD per terminal state
//       every 20 ms). redis_cpu_ms_per_job_net subtracts the idle rate x the
//       phase's wall time. redis_busy = Redis CPU / wall time of the phase
//       (1.0 = one core: Redis runs commands on one thread).
//       redis_ceiling_jobs_per_s = 1000 / redis_cpu_ms_per_job: the jobs/s at
//       which Redis alone would use one whole core, if its CPU per job stayed.
//   redis_idle_cpu_ms_per_s  Redis CPU per second of the idle phase.
//   routers_cpu_ms_per_job  on-CPU time (schedstat) of all router processes
//       (/proc/<pid>/task/*/schedstat) over the saturated phase, / jobs: what the fleet
//       itself costs this machine's cores per job.
//   redis_top_commands_per_job  INFO commandstats of the saturated phase
//       (after CONFIG RESETSTAT): the 8 costliest commands, calls and Redis
//       us per job. Rows overlap: an EVALSHA's time includes the commands its
//       script ran, which are counted on their own rows too. INFO and
//       CONFIG (this bench's) are left out; ZCARD includes its polls.
//       redis_idle_top_commands_per_router_s: the same for the idle phase,
//       per router and second.
//   jobs_per_router_*  saturated phase: jobs finished per router, from the
//       router_id of every terminal record (min, max, mean, stddev; zero =
//       routers that ran none).
//   dispatch_ms  paced phase, per job: the parent's wall clock just before
//       RedisQueue::enqueue -> the child's wall clock when its MemoryRuntime
//       runs the container (inside start_container, after the simulated
//       create and start latencies; same host, same clock). It covers the
//       enqueue round trip, the wake-up of a blocked claim, the claim script,
//       the router's image choice and spec, create, start. dispatch_share_ms =
//       dispatch_ms - create_ms - start_ms: the router's and Redis's share.
#include "bench/bench_support.hpp"
#include "container/memory_runtime.hpp"
#include "router/dispatcher.hpp"
#include "router/wiring.hpp"

#include <sys/prctl.h>

#include <cmath>
#include <cstdio>
#include <tuple>

using namespace warmstart;
using namespace warmstart::bench;

namespace {

constexpr const char* kBaseImage = "fleet-worker:latest";
constexpr const char* kTerminalStates[] = {"succeeded", "failed", "timed_out", "cancelled"};

struct Options {
  int routers = 10;
  int jobs_per_router = 40;
  int paced_jobs = 300;
  double paced_fraction = 0.5;
  int concurrency = 4;
  int create_ms = 40;
  int start_ms = 120;
  int run_ms = 200;
  int remove_ms = 30;
  double idle_s = 10;  // >= 2 housekeeping rounds (reconcile_interval 5 s)
  std::string redis_url = env_or("WARMSTART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0");
  // Child only.
  int child = -1;
  int parent = 0;  // pid
  std::string prefix;
  std::string dir;
};

void usage_error(const std::string& why) {
  std::fprintf(stderr,
               "fleet_bench: %s\nusage: fleet_bench [--routers N] [--jobs-per-router J] "
               "[--paced-jobs K] [--paced-fraction F] [--concurrency C] [--create-ms MS] "
               "[--start-ms MS] [--run-ms MS] [--remove-ms MS] [--idle-s S] [--redis URL]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, int*> ints = {
      {"--routers", &o.routers},       {"--jobs-per-router", &o.jobs_per_router},
      {"--paced-jobs", &o.paced_jobs}, {"--concurrency", &o.concurrency},
      {"--create-ms", &o.create_ms},   {"--start-ms", &o.start_ms},
      {"--run-ms", &o.run_ms},         {"--remove-ms", &o.remove_ms},
      {"--child", &o.child},           {"--parent", &o.parent}};
  std::map<std::string, double*> doubles = {{"--paced-fraction", &o.paced_fraction},
                                            {"--idle-s", &o.idle_s}};
  std::map<std::string, std::string*> strings = {
      {"--redis", &o.redis_url}, {"--prefix", &o.prefix}, {"--dir", &o.dir}};
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage_error("missing value after " + flag);
    const char* value = argv[i + 1];
    if (auto it = ints.find(flag); it != ints.end()) {
      *it->second = std::atoi(value);
    } else if (auto d = doubles.find(flag); d != doubles.end()) {
      *d->second = std::atof(value);
    } else if (auto s = strings.find(flag); s != strings.end()) {
      *s->second = value;
    } else {
      usage_error("unknown argument " + flag);
    }
  }
  if (o.routers < 1 || o.jobs_per_router < 1 || o.paced_jobs < 1 || o.concurrency < 1 ||
      o.paced_fraction <= 0 || o.paced_fraction > 1) {
    usage_error("sizes must be positive and --paced-fraction in (0, 1]");
  }
  return o;
}

std::string started_file(const std::string& dir, int child) {
  return dir + "/started-" + std::to_string(child) + ".txt";
}

// ------------------------------------------------------------------ child

// One router of the fleet: a Dispatcher on RedisQueue and a MemoryRuntime
// with an engine's latencies. Each container start is appended to
// started-<I>.txt ("<job id> <unix ns>"). Serves until SIGTERM.
int run_child(const Options& o, pid_t parent) {
  // A parent that dies without stopping its fleet (SIGKILL) takes it along.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) return 1;
  log::init(log::Level::warn);
  std::FILE* started = std::fopen(started_file(o.dir, o.child).c_str(), "w");
  if (started == nullptr) {
    std::fprintf(stderr, "fleet_bench child %d: cannot write in %s\n", o.child, o.dir.c_str());
    return 1;
  }
  net::io_context io(1);
  auto ex = io.get_executor();

  router::RouterConfig config;
  config.redis_url = o.redis_url;
  config.router_id = "fleet-" + std::to_string(o.child);
  config.host_id = "fleet-host-" + std::to_string(o.child);
  config.key_prefix = o.prefix;
  config.base_image = kBaseImage;
  config.concurrency = o.concurrency;
  config.listen = "";

  container::MemoryRuntimeOptions engine_options;
  engine_options.engine_id = "fleet-engine-" + std::to_string(o.child);
  auto engine = container::MemoryRuntime::create(ex, engine_options);
  engine->add_image(kBaseImage);
  using Op = container::MemoryRuntime::Op;
  engine->set_latency(Op::create_container, std::chrono::milliseconds(o.create_ms));
  engine->set_latency(Op::start_container, std::chrono::milliseconds(o.start_ms));
  engine->set_latency(Op::remove_container, std::chrono::milliseconds(o.remove_ms));
  engine->set_exit_plan([&](const container::ContainerSpec& spec) {
    auto job = spec.labels.find("warmstart.job");
    if (job != spec.labels.end()) {
      std::fprintf(started, "%s %lld\n", job->second.c_str(),
                   static_cast<long long>(unix_ns_now()));
      std::fflush(started);
    }
    container::ExitPlan plan;
    plan.after = std::chrono::milliseconds(o.run_ms);
    return std::optional<container::ExitPlan>(plan);
  });

  auto queue = std::make_shared<queue::RedisQueue>(ex, router::queue_options(config));
  auto dispatcher =
      std::make_shared<router::Dispatcher>(ex, config, router::RouterDeps{queue, engine, nullptr});
  router::HostIdentity identity;
  identity.host_id = config.host_id;
  identity.engine_id = engine_options.engine_id;
  identity.host_name = "fleet-bench";
  identity.version = "bench";
  dispatcher->identify(identity);

  net::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    dispatcher->stop_now();
    io.stop();
  });
  int code = 0;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await dispatcher->claim_host_identity();
        co_await dispatcher->run();
      },
      [&](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& error) {
            std::fprintf(stderr, "fleet_bench child %d: %s\n", o.child, error.what());
          }
          code = 1;
        }
        io.stop();
      });
  io.run();
  std::fclose(started);
  return code;
}

// ----------------------------------------------------------------- parent

class Fleet {
 public:
  Fleet(const Options& o, const std::string& prefix, const std::string& dir) {
    const std::string self = fs::read_symlink("/proc/self/exe").string();
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
    for (int i = 0; i < o.routers; ++i) {
      std::vector<std::string> args = {self,
                                       "--child",
                                       std::to_string(i),
                                       "--parent",
                                       std::to_string(::getpid()),
                                       "--prefix",
                                       prefix,
                                       "--dir",
                                       dir,
                                       "--redis",
                                       o.redis_url,
                                       "--concurrency",
                                       std::to_string(o.concurrency),
                                       "--create-ms",
                                       std::to_string(o.create_ms),
                                       "--start-ms",
                                       std::to_string(o.start_ms),
                                       "--run-ms",
                                       std::to_string(o.run_ms),
                                       "--remove-ms",
                                       std::to_string(o.remove_ms)};
      const std::string log = dir + "/child-" + std::to_string(i) + ".log";
      try {
        pids_.push_back(testing::spawn_logged(std::move(args), env, log));
      } catch (...) {
        stop();  // the destructor of a half-built Fleet does not run
        throw;
      }
    }
  }
  ~Fleet() { stop(); }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // CPU time (user + system, ms) of all children so far.
  double cpu_ms() const {
    double sum = 0;
    for (pid_t p : pids_) sum += process_cpu_ms(p);
    return sum;
  }

  // How many children died before stop().
  int dead() const {
    return static_cast<int>(
        std::count_if(pids_.begin(), pids_.end(), [](pid_t p) { return !process_alive(p); }));
  }

  void stop() {
    for (pid_t p : pids_) ::kill(p, SIGTERM);
    const auto deadline = Clock::now() + 5s;
    for (pid_t p : pids_) {
      while (::waitpid(p, nullptr, WNOHANG) == 0) {
        if (Clock::now() > deadline) {
          ::kill(p, SIGKILL);
          ::waitpid(p, nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    }
    pids_.clear();
  }

 private:
  std::vector<pid_t> pids_;
};

awaitable<std::int64_t> terminal_count(redis::Client& client, const std::string& prefix) {
  std::int64_t n = 0;
  for (const char* state : kTerminalStates) {
    auto args = redis::make_args("ZCARD", prefix + "state:" + state);
    redis::Reply r = co_await client.command(std::move(args));
    n += r.as_integer();
  }
  co_return n;
}

awaitable<void> wait_terminal(redis::Client& client, const std::string& prefix, std::int64_t count,
                              Duration limit) {
  const auto deadline = Clock::now() + limit;
  while (co_await terminal_count(client, prefix) < count) {
    if (Clock::now() > deadline) throw std::runtime_error("jobs not terminal within limit");
    co_await sleep_for(20ms);
  }
}

awaitable<void> enqueue_one(queue::RedisQueue& q, std::string id) {
  queue::JobSpec s;
  s.id = std::move(id);
  s.cmd = {"true"};
  co_await q.enqueue(std::move(s));
}

struct Spread {
  double min = 0, max = 0, mean = 0, stddev = 0;
  int zero = 0;
};

Spread spread(const std::vector<double>& v) {
  Spread s;
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x / static_cast<double>(v.size());
  for (double x : v) s.stddev += (x - s.mean) * (x - s.mean) / static_cast<double>(v.size());
  s.stddev = std::sqrt(s.stddev);
  s.zero = static_cast<int>(std::count(v.begin(), v.end(), 0.0));
  return s;
}

// "<job id> <unix ns>" lines of every child's started file.
std::map<std::string, std::int64_t> read_started(const std::string& dir, int routers) {
  std::map<std::string, std::int64_t> out;
  for (int i = 0; i < routers; ++i) {
    std::ifstream in(started_file(dir, i));
    std::string id;
    long long ns = 0;
    while (in >> id >> ns) out.emplace(id, ns);
  }
  return out;
}

awaitable<std::string> redis_config(redis::Client& client, const char* name) {
  auto args = redis::make_args("CONFIG", "GET", name);
  redis::Reply r = co_await client.command(std::move(args));
  const auto& pair = r.as_array();
  co_return pair.size() == 2 ? pair[1].as_string() : std::string();
}

// INFO commandstats since the last CONFIG RESETSTAT: the `top` commands by
// CPU, each as {command, calls, Redis CPU us}, both divided by `per`.
awaitable<nlohmann::json> top_commands(redis::Client& client, double per, std::size_t top) {
  auto args = redis::make_args("INFO", "commandstats");
  redis::Reply r = co_await client.command(std::move(args));
  std::istringstream in(r.as_string());
  std::vector<std::tuple<double, double, std::string>> rows;  // usec, calls, name
  std::string row;
  while (std::getline(in, row)) {
    // cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,...
    if (row.rfind("cmdstat_", 0) != 0) continue;
    const auto colon = row.find(':');
    const auto calls = row.find("calls=");
    const auto usec = row.find(",usec=");
    if (colon == std::string::npos || calls == std::string::npos || usec == std::string::npos) {
      continue;
    }
    std::string name = row.substr(8, colon - 8);
    if (name == "info" || name.rfind("config", 0) == 0) continue;  // this bench's own
    rows.emplace_back(std::atof(row.c_str() + usec + 6), std::atof(row.c_str() + calls + 6),
                      std::move(name));
  }
  std::sort(rows.rbegin(), rows.rend());
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < rows.size() && i < top; ++i) {
    const auto& [us, calls, name] = rows[i];
    out.push_back({{"command", name}, {"calls", calls / per}, {"us", us / per}});
  }
  co_return out;
}

nlohmann::json run_parent(const Options& o) {
  const std::string prefix =
      "wsfleet-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()) + ":";
  char dir_template[] = "/tmp/fleet-bench.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) throw std::runtime_error("mkdtemp failed");
  const std::string dir = dir_template;
  nlohmann::json line;
  std::exception_ptr failure;
  {
    BenchEnv env;
    env.redis_url = o.redis_url;
    Fleet fleet(o, prefix, dir);
    try {
      run_main([&]() -> awaitable<void> {
        auto ex = co_await net::this_coro::executor;
        queue::RedisQueue q(ex, queue_options(env, prefix));
        auto& client = *q.client();
        try {
          // Every router has written its first heartbeat, then settles.
          const auto ready_by = Clock::now() + 120s;
          for (;;) {
            const auto up = co_await q.routers();
            if (up.size() >= static_cast<std::size_t>(o.routers)) break;
            if (fleet.dead() > 0) throw std::runtime_error("a router died at start (see logs)");
            if (Clock::now() > ready_by) throw std::runtime_error("routers not up within 120 s");
            co_await sleep_for(100ms);
          }
          co_await sleep_for(1s);

          // 1. Idle.
          auto reset_idle = redis::make_args("CONFIG", "RESETSTAT");
          co_await client.command(std::move(reset_idle));
          const double idle0 = co_await redis_cpu_ms(client);
          const auto idle_t0 = Clock::now();
          co_await sleep_for(std::chrono::milliseconds(static_cast<int>(o.idle_s * 1000)));
          const double idle_s = std::chrono::duration<double>(Clock::now() - idle_t0).count();
          const double idle_ms_per_s = (co_await redis_cpu_ms(client) - idle0) / idle_s;
          const nlohmann::json idle_commands = co_await top_commands(client, idle_s * o.routers, 6);

          // 2. Saturated.
          const std::size_t jobs = static_cast<std::size_t>(o.routers) * o.jobs_per_router;
          auto reset = redis::make_args("CONFIG", "RESETSTAT");
          co_await client.command(std::move(reset));
          const double cpu0 = co_await redis_cpu_ms(client);
          const double routers_cpu0 = fleet.cpu_ms();
          const std::int64_t t0_ms = unix_ms_now();
          const auto wall0 = Clock::now();
          co_await parallel_for(jobs, 50, [&](std::size_t i) -> awaitable<void> {
            std::string id = "s-" + std::to_string(i);  // no temporary in co_await (g++ 12)
            co_await enqueue_one(q, std::move(id));
          });
          co_await wait_terminal(client, prefix, static_cast<std::int64_t>(jobs), 600s);
          const double wall_s = std::chrono::duration<double>(Clock::now() - wall0).count();
          const double cpu_ms = co_await redis_cpu_ms(client) - cpu0;
          const double routers_cpu_ms = fleet.cpu_ms() - routers_cpu0;
          const nlohmann::json commands =
              co_await top_commands(client, static_cast<double>(jobs), 8);
          std::vector<queue::JobRecord> records(jobs);
          co_await parallel_for(jobs, 32, [&](std::size_t i) -> awaitable<void> {
            std::string id = "s-" + std::to_string(i);
            auto rec = co_await q.get(std::move(id));
            if (rec) records[i] = std::move(*rec);
          });
          std::int64_t last_ms = t0_ms;
          std::map<std::string, double> per_router;
          for (int i = 0; i < o.routers; ++i) per_router["fleet-" + std::to_string(i)] = 0;
          for (const auto& r : records) {
            last_ms = std::max(last_ms, r.finished_at.value_or(t0_ms));
            if (!r.router_id.empty()) per_router[r.router_id] += 1;
          }
          std::vector<double> counts;
          for (const auto& [id, n] : per_router) counts.push_back(n);
          const Spread fair = spread(counts);
          const double run_s = static_cast<double>(last_ms - t0_ms) / 1000.0;
          const double jobs_per_s = static_cast<double>(jobs) / run_s;
          const double cpu_per_job = cpu_ms / static_cast<double>(jobs);

          // 3. Paced.
          const double rate = jobs_per_s * o.paced_fraction;
          std::vector<std::int64_t> enqueued_ns(static_cast<std::size_t>(o.paced_jobs));
          const auto paced0 = Clock::now();
          co_await parallel_for(enqueued_ns.size(), 50, [&](std::size_t i) -> awaitable<void> {
            net::steady_timer at(
                ex, paced0 + std::chrono::duration_cast<Duration>(
                                 std::chrono::duration<double>(static_cast<double>(i) / rate)));
            co_await at.async_wait(use_awaitable);
            std::string id = "p-" + std::to_string(i);
            enqueued_ns[i] = unix_ns_now();
            co_await enqueue_one(q, std::move(id));
          });
          co_await wait_terminal(client, prefix, static_cast<std::int64_t>(jobs) + o.paced_jobs,
                                 600s);
          const auto started = read_started(dir, o.routers);
          std::vector<double> dispatch_ms;
          std::vector<double> share_ms;
          for (std::size_t i = 0; i < enqueued_ns.size(); ++i) {
            auto it = started.find("p-" + std::to_string(i));
            if (it == started.end()) continue;
            const double ms = static_cast<double>(it->second - enqueued_ns[i]) / 1e6;
            dispatch_ms.push_back(ms);
            share_ms.push_back(ms - o.create_ms - o.start_ms);
          }
          if (fleet.dead() > 0) throw std::runtime_error("a router died during the run");
          auto succeeded_args = redis::make_args("ZCARD", prefix + "state:succeeded");
          const redis::Reply succeeded = co_await client.command(std::move(succeeded_args));
          const std::int64_t failed =
              static_cast<std::int64_t>(jobs) + o.paced_jobs - succeeded.as_integer();
          const std::string appendonly = co_await redis_config(client, "appendonly");

          line = {{"bench", "fleet"},
                  {"routers", o.routers},
                  {"concurrency", o.concurrency},
                  {"engine_ms",
                   {{"create", o.create_ms},
                    {"start", o.start_ms},
                    {"run", o.run_ms},
                    {"remove", o.remove_ms}}},
                  {"redis_appendonly", appendonly},
                  {"jobs", jobs},
                  {"failed", failed},  // both phases: terminal but not succeeded
                  {"jobs_per_s", jobs_per_s},
                  {"saturated_s", run_s},
                  {"redis_cpu_ms_per_job", cpu_per_job},
                  {"redis_cpu_ms_per_job_net", (cpu_ms - idle_ms_per_s * wall_s) / jobs},
                  {"redis_busy", cpu_ms / (wall_s * 1000.0)},
                  {"redis_ceiling_jobs_per_s", 1000.0 / cpu_per_job},
                  {"redis_idle_cpu_ms_per_s", idle_ms_per_s},
                  {"routers_cpu_ms_per_job", routers_cpu_ms / static_cast<double>(jobs)},
                  {"redis_top_commands_per_job", commands},
                  {"redis_idle_top_commands_per_router_s", idle_commands},
                  {"jobs_per_router_min", fair.min},
                  {"jobs_per_router_max", fair.max},
                  {"jobs_per_router_mean", fair.mean},
                  {"jobs_per_router_stddev", fair.stddev},
                  {"routers_with_no_job", fair.zero},
                  {"paced_jobs", o.paced_jobs},
                  {"paced_rate_per_s", rate},
                  {"paced_measured", dispatch_ms.size()},
                  {"dispatch_ms_p50", percentile(dispatch_ms, 50)},
                  {"dispatch_ms_p99", percentile(dispatch_ms, 99)},
                  {"dispatch_ms_max", percentile(dispatch_ms, 100)},
                  {"dispatch_share_ms_p50", percentile(share_ms, 50)},
                  {"dispatch_share_ms_p99", percentile(share_ms, 99)},
                  {"loadavg_1m", load_average_1m()},
                  {"definitions",
                   "jobs_per_s: saturated phase, jobs / (latest finished_at - clock before the "
                   "first enqueue); redis_cpu_ms_per_job: INFO cpu sys+user over that phase / "
                   "jobs (net: minus the idle fleet's rate); redis_ceiling_jobs_per_s = 1000 / "
                   "redis_cpu_ms_per_job; jobs_per_router_*: terminal records by router_id; "
                   "dispatch_ms: paced phase, clock before enqueue -> the engine double runs "
                   "the container (after create+start latency); dispatch_share = dispatch - "
                   "create - start"}};
        } catch (...) {
          failure = std::current_exception();
        }
        fleet.stop();  // before the keys go: a live router would write its heartbeat again
        co_await delete_prefix(client, prefix);
        q.close();
      });
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }  // the fleet stops here
  if (failure) {
    std::fprintf(stderr, "fleet_bench: child logs kept in %s\n", dir.c_str());
    std::rethrow_exception(failure);
  }
  fs::remove_all(dir);
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.child >= 0) return run_child(o, static_cast<pid_t>(o.parent));
  log::init(log::Level::warn);
  try {
    const nlohmann::json line = run_parent(o);
    std::printf("%s\n", line.dump().c_str());
    return line.value("failed", 1) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fleet_bench: %s\n", e.what());
    return 1;
  }
}
