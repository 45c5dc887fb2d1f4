// The dispatcher and executor against the in-memory doubles of their ports
// (MemoryQueue, MemoryRuntime, MemoryCache): every fault path of the router
// in milliseconds, no server. The same paths run against the real Redis and
// dockerd in tests/e2e/outage_e2e_test.cpp.
#include "router/dispatcher.hpp"
#include "common/redis.hpp"
#include "container/memory_runtime.hpp"
#include "queue/memory_queue.hpp"
#include "snapshots/memory_cache.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>

using namespace warmstart;
using namespace warmstart::router;
using container::MemoryRuntime;
using queue::JobState;
using queue::MemoryQueue;

namespace {

constexpr const char* kBase = "base:latest";

struct Harness {
  net::io_context io;
  RouterConfig config;
  queue::MemoryQueueOptions queue_options;
  // A hung call fails like DockerClient's: after the router's docker_timeout.
  std::shared_ptr<MemoryRuntime> engine = MemoryRuntime::create(
      io.get_executor(), container::MemoryRuntimeOptions{"memory-engine", "1.41", 1s});
  std::shared_ptr<MemoryQueue> queue;
  std::shared_ptr<snapshots::MemoryCache> cache;
  std::vector<std::shared_ptr<Dispatcher>> routers;

  Harness() {
    config.router_id = "r1";
    config.base_image = kBase;
    config.concurrency = 2;
    config.lease_timeout = 3s;
    config.reconcile_interval = 50ms;
    config.stop_grace = 1s;
    config.orphan_grace = 200ms;
    config.docker_timeout = 1s;
    engine->add_image(kBase);
  }
  ~Harness() {
    for (auto& r : routers) r->stop_now();
    io.run_for(300ms);
  }

  // Starts a router (another one with `id`) on the shared doubles.
  std::shared_ptr<Dispatcher> start(const std::string& id = "r1") {
    if (!queue) {
      queue_options.lease_timeout = config.lease_timeout;
      queue_options.concurrency_key_limit = config.concurrency_key_limit;
      queue = std::make_shared<MemoryQueue>(io.get_executor(), queue_options);
      cache = std::make_shared<snapshots::MemoryCache>(engine);
    }
    RouterConfig c = config;
    c.router_id = id;
    auto router =
        std::make_shared<Dispatcher>(io.get_executor(), c, RouterDeps{queue, engine, cache});
    net::co_spawn(io, router->run(), net::detached);
    routers.push_back(router);
    io.run_for(50ms);
    return router;
  }

  template <typename T>
  T await(awaitable<T> op) {
    std::optional<T> out;
    std::exception_ptr error;
    net::co_spawn(io, std::move(op), [&](std::exception_ptr e, T value) {
      error = e;
      if (!e) out = std::move(value);
    });
    while (!out && !error) io.run_one_for(100ms);
    if (error) std::rethrow_exception(error);
    return std::move(*out);
  }

  std::string enqueue(std::vector<std::string> cmd,
                      std::function<void(queue::JobSpec&)> edit = {}) {
    queue::JobSpec spec;
    spec.cmd = std::move(cmd);
    if (edit) edit(spec);
    return await(queue->enqueue(spec)).record.id;
  }

  bool until(const std::function<bool()>& done, Duration limit = 10s) {
    const auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      if (done()) return true;
      io.run_for(10ms);
    }
    return done();
  }

  JobState state(const std::string& id) const { return queue->record(id)->state; }
  bool finished(const std::string& id) const { return queue::is_terminal(state(id)); }
  std::size_t running_containers(const std::string& label = "") const {
    std::size_t n = 0;
    for (const auto& c : engine->containers()) {
      if (!c.state.running) continue;
      if (label.empty() || c.labels.count(label) != 0) ++n;
    }
    return n;
  }
  std::size_t count(const std::vector<std::string>& types, const std::string& type) const {
    return static_cast<std::size_t>(std::count(types.begin(), types.end(), type));
  }
};

}  // namespace

TEST_CASE("dispatcher: creates and starts go to the engine start_concurrency at a time",
          "[unit][dispatcher]") {
  Harness h;
  h.config.concurrency = 3;
  h.config.start_concurrency = 1;
  // Each start takes 300 ms: three at once would all be running after ~300 ms.
  h.engine->slow_next(MemoryRuntime::Op::start_container, 300ms, 3);
  auto router = h.start();
  for (int i = 0; i < 3; ++i) h.enqueue({"sleep", "600"});
  REQUIRE(h.until([&] { return h.running_containers() >= 1; }));
  h.io.run_for(150ms);
  CHECK(h.running_containers() == 1);  // the second start waits for the first
  REQUIRE(h.until([&] { return h.running_containers() == 3; }));
}

TEST_CASE("dispatcher: an engine outage hands jobs back unspent: claiming resumes by itself",
          "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  h.engine->set_down(true);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(h.enqueue({"true"}));

  REQUIRE(h.until([&] { return !router->stats().engine_up; }));
  REQUIRE(h.until([&] { return router->stats().handed_back >= 1; }));
  h.io.run_for(500ms);  // down for a while: nothing fails, nothing spins
  for (const auto& id : ids) CHECK_FALSE(h.finished(id));
  const auto types = h.queue->event_types();
  CHECK(h.count(types, "router.engine_down") == 1);
  CHECK(h.count(types, "job.failed") == 0);

  h.engine->set_auto_exit(0, 10ms);
  h.engine->set_down(false);
  REQUIRE(h.until([&] {
    return std::all_of(ids.begin(), ids.end(), [&](auto& id) { return h.finished(id); });
  }));
  for (const auto& id : ids) {
    CHECK(h.state(id) == JobState::succeeded);
    CHECK(h.queue->record(id)->attempts == 1);
  }
  CHECK(router->stats().engine_up);
  CHECK(h.count(h.queue->event_types(), "router.engine_up") == 1);
}

TEST_CASE(
    "dispatcher: housekeeping leaves promoting to the claims and scans for expired leases "
    "every third of a lease",
    "[unit][dispatcher]") {
  Harness h;  // reconcile_interval 50 ms, lease_timeout 3 s
  using Op = MemoryQueue::Op;
  auto router = h.start();
  const auto promotes = h.queue->calls(Op::promote_due);
  const auto scans = h.queue->calls(Op::reclaim_expired);
  h.io.run_for(2500ms);  // ~50 rounds, the claim loop idle and blocked all along
  CHECK(h.queue->calls(Op::promote_due) == promotes);
  const auto scanned = h.queue->calls(Op::reclaim_expired) - scans;
  CHECK(scanned >= 2);  // every max(50 ms, 3 s / 3): at most 3 in 2.5 s, 50 every 50 ms
  CHECK(scanned <= 3);

  // Slots full: no claim runs, so the rounds promote.
  h.enqueue({"sleep", "60"});
  h.enqueue({"sleep", "60"});
  REQUIRE(h.until([&] { return h.running_containers() == 2; }));
  const auto before = h.queue->calls(Op::promote_due);
  h.io.run_for(500ms);
  CHECK(h.queue->calls(Op::promote_due) - before >= 3);
}

TEST_CASE("dispatcher: a hung engine call is an outage, not the job's failure",
          "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  h.engine->set_auto_exit(0, 10ms);
  h.engine->fail_next(MemoryRuntime::Op::create_container, MemoryRuntime::Fault::hang);
  auto id = h.enqueue({"true"});
  REQUIRE(h.until([&] { return h.finished(id); }));
  CHECK(h.state(id) == JobState::succeeded);
  CHECK(h.queue->record(id)->attempts == 1);
  CHECK(router->stats().handed_back == 1);
}

TEST_CASE("dispatcher: a fresh job's container is created while its claim runs, once",
          "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  int creates_timed = 0;  // warmstart_container_create_seconds
  router->observers().create_latency = [&](double) { ++creates_timed; };
  h.engine->set_auto_exit(0, 10ms);
  auto plain = h.enqueue({"true"});
  // A job whose start begins with a snapshot lookup is not created early.
  auto keyed = h.enqueue({"true"}, [](queue::JobSpec& s) {
    s.snapshot = queue::SnapshotSpec{};
    s.snapshot->key = "k";
  });
  REQUIRE(h.until([&] { return h.finished(plain) && h.finished(keyed); }));
  CHECK(h.state(plain) == JobState::succeeded);
  CHECK(h.state(keyed) == JobState::succeeded);
  CHECK(h.engine->calls(MemoryRuntime::Op::create_container) == 2);
  CHECK(router->stats().precreated == 1);
  CHECK(router->stats().precreated_unused == 0);
  CHECK(creates_timed == 2);
}

TEST_CASE("dispatcher: a container created during a claim that failed is removed unstarted",
          "[unit][dispatcher]") {
  Harness h;
  h.config.lease_timeout = 500ms;
  auto router = h.start();
  h.engine->set_auto_exit(0, 10ms);
  // The claim ran but its answer was lost: the entry is this router's, unconfirmed.
  h.queue->fail_next(MemoryQueue::Op::claim, MemoryQueue::connection_error(), 1,
                     MemoryQueue::FaultPoint::after);
  auto id = h.enqueue({"true"});
  REQUIRE(h.until([&] { return router->stats().precreated_unused == 1; }));
  REQUIRE(h.until([&] { return h.engine->containers().empty(); }));
  CHECK(h.engine->calls(MemoryRuntime::Op::start_container) == 0);
  // The lease runs out, the job is reclaimed and runs in a container of its own.
  REQUIRE(h.until([&] { return h.finished(id); }));
  CHECK(h.state(id) == JobState::succeeded);
  CHECK(h.engine->calls(MemoryRuntime::Op::start_container) == 1);
  CHECK(router->stats().precreated == 1);
}

TEST_CASE(
    "dispatcher: Redis errors at mark_running and at the result are ridden out, one "
    "container",
    "[unit][dispatcher]") {
  Harness h;
  h.start();
  h.engine->set_auto_exit(0, 20ms);
  h.queue->fail_next(MemoryQueue::Op::mark_running, MemoryQueue::connection_error(), 2);
  h.queue->fail_next(MemoryQueue::Op::finish, MemoryQueue::loading_error(), 3);
  // A reply lost after the write: the retry meets the recorded result.
  h.queue->fail_next(MemoryQueue::Op::finish, MemoryQueue::connection_error(), 1,
                     MemoryQueue::FaultPoint::after);
  auto id = h.enqueue({"true"});
  REQUIRE(h.until([&] { return h.finished(id) && h.engine->containers().empty(); }));
  CHECK(h.state(id) == JobState::succeeded);
  CHECK(h.queue->record(id)->attempts == 1);
  CHECK(h.engine->calls(MemoryRuntime::Op::create_container) == 1);
  CHECK(h.queue->calls(MemoryQueue::Op::finish) == 5);
}

TEST_CASE("dispatcher: a cancel whose message is lost stops the container within one renewal",
          "[unit][dispatcher]") {
  Harness h;
  h.start();
  h.queue->drop_cancel_messages(true);
  auto id = h.enqueue({"sleep", "600"});
  REQUIRE(h.until([&] { return h.running_containers() == 1; }));
  h.await(h.queue->cancel(id));
  const auto t0 = Clock::now();
  REQUIRE(h.until([&] { return h.engine->containers().empty(); }));
  CHECK(Clock::now() - t0 < 2s);  // renewal every 50 ms, stop, collect, record, remove
  CHECK(h.state(id) == JobState::cancelled);
}

TEST_CASE("dispatcher: jobs of a busy concurrency key hold no slot: unrelated jobs run",
          "[unit][dispatcher]") {
  Harness h;
  h.start();
  const std::string key_label = "warmstart.job";
  std::vector<std::string> keyed;
  for (int i = 0; i < 4; ++i) {
    keyed.push_back(h.enqueue({"keyed"}, [](queue::JobSpec& s) { s.concurrency_key = "k"; }));
  }
  auto unrelated = h.enqueue({"other"});
  // Keyed containers run until the test ends them; the unrelated one exits.
  h.engine->set_exit_plan(
      [](const container::ContainerSpec& spec) -> std::optional<container::ExitPlan> {
        if (spec.cmd.at(0) == "other") return container::ExitPlan{0, 10ms};
        return std::nullopt;
      });
  REQUIRE(h.until([&] { return h.finished(unrelated); }));
  CHECK(h.state(unrelated) == JobState::succeeded);
  CHECK(h.running_containers() == 1);  // one keyed job; the other three wait, slot-less
  int waiting = 0;
  for (const auto& id : keyed) waiting += !h.queue->record(id)->waiting_for_key.empty();
  CHECK(waiting == 3);
  for (int round = 0; round < 4; ++round) {
    REQUIRE(h.until([&] { return h.running_containers() == 1; }));
    CHECK(h.running_containers() == 1);
    for (const auto& c : h.engine->containers()) {
      if (c.state.running) h.engine->exit(c.id, 0);
    }
    h.io.run_for(20ms);
    CHECK(h.running_containers() <= 1);
  }
  REQUIRE(h.until([&] {
    return std::all_of(keyed.begin(), keyed.end(), [&](auto& id) { return h.finished(id); });
  }));
}

TEST_CASE("dispatcher: two routers on one queue never run two jobs of one key at once",
          "[unit][dispatcher]") {
  Harness h;
  h.start("r1");
  h.start("r2");
  h.engine->set_auto_exit(0, 30ms);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(h.enqueue({"keyed"}, [](queue::JobSpec& s) { s.concurrency_key = "k"; }));
  }
  std::size_t most = 0;
  REQUIRE(h.until([&] {
    most = std::max(most, h.running_containers());
    return std::all_of(ids.begin(), ids.end(), [&](auto& id) { return h.finished(id); });
  }));
  CHECK(most == 1);
  std::set<std::string> routers;
  for (const auto& id : ids) routers.insert(h.queue->record(id)->router_id);
  CHECK(routers.size() >= 1);
}

TEST_CASE("dispatcher: default_timeout applies to a job that names none", "[unit][dispatcher]") {
  Harness h;
  h.config.default_timeout = 1s;
  h.start();
  auto unbounded = h.enqueue({"sleep", "600"});
  auto bounded = h.enqueue({"sleep", "600"}, [](queue::JobSpec& s) { s.timeout_s = 3600; });
  REQUIRE(h.until([&] { return h.finished(unbounded); }, 5s));
  CHECK(h.state(unbounded) == JobState::timed_out);
  CHECK(h.queue->record(unbounded)->error == "timed out after 1 s");
  CHECK(h.state(bounded) == JobState::running);
}

TEST_CASE("dispatcher: an OOM kill fails the job", "[unit][dispatcher]") {
  Harness h;
  h.start();
  h.engine->set_exit_plan([](const container::ContainerSpec&) {
    return std::optional<container::ExitPlan>(container::ExitPlan{137, 10ms, true});
  });
  auto id = h.enqueue({"hog"});
  REQUIRE(h.until([&] { return h.finished(id); }));
  CHECK(h.state(id) == JobState::failed);
  CHECK(h.queue->record(id)->error == "exit code 137 (OOM killed)");
}

TEST_CASE("dispatcher: exit code and OOM come from the engine's events - no inspect per job",
          "[unit][dispatcher]") {
  Harness h;
  h.start();
  h.engine->set_exit_plan([](const container::ContainerSpec& spec) {
    const bool hog = spec.cmd.front() == "hog";
    return std::optional<container::ExitPlan>(container::ExitPlan{hog ? 137 : 3, 10ms, hog});
  });
  auto plain = h.enqueue({"false"});
  auto hog = h.enqueue({"hog"});
  REQUIRE(h.until([&] { return h.finished(plain) && h.finished(hog); }));
  CHECK(h.queue->record(plain)->exit_code == 3);
  CHECK(h.queue->record(plain)->error == "exit code 3");
  CHECK(h.queue->record(hog)->error == "exit code 137 (OOM killed)");
  CHECK(h.engine->calls(MemoryRuntime::Op::inspect_container) == 0);
}

TEST_CASE("dispatcher: a lost die event - the container list sees the exit and inspect reads it",
          "[unit][dispatcher]") {
  Harness h;
  h.start();
  h.engine->lose_events(true);
  h.engine->set_exit_plan([](const container::ContainerSpec&) {
    return std::optional<container::ExitPlan>(container::ExitPlan{137, 10ms, true});
  });
  auto id = h.enqueue({"hog"});
  REQUIRE(h.until([&] { return h.finished(id); }));
  CHECK(h.queue->record(id)->error == "exit code 137 (OOM killed)");
  CHECK(h.engine->calls(MemoryRuntime::Op::inspect_container) >= 1);
}

TEST_CASE(
    "dispatcher: a warm start, the 404 fallback, and a failed commit that keeps the job's "
    "success",
    "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  h.engine->set_auto_exit(0, 10ms);
  auto with_key = [](queue::JobSpec& s) { s.snapshot = queue::SnapshotSpec{"repo/main"}; };

  auto cold = h.enqueue({"build"}, with_key);
  REQUIRE(h.until([&] { return h.finished(cold); }));
  REQUIRE(h.cache->entry("repo/main"));
  // The snapshot holds the cold run's time; a warm start from it saves that,
  // and its own commit holds both runs.
  const std::int64_t cold_build_ms = h.cache->entry("repo/main")->build_ms;
  CHECK(cold_build_ms > 0);
  auto warm = h.enqueue({"test"}, with_key);
  REQUIRE(h.until([&] { return h.finished(warm); }));
  CHECK(h.queue->record(warm)->from_snapshot);
  CHECK(router->stats().time_saved_ms == static_cast<std::uint64_t>(cold_build_ms));
  CHECK(h.cache->entry("repo/main")->build_ms > cold_build_ms);
  // With the warm job's container gone, the cache may drop an image that
  // container pinned; the cold job ran from the base and asked nothing.
  CHECK(h.until([&] { return h.cache->release_calls() >= 1; }));
  CHECK(h.cache->release_calls() == 1);

  // The snapshot image vanishes behind the router's back.
  h.engine->delete_image(h.cache->entry("repo/main")->image);
  auto fallback = h.enqueue({"test"}, with_key);
  REQUIRE(h.until([&] { return h.finished(fallback); }));
  auto rec = h.queue->record(fallback);
  CHECK(rec->state == JobState::succeeded);
  CHECK(rec->snapshot_fallback);
  CHECK_FALSE(rec->from_snapshot);
  CHECK(h.cache->invalidated() == std::vector<std::string>{"repo/main:image_missing"});
  CHECK(h.count(h.queue->event_types(fallback), "job.snapshot_fallback") == 1);

  h.cache->fail_commits("disk full");
  auto unlucky = h.enqueue({"build"}, with_key);
  REQUIRE(h.until([&] { return h.finished(unlucky); }));
  CHECK(h.state(unlucky) == JobState::succeeded);
  CHECK(h.queue->record(unlucky)->snapshot_error == "snapshot commit failed: disk full");
  const RouterStats stats = router->stats();
  CHECK(stats.warm_starts == 2);  // `unlucky` started from the fallback's commit
  CHECK(stats.fallback_starts == 1);
  CHECK(stats.cold_starts == 1);
  CHECK(stats.dispatched == 4);
}

TEST_CASE("dispatcher: a run re-attached after a restart commits over the snapshot it started from",
          "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  auto with_key = [](queue::JobSpec& s) { s.snapshot = queue::SnapshotSpec{"repo/main"}; };
  h.engine->set_auto_exit(0, 10ms);
  auto cold = h.enqueue({"build"}, with_key);
  REQUIRE(h.until([&] { return h.finished(cold); }));
  const auto first = h.cache->entry("repo/main");
  REQUIRE(first);
  REQUIRE(first->build_ms > 0);

  // A warm job runs when its router stops without a word; a new one re-attaches it.
  h.engine->clear_auto_exit();
  auto warm = h.enqueue({"test"}, with_key);
  REQUIRE(h.until([&] { return h.state(warm) == JobState::running; }));
  REQUIRE(h.queue->record(warm)->from_snapshot);
  router->stop_now();
  h.io.run_for(100ms);
  CHECK(router->stats().left_running == 1);
  h.start();
  h.io.run_for(200ms);
  h.engine->exit(h.queue->record(warm)->container_id, 0);
  REQUIRE(h.until([&] { return h.finished(warm); }));
  CHECK(h.state(warm) == JobState::succeeded);

  // Its commit replaced the generation it started from (it used to expect no
  // entry at all and lose the race), holding both runs' time.
  const auto second = h.cache->entry("repo/main");
  REQUIRE(second);
  CHECK(second->generation == first->generation + 1);
  CHECK(second->source_job == warm);
  CHECK(second->build_ms > first->build_ms);
  CHECK(h.queue->record(warm)->snapshot_error.empty());
}

TEST_CASE("dispatcher: orphan containers are swept periodically, not only at start",
          "[unit][dispatcher]") {
  Harness h;
  auto router = h.start();
  container::ContainerSpec orphan;
  orphan.image = kBase;
  orphan.labels = {{"warmstart.managed", "true"},
                   {"warmstart.router", "r1"},
                   {"warmstart.job", "ghost"},
                   {"warmstart.attempt", "1"}};
  h.await(h.engine->create_container(orphan));
  REQUIRE(h.engine->containers().size() == 1);
  REQUIRE(h.until([&] { return h.engine->containers().empty(); }, 5s));
  CHECK(router->stats().orphans_removed == 1);
}

TEST_CASE("dispatcher: a lost lease stops and removes the container and records nothing",
          "[unit][dispatcher]") {
  Harness h;
  queue::ManualClock clock;
  h.queue_options.now_ms = clock;
  h.config.reconcile_interval = 10s;  // renewals every lease/3 = 1 s
  h.start();
  auto id = h.enqueue({"sleep", "600"});
  REQUIRE(h.until([&] { return h.running_containers() == 1; }));
  clock.advance(10s);  // r1's lease runs out (its renewals are late) ...
  auto taken = h.await(h.queue->reclaim_expired("r2", 10));  // ... and r2 takes the job
  REQUIRE(taken.size() == 1);
  REQUIRE(h.until([&] { return h.engine->containers().empty(); }, 5s));
  auto rec = h.queue->record(id);
  CHECK(rec->state == JobState::running);  // r2's now; r1 recorded nothing
  CHECK(rec->router_id == "r2");
  CHECK(h.routers[0]->stats().leases_lost == 1);
}

TEST_CASE("dispatcher: renewals while a recorded job's container is removed report no lost lease",
          "[unit][dispatcher]") {
  // The job's result acks its entry; its container's remove then takes a
  // while, and every renewal in that window finds the entry gone. That is the
  // run's own doing, not another router's (load_bench: 200 removes queued at
  // the engine once the containers are killed).
  Harness h;
  h.config.reconcile_interval = 50ms;  // renewals every 50 ms
  auto router = h.start();
  h.engine->set_exit_plan([](const container::ContainerSpec&) {
    return std::optional<container::ExitPlan>(container::ExitPlan{0, 30ms, false, ""});
  });
  h.engine->slow_next(MemoryRuntime::Op::remove_container, 600ms);
  auto id = h.enqueue({"true"});
  REQUIRE(h.until([&] { return h.finished(id); }));
  REQUIRE(h.until([&] { return h.engine->containers().empty(); }, 5s));
  CHECK(h.state(id) == JobState::succeeded);
  CHECK(router->stats().leases_lost == 0);
}

TEST_CASE("dispatcher: concurrency, log_tail_bytes and the image allowlist apply",
          "[unit][dispatcher]") {
  Harness h;
  h.config.concurrency = 3;
  h.config.log_tail_bytes = 8;
  h.start();
  h.engine->set_exit_plan([](const container::ContainerSpec&) {
    return std::optional<container::ExitPlan>(
        container::ExitPlan{0, 30ms, false, "0123456789abcdef\n"});
  });
  std::vector<std::string> ids;
  for (int i = 0; i < 9; ++i) ids.push_back(h.enqueue({"work"}));
  auto refused = h.enqueue({"x"}, [](queue::JobSpec& s) { s.image = "evil:latest"; });
  std::size_t most = 0;
  REQUIRE(h.until([&] {
    most = std::max(most, h.running_containers());
    return std::all_of(ids.begin(), ids.end(), [&](auto& id) { return h.finished(id); });
  }));
  CHECK(most == 3);
  CHECK(h.queue->record(ids[0])->log_tail.size() <= 8);
  REQUIRE(h.until([&] { return h.finished(refused); }));
  CHECK(h.queue->record(refused)->error.find("not allowed") != std::string::npos);
  CHECK(h.engine->calls(MemoryRuntime::Op::create_container) == 9);
}

namespace {

awaitable<bool> claim_identity(std::shared_ptr<Dispatcher> router) {
  co_await router->claim_host_identity();
  co_return true;
}

HostIdentity identity(const std::string& host_id, const std::string& engine_id) {
  HostIdentity id;
  id.host_id = host_id;
  id.engine_id = engine_id;
  id.host_name = "box-1";
  id.version = "0.1.0";
  return id;
}

}  // namespace

TEST_CASE("dispatcher: the heartbeat lists the router and a twin of its host identity is refused",
          "[unit][dispatcher][fleet]") {
  Harness h;
  h.config.lease_timeout = 300ms;  // heartbeat every 100 ms, lost after 300 ms
  auto r1 = h.start("r1");
  r1->identify(identity("", "ENGINE-1"));
  CHECK(h.await(claim_identity(r1)));
  REQUIRE(h.until([&] {
    auto listed = h.await(h.queue->routers());
    return listed.size() == 1 && listed[0].engine_id == "ENGINE-1";
  }));
  auto listed = h.await(h.queue->routers());
  CHECK(listed[0].id == "r1");
  CHECK(listed[0].snapshot_count == 0);

  // The record carries the registry's count and bytes, as of the last beat.
  h.cache->put("repo/a", "snap-a", 4096);
  h.cache->put("repo/b", "snap-b", 4096);
  REQUIRE(h.until([&] { return h.await(h.queue->routers())[0].snapshot_count == 2; }));
  CHECK(h.await(h.queue->routers())[0].snapshot_bytes == 2 * 4096);
  // Redis failing under the count: the beats go on, with the figures kept.
  h.cache->fail_totals(
      std::make_exception_ptr(warmstart::redis::ConnectionError("EVALSHA", "gone")));
  h.cache->put("repo/c", "snap-c", 4096);
  const auto seen_before = h.await(h.queue->routers())[0].last_seen;
  REQUIRE(h.until([&] { return h.await(h.queue->routers())[0].last_seen > seen_before + 150; }));
  CHECK(h.await(h.queue->routers())[0].snapshot_count == 2);
  CHECK(h.await(h.queue->routers())[0].snapshot_bytes == 2 * 4096);
  h.cache->fail_totals(nullptr);
  REQUIRE(h.until([&] { return h.await(h.queue->routers())[0].snapshot_count == 3; }));
  CHECK(listed[0].host_id == "ENGINE-1");  // the default: the engine ID
  CHECK(listed[0].capacity == 2);
  CHECK(listed[0].lease_ms == 300);
  CHECK(queue::router_status(listed[0], listed[0].last_seen) == "live");

  // A second engine on this machine that shares the first one's trust key:
  // same engine ID, another socket.
  RouterConfig twin_config = h.config;
  twin_config.router_id = "r2";
  twin_config.docker_host = "unix:///run/engine-2.sock";
  auto twin = std::make_shared<Dispatcher>(h.io.get_executor(), twin_config,
                                           RouterDeps{h.queue, h.engine, h.cache});
  twin->identify(identity("", "ENGINE-1"));
  CHECK_THROWS_AS(h.await(claim_identity(twin)), HostIdentityConflict);
  CHECK(h.await(h.queue->routers()).size() == 1);  // the refused one never registered

  // With its own host_id it joins.
  auto own = std::make_shared<Dispatcher>(h.io.get_executor(), twin_config,
                                          RouterDeps{h.queue, h.engine, h.cache});
  own->identify(identity("engine-2", "ENGINE-1"));
  CHECK(h.await(claim_identity(own)));
  CHECK(h.await(h.queue->routers()).size() == 2);

  // Once the first router is silent past its lease, the identity is free.
  r1->stop_now();
  h.io.run_for(600ms);
  CHECK(h.await(claim_identity(twin)));
}

TEST_CASE("dispatcher: a commit names its host, and later jobs of the key start on that host",
          "[unit][dispatcher][fleet]") {
  Harness h;
  h.engine->set_auto_exit(0, 10ms);
  h.config.host_id = "host-1";
  auto r1 = h.start("r1");
  h.config.host_id = "host-2";
  auto r2 = h.start("r2");
  REQUIRE(h.until([&] { return h.await(h.queue->routers()).size() == 2; }));
  auto with_key = [](queue::JobSpec& s) { s.snapshot = queue::SnapshotSpec{"repo", true, true}; };
  const std::string first = h.enqueue({"true"}, with_key);
  REQUIRE(h.until([&] { return h.finished(first); }));
  const auto made = *h.queue->record(first);
  REQUIRE(made.state == JobState::succeeded);
  CHECK(made.affinity().empty());  // nothing to route to yet
  const std::string holder = made.host;
  REQUIRE((holder == "host-1" || holder == "host-2"));
  CHECK(h.queue->affinity_of("repo") == holder);
  for (int i = 0; i < 4; ++i) {
    const std::string id = h.enqueue({"true"}, with_key);
    REQUIRE(h.until([&] { return h.finished(id); }));
    const auto rec = *h.queue->record(id);
    CHECK(rec.host == holder);
    CHECK(rec.affinity_host == holder);
    CHECK(rec.affinity() == "hit");
  }
  CHECK(r1->stats().affinity_hits + r2->stats().affinity_hits == 4);
  CHECK(r1->stats().affinity_misses + r2->stats().affinity_misses == 0);
  // affinity_wait = 0 turns it off: no hint is written.
  h.config.affinity_wait = 0s;
  h.config.host_id = "host-3";
  auto r3 = h.start("r3");
  r1->stop_now();
  r2->stop_now();
  auto other_key = [](queue::JobSpec& s) { s.snapshot = queue::SnapshotSpec{"other", true, true}; };
  const std::string cold = h.enqueue({"true"}, other_key);
  REQUIRE(h.until([&] { return h.finished(cold); }));
  CHECK(h.queue->record(cold)->host == "host-3");
  CHECK(h.queue->affinity_of("other").empty());
}

// --- single-flight cold starts ------------------------------------------------

namespace {

auto fresh_key(const std::string& key) {
  return [key](queue::JobSpec& s) {
    s.snapshot = queue::SnapshotSpec{key, true, true};
    s.max_attempts = 2;
  };
}

std::size_t warm_count(const Harness& h, const std::vector<std::string>& ids) {
  return static_cast<std::size_t>(std::count_if(
      ids.begin(), ids.end(), [&](const auto& id) { return h.queue->record(id)->from_snapshot; }));
}

}  // namespace

TEST_CASE("dispatcher: six jobs of a fresh key - one builds cold and five start from its snapshot",
          "[unit][dispatcher][single_flight]") {
  Harness h;
  h.config.concurrency = 3;
  h.engine->set_auto_exit(0, 300ms);
  h.config.host_id = "host-1";
  auto r1 = h.start("r1");
  h.config.host_id = "host-2";
  auto r2 = h.start("r2");
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(h.enqueue({"setup"}, fresh_key("repo")));
  REQUIRE(h.until([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const auto& id) { return h.finished(id); });
  }));
  std::string builder_host;
  for (const auto& id : ids) {
    const auto rec = *h.queue->record(id);
    CHECK(rec.state == JobState::succeeded);
    CHECK(rec.attempts == 1);  // waiting spent no attempt
    if (!rec.from_snapshot) builder_host = rec.host;
  }
  CHECK(warm_count(h, ids) == 5);
  // Six containers in all: nobody repeated the cold start.
  CHECK(h.engine->calls(MemoryRuntime::Op::create_container) == 6);
  const auto types = h.queue->event_types();
  CHECK(h.count(types, "snapshot.build_started") == 1);
  CHECK(h.count(types, "snapshot.build_waiters") >= 5);
  CHECK(h.count(types, "snapshot.build_ended") == 1);
  CHECK(r1->stats().coalesced + r2->stats().coalesced >= 5);
  // Five warm starts, each saving the builder's run (its container ran 300 ms).
  CHECK(r1->stats().warm_starts + r2->stats().warm_starts == 5);
  CHECK(r1->stats().cold_starts + r2->stats().cold_starts == 1);
  CHECK(r1->stats().time_saved_ms + r2->stats().time_saved_ms >= 5 * 250);
  // The waiters were woken onto the builder's host, which holds the snapshot.
  for (const auto& id : ids) CHECK(h.queue->record(id)->host == builder_host);
}

TEST_CASE("dispatcher: the builder's container removed mid-setup - a waiter takes the build over",
          "[unit][dispatcher][single_flight]") {
  Harness h;
  h.config.concurrency = 4;
  h.queue_options.retry_backoff.initial = 200ms;
  h.queue_options.retry_backoff.jitter = 0;
  h.engine->set_auto_exit(0, 400ms);
  auto router = h.start();
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(h.enqueue({"setup"}, fresh_key("repo")));
  // The first container is the builder's: remove it while it runs.
  REQUIRE(h.until([&] { return h.running_containers() == 1; }));
  const auto first = h.engine->containers().front();
  auto remove = [&]() -> awaitable<bool> {
    co_await h.engine->remove_container(first.id, true);
    co_return true;
  };
  h.await(remove());
  REQUIRE(h.until([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const auto& id) { return h.finished(id); });
  }));
  for (const auto& id : ids) CHECK(h.queue->record(id)->state == JobState::succeeded);
  const auto types = h.queue->event_types();
  CHECK(h.count(types, "snapshot.build_started") == 2);  // the lost build was taken over
  // Two cold runs (the lost one and its successor); everyone else started warm,
  // the killed builder's retry included.
  CHECK(h.engine->calls(MemoryRuntime::Op::create_container) == 5);
  CHECK(warm_count(h, ids) == 3);
}

TEST_CASE("dispatcher: coalesce_wait bounds the wait - then a job starts cold",
          "[unit][dispatcher][single_flight]") {
  Harness h;
  h.config.concurrency = 2;
  h.config.snapshot_coalesce_wait = 300ms;
  // The builder runs long; the waiter gives up on it.
  h.engine->set_exit_plan([](const container::ContainerSpec&) {
    return std::optional<container::ExitPlan>(container::ExitPlan{0, 2s});
  });
  auto router = h.start();
  const std::string builder = h.enqueue({"setup"}, fresh_key("repo"));
  REQUIRE(h.until([&] { return h.running_containers() == 1; }));
  const std::string waiter = h.enqueue({"setup"}, fresh_key("repo"));
  REQUIRE(h.until([&] { return h.running_containers() == 2; }, 3s));
  CHECK(h.state(builder) == JobState::running);
  CHECK(h.count(h.queue->event_types(waiter), "snapshot.build_waiters") >= 1);
  REQUIRE(h.until([&] { return h.finished(builder) && h.finished(waiter); }));
  CHECK_FALSE(h.queue->record(waiter)->from_snapshot);
  CHECK(h.queue->record(waiter)->state == JobState::succeeded);
}
