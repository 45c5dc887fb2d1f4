// Test helper: a redis-server process of the test's own (loopback, free port,
// data in a directory under WARMSTART_TEST_RUN_DIR) for tests that must
// restart, stop or freeze the server. The destructor kills what it started.
#pragma once
#include <hiredis/hiredis.h>

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace warmstart::testing {

class RedisServerProcess {
 public:
  // `dir` holds the AOF files; created if missing. A non-empty `config_file`
  // (written by the caller, e.g. a Sentinel's) comes first on the command line.
  RedisServerProcess(std::string dir, std::vector<std::string> extra_args,
                     std::string config_file = "")
      : dir_(std::move(dir)),
        extra_(std::move(extra_args)),
        config_file_(std::move(config_file)),
        port_(free_loopback_port()) {
    ::mkdir(dir_.c_str(), 0700);
  }
  RedisServerProcess(const RedisServerProcess&) = delete;
  RedisServerProcess& operator=(const RedisServerProcess&) = delete;
  ~RedisServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGCONT);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

  // Starts (or restarts, on the same port) and waits until it answers PING.
  void start() {
    std::vector<std::string> args{"redis-server"};
    if (!config_file_.empty()) args.push_back(config_file_);
    for (std::string a : {"--bind", "127.0.0.1", "--port"}) args.push_back(a);
    args.push_back(std::to_string(port_));
    for (std::string a :
         {"--dir", dir_.c_str(), "--save", "", "--protected-mode", "yes", "--logfile"}) {
      args.push_back(a);
    }
    args.push_back(dir_ + "/redis.log");
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
      pid_ = -1;
      throw std::runtime_error("cannot spawn redis-server");
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      if (ping()) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("redis-server exited at start; see " + dir_ + "/redis.log");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a new process
    }
    throw std::runtime_error("redis-server did not answer PING within 10 s");
  }

  // SHUTDOWN semantics through a signal: SIGTERM makes redis flush the AOF and exit.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // kill -9: no shutdown, no flush.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  void freeze() { ::kill(pid_, SIGSTOP); }
  void thaw() { ::kill(pid_, SIGCONT); }

  bool ping() const {
    // PONG, or NOAUTH when a password is required: both mean up.
    return sync_command(port_, {"PING"}, [](const redisReply&) {});
  }

  // One command on a short-lived blocking connection to 127.0.0.1:port;
  // `read` sees the reply. False when nothing answered within 200 ms.
  template <typename Read>
  static bool sync_command(int port, const std::vector<std::string>& args, Read&& read) {
    timeval tv{0, 200'000};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool answered = false;
    if (c != nullptr && c->err == 0) {
      redisSetTimeout(c, tv);
      std::vector<const char*> argv;
      std::vector<std::size_t> lens;
      for (const auto& a : args) {
        argv.push_back(a.data());
        lens.push_back(a.size());
      }
      auto* r = static_cast<redisReply*>(
          redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
      if (r != nullptr) {
        answered = true;
        read(*r);
        freeReplyObject(r);
      }
    }
    if (c != nullptr) redisFree(c);
    return answered;
  }

 private:
  static int free_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("cannot find a free loopback port");
    }
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  std::string dir_;
  std::vector<std::string> extra_;
  std::string config_file_;
  int port_;
  pid_t pid_ = -1;
};

// A primary, one replica and three Sentinels (quorum 2) on loopback, each in a
// directory under `dir`, for failover tests. Sentinels mark the primary down
// after `down_after_ms` without a reply.
class SentinelGroup {
 public:
  SentinelGroup(const std::string& dir, std::string master_name, int down_after_ms = 1000)
      : name_(std::move(master_name)),
        primary_(made(dir) + "/primary", data_node()),
        replica_(dir + "/replica", with_replicaof(primary_.port())) {
    primary_.start();
    replica_.start();
    for (int i = 0; i < 3; ++i) {
      const std::string sdir = dir + "/sentinel-" + std::to_string(i);
      ::mkdir(sdir.c_str(), 0700);
      const std::string conf = sdir + "/sentinel.conf";
      FILE* f = std::fopen(conf.c_str(), "w");
      if (f == nullptr) throw std::runtime_error("cannot write " + conf);
      std::fprintf(f,
                   "sentinel monitor %s 127.0.0.1 %d 2\n"
                   "sentinel down-after-milliseconds %s %d\n"
                   "sentinel failover-timeout %s 10000\n"
                   "sentinel parallel-syncs %s 1\n",
                   name_.c_str(), primary_.port(), name_.c_str(), down_after_ms, name_.c_str(),
                   name_.c_str());
      std::fclose(f);
      sentinels_.push_back(
          std::make_unique<RedisServerProcess>(sdir, std::vector<std::string>{"--sentinel"}, conf));
      sentinels_.back()->start();
    }
  }

  const std::string& master_name() const { return name_; }
  RedisServerProcess& primary() { return primary_; }
  RedisServerProcess& replica() { return replica_; }
  RedisServerProcess& sentinel(std::size_t i) { return *sentinels_.at(i); }

  // redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/<name>/<db>
  std::string url(int db = 0) const {
    std::string out = "redis+sentinel://";
    for (std::size_t i = 0; i < sentinels_.size(); ++i) {
      if (i > 0) out += ",";
      out += "127.0.0.1:" + std::to_string(sentinels_[i]->port());
    }
    return out + "/" + name_ + "/" + std::to_string(db);
  }

  // The port the first answering Sentinel names as master, or 0.
  int master_port() const {
    for (const auto& s : sentinels_) {
      int port = 0;
      RedisServerProcess::sync_command(s->port(), {"SENTINEL", "get-master-addr-by-name", name_},
                                       [&](const redisReply& r) {
                                         if (r.type == REDIS_REPLY_ARRAY && r.elements == 2)
                                           port = std::atoi(r.element[1]->str);
                                       });
      if (port != 0) return port;
    }
    return 0;
  }

 private:
  static std::string made(const std::string& dir) {
    ::mkdir(dir.c_str(), 0700);
    return dir;
  }
  // AOF on, as Redis's replication guide requires of a master that may be
  // restarted: a Sentinel can promote any instance it lists as a replica,
  // and a restarted master without persistence comes back empty (a spurious
  // +sdown of the new master right after a failover was seen to promote it
  // and wipe the data set).
  static std::vector<std::string> data_node() {
    return {"--repl-diskless-sync-delay", "0", "--appendonly", "yes"};
  }
  static std::vector<std::string> with_replicaof(int port) {
    auto args = data_node();
    for (std::string a : {"--replicaof", "127.0.0.1"}) args.push_back(a);
    args.push_back(std::to_string(port));
    return args;
  }

  std::string name_;
  RedisServerProcess primary_;
  RedisServerProcess replica_;
  std::vector<std::unique_ptr<RedisServerProcess>> sentinels_;
};

}  // namespace warmstart::testing
