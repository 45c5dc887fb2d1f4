// Unit tests of MemoryRuntime: it answers like DockerClient against a real
// engine (docker_client_test.cpp checks those answers), and its scripting
// (exits, faults, outages) does what router tests will rely on.
#include "container/memory_runtime.hpp"

#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

using namespace warmstart;
using namespace warmstart::container;
using warmstart::testing::run_coro;
using Op = MemoryRuntime::Op;
using Fault = MemoryRuntime::Fault;

namespace {

// Runs `body(runtime)` on a fresh io_context, with the image "base:1" loaded.
template <typename Body>
void with_runtime(Body body, MemoryRuntimeOptions options = {}) {
  run_coro([&]() -> awaitable<void> {
    auto rt = MemoryRuntime::create(co_await net::this_coro::executor, options);
    ImageInfo base;
    base.config.env = {"PATH=/bin"};
    base.config.cmd = {"sh"};
    base.size_bytes = 1000;
    rt->add_image("base:1", base);
    co_await body(*rt);
  });
}

// (No braced default arguments: g++ 12 rejects them in a co_await expression.)
ContainerSpec spec(const std::string& name, const std::string& image, Labels labels) {
  ContainerSpec s;
  s.name = name;
  s.image = image;
  s.cmd = {"sh", "-c", "true"};
  s.labels = std::move(labels);
  return s;
}
ContainerSpec spec(const std::string& name, const std::string& image = "base:1") {
  Labels managed;
  managed["warmstart.managed"] = "true";
  return spec(name, image, std::move(managed));
}
Labels label(const std::string& key, const std::string& value) {
  Labels l;
  l[key] = value;
  return l;
}

// Creates and starts `name`; returns its id.
awaitable<std::string> run(MemoryRuntime& rt, std::string name) {
  std::string id = co_await rt.create_container(spec(name));
  co_await rt.start_container(id);
  co_return id;
}

// The ApiError an operation throws (status 0 when it threw none).
template <typename T>
awaitable<ApiError> api_error(awaitable<T> op) {
  try {
    co_await std::move(op);
  } catch (const ApiError& e) {
    co_return e;
  }
  co_return ApiError("none", 0, "no error");
}

template <typename T>
awaitable<std::optional<TransportError::Kind>> transport_error(awaitable<T> op) {
  try {
    co_await std::move(op);
  } catch (const TransportError& e) {
    co_return e.kind();
  }
  co_return std::nullopt;
}

// Lets posted work (planned exits, event delivery) run.
awaitable<void> settle() {
  for (int i = 0; i < 5; ++i) co_await net::post(co_await net::this_coro::executor, use_awaitable);
}

}  // namespace

TEST_CASE("create answers the engine's 404 for a missing image and 409 for a taken name",
          "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto missing = co_await api_error(rt.create_container(spec("a", "gone:1")));
    CHECK(missing.status() == 404);
    CHECK(missing.is_image_not_found());
    CHECK(missing.message() == "No such image: gone:1");
    auto id = co_await rt.create_container(spec("a"));
    CHECK(id.size() == 64);
    auto taken = co_await api_error(rt.create_container(spec("a")));
    CHECK(taken.is_conflict());
    CHECK_THAT(taken.message(), Catch::Contains("The container name \"/a\" is already in use by "
                                                "container \"" +
                                                id + "\""));
    auto info = co_await rt.inspect_container("a");
    CHECK(info.id == id);
    CHECK(info.name == "a");
    CHECK(info.state.status == "created");
    CHECK(rt.calls(Op::create_container) == 3);
  });
}

TEST_CASE("a container runs until the test makes it exit: waiters get the code", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "job");
    co_await rt.start_container(id);  // 304 from the engine: not an error
    auto info = co_await rt.inspect_container(id);
    CHECK(info.state.running);
    auto ex = co_await net::this_coro::executor;
    std::optional<int> code;
    net::co_spawn(
        ex, [&]() -> awaitable<void> { code = co_await rt.wait_container(id, 60s); },
        net::detached);
    co_await settle();
    CHECK_FALSE(code);
    rt.exit("job", 3);
    co_await settle();
    CHECK(code == 3);
    auto after = co_await rt.wait_container(id, 1s);  // exited: answers at once
    CHECK(after == 3);
    auto exited = co_await rt.inspect_container(id);
    CHECK(exited.state.status == "exited");
    CHECK(exited.state.exit_code == 3);
    CHECK_FALSE(exited.state.finished_at.empty());
  });
}

TEST_CASE("events: start, oom and die with exitCode reach a filtered subscriber", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    std::vector<std::string> seen;
    EventFilter filter;
    filter.types = {"container"};
    filter.labels = {"warmstart.router=r1"};
    auto sub = rt.subscribe_events(filter, 0, [&](const Event& e) {
      seen.push_back(e.action + (e.attributes.count("exitCode") ? "=" + e.attributes.at("exitCode")
                                                                : std::string()));
    });
    auto mine =
        co_await rt.create_container(spec("mine", "base:1", label("warmstart.router", "r1")));
    auto other =
        co_await rt.create_container(spec("other", "base:1", label("warmstart.router", "r2")));
    co_await rt.start_container(mine);
    co_await rt.start_container(other);
    rt.exit(mine, 137, true);
    rt.exit(other, 0);
    co_await settle();
    CHECK(seen == std::vector<std::string>{"create", "start", "oom", "die=137"});
    auto info = co_await rt.inspect_container(mine);
    CHECK(info.state.oom_killed);
    sub->stop();
    co_await rt.remove_container(mine, false);
    co_await settle();
    CHECK(seen.size() == 4);  // nothing after stop()
  });
}

TEST_CASE("events: lost events are recorded but never delivered", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    std::vector<std::string> seen;
    EventFilter die;
    die.events = {"die"};
    auto sub = rt.subscribe_events(die, 0, [&](const Event& e) { seen.push_back(e.id); });
    auto lost = co_await run(rt, "lost");
    auto heard = co_await run(rt, "heard");
    rt.lose_events(true);
    rt.exit(lost, 1);
    co_await settle();
    rt.lose_events(false);
    rt.exit(heard, 0);
    co_await settle();
    CHECK(seen == std::vector<std::string>{heard});
    CHECK(rt.events().size() >= 2);
  });
}

TEST_CASE("events: a subscription since a past time replays, since 0 starts now", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "early");
    std::vector<std::string> replayed, fresh;
    EventFilter die;
    die.events = {"die"};
    auto from_start =
        rt.subscribe_events(die, 1, [&](const Event& e) { replayed.push_back(e.id); });
    rt.exit(id, 0);
    co_await settle();
    auto from_now = rt.subscribe_events(die, 0, [&](const Event& e) { fresh.push_back(e.id); });
    co_await settle();
    CHECK(replayed == std::vector<std::string>{id});
    CHECK(fresh.empty());
  });
}

TEST_CASE("set_auto_exit and exit plans end started containers by themselves", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    rt.set_auto_exit(0);
    auto a = co_await run(rt, "a");
    auto code = co_await rt.wait_container(a, 5s);
    CHECK(code == 0);
    rt.set_exit_plan([](const ContainerSpec& s) -> std::optional<ExitPlan> {
      if (s.name == "forever") return std::nullopt;
      ExitPlan plan;
      plan.exit_code = 1;
      plan.oom = s.name == "hungry";
      plan.logs = "0123456789";
      return plan;
    });
    auto hungry = co_await run(rt, "hungry");
    auto hungry_code = co_await rt.wait_container(hungry, 5s);
    CHECK(hungry_code == 1);
    auto info = co_await rt.inspect_container(hungry);
    CHECK(info.state.oom_killed);
    auto logs = co_await rt.container_logs(hungry, 4);
    CHECK(logs.combined == "6789");
    CHECK(logs.truncated);
    auto forever = co_await run(rt, "forever");
    co_await settle();
    CHECK(rt.container(forever)->state.running);
    rt.clear_auto_exit();
  });
}

TEST_CASE("stop, kill and remove behave like the engine", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "s");
    auto busy = co_await api_error(rt.remove_container(id, false));
    CHECK(busy.status() == 409);
    co_await rt.stop_container(id, 1s);
    CHECK(rt.container(id)->state.exit_code == 137);
    co_await rt.stop_container(id, 1s);  // 304: already stopped
    auto dead = co_await api_error(rt.kill_container(id, "SIGKILL"));
    CHECK(dead.status() == 409);
    co_await rt.start_container(id);  // an exited container starts again
    co_await rt.kill_container(id, "SIGTERM");
    CHECK(rt.container(id)->state.exit_code == 143);
    co_await rt.remove_container(id, false);
    CHECK_FALSE(rt.container(id));
    auto gone = co_await api_error(rt.inspect_container(id));
    CHECK(gone.is_not_found());
    CHECK_FALSE(gone.is_image_not_found());
    CHECK(gone.message() == "No such container: " + id);
    auto forced = co_await run(rt, "f");
    co_await rt.remove_container(forced, true);
    std::vector<std::string> actions;
    for (const auto& e : rt.events()) {
      if (e.id == forced) actions.push_back(e.action);
    }
    CHECK(actions == std::vector<std::string>{"create", "start", "kill", "die", "destroy"});
  });
}

TEST_CASE("list_containers filters by state and labels", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    co_await run(rt, "up");
    co_await rt.create_container(spec("created"));
    co_await rt.create_container(spec("foreign", "base:1", label("other", "x")));
    std::vector<std::string> managed = {"warmstart.managed=true"};
    auto running = co_await rt.list_containers(managed, false);
    REQUIRE(running.size() == 1);
    CHECK(running[0].names == std::vector<std::string>{"/up"});
    CHECK(running[0].state == "running");
    auto all = co_await rt.list_containers(managed, true);
    CHECK(all.size() == 2);
    std::vector<std::string> key_only = {"other"};
    auto other = co_await rt.list_containers(key_only, true);
    CHECK(other.size() == 1);
  });
}

TEST_CASE("scripted faults: 404, 409, 500, unreachable, and a call that hangs", "[unit]") {
  MemoryRuntimeOptions o;
  o.docker_timeout = 20ms;
  with_runtime(
      [](MemoryRuntime& rt) -> awaitable<void> {
        rt.fail_next(Op::create_container, Fault::image_not_found);
        rt.fail_next(Op::create_container, Fault::conflict);
        rt.fail_next(Op::create_container, Fault::server_error);
        auto e404 = co_await api_error(rt.create_container(spec("x")));
        CHECK(e404.is_image_not_found());
        auto e409 = co_await api_error(rt.create_container(spec("x")));
        CHECK(e409.is_conflict());
        auto e500 = co_await api_error(rt.create_container(spec("x")));
        CHECK(e500.status() == 500);
        auto id = co_await rt.create_container(spec("x"));  // the script is used up
        rt.fail_next(Op::start_container, Fault::not_found);
        auto missing = co_await api_error(rt.start_container(id));
        CHECK(missing.is_not_found());
        CHECK_FALSE(missing.is_image_not_found());
        rt.fail_next(Op::start_container, Fault::unreachable, 2);
        for (int i = 0; i < 2; ++i) {
          auto kind = co_await transport_error(rt.start_container(id));
          CHECK(kind == TransportError::Kind::connect);
        }
        rt.fail_next(Op::inspect_container, Fault::hang);
        auto hung = co_await transport_error(rt.inspect_container(id));
        CHECK(hung == TransportError::Kind::timeout);
        CHECK(rt.calls(Op::start_container) == 3);
      },
      o);
}

TEST_CASE("a hanging call is cut by the caller's deadline", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    rt.fail_next(Op::ping, Fault::hang);
    bool cut = false;
    try {
      co_await with_deadline(rt.ping(), 20ms, "ping");
    } catch (const DeadlineExceeded&) {
      cut = true;
    }
    CHECK(cut);
    rt.slow_next(Op::ping, 1ms);
    auto version = co_await rt.ping();
    CHECK(version == "1.41");
  });
}

TEST_CASE("set_latency: every call of the op takes it, until cleared", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    rt.set_latency(Op::create_container, 100ms);
    for (int i = 0; i < 2; ++i) {
      ContainerSpec slow = spec("lat-" + std::to_string(i));  // no temporary in co_await
      const auto t0 = Clock::now();
      co_await rt.create_container(std::move(slow));
      CHECK(Clock::now() - t0 >= 100ms);
    }
    bool cut = false;
    try {
      co_await with_deadline(rt.create_container(spec("cut")), 5ms, "create");
    } catch (const DeadlineExceeded&) {
      cut = true;
    }
    CHECK(cut);
    CHECK_FALSE(rt.container("cut"));
    rt.set_latency(Op::create_container, 0ms);
    const auto t0 = Clock::now();
    co_await rt.create_container(spec("fast"));
    CHECK(Clock::now() - t0 < 100ms);  // no sleep: a post only
  });
}

TEST_CASE("wait_container fails at its deadline while the container runs", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "slow");
    auto kind = co_await transport_error(rt.wait_container(id, 10ms));
    CHECK(kind == TransportError::Kind::timeout);
    rt.exit(id, 0);
    auto code = co_await rt.wait_container(id, 10ms);
    CHECK(code == 0);
  });
}

TEST_CASE("down: calls cannot connect, waits break, events arrive once it is back", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "j");
    std::vector<std::string> seen;
    EventFilter die;
    die.events = {"die"};
    auto sub = rt.subscribe_events(die, 0, [&](const Event& e) {
      seen.push_back(e.attributes.at("name") + "=" + e.attributes.at("exitCode"));
    });
    std::optional<TransportError::Kind> wait_failure;
    bool wait_done = false;
    net::co_spawn(
        co_await net::this_coro::executor,
        [&]() -> awaitable<void> {
          wait_failure = co_await transport_error(rt.wait_container(id, 60s));
          wait_done = true;
        },
        net::detached);
    co_await settle();
    rt.set_down(true);
    co_await settle();
    CHECK(wait_done);
    CHECK(wait_failure == TransportError::Kind::io);
    auto ping = co_await transport_error(rt.ping());
    CHECK(ping == TransportError::Kind::connect);
    auto create = co_await transport_error(rt.create_container(spec("k")));
    CHECK(create == TransportError::Kind::connect);
    rt.exit(id, 5);  // the container ends while the engine is unreachable
    co_await settle();
    CHECK(seen.empty());
    rt.set_down(false);
    co_await settle();
    CHECK(seen == std::vector<std::string>{"j=5"});
    auto info = co_await rt.inspect_container(id);
    CHECK(info.state.exit_code == 5);
  });
}

TEST_CASE("images: tags, labels, removal rules and a snapshot deleted by hand", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    ImageInfo snap;
    snap.config.labels = {{"warmstart.snapshot.key", "k1"}};
    auto snap_id = rt.add_image("snap:g1", snap);
    rt.add_image("snap:alias", ImageInfo{snap_id});
    std::vector<std::string> filter = {"warmstart.snapshot.key=k1"};
    auto listed = co_await rt.list_images(filter);
    REQUIRE(listed.size() == 1);
    CHECK(listed[0].repo_tags == std::vector<std::string>{"snap:g1", "snap:alias"});
    co_await rt.remove_image("snap:alias", false);  // another tag remains: untag only
    auto still = co_await rt.inspect_image(snap_id);
    CHECK(still.repo_tags == std::vector<std::string>{"snap:g1"});

    auto user = co_await rt.create_container(spec("u", "snap:g1"));
    auto must_force = co_await api_error(rt.remove_image("snap:g1", false));
    CHECK(must_force.is_conflict());
    co_await rt.start_container(user);
    auto by_id = co_await api_error(rt.remove_image(snap_id, true));
    CHECK(by_id.is_conflict());
    co_await rt.remove_container(user, true);
    co_await rt.remove_image("snap:g1", true);
    auto gone = co_await api_error(rt.inspect_image(snap_id));
    CHECK(gone.is_image_not_found());

    // A snapshot pruned behind the router's back: create answers 404.
    rt.add_image("snap:g2", ImageInfo{});
    rt.delete_image("snap:g2");
    auto stale = co_await api_error(rt.create_container(spec("s", "snap:g2")));
    CHECK(stale.is_image_not_found());
    auto plain = co_await rt.inspect_image("base:1");
    CHECK(plain.repo_tags == std::vector<std::string>{"base:1"});
    auto bare = co_await api_error(rt.inspect_image("base"));  // base:latest
    CHECK(bare.is_image_not_found());
  });
}

TEST_CASE("commit adds a layer: a scrubbed commit or an import is one layer", "[unit]") {
  with_runtime([](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "c");
    rt.exit(id, 0);
    ImageConfig config;
    config.env = {"PATH=/bin"};
    config.labels = {{"warmstart.snapshot.key", "k"}};
    CommitOptions layered;
    layered.repo = "snap";
    layered.tag = "g1";
    layered.config = config;
    layered.scrub_container_config = false;
    auto layered_id = co_await rt.commit_container(id, layered);
    auto one = co_await rt.inspect_image("snap:g1");
    CHECK(one.id == layered_id);
    CHECK(one.layer_count == 2);  // base (1) + 1
    CHECK(one.config.labels.at("warmstart.snapshot.key") == "k");
    CommitOptions scrubbed = layered;
    scrubbed.tag = "g2";
    scrubbed.scrub_container_config = true;
    co_await rt.commit_container(id, scrubbed);
    auto two = co_await rt.inspect_image("snap:g2");
    CHECK(two.layer_count == 1);
    CHECK(rt.calls(Op::commit_container) == 2);
  });
}

TEST_CASE("export then import with changes gives the image that config", "[unit]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("memory-runtime-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  with_runtime([&](MemoryRuntime& rt) -> awaitable<void> {
    auto id = co_await run(rt, "e");
    const std::string tar = (dir / "e.tar").string();
    co_await rt.export_container(id, tar);
    CHECK(std::filesystem::file_size(tar) > 0);
    std::vector<std::string> changes = {
        R"(ENV GREETING="say \"hi\" \$HOME")", R"(CMD ["/bin/sh","-c","echo"])", "USER nobody",
        "WORKDIR /work", R"(LABEL "warmstart.snapshot.key"="repo-42/branch main")"};
    auto image_id = co_await rt.import_image(tar, "flat", "g1", changes);
    auto image = co_await rt.inspect_image("flat:g1");
    CHECK(image.id == image_id);
    CHECK(image.layer_count == 1);
    CHECK(image.config.env == std::vector<std::string>{"GREETING=say \"hi\" $HOME"});
    CHECK(image.config.cmd == std::vector<std::string>{"/bin/sh", "-c", "echo"});
    CHECK(image.config.user == "nobody");
    CHECK(image.config.working_dir == "/work");
    CHECK(image.config.labels.at("warmstart.snapshot.key") == "repo-42/branch main");
    bool unreadable = false;
    try {
      co_await rt.import_image((dir / "missing.tar").string(), "x", "", changes);
    } catch (const DockerError&) {
      unreadable = true;
    }
    CHECK(unreadable);
  });
  std::filesystem::remove_all(dir);
}

TEST_CASE("info and ping answer from the options", "[unit]") {
  MemoryRuntimeOptions o;
  o.engine_id = "engine-7";
  with_runtime(
      [](MemoryRuntime& rt) -> awaitable<void> {
        auto info = co_await rt.info();
        CHECK(info.id == "engine-7");
        auto version = co_await rt.ping();
        CHECK(version == "1.41");
      },
      o);
}
