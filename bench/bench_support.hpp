// Shared support of the router benchmarks (pipeline_bench, dispatch_bench,
// snapshot_bench): the real `warmstart router` binary as a child process with a
// TOML config (like tests/e2e/router_process.hpp, without Catch2), job polling
// through RedisQueue, /proc statistics and percentiles.
//
// Environment (exported by bench/run, the same names as ./scripts/test):
// WARMSTART_TEST_REDIS_URL, WARMSTART_TEST_DOCKER_SOCKET, WARMSTART_TEST_BASE_IMAGE,
// WARMSTART_TEST_BINARY, WARMSTART_TEST_RUN_DIR.
#pragma once
#include "common/log.hpp"
#include "common/time.hpp"
#include "container/docker_client.hpp"
#include "queue/redis_queue.hpp"
#include "tests/support/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace warmstart::bench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

struct BenchEnv {
  std::string redis_url = env_or("WARMSTART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0");
  std::string docker_socket = env_or("WARMSTART_TEST_DOCKER_SOCKET", "/var/run/docker.sock");
  std::string base_image = env_or("WARMSTART_TEST_BASE_IMAGE", "warmstart-worker:latest");
  std::string binary = env_or("WARMSTART_TEST_BINARY", "build/cli/warmstart");
  std::string run_dir = env_or("WARMSTART_TEST_RUN_DIR", "/tmp");
};

inline unsigned short free_loopback_port() {
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io, net::ip::tcp::endpoint(net::ip::address_v4::loopback(), 0));
  return acceptor.local_endpoint().port();
}

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(rank);
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

// Wall clock, Unix ns: comparable across the processes of one host.
inline std::int64_t unix_ns_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// CPU time (user + system, ms) of a process from /proc/<pid>/stat: the
// kernel's tick-sampled utime + stime (10 ms ticks), whole process, exited
// threads included.
inline double process_stat_cpu_ms(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  // Fields after "(comm)": state is field 3; utime 14, stime 15.
  std::vector<std::string> f;
  while (rest >> field) f.push_back(field);
  if (f.size() < 13) return 0;
  const double ticks = std::stod(f[11]) + std::stod(f[12]);
  return ticks * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// CPU time (ms) of a process, to the nanosecond: the sum over its live
// threads of /proc/<pid>/task/<tid>/schedstat's first field (time on a CPU,
// ns, counted by the scheduler, not sampled at ticks). A figure of a few ms
// per job over 60 jobs is then exact instead of +-1 tick in 15. Falls back to
// process_stat_cpu_ms where schedstat is missing (a kernel without
// CONFIG_SCHED_INFO). Threads that exited between two readings are not
// counted: the router's only thread is its event loop.
inline double process_cpu_ms(pid_t pid) {
  const fs::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  double ns = 0;
  bool any = false;
  for (const auto& task : fs::directory_iterator(tasks, ec)) {
    std::ifstream in(task.path() / "schedstat");
    double on_cpu = 0;
    if (in >> on_cpu) {
      ns += on_cpu;
      any = true;
    }
  }
  if (!any) return process_stat_cpu_ms(pid);
  return ns / 1e6;
}

// A "VmHWM:" style field of /proc/<pid>/status, in kB.
inline long process_status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atol(line.c_str() + key.size() + 1);
  }
  return -1;
}

// The 1-minute load average (/proc/loadavg): the machine may be shared, and a
// load above the core count makes every latency here noisy.
inline double load_average_1m() {
  std::ifstream in("/proc/loadavg");
  double v = 0;
  in >> v;
  return v;
}

// Router settings a benchmark may change (the rest are the router's defaults).
struct RouterChildOptions {
  int concurrency = 4;
  // Batched container list catching missed exits; "" = the router's default (5s).
  std::string reconcile_interval = "1s";
  // Lines added to the [snapshots] table, e.g. `coalesce_wait = "0s"`.
  std::string snapshots_toml;
};

// The router binary as a child: own id, key prefix, port and directory under
// the run dir. The destructor stops it (SIGTERM, then SIGKILL).
class RouterChild {
 public:
  RouterChild(const BenchEnv& env, int concurrency, const std::string& stem)
      : RouterChild(env, RouterChildOptions{concurrency}, stem) {}
  RouterChild(const BenchEnv& env, const RouterChildOptions& options, const std::string& stem)
      : env_(env) {
    id_ = stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}());
    key_prefix_ = "wsb-" + id_ + ":";
    dir_ = fs::path(env.run_dir) / ("bench-" + id_);
    fs::create_directories(dir_ / "snapshots");
    config_path_ = (dir_ / "router.toml").string();
    log_path_ = (dir_ / "router.log").string();
    std::ofstream config(config_path_);
    config << "[router]\n"
           << "key_prefix = \"" << key_prefix_ << "\"\n"
           << "listen = \"127.0.0.1:" << (port_ = free_loopback_port()) << "\"\n"
           << "base_image = \"" << env.base_image << "\"\n"
           << "concurrency = " << options.concurrency
           << "\n"
           // Its generated API token stays inside the run directory.
           << "state_dir = \"" << (dir_ / "state").string() << "\"\n";
    if (!options.reconcile_interval.empty()) {
      config << "reconcile_interval = \"" << options.reconcile_interval << "\"\n";
    }
    config << "[snapshots]\n"
           << "work_dir = \"" << (dir_ / "snapshots").string() << "\"\n"
           << options.snapshots_toml << "\n";
    config.close();
    spawn();
  }
  ~RouterChild() { stop(); }
  RouterChild(const RouterChild&) = delete;
  RouterChild& operator=(const RouterChild&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& id() const { return id_; }
  const std::string& key_prefix() const { return key_prefix_; }
  const std::string& log_path() const { return log_path_; }
  // The router's HTTP front (loopback).
  unsigned short listen_port() const { return port_; }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) != 0) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  void spawn() {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string(*e).rfind("WARMSTART_API_TOKEN=", 0) != 0) env_strings.emplace_back(*e);
    }
    env_strings.push_back("WARMSTART_KEY_PREFIX=" + key_prefix_);
    std::vector<std::string> args = {env_.binary,     "router",
                                     "--config",      config_path_,
                                     "--redis",       env_.redis_url,
                                     "--docker-host", "unix://" + env_.docker_socket,
                                     "--router-id",   id_};
    pid_ = testing::spawn_logged(std::move(args), std::move(env_strings), log_path_);
  }

  BenchEnv env_;
  std::string id_;
  std::string key_prefix_;
  fs::path dir_;
  std::string config_path_;
  std::string log_path_;
  unsigned short port_ = 0;
  pid_t pid_ = -1;
};

inline queue::RedisQueueOptions queue_options(const BenchEnv& env, const std::string& prefix) {
  queue::RedisQueueOptions o;
  o.redis.url = redis::Url::parse(env.redis_url);
  o.redis.client_name = "warmstart-bench";
  o.key_prefix = prefix;
  return o;
}

inline bool terminal(queue::JobState s) {
  return s == queue::JobState::succeeded || s == queue::JobState::failed ||
         s == queue::JobState::timed_out || s == queue::JobState::cancelled;
}

// Waits until every job of `ids` is terminal or `limit` passes (throws then).
// Returns the records in the order of `ids`. Each poll reads one record: the
// first of `ids` not yet seen terminal (jobs are claimed in enqueue order, so
// that is the one holding the others back); once it is, the following ones
// are read at once until one is not. Reading every pending record on each
// poll would load Redis and the 2 cores while the router is being measured.
inline awaitable<std::vector<queue::JobRecord>> wait_all(queue::RedisQueue& q,
                                                         std::vector<std::string> ids,
                                                         Duration interval, Duration limit) {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  const auto deadline = Clock::now() + limit;
  std::vector<queue::JobRecord> out(ids.size());
  std::size_t next = 0;  // every job before `next` is terminal
  while (next < ids.size()) {
    auto rec = co_await q.get(ids[next]);
    if (rec && terminal(rec->state)) {
      out[next++] = std::move(*rec);
      continue;
    }
    if (Clock::now() > deadline) {
      throw std::runtime_error(std::to_string(ids.size() - next) +
                               " job(s) not finished within limit");
    }
    timer.expires_after(interval);
    co_await timer.async_wait(use_awaitable);
  }
  co_return out;
}

// Enqueues a warm-up job and waits for it: the router is then connected to
// Redis and Docker and claiming.
inline awaitable<void> wait_router_ready(queue::RedisQueue& q, const std::string& tag) {
  queue::JobSpec s;
  s.id = "warmup-" + tag;
  s.cmd = {"true"};
  co_await q.enqueue(std::move(s));
  std::vector<std::string> ids = {"warmup-" + tag};
  auto recs = co_await wait_all(q, std::move(ids), 20ms, 60s);
  if (recs.at(0).state != queue::JobState::succeeded) {
    throw std::runtime_error("warm-up job ended " + recs.at(0).error);
  }
}

// Deletes every key under `prefix` (the router's Redis keys).
inline awaitable<void> delete_prefix(redis::Client& client, const std::string& prefix) {
  std::string cursor = "0";
  do {
    auto scan_args = redis::make_args("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000);
    redis::Reply r = co_await client.command(std::move(scan_args));
    cursor = r.as_array().at(0).as_string();
    auto del = redis::make_args("UNLINK");
    for (const auto& k : r.as_array().at(1).as_array()) del.push_back(k.as_string());
    if (del.size() > 1) co_await client.command(std::move(del));
  } while (cursor != "0");
}

// False once the process is gone or a zombie (the router died).
inline bool process_alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos || close + 2 >= all.size()) return false;
  return all[close + 2] != 'Z' && all[close + 2] != 'X';
}

// CPU time (user + system, ms) of the Redis server, from INFO cpu.
inline awaitable<double> redis_cpu_ms(redis::Client& client) {
  auto args = redis::make_args("INFO", "cpu");
  redis::Reply r = co_await client.command(std::move(args));
  std::istringstream in(r.as_string());
  std::string line;
  double seconds = 0;
  while (std::getline(in, line)) {
    for (const char* key : {"used_cpu_sys:", "used_cpu_user:"}) {
      if (line.rfind(key, 0) == 0) seconds += std::atof(line.c_str() + std::strlen(key));
    }
  }
  co_return seconds * 1000.0;
}

// Runs fn(i) for i in [0, n) on `workers` coroutines; rethrows the first error
// (after every worker stopped).
template <class F>
awaitable<void> parallel_for(std::size_t n, std::size_t workers, F fn) {
  auto ex = co_await net::this_coro::executor;
  std::size_t next = 0;
  std::size_t active = std::min(workers, n);
  if (active == 0) co_return;
  std::exception_ptr failure;
  net::steady_timer done(ex, Clock::time_point::max());
  const std::size_t spawned = active;
  for (std::size_t w = 0; w < spawned; ++w) {
    net::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          while (next < n && !failure) {
            const std::size_t i = next++;
            co_await fn(i);
          }
        },
        [&](std::exception_ptr e) {
          if (e && !failure) failure = e;
          if (--active == 0) done.cancel();
        });
  }
  co_await done.async_wait(net::as_tuple(use_awaitable));
  if (failure) std::rethrow_exception(failure);
}

// Runs `body` on a fresh io_context; rethrows its exception; stops the context
// after it so lingering connections do not keep run() going.
template <class F>
void run_main(F body) {
  net::io_context io;
  std::exception_ptr failure;
  net::co_spawn(io, body(), [&](std::exception_ptr e) {
    failure = e;
    io.stop();
  });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace warmstart::bench
