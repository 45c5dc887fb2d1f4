// Integration tests of DockerClient against the private dockerd started by
// ./scripts/test (or scripts/dev-services). Every test names what it creates
// uniquely and removes it through EngineCleanup, whatever the outcome.
#include "container/docker_client.hpp"

#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

using namespace warmstart;
using namespace warmstart::container;
namespace wt = warmstart::testing;
using nlohmann::json;

namespace {

DockerClientOptions test_options() {
  DockerClientOptions o;
  o.socket_path = wt::docker_socket();
  o.request_timeout = 20s;
  return o;
}

// "wstest-<what>-<pid>-<n>-<random>": unique across tests sharing the engine.
std::string unique_name(std::string_view what) {
  static std::atomic<int> counter{0};
  static const auto salt = std::random_device{}();
  return "wstest-" + std::string(what) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(++counter) + "-" + std::to_string(salt % 100000);
}

std::int64_t wall_nanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Removes what a test created when it goes out of scope (containers first, then
// images newest first), on a client of its own. Never throws.
class EngineCleanup {
 public:
  EngineCleanup() = default;
  EngineCleanup(const EngineCleanup&) = delete;
  EngineCleanup& operator=(const EngineCleanup&) = delete;
  ~EngineCleanup() {
    try {
      net::io_context io;
      net::co_spawn(
          io,
          [this]() -> awaitable<void> {
            auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
            for (const auto& id : containers_) {
              try {
                co_await client->remove_container(id, /*force=*/true);
              } catch (const ApiError& e) {
                if (!e.is_not_found()) UNSCOPED_INFO("cleanup: " << e.what());
              }
            }
            for (auto it = images_.rbegin(); it != images_.rend(); ++it) {
              try {
                co_await client->remove_image(*it, /*force=*/true);
              } catch (const ApiError& e) {
                if (!e.is_not_found()) UNSCOPED_INFO("cleanup: " << e.what());
              }
            }
          },
          net::detached);
      io.run_for(60s);
    } catch (...) {
    }
  }
  const std::string& container(std::string id) { return containers_.emplace_back(std::move(id)); }
  const std::string& image(std::string ref) { return images_.emplace_back(std::move(ref)); }

 private:
  std::vector<std::string> containers_;
  std::vector<std::string> images_;
};

ContainerSpec worker(std::vector<std::string> cmd, Labels labels = {}) {
  ContainerSpec spec;
  spec.image = wt::base_image();
  spec.cmd = std::move(cmd);
  spec.labels = std::move(labels);
  spec.labels["wstest"] = "1";
  return spec;
}

// Creates (registered for cleanup), starts and returns the container id.
awaitable<std::string> run_worker(DockerClient& client, EngineCleanup& cleanup,
                                  ContainerSpec spec) {
  const std::string& id = cleanup.container(co_await client.create_container(std::move(spec)));
  co_await client.start_container(id);
  co_return id;
}

// Awaits `ready()` with a bound; notify() wakes the waiter early. Used with
// event handlers on the same executor, so no wake-up can be lost.
class Awaiter {
 public:
  explicit Awaiter(net::any_io_executor ex) : timer_(std::move(ex)) {}
  void notify() { timer_.cancel(); }
  awaitable<bool> until(std::function<bool()> ready, Duration limit) {
    auto deadline = Clock::now() + limit;
    while (!ready()) {
      if (Clock::now() >= deadline) co_return false;
      timer_.expires_at(deadline);
      co_await timer_.async_wait(net::as_tuple(use_awaitable));
    }
    co_return true;
  }

 private:
  net::steady_timer timer_;
};

// A unix-socket forwarder in front of dockerd that a test can cut: drop_all()
// closes every live connection (the client sees its stream break), refuse(true)
// closes new ones at once (the engine looks down).
class UnixProxy {
 public:
  using stream = net::local::stream_protocol;
  UnixProxy(net::any_io_executor ex, std::string path, std::string upstream)
      : executor_(ex), acceptor_(ex), path_(std::move(path)), upstream_(std::move(upstream)) {
    ::unlink(path_.c_str());
    acceptor_.open();
    acceptor_.bind(stream::endpoint(path_));
    acceptor_.listen();
    net::co_spawn(executor_, accept_loop(), net::detached);
  }
  ~UnixProxy() { close(); }
  void refuse(bool on) { refusing_ = on; }
  int accepted() const { return accepted_; }
  void drop_all() {
    for (auto& weak : live_) {
      if (auto s = weak.lock()) {
        boost::system::error_code ec;
        s->close(ec);
      }
    }
    live_.clear();
  }
  void close() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    drop_all();
    ::unlink(path_.c_str());
  }

 private:
  awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(net::as_tuple(use_awaitable));
      if (ec) co_return;
      ++accepted_;
      if (refusing_) continue;  // `s` closes here
      auto client = std::make_shared<stream::socket>(std::move(s));
      auto engine = std::make_shared<stream::socket>(executor_);
      auto [cec] =
          co_await engine->async_connect(stream::endpoint(upstream_), net::as_tuple(use_awaitable));
      if (cec) continue;
      live_.push_back(client);
      live_.push_back(engine);
      net::co_spawn(executor_, pump(client, engine), net::detached);
      net::co_spawn(executor_, pump(engine, client), net::detached);
    }
  }
  static awaitable<void> pump(std::shared_ptr<stream::socket> from,
                              std::shared_ptr<stream::socket> to) {
    std::array<char, 16384> buf;
    for (;;) {
      auto [ec, n] = co_await from->async_read_some(net::buffer(buf), net::as_tuple(use_awaitable));
      if (ec) break;
      auto [wec, w] =
          co_await net::async_write(*to, net::buffer(buf.data(), n), net::as_tuple(use_awaitable));
      if (wec) break;
    }
    boost::system::error_code ignored;
    from->close(ignored);
    to->close(ignored);
  }

  net::any_io_executor executor_;
  stream::acceptor acceptor_;
  std::string path_;
  std::string upstream_;
  bool refusing_ = false;
  int accepted_ = 0;
  std::vector<std::weak_ptr<stream::socket>> live_;
};

}  // namespace

TEST_CASE("ping negotiates the API version, info names the engine", "[container][docker]") {
  wt::run_coro([]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    CHECK(client->api_version().empty());
    std::string version = co_await client->ping();
    auto parsed = parse_api_version(version);
    REQUIRE(parsed);
    CHECK(*parsed >= ApiVersion{1, 41});
    CHECK(*parsed <= client->options().max_api_version);
    CHECK(client->api_version() == version);
    EngineInfo info = co_await client->info();
    CHECK_FALSE(info.id.empty());
    CHECK_FALSE(info.server_version.empty());
    CHECK(info.api_version == version);
  });
}

TEST_CASE("an engine below the version floor is refused clearly", "[container][docker]") {
  wt::run_coro([]() -> awaitable<void> {
    auto options = test_options();
    options.min_api_version = {1, 400};
    auto client = DockerClient::create(co_await net::this_coro::executor, options);
    try {
      co_await client->info();  // negotiates first
      FAIL("expected a version error");
    } catch (const DockerError& e) {
      CHECK_THAT(e.what(), Catch::Contains("older than 1.400"));
    }
  });
}

TEST_CASE("a missing socket is a TransportError of kind connect", "[container][docker]") {
  wt::run_coro([]() -> awaitable<void> {
    auto options = test_options();
    options.socket_path = wt::run_dir() + "/" + unique_name("nosock") + ".sock";
    auto client = DockerClient::create(co_await net::this_coro::executor, options);
    try {
      co_await client->ping();
      FAIL("expected a TransportError");
    } catch (const TransportError& e) {
      CHECK(e.kind() == TransportError::Kind::connect);
      CHECK_THAT(e.what(), Catch::Contains(options.socket_path));
    }
  });
}

TEST_CASE("create with a missing image is image-not-found, a missing container is not",
          "[container][docker]") {
  wt::run_coro([]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ContainerSpec spec = worker({"true"});
    spec.image = unique_name("gone") + ":latest";
    try {
      co_await client->create_container(spec);
      FAIL("expected ApiError");
    } catch (const ApiError& e) {
      CHECK(e.status() == 404);
      CHECK(e.is_image_not_found());
      CHECK_THAT(e.message(), Catch::StartsWith("No such image"));
      CHECK(e.operation() == "container create");
    }
    try {
      co_await client->inspect_container(unique_name("nocontainer"));
      FAIL("expected ApiError");
    } catch (const ApiError& e) {
      CHECK(e.status() == 404);
      CHECK(e.is_not_found());
      CHECK_FALSE(e.is_image_not_found());
    }
    try {
      co_await client->inspect_image(unique_name("noimage") + ":x");
      FAIL("expected ApiError");
    } catch (const ApiError& e) {
      CHECK(e.is_image_not_found());
    }
  });
}

TEST_CASE("create, start, wait, inspect and remove a container", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ContainerSpec spec = worker({"sh", "-c", "exit 3"});
    spec.name = unique_name("exit3");
    std::string id = co_await run_worker(*client, cleanup, spec);
    auto got1 = co_await client->wait_container(id, 20s);
    CHECK(got1 == 3);
    ContainerInfo info = co_await client->inspect_container(id);
    CHECK(info.id == id);
    CHECK(info.name == spec.name);
    CHECK(info.state.status == "exited");
    CHECK_FALSE(info.state.running);
    CHECK(info.state.exit_code == 3);
    CHECK_FALSE(info.state.oom_killed);
    CHECK(info.image == wt::base_image());
    auto got2 = co_await client->inspect_image(wt::base_image());
    CHECK(info.image_id == got2.id);
    co_await client->start_container(id);  // restarts an exited container
    auto got3 = co_await client->wait_container(id, 20s);
    CHECK(got3 == 3);
    co_await client->remove_container(id, /*force=*/false);
    try {
      co_await client->inspect_container(id);
      FAIL("container still there after remove");
    } catch (const ApiError& e) {
      CHECK(e.is_not_found());
    }
  });
}

TEST_CASE("labels, limits, cap-drop, no-new-privileges and network none reach the engine",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ContainerSpec spec = worker({"true"}, {{"warmstart.job", "j-42"}, {"warmstart.attempt", "1"}});
    spec.env = {"WARMSTART_JOB_ID=j-42"};
    spec.resources = {64 * 1024 * 1024, 500'000'000, 32};
    const std::string& id = cleanup.container(co_await client->create_container(spec));
    json raw = co_await client->inspect_container_raw(id);
    const json& host = raw.at("HostConfig");
    CHECK(host.at("Memory") == 64 * 1024 * 1024);
    CHECK(host.at("NanoCpus") == 500'000'000);
    CHECK(host.at("PidsLimit") == 32);
    CHECK(host.at("NetworkMode") == "none");
    CHECK(host.at("CapDrop") == json::array({"ALL"}));
    CHECK(host.at("SecurityOpt") == json::array({"no-new-privileges"}));
    CHECK(host.at("Privileged") == false);
    CHECK((host.at("Binds").is_null() || host.at("Binds").empty()));
    CHECK(raw.at("Config").at("Labels").at("warmstart.job") == "j-42");
    CHECK(raw.at("Config").at("Labels").at("warmstart.attempt") == "1");
    auto env = raw.at("Config").at("Env").get<std::vector<std::string>>();
    CHECK(std::count(env.begin(), env.end(), "WARMSTART_JOB_ID=j-42") == 1);
  });
}

TEST_CASE("no swap, a bounded json-file log and a nofile limit reach the engine",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ContainerSpec spec = worker({"sh", "-c", "ulimit -n"});
    spec.resources.memory_bytes = 64 * 1024 * 1024;
    spec.resources.memory_swap_bytes = 64 * 1024 * 1024;
    spec.log = {"json-file", {{"max-size", "1m"}, {"max-file", "2"}}};
    spec.ulimits = {{"nofile", 512, 512}};
    const std::string id = co_await run_worker(*client, cleanup, spec);
    json raw = co_await client->inspect_container_raw(id);
    const json& host = raw.at("HostConfig");
    CHECK(host.at("MemorySwap") == 64 * 1024 * 1024);
    CHECK(host.at("LogConfig").at("Type") == "json-file");
    CHECK(host.at("LogConfig").at("Config").at("max-size") == "1m");
    CHECK(host.at("LogConfig").at("Config").at("max-file") == "2");
    REQUIRE(host.at("Ulimits").size() == 1);
    CHECK(host.at("Ulimits")[0].at("Name") == "nofile");
    CHECK(host.at("Ulimits")[0].at("Soft") == 512);
    CHECK(host.at("Ulimits")[0].at("Hard") == 512);
    // The limit is the one the process runs under.
    const int exit_code = co_await client->wait_container(id, 30s);
    CHECK(exit_code == 0);
    auto logs = co_await client->container_logs(id, 1024);
    CHECK(logs.stdout_text == "512\n");
  });
}

TEST_CASE("logs demultiplex interleaved stdout/stderr of a real container, tail is bounded",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    // The pauses only order the two streams in the engine's log; nothing in the
    // test waits on them.
    auto interleaved = worker({"sh", "-c",
                               "echo out1; sleep 0.2; echo err1 >&2; sleep 0.2; echo out2; "
                               "sleep 0.2; echo err2 >&2"});
    std::string id = co_await run_worker(*client, cleanup, interleaved);
    auto got4 = co_await client->wait_container(id, 20s);
    REQUIRE(got4 == 0);
    Logs logs = co_await client->container_logs(id, 4096);
    CHECK(logs.stdout_text == "out1\nout2\n");
    CHECK(logs.stderr_text == "err1\nerr2\n");
    CHECK(logs.combined == "out1\nerr1\nout2\nerr2\n");
    CHECK_FALSE(logs.truncated);

    auto chatty =
        worker({"sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done"});
    std::string many = co_await run_worker(*client, cleanup, chatty);
    auto got5 = co_await client->wait_container(many, 20s);
    REQUIRE(got5 == 0);
    Logs tail = co_await client->container_logs(many, 100);
    CHECK(tail.truncated);
    CHECK(tail.combined.size() == 100);
    CHECK_THAT(tail.combined, Catch::EndsWith("line-2998\nline-2999\n"));
    Logs all = co_await client->container_logs(many, 1 << 20);
    CHECK_FALSE(all.truncated);
    CHECK_THAT(all.stdout_text, Catch::StartsWith("line-0\nline-1\n"));
  });
}

TEST_CASE("a hanging wait hits its deadline, the client keeps working", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    auto sleeper = worker({"sleep", "30"});
    std::string id = co_await run_worker(*client, cleanup, sleeper);

    auto t0 = Clock::now();
    try {
      co_await client->wait_container(id, 300ms);
      FAIL("wait returned on a sleeping container");
    } catch (const TransportError& e) {
      CHECK(e.is_timeout());
      CHECK(e.operation() == "container wait");
    }
    auto elapsed = Clock::now() - t0;
    CHECK(elapsed >= 290ms);
    CHECK(elapsed < 3s);

    // Cancellation from outside, as with_deadline does it (awaitable operators):
    // the losing transfer is removed from the multi at once.
    using namespace net::experimental::awaitable_operators;
    t0 = Clock::now();
    net::steady_timer timer(co_await net::this_coro::executor, 200ms);
    auto raced = co_await (client->wait_container(id, 60s) || timer.async_wait(use_awaitable));
    CHECK(raced.index() == 1);
    CHECK(Clock::now() - t0 < 3s);
    CHECK(client->transport().in_flight() == 0);
    t0 = Clock::now();
    // Awaitables built in their own statements: g++ 12 destroys temporaries of
    // a throwing co_await expression twice.
    auto bounded_wait = with_deadline(client->wait_container(id, 60s), 200ms, "wait");
    CHECK_THROWS_AS(co_await std::move(bounded_wait), DeadlineExceeded);
    CHECK(Clock::now() - t0 < 3s);
    CHECK(client->transport().in_flight() == 0);

    ContainerInfo info = co_await client->inspect_container(id);
    CHECK(info.state.running);
    co_await client->kill_container(id, "SIGKILL");
    auto got6 = co_await client->wait_container(id, 20s);
    CHECK(got6 == 137);
  });
}

TEST_CASE("stop honours the grace period, kill signals, kill of a stopped one conflicts",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    // `sleep` as PID 1 ignores SIGTERM: stop must fall back to SIGKILL after the grace.
    auto sleeper = worker({"sleep", "30"});
    std::string a = co_await run_worker(*client, cleanup, sleeper);
    auto t0 = Clock::now();
    co_await client->stop_container(a, 1s);
    auto elapsed = Clock::now() - t0;
    CHECK(elapsed >= 900ms);
    CHECK(elapsed < 10s);
    ContainerInfo stopped = co_await client->inspect_container(a);
    CHECK_FALSE(stopped.state.running);
    CHECK(stopped.state.exit_code == 137);
    co_await client->stop_container(a, 1s);  // already stopped: 304, not an error

    // A shell traps TERM and exits with its own code: the signal really arrived.
    auto trapper =
        worker({"sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"});
    std::string b = co_await run_worker(*client, cleanup, trapper);
    // Wait for the trap to be installed (the first log line), bounded.
    bool ready = false;
    for (int i = 0; i < 100 && !ready; ++i) {
      ready = (co_await client->container_logs(b, 64)).stdout_text == "ready\n";
      if (!ready) co_await sleep_for(50ms);  // polling the engine, not synchronization of our own
    }
    REQUIRE(ready);
    co_await client->kill_container(b, "SIGTERM");
    auto got7 = co_await client->wait_container(b, 20s);
    CHECK(got7 == 42);
    try {
      co_await client->kill_container(b, "SIGKILL");
      FAIL("kill of an exited container succeeded");
    } catch (const ApiError& e) {
      CHECK(e.is_conflict());
    }
  });
}

TEST_CASE("list by label returns exactly the labelled containers", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    std::string run = unique_name("list");
    std::string other = unique_name("list-other");
    auto spec_a = worker({"true"}, {{"wstest.run", run}, {"role", "a"}});
    auto spec_b = worker({"true"}, {{"wstest.run", run}, {"role", "b"}});
    auto spec_other = worker({"true"}, {{"wstest.run", other}});
    std::string a = cleanup.container(co_await client->create_container(spec_a));
    std::string b = cleanup.container(co_await client->create_container(spec_b));
    cleanup.container(co_await client->create_container(spec_other));
    std::vector<std::string> by_run{"wstest.run=" + run};
    std::vector<std::string> by_run_and_role{"wstest.run=" + run, "role=a"};

    auto ids = [](const std::vector<ContainerSummary>& list) {
      std::set<std::string> out;
      for (const auto& c : list) out.insert(c.id);
      return out;
    };
    auto both = co_await client->list_containers(by_run, /*all=*/true);
    CHECK(ids(both) == std::set<std::string>{a, b});
    for (const auto& c : both) {
      CHECK(c.labels.at("wstest.run") == run);
      CHECK(c.state == "created");
      CHECK(c.image == wt::base_image());
    }
    // Several labels are ANDed.
    auto only_a = co_await client->list_containers(by_run_and_role, true);
    CHECK(ids(only_a) == std::set<std::string>{a});
    // all=false lists running ones only; these never started.
    auto got8 = co_await client->list_containers(by_run, false);
    CHECK(got8.empty());
  });
}

TEST_CASE("commit keeps layers, images list by label, inspect and remove", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ImageInfo base = co_await client->inspect_image(wt::base_image());
    auto job = worker({"sh", "-c", "echo warm > /work/state"});
    std::string id = co_await run_worker(*client, cleanup, job);
    auto got9 = co_await client->wait_container(id, 20s);
    REQUIRE(got9 == 0);

    std::string key = unique_name("snap");
    CommitOptions options;
    options.repo = "wstest-snapshot/" + key;
    options.tag = "g1";
    options.config = base.config;
    options.config->labels["warmstart.snapshot.key"] = key;
    options.scrub_container_config = false;  // plain POST /commit
    std::string image = cleanup.image(co_await client->commit_container(id, options));
    CHECK_THAT(image, Catch::StartsWith("sha256:"));

    ImageInfo info = co_await client->inspect_image(options.repo + ":g1");
    CHECK(info.id == image);
    CHECK(info.layer_count == base.layer_count + 1);
    CHECK(info.config.cmd == base.config.cmd);
    CHECK(info.config.labels.at("warmstart.snapshot.key") == key);

    // Without a config override: the container's own config, one layer more.
    CommitOptions plain;
    plain.repo = options.repo;
    plain.tag = "plain";
    plain.pause = false;
    std::string plain_image = cleanup.image(co_await client->commit_container(id, plain));
    ImageInfo plain_info = co_await client->inspect_image(options.repo + ":plain");
    CHECK(plain_info.id == plain_image);
    CHECK(plain_info.layer_count == base.layer_count + 1);
    CHECK(plain_info.config.cmd == job.cmd);

    std::vector<std::string> by_key{"warmstart.snapshot.key=" + key};
    std::vector<std::string> by_other_key{"warmstart.snapshot.key=" + unique_name("none")};
    auto listed = co_await client->list_images(by_key);
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].id == image);
    CHECK(listed[0].repo_tags == std::vector<std::string>{options.repo + ":g1"});
    auto got10 = co_await client->list_images(by_other_key);
    CHECK(got10.empty());

    co_await client->remove_container(id, true);
    co_await client->remove_image(image, /*force=*/false);
    try {
      co_await client->inspect_image(image);
      FAIL("image still there after remove");
    } catch (const ApiError& e) {
      CHECK(e.is_image_not_found());
    }
  });
}

TEST_CASE("commit with a config override keeps the job's env out of the image",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ImageInfo base = co_await client->inspect_image(wt::base_image());
    ContainerSpec spec = worker({"sh", "-c", "echo \"state of $SECRET_NAME\" > /work/state"});
    spec.env = {"SECRET=hunter2", "SECRET_NAME=job-7"};
    std::string id = co_await run_worker(*client, cleanup, spec);
    auto got11 = co_await client->wait_container(id, 20s);
    REQUIRE(got11 == 0);

    CommitOptions options;
    options.repo = "wstest-snapshot/" + unique_name("scrub");
    options.tag = "g1";
    options.config = base.config;
    std::string image = cleanup.image(co_await client->commit_container(id, options));

    ImageInfo info = co_await client->inspect_image(image);
    CHECK(info.config.env == base.config.env);
    CHECK(info.config.cmd == base.config.cmd);
    CHECK(info.config.working_dir == base.config.working_dir);
    std::string whole = (co_await client->inspect_image_raw(image)).dump();
    CHECK_THAT(whole, !Catch::Contains("hunter2"));
    CHECK_THAT(whole, !Catch::Contains("SECRET"));

    // The snapshot has the job's files.
    ContainerSpec warm_spec = worker({"cat", "/work/state"});
    warm_spec.image = image;
    std::string warm = co_await run_worker(*client, cleanup, warm_spec);
    auto got12 = co_await client->wait_container(warm, 20s);
    REQUIRE(got12 == 0);
    auto got13 = co_await client->container_logs(warm, 1024);
    CHECK(got13.stdout_text == "state of job-7\n");
  });
}

TEST_CASE("export and import roundtrip: the file and the requested config", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    auto writer = worker({"sh", "-c", "echo 'hi from export' > /work/hello.txt"});
    std::string id = co_await run_worker(*client, cleanup, writer);
    auto got14 = co_await client->wait_container(id, 20s);
    REQUIRE(got14 == 0);

    std::string tar = wt::run_dir() + "/" + unique_name("export") + ".tar";
    co_await client->export_container(id, tar);
    std::ifstream in(tar, std::ios::binary);
    std::stringstream content;
    content << in.rdbuf();
    ::unlink(tar.c_str());
    CHECK(content.str().size() > 100'000);  // busybox is in there
    CHECK_THAT(content.str(), Catch::Contains("work/hello.txt"));
    CHECK_THAT(content.str(), Catch::Contains("hi from export"));

    // Re-export for the import (the first copy was read and removed above).
    co_await client->export_container(id, tar);
    std::string repo = "wstest-import/" + unique_name("imp");
    std::vector<std::string> changes{"ENV PATH=/bin", "ENV FOO=\"bar baz\"", "WORKDIR /work",
                                     "CMD [\"cat\", \"hello.txt\"]", "LABEL wstest.import=1"};
    std::string image =
        cleanup.image(co_await client->import_image(tar, repo, "v1", std::move(changes)));
    ::unlink(tar.c_str());
    ImageInfo info = co_await client->inspect_image(repo + ":v1");
    CHECK(info.id == image);
    CHECK(info.layer_count == 1);
    CHECK(info.config.env == std::vector<std::string>{"PATH=/bin", "FOO=bar baz"});
    CHECK(info.config.cmd == std::vector<std::string>{"cat", "hello.txt"});
    CHECK(info.config.working_dir == "/work");
    CHECK(info.config.labels.at("wstest.import") == "1");

    ContainerSpec spec = worker({});  // the image's CMD
    spec.image = image;
    std::string run = co_await run_worker(*client, cleanup, spec);
    auto got15 = co_await client->wait_container(run, 20s);
    REQUIRE(got15 == 0);
    auto got16 = co_await client->container_logs(run, 1024);
    CHECK(got16.stdout_text == "hi from export\n");

    // Errors: no such file (never reaches the engine), and a body that is no tar.
    auto missing_import = client->import_image(tar + ".missing", repo, "v2", {});
    CHECK_THROWS_AS(co_await std::move(missing_import), DockerError);
    std::string junk = wt::run_dir() + "/" + unique_name("junk") + ".tar";
    std::ofstream(junk) << "this is not a tar archive";
    try {
      cleanup.image(co_await client->import_image(junk, repo, "v3", {}));
      FAIL("import of junk succeeded");
    } catch (const DockerError& e) {
      UNSCOPED_INFO("junk import: " << e.what());
    }
    ::unlink(junk.c_str());
    auto missing_export = client->export_container(unique_name("nocontainer"), tar);
    CHECK_THROWS_AS(co_await std::move(missing_export), ApiError);
    CHECK(::access(tar.c_str(), F_OK) != 0);  // no partial file left behind
  });
}

TEST_CASE("export_import streams a filtered filesystem into an image, no file on disk",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    ImageInfo base = co_await client->inspect_image(wt::base_image());
    // 24 MB of random data: several times the pipe's bound, so the export is
    // paused while the import catches up.
    auto writer = worker(
        {"sh", "-c",
         "mkdir -p /root/.docker /work/src/.git /tmp/cache && "
         "echo 'machine h login u password p' > /root/.netrc && "
         "echo '{\"auths\":{}}' > /root/.docker/config.json && echo kept > /root/.profile && "
         "printf '[remote \"origin\"]\\n\\turl = https://u:tok3n@example.com/r.git\\n' "
         "> /work/src/.git/config && echo junk > /tmp/cache/x && "
         "head -c 25165824 /dev/urandom > /work/blob && md5sum /work/blob > /work/blob.md5"});
    std::string id = co_await run_worker(*client, cleanup, writer);
    auto wrote = co_await client->wait_container(id, 60s);
    REQUIRE(wrote == 0);

    TarFilterOptions filter;
    filter.exclude = {"/root/.netrc", "/root/.docker/config.json", "/tmp"};
    const std::string repo = "wstest-filtered/" + unique_name("fi");
    FilteredImport made =
        co_await client->export_import(id, repo, "g1", image_config_changes(base.config), filter);
    cleanup.image(made.image_id);
    CHECK(made.filter.entries_dropped == 4);  // .netrc, config.json, /tmp/cache, /tmp/cache/x
    CHECK(made.filter.git_configs_rewritten == 1);
    CHECK(made.bytes_in > 25'000'000);
    CHECK(made.bytes_out < made.bytes_in);
    ImageInfo info = co_await client->inspect_image(made.image_id);
    CHECK(info.layer_count == 1);
    CHECK(info.config.env == base.config.env);

    ContainerSpec check =
        worker({"sh", "-c",
                "test ! -e /root/.netrc && test ! -e /root/.docker/config.json && test -d /tmp && "
                "test -z \"$(ls -A /tmp)\" && cat /root/.profile && md5sum -c /work/blob.md5 && "
                "cat /work/src/.git/config"});
    check.image = made.image_id;
    std::string run = co_await run_worker(*client, cleanup, check);
    auto checked = co_await client->wait_container(run, 60s);
    auto logs = co_await client->container_logs(run, 4096);
    INFO(logs.combined);
    CHECK(checked == 0);
    CHECK_THAT(logs.stdout_text, Catch::Contains("kept"));
    CHECK_THAT(logs.stdout_text, Catch::Contains("url = https://example.com/r.git"));
    CHECK_THAT(logs.stdout_text, !Catch::Contains("tok3n"));

    // A failed export fails the import too: no image of that name is made.
    auto missing =
        client->export_import(unique_name("nocontainer"), repo, "g2", {}, TarFilterOptions{});
    CHECK_THROWS_AS(co_await std::move(missing), ApiError);
    std::vector<std::string> no_labels;
    bool made_g2 = false;
    for (const auto& image : co_await client->list_images(std::move(no_labels))) {
      for (const auto& tag : image.repo_tags) made_g2 = made_g2 || tag == repo + ":g2";
    }
    CHECK_FALSE(made_g2);
  });
}

TEST_CASE("requests reuse connections and run concurrently", "[container][docker]") {
  wt::run_coro([]() -> awaitable<void> {
    using namespace net::experimental::awaitable_operators;
    auto client = DockerClient::create(co_await net::this_coro::executor, test_options());
    co_await client->ping();
    for (int i = 0; i < 20; ++i) co_await client->inspect_image(wt::base_image());
    CHECK(client->transport().connections_opened() == 1);
    auto [a, b, c, d] = co_await (
        client->inspect_image(wt::base_image()) && client->info() && client->list_images({}) &&
        client->list_containers(std::vector<std::string>(1, "wstest=1"), true));
    auto got17 = co_await client->inspect_image(wt::base_image());
    CHECK(a.id == got17.id);
    CHECK_FALSE(b.id.empty());
    CHECK_FALSE(c.empty());
    (void)d;
    CHECK(client->transport().connections_opened() <= 4);
    CHECK(client->transport().in_flight() == 0);
  });
}

TEST_CASE("events: a container's die is reported within a second", "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto client = DockerClient::create(ex, test_options());
    std::string run = unique_name("die");
    EventFilter filter{{"container"}, {"wstest.run=" + run}, {"die"}};
    Awaiter awaiter(ex);
    std::optional<Event> die;
    Clock::time_point received;
    std::int64_t received_wall = 0;
    auto sub = client->subscribe_events(filter, 0, [&](const Event& e) {
      die = e;
      received = Clock::now();
      received_wall = wall_nanos();
      awaiter.notify();
    });
    auto sleeper = worker({"sleep", "30"}, {{"wstest.run", run}});
    std::string id = co_await run_worker(*client, cleanup, sleeper);
    auto t0 = Clock::now();
    co_await client->kill_container(id, "SIGKILL");
    auto got18 = co_await awaiter.until([&] { return die.has_value(); }, 5s);
    REQUIRE(got18);
    auto latency = received - t0;
    WARN("die event latency "
         << std::chrono::duration_cast<std::chrono::milliseconds>(latency).count() << " ms");
    CHECK(latency < 1s);
    CHECK(received_wall - die->time_nano < 1'000'000'000);
    CHECK(die->id == id);
    CHECK(die->action == "die");
    CHECK(die->attributes.at("exitCode") == "137");
    CHECK(die->attributes.at("wstest.run") == run);
    sub->stop();
  });
}

TEST_CASE("events: a dropped stream resumes without losing or repeating events",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto direct = DockerClient::create(ex, test_options());
    auto options = test_options();
    options.socket_path = wt::run_dir() + "/" + unique_name("px") + ".sock";
    UnixProxy cut(ex, options.socket_path, wt::docker_socket());
    options.events_min_backoff = 50ms;
    options.events_max_backoff = 200ms;
    auto through_proxy = DockerClient::create(ex, options);

    std::string run = unique_name("resume");
    Awaiter awaiter(ex);
    std::map<std::pair<std::string, std::string>, int> seen;  // (id, action) -> deliveries
    auto sub = through_proxy->subscribe_events(
        EventFilter{{"container"}, {"wstest.run=" + run}, {"create", "start", "die"}}, 0,
        [&](const Event& e) {
          ++seen[{e.id, e.action}];
          awaiter.notify();
        });
    auto saw = [&](const std::string& id, const char* action) {
      return seen.count({id, action}) != 0;
    };
    auto labels = Labels{{"wstest.run", run}};
    std::vector<std::string> quick{"true"};
    std::vector<std::string> exit5{"sh", "-c", "exit 5"};

    std::string a = co_await run_worker(*direct, cleanup, worker(quick, labels));
    auto got19 = co_await awaiter.until([&] { return saw(a, "die"); }, 10s);
    REQUIRE(got19);
    int connections_before = cut.accepted();

    // The engine "goes away": the stream breaks and reconnects are refused while
    // b and c live and die.
    cut.refuse(true);
    cut.drop_all();
    std::string b = co_await run_worker(*direct, cleanup, worker(quick, labels));
    std::string c = co_await run_worker(*direct, cleanup, worker(exit5, labels));
    auto got20 = co_await direct->wait_container(b, 20s);
    CHECK(got20 == 0);
    auto got21 = co_await direct->wait_container(c, 20s);
    CHECK(got21 == 5);
    CHECK_FALSE(saw(b, "die"));
    cut.refuse(false);

    auto got22 = co_await awaiter.until([&] { return saw(b, "die") && saw(c, "die"); }, 10s);
    REQUIRE(got22);
    CHECK(cut.accepted() > connections_before + 1);  // refused attempts, then a reconnect
    for (const auto& id : {a, b, c}) {
      for (const char* action : {"create", "start", "die"}) {
        INFO(action << " of " << id.substr(0, 12));
        CHECK(seen[{id, action}] == 1);
      }
    }
    CHECK(seen.size() == 9);
    sub.reset();
    cut.close();
  });
}

TEST_CASE("events: the handler may destroy its subscription, no callback after stop",
          "[container][docker]") {
  EngineCleanup cleanup;
  wt::run_coro([&]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    auto client = DockerClient::create(ex, test_options());
    std::string run = unique_name("stop");
    EventFilter filter{{"container"}, {"wstest.run=" + run}, {"die"}};
    Awaiter awaiter(ex);
    int first_calls = 0;
    int control_calls = 0;
    EventSubscriptionPtr first;
    first = client->subscribe_events(filter, 0, [&](const Event&) {
      ++first_calls;
      first.reset();  // destroys the subscription from inside its own handler
      awaiter.notify();
    });
    auto control = client->subscribe_events(filter, 0, [&](const Event&) {
      ++control_calls;
      awaiter.notify();
    });
    auto labels = Labels{{"wstest.run", run}};
    std::vector<std::string> quick{"true"};
    std::vector<std::string> exit5{"sh", "-c", "exit 5"};
    co_await run_worker(*client, cleanup, worker(quick, labels));
    auto got23 =
        co_await awaiter.until([&] { return first_calls == 1 && control_calls == 1; }, 10s);
    REQUIRE(got23);
    CHECK(first == nullptr);
    co_await run_worker(*client, cleanup, worker(quick, labels));
    co_await run_worker(*client, cleanup, worker(quick, labels));
    // Once the control subscription saw both later dies, the stopped one would have too.
    auto got24 = co_await awaiter.until([&] { return control_calls == 3; }, 10s);
    REQUIRE(got24);
    CHECK(first_calls == 1);
    control->stop();
    control->stop();  // idempotent
  });
}
