// End-to-end test support: the real `warmstart router` binary as a child
// process against the private redis-server and dockerd of ./scripts/test.
//
// Each RouterProcess has its own router id, Redis key prefix and loopback port,
// so tests sharing one Redis and one engine stay isolated. The destructor stops
// the process (SIGTERM, then SIGKILL), removes every container labelled with
// its router id and deletes its Redis keys. Its log is <run dir>/router-<id>-<pid>-<n>/router.log.
#pragma once
#include "api/testing_http.hpp"
#include "common/redis.hpp"
#include "container/docker_client.hpp"
#include "support/child_process.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace warmstart::testing {

namespace fs = std::filesystem;

// The binary under test: WARMSTART_TEST_BINARY, else the one CMake built.
// Polls `condition` every 100 ms until it holds or `limit` has passed.
inline bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return condition();
}

inline std::string warmstart_binary_path() {
  if (const char* v = std::getenv("WARMSTART_TEST_BINARY"); v != nullptr && *v != '\0') return v;
#ifdef WARMSTART_E2E_BINARY
  return WARMSTART_E2E_BINARY;
#else
  return warmstart_binary();  // fails with the reason
#endif
}

// A loopback port nobody listens on right now (the kernel's pick for port 0).
inline unsigned short free_loopback_port() {
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io, net::ip::tcp::endpoint(net::ip::address_v4::loopback(), 0));
  return acceptor.local_endpoint().port();
}

// The job's containers on the run's first engine (`all`: stopped ones too).
inline std::vector<container::ContainerSummary> job_containers(const std::string& id,
                                                               bool all = true) {
  return run_coro([&]() -> awaitable<std::vector<container::ContainerSummary>> {
    container::DockerClientOptions o;
    o.socket_path = docker_socket();
    auto docker = container::DockerClient::create(co_await net::this_coro::executor, o);
    std::vector<std::string> labels{"warmstart.job=" + id};
    co_return co_await docker->list_containers(labels, all);
  });
}

// "e2e-<pid>-<n>": unique within the run (the Redis and engine are the run's own).
inline std::string unique_name(const std::string& stem) {
  static std::atomic<int> counter{0};
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

struct RouterProcessOptions {
  std::string extra_toml;                  // appended to the config file ([api], [webhooks.*])
  std::string router_toml;                 // extra lines inside [router]
  std::map<std::string, std::string> env;  // set for the child (e.g. WARMSTART_API_TOKEN)
  int concurrency = 2;
  std::string id;          // router id; empty = a unique one (set it to restart "the same" router)
  std::string key_prefix;  // Redis key prefix; empty = derived from the id
  std::chrono::seconds ready_limit{30};  // /readyz must answer 200 within this
  std::string redis_url;      // empty = the run's redis-server (a test's own, to restart it)
  std::string docker_socket;  // empty = the run's first engine (docker_socket_2() for a fleet)
};

class RouterProcess {
 public:
  explicit RouterProcess(RouterProcessOptions options = {}) : options_(std::move(options)) {
    id_ = options_.id.empty() ? unique_name("e2e") : options_.id;
    key_prefix_ = options_.key_prefix.empty() ? "ws-" + id_ + ":" : options_.key_prefix;
    // Unique even when a test restarts a router id: each process keeps its own log.
    dir_ = fs::path(run_dir()) / unique_name("router-" + id_);
    fs::create_directories(dir_ / "snapshots");
    port_ = free_loopback_port();
    config_path_ = (dir_ / "router.toml").string();
    log_path_ = (dir_ / "router.log").string();
    {
      std::ofstream config(config_path_);
      config << "[router]\n"
             << "key_prefix = \"" << key_prefix_ << "\"\n"
             << "listen = \"127.0.0.1:" << port_ << "\"\n"
             << "base_image = \"" << base_image() << "\"\n"
             << "concurrency = " << options_.concurrency << "\n"
             << "reconcile_interval = \"1s\"\n"
             << "state_dir = \"" << (dir_ / "state").string() << "\"\n"
             << options_.router_toml << "\n"
             << "[snapshots]\n"
             << "work_dir = \"" << (dir_ / "snapshots").string() << "\"\n\n"
             << options_.extra_toml << "\n";
    }
    spawn();
    try {
      wait_ready();
      read_token();
    } catch (...) {
      cleanup();  // the destructor does not run for a half-built object
      throw;
    }
  }

  ~RouterProcess() { cleanup(); }

  RouterProcess(const RouterProcess&) = delete;
  RouterProcess& operator=(const RouterProcess&) = delete;

  unsigned short port() const { return port_; }
  const std::string& router_id() const { return id_; }
  const std::string& key_prefix() const { return key_prefix_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string redis_url() const {
    return options_.redis_url.empty() ? testing::redis_url() : options_.redis_url;
  }
  // The unix socket of the engine this router drives.
  std::string docker_socket() const {
    return options_.docker_socket.empty() ? testing::docker_socket() : options_.docker_socket;
  }
  // The router's state directory, where it generates its API token.
  std::string state_dir() const { return (dir_ / "state").string(); }
  // The API token the router uses: WARMSTART_API_TOKEN when the test set it,
  // else the one the router generated at start; "" with auth = "none".
  const std::string& token() const { return token_; }

  // {"Authorization": "Bearer <token>"} (empty without a token).
  api::testing::Headers auth() const {
    if (token_.empty()) return {};
    return {{"Authorization", "Bearer " + token_}};
  }

  // One HTTP request to the router as an authenticated client would send it
  // (the bearer token; a JSON Content-Type on POST). `headers` win.
  api::testing::HttpResult call(boost::beast::http::verb method, const std::string& target,
                                const std::string& body = {},
                                api::testing::Headers headers = {}) const {
    api::testing::Headers all = auth();
    for (auto& [k, v] : headers) all[k] = v;
    return api::testing::http_call(port_, method, target, body, all);
  }
  pid_t pid() const { return pid_; }

  // The child's stdout and stderr (JSON log lines), for failure messages.
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
  }
  std::string log_tail(std::size_t bytes = 6000) const {
    std::string all = log();
    return all.size() > bytes ? all.substr(all.size() - bytes) : all;
  }

  // SIGTERM, up to `grace` for the exit, then SIGKILL. Returns the exit status
  // as waitpid reports it (-1 when it had to be killed).
  int stop(std::chrono::seconds grace = std::chrono::seconds(15)) {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, SIGTERM);
    if (!reap(grace)) {
      ::kill(pid_, SIGKILL);
      reap(std::chrono::seconds(10));
      exit_status_ = -1;
    }
    pid_ = -1;
    return exit_status_;
  }

  // True while the child has not exited.
  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_status_ = status;
      pid_ = -1;
      return false;
    }
    return true;
  }

 private:
  void cleanup() noexcept {
    try {
      stop();
      remove_containers();
      delete_keys();
    } catch (const std::exception& e) {
      WARN("router process cleanup: " << e.what());
    } catch (...) {
      WARN("router process cleanup did not finish");
    }
    // dir_ (config, the router's log) stays: it is inside the run directory,
    // which ./scripts/test removes unless WARMSTART_KEEP_RUN_DIR asks to keep it.
  }

  void spawn() {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      const auto eq = entry.find('=');
      if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    // The child reads its token and secrets only from what the test gives it.
    env.erase("WARMSTART_API_TOKEN");
    env["WARMSTART_KEY_PREFIX"] = key_prefix_;
    for (const auto& [k, v] : options_.env) env[k] = v;
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);

    const std::string binary = warmstart_binary_path();
    std::vector<std::string> args = {
        binary,        "router",    "--config",      config_path_,
        "--redis",     redis_url(), "--docker-host", "unix://" + docker_socket(),
        "--router-id", id_};
    pid_ = spawn_logged(std::move(args), std::move(env_strings), log_path_);
  }

  void wait_ready() {
    const auto deadline = std::chrono::steady_clock::now() + options_.ready_limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!alive()) {
        FAIL("warmstart router exited during start-up (status " << exit_status_ << "):\n"
                                                                << log_tail());
      }
      try {
        auto r = api::testing::http_call(port_, boost::beast::http::verb::get, "/readyz");
        if (r.status == 200) return;
      } catch (const std::exception&) {
        // not listening yet
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("warmstart router not ready within " << options_.ready_limit.count() << " s:\n"
                                              << log_tail());
  }

  void read_token() {
    if (auto it = options_.env.find("WARMSTART_API_TOKEN"); it != options_.env.end()) {
      token_ = it->second;
      return;
    }
    const fs::path file = dir_ / "state" / "api-token";
    if (!fs::exists(file)) return;  // auth = "none" or a token_file of the test's own
    std::ifstream in(file);
    std::getline(in, token_);
  }

  bool reap(std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || r < 0) {
        exit_status_ = status;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // A stopped router leaves its running containers for the next start to
  // re-attach; a test has no next start.
  void remove_containers() {
    run_coro(
        [this]() -> awaitable<void> {
          container::DockerClientOptions o;
          o.socket_path = docker_socket();  // this router's engine
          auto docker = container::DockerClient::create(co_await net::this_coro::executor, o);
          auto labels = redis::make_args("warmstart.router=" + id_);
          auto containers = co_await docker->list_containers(std::move(labels), true);
          for (const auto& c : containers) co_await docker->remove_container(c.id, true);
        },
        std::chrono::seconds(60));
  }

  void delete_keys() {
    run_coro(
        [this]() -> awaitable<void> {
          redis::ClientOptions o;
          o.url = redis::Url::parse(redis_url());
          auto client = redis::Client::create(co_await net::this_coro::executor, o);
          if (!options_.redis_url.empty()) co_return;  // the test's own server: it goes away
          co_await client->connect();
          std::string cursor = "0";
          do {
            auto scan = redis::make_args("SCAN", cursor, "MATCH", key_prefix_ + "*", "COUNT", 500);
            redis::Reply reply = co_await client->command(std::move(scan));
            cursor = reply.as_array().at(0).as_string();
            std::vector<std::string> del = redis::make_args("DEL");
            for (const auto& key : reply.as_array().at(1).as_array()) del.push_back(key.str);
            if (del.size() > 1) co_await client->command(std::move(del));
          } while (cursor != "0");
          client->close();
        },
        std::chrono::seconds(30));
  }

  RouterProcessOptions options_;
  std::string id_;
  std::string key_prefix_;
  fs::path dir_;
  unsigned short port_ = 0;
  std::string config_path_;
  std::string log_path_;
  std::string token_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

// GET /v1/jobs<query>: the listed records (a copy, not a view of a temporary).
inline nlohmann::json jobs_listed(const RouterProcess& router, const std::string& query = "",
                                  api::testing::Headers headers = {}) {
  api::testing::HttpResult r =
      router.call(boost::beast::http::verb::get, "/v1/jobs" + query, "", headers);
  REQUIRE(r.status == 200);
  return r.json().at("jobs");
}

// POST /v1/jobs: a few ms, where a CLI run can take a second on a loaded host.
inline api::testing::HttpResult post_job(const RouterProcess& router, const nlohmann::json& body,
                                         api::testing::Headers headers = {}) {
  return router.call(boost::beast::http::verb::post, "/v1/jobs", body.dump(), headers);
}

}  // namespace warmstart::testing
