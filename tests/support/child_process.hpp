// Starting a child process with its output in a log file: shared by the e2e
// tests (tests/e2e/router_process.hpp) and the benchmarks (bench/bench_support.hpp),
// which both run the real `warmstart` binary. No Catch2 here.
#pragma once
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <csignal>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmstart::testing {

// fork + execve of args[0] with exactly `env` ("NAME=value" entries); stdout
// and stderr go to `log_path` (truncated). Returns the child's pid; a failed
// exec exits the child with 127. The child gets SIGTERM when the thread that
// spawned it ends (PR_SET_PDEATHSIG): a test process that dies on an abort
// (an ASan report, a crash) takes its routers with it instead of leaving them
// running. So spawn from a thread that outlives the child (the test's own).
inline pid_t spawn_logged(std::vector<std::string> args, std::vector<std::string> env,
                          const std::string& log_path) {
  if (args.empty()) throw std::invalid_argument("spawn_logged: no program");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("cannot create " + log_path);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    throw std::runtime_error("fork failed");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  return pid;
}

}  // namespace warmstart::testing
