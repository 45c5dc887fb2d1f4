// End-to-end test support: runs the real `warmstart` CLI as a child process
// against one RouterProcess's Redis key prefix and the private dockerd.
#pragma once
#include "e2e/router_process.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace warmstart::testing {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
};

// `warmstart ARGS...` with WARMSTART_REDIS_URL / WARMSTART_KEY_PREFIX /
// WARMSTART_DOCKER_HOST of the test's router. Fails the test past `limit`.
inline CliResult run_cli(const RouterProcess& router, std::vector<std::string> args,
                         std::chrono::seconds limit = std::chrono::seconds(120)) {
  const fs::path dir = fs::path(run_dir()) / ("cli-" + unique_name("out"));
  fs::create_directories(dir);
  const std::string out_path = (dir / "stdout").string();
  const std::string err_path = (dir / "stderr").string();
  const std::string binary = warmstart_binary_path();
  args.insert(args.begin(), binary);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = {
      "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "WARMSTART_REDIS_URL=" + router.redis_url(),
      "WARMSTART_KEY_PREFIX=" + router.key_prefix(),
      "WARMSTART_DOCKER_HOST=unix://" + router.docker_socket(),  // its own engine
  };
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::execve(binary.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  CliResult result;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("warmstart " << args.at(1) << " did not finish within " << limit.count() << " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  fs::remove_all(dir);
  return result;
}

// Enqueues through the CLI and returns the job id (fails the test otherwise).
inline std::string cli_enqueue(const RouterProcess& router, std::vector<std::string> args) {
  args.insert(args.begin(), "enqueue");
  auto r = run_cli(router, args);
  INFO("enqueue stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  std::string id = r.out;
  while (!id.empty() && (id.back() == '\n' || id.back() == '\r')) id.pop_back();
  REQUIRE(!id.empty());
  return id;
}

// `warmstart status ID --json`.
inline nlohmann::json cli_status(const RouterProcess& router, const std::string& id) {
  auto r = run_cli(router, {"status", id, "--json"});
  INFO("status stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return r.json();
}

// `warmstart wait ID` must report success within 120 s.
inline void expect_succeeded(const RouterProcess& router, const std::string& id) {
  auto w = run_cli(router, {"wait", id, "--timeout", "120s"}, std::chrono::seconds(150));
  INFO("job " << id << ": " << w.err << "\nrouter log:\n" << router.log_tail());
  REQUIRE(w.exit_code == 0);
}

// The retained events (`warmstart events --json`), oldest first.
inline std::vector<nlohmann::json> events_of(const RouterProcess& router) {
  auto r = run_cli(router, {"events", "--json"});
  REQUIRE(r.exit_code == 0);
  std::vector<nlohmann::json> out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

// Events of `type`; with a field, only those whose `field` is `value`.
inline std::size_t count_events(const std::vector<nlohmann::json>& events, const std::string& type,
                                const std::string& field = "", const std::string& value = "") {
  return static_cast<std::size_t>(
      std::count_if(events.begin(), events.end(), [&](const nlohmann::json& e) {
        return e.value("type", "") == type && (field.empty() || e.value(field, "") == value);
      }));
}

// Invalidates every snapshot of the router's namespace, which removes the
// images (the router keeps them on purpose; the engine must be left clean).
inline void remove_snapshots(const RouterProcess& router) {
  auto listed = run_cli(router, {"snapshots", "list", "--json"});
  if (listed.exit_code != 0) return;
  for (const auto& e : listed.json()) {
    if (e.contains("image")) run_cli(router, {"snapshots", "rm", e["key"]});
  }
}

// remove_snapshots() when the test ends, however it ends.
struct SnapshotImageCleanup {
  const RouterProcess& router;
  ~SnapshotImageCleanup() {
    try {
      remove_snapshots(router);
    } catch (...) {
      WARN("snapshot cleanup failed");
    }
  }
};

}  // namespace warmstart::testing
