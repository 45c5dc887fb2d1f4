// Integration tests of SnapshotCache against the real dockerd and redis-server.
// Every test works in its own registry namespace (Redis prefix + image label)
// and removes every container, image and key it made. No co_await inside
// CHECK/REQUIRE: g++ 12 also evaluates the macros' never-taken operand.
#include "snapshots/snapshot_cache.hpp"
#include "common/redis.hpp"
#include "container/docker_client.hpp"
#include "snapshots/naming.hpp"
#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <fstream>

#include <cstdio>
#include <random>

using namespace warmstart;
using namespace warmstart::snapshots;
using namespace net::experimental::awaitable_operators;

namespace {

std::string random_token() {
  std::random_device rd;
  return std::to_string(rd()) + std::to_string(rd());
}

// A vector of strings without a braced list (g++ 12 rejects those inside
// co_await expressions).
template <typename... Args>
std::vector<std::string> strs(Args&&... args) {
  std::vector<std::string> out;
  (out.emplace_back(std::forward<Args>(args)), ...);
  return out;
}

CommitRequest commit_request(std::string container_id, std::string job, std::string key,
                             std::string base, std::optional<std::string> expected,
                             Duration ttl = Duration{0}) {
  CommitRequest r;
  r.container_id = std::move(container_id);
  r.job_id = std::move(job);
  r.key = std::move(key);
  r.base_image = std::move(base);
  r.expected_image_id = std::move(expected);
  r.ttl = ttl;
  return r;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

// What one test made, so it can all be removed whatever happened.
struct World {
  container::DockerClientPtr docker;
  redis::ClientPtr redis;
  std::string prefix;  // registry namespace of this test
  std::string base = testing::base_image();
  std::vector<std::string> containers;
  std::vector<std::string> extra_images;  // refs or ids made outside the cache
  std::vector<nlohmann::json> events;

  SnapshotCacheOptions options() {
    SnapshotCacheOptions o;
    o.registry.key_prefix = prefix;
    o.work_dir = std::filesystem::path(testing::run_dir()) / "snapshots-work";
    o.on_event = [this](nlohmann::json e) { events.push_back(std::move(e)); };
    return o;
  }

  std::shared_ptr<SnapshotCache> cache(SnapshotCacheOptions o) {
    return std::make_shared<SnapshotCache>(docker, redis, std::move(o));
  }

  std::vector<nlohmann::json> events_of(const std::string& type) const {
    std::vector<nlohmann::json> out;
    for (const auto& e : events) {
      if (e.value("type", "") == type) out.push_back(e);
    }
    return out;
  }

  awaitable<std::string> create(std::string image, std::vector<std::string> cmd,
                                std::vector<std::string> env) {
    container::ContainerSpec spec;
    spec.image = std::move(image);
    spec.cmd = std::move(cmd);
    spec.env = std::move(env);
    spec.labels["warmstart.test"] = prefix;
    auto id = co_await docker->create_container(spec);
    containers.push_back(id);
    co_return id;
  }

  // Runs a job container to completion; it must exit 0.
  awaitable<std::string> run_job(std::string image, std::vector<std::string> cmd,
                                 std::vector<std::string> env = {}) {
    auto id = co_await create(std::move(image), std::move(cmd), std::move(env));
    co_await docker->start_container(id);
    const int code = co_await docker->wait_container(id, std::chrono::seconds(60));
    REQUIRE(code == 0);
    co_return id;
  }

  awaitable<void> remove_container(std::string id) {
    co_await docker->remove_container(id, true);
    std::erase(containers, id);
  }

  awaitable<bool> image_exists(std::string ref) {
    bool exists = true;
    try {
      co_await docker->inspect_image(ref);
    } catch (const container::ApiError& e) {
      if (!e.is_not_found()) throw;
      exists = false;
    }
    co_return exists;
  }

  // Imports the filesystem of a fresh container from the base as repo:tag.
  awaitable<std::string> import_copy(std::string repo, std::string tag,
                                     std::vector<std::string> changes) {
    auto source = co_await run_job(base, strs("true"));
    const auto tar = testing::run_dir() + "/snapshots-copy-" + random_token() + ".tar";
    co_await docker->export_container(source, tar);
    auto id = co_await docker->import_image(tar, repo, tag, std::move(changes));
    std::filesystem::remove(tar);
    extra_images.push_back(id);
    co_return id;
  }

  awaitable<void> cleanup() {
    for (const auto& id : containers) {
      try {
        co_await docker->remove_container(id, true);
      } catch (const std::exception&) {
      }
    }
    // Removing a chain's tip lets the engine prune its untagged parents, so a
    // few rounds empty the namespace.
    for (int round = 0; round < 5; ++round) {
      auto images = co_await docker->list_images(strs(std::string(label::registry) + "=" + prefix));
      if (images.empty()) break;
      for (const auto& image : images) {
        try {
          co_await docker->remove_image(image.id, true);
        } catch (const std::exception&) {
        }
      }
    }
    for (const auto& ref : extra_images) {
      try {
        co_await docker->remove_image(ref, true);
      } catch (const std::exception&) {
      }
    }
    auto keys = co_await redis->command(strs("KEYS", prefix + "*"));
    for (const auto& k : keys.as_array()) co_await redis->command(strs("DEL", k.as_string()));
    auto left = co_await docker->list_images(strs(std::string(label::registry) + "=" + prefix));
    CHECK(left.empty());
  }
};
using WorldPtr = std::shared_ptr<World>;

awaitable<WorldPtr> make_world() {
  auto w = std::make_shared<World>();
  auto ex = co_await net::this_coro::executor;
  container::DockerClientOptions docker_options;
  docker_options.socket_path = testing::docker_socket();
  w->docker = container::DockerClient::create(ex, docker_options);
  redis::ClientOptions redis_options;
  redis_options.url = redis::Url::parse(testing::redis_url());
  w->redis = redis::Client::create(ex, redis_options);
  co_await w->redis->connect();
  w->prefix = "wstest:snap:" + random_token() + ":";
  co_return w;
}

template <typename Body>
void run_world_test(Body body, std::chrono::seconds limit = std::chrono::seconds(120)) {
  testing::run_coro(
      [&]() -> awaitable<void> {
        auto w = co_await make_world();
        std::exception_ptr failure;
        try {
          co_await body(w);
        } catch (...) {
          failure = std::current_exception();
        }
        co_await w->cleanup();
        if (failure) std::rethrow_exception(failure);
      },
      limit);
}

// Runs one trivial job from the key's current image and commits it.
awaitable<CommitResult> commit_generation(WorldPtr w, SnapshotCache& cache, std::string key,
                                          std::string shell, Duration ttl = Duration{0}) {
  auto choice = co_await cache.choose_image(key, w->base);
  auto id = co_await w->run_job(choice.image, strs("sh", "-c", shell));
  auto result = co_await cache.commit(
      commit_request(id, "job-" + random_token(), key, w->base, choice.observed_image_id, ttl));
  INFO(result.error);
  REQUIRE(result.status == CommitResult::Status::committed);
  co_await w->remove_container(id);
  co_return result;
}

// Two generations of `key`, the first still run by a container (`runner`)
// when the second is committed, so the first is left for later.
struct SupersededInUse {
  CommitResult first, second;
  std::string runner;
};
awaitable<SupersededInUse> supersede_while_running(WorldPtr w, SnapshotCache& cache,
                                                   std::string key) {
  SupersededInUse out;
  out.first = co_await commit_generation(w, cache, key, "echo 1 > /work/v");
  out.runner = co_await w->create(out.first.image, strs("sleep", "120"), {});
  co_await w->docker->start_container(out.runner);
  out.second = co_await commit_generation(w, cache, key, "echo 2 > /work/v");
  REQUIRE(out.second.generation == out.first.generation + 1);
  co_return out;
}
}  // namespace

TEST_CASE("a job's env (secrets) appears nowhere in its snapshot image", "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto cache = w->cache(w->options());
    co_await cache->start();
    const std::string key = "repo-42/branch-main";
    const std::string secret = "s3cr3t-" + random_token();

    auto choice = co_await cache->choose_image(key, w->base);
    CHECK(choice.outcome == LookupOutcome::miss);
    CHECK(choice.image == w->base);
    auto job = co_await w->run_job(choice.image, strs("sh", "-c", "echo warm > /work/state"),
                                   strs("SECRET=" + secret, "WARMSTART_JOB_ID=job-secret"));
    auto result = co_await cache->commit(
        commit_request(job, "job-secret", key, w->base, choice.observed_image_id));
    INFO(result.error);
    REQUIRE(result.status == CommitResult::Status::committed);

    const auto raw = (co_await w->docker->inspect_image_raw(result.image)).dump();
    CHECK(raw.find(secret) == std::string::npos);
    CHECK(raw.find("SECRET") == std::string::npos);
    CHECK(raw.find("WARMSTART_JOB_ID") == std::string::npos);
    CHECK(raw.find("echo warm") == std::string::npos);  // nor the job's command

    auto image = co_await w->docker->inspect_image(result.image);
    auto base = co_await w->docker->inspect_image(w->base);
    CHECK(image.config.env == base.config.env);
    CHECK(image.config.cmd == base.config.cmd);
    CHECK(image.config.working_dir == base.config.working_dir);
    CHECK(image.config.labels[std::string(label::key)] == key);
    CHECK(image.config.labels[std::string(label::base)] == base.id);

    auto committed = w->events_of("snapshot.committed");
    REQUIRE(committed.size() == 1);
    CHECK(committed[0]["key"] == key);
    CHECK(committed[0]["image"] == result.image);
    CHECK(committed[0]["size"].get<std::int64_t>() > 0);

    // The next job of the key starts warm, with the job's files.
    auto hit = co_await cache->choose_image(key, w->base);
    CHECK(hit.outcome == LookupOutcome::hit);
    CHECK(hit.image == result.image);
    co_await w->run_job(hit.image, strs("sh", "-c", "test \"$(cat /work/state)\" = warm"));
    auto entry = co_await cache->registry().lookup(key);
    REQUIRE(entry.has_value());
    CHECK(entry->uses == 1);
    CHECK(entry->source_job == "job-secret");
    CHECK(cache->metrics().hits == 1);
    CHECK(cache->metrics().commits == 1);
  });
}

TEST_CASE("a snapshot leaves out credential files and git remote tokens, keeps the work",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto options = w->options();
    // A tarball an earlier version's crash left behind is swept at start.
    std::filesystem::create_directories(options.work_dir);
    const auto leftover = options.work_dir / ("warmstart-flatten-" + random_token() + ".tar");
    std::ofstream(leftover) << "a whole filesystem";
    const auto unrelated = options.work_dir / ("keep-" + random_token() + ".tar");
    std::ofstream(unrelated) << "not ours";
    auto cache = w->cache(options);
    co_await cache->start();
    CHECK_FALSE(std::filesystem::exists(leftover));
    CHECK(std::filesystem::exists(unrelated));
    std::filesystem::remove(unrelated);

    const std::string key = "hygiene/" + random_token();
    auto choice = co_await cache->choose_image(key, w->base);
    auto job = co_await w->run_job(
        choice.image,
        strs("sh", "-c",
             "mkdir -p /root /work/repo/.git /tmp/t && echo 'machine h password p' > /root/.netrc"
             " && echo 'https://u:tok@h' > /root/.git-credentials && echo work > /work/state"
             " && printf '[remote \"o\"]\\n\\turl = https://u:tok@h/r\\n' > "
             "/work/repo/.git/config && echo scratch > /tmp/t/x"));
    auto result = co_await cache->commit(
        commit_request(job, "job-hygiene", key, w->base, choice.observed_image_id));
    INFO(result.error);
    REQUIRE(result.status == CommitResult::Status::committed);
    CHECK(result.mode == CommitMode::flatten);
    CHECK(cache->metrics().filtered_entries == 4);  // .netrc, .git-credentials, /tmp/t, /tmp/t/x
    CHECK(cache->metrics().git_configs_rewritten == 1);

    auto hit = co_await cache->choose_image(key, w->base);
    REQUIRE(hit.outcome == LookupOutcome::hit);
    co_await w->run_job(hit.image, strs("sh", "-c",
                                        "test ! -e /root/.netrc && test ! -e /root/.git-credentials"
                                        " && test -d /tmp && test ! -e /tmp/t"
                                        " && test \"$(cat /work/state)\" = work"
                                        " && grep -q 'url = https://h/r' /work/repo/.git/config"
                                        " && ! grep -q tok /work/repo/.git/config"));
  });
}

TEST_CASE("150 successive generations of one key stay under the layer-depth limit",
          "[snapshots][docker][slow]") {
  run_world_test(
      [](WorldPtr w) -> awaitable<void> {
        auto options = w->options();
        options.depth.layered_commit = true;             // the chain grows layers; no secrets here
        options.filter = container::TarFilterOptions{};  // nothing to leave out: layered
        options.filter.strip_git_credentials = false;
        auto cache = w->cache(options);
        co_await cache->start();
        const std::string key = "deep-chain";
        const auto started = Clock::now();
        std::int64_t max_depth = 0;
        CommitResult last;
        for (int generation = 1; generation <= 150; ++generation) {
          INFO("generation " << generation);
          last = co_await commit_generation(w, *cache, key, "echo x >> /work/count");
          max_depth = std::max(max_depth, last.layer_depth);
        }
        const auto seconds =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count() /
            1000.0;
        std::fprintf(stderr,
                     "[snapshots] 150 generations in %.1f s (%.0f ms each, commit %lld ms of "
                     "it), max depth %lld\n",
                     seconds, seconds * 1000 / 150,
                     static_cast<long long>(cache->metrics().total_commit_ms / 150),
                     static_cast<long long>(max_depth));
        // The time is printed, not asserted: speed lives in bench/ (commit_modes),
        // and this ran 100-250 s depending on what else the machine was doing.
        CHECK(max_depth <= 64);
        CHECK(last.generation == 150);
        auto image = co_await w->docker->inspect_image(last.image);
        CHECK(image.layer_count <= 64);
        CHECK(cache->metrics().flattens == 2);  // at generations 64 and 127
        CHECK(cache->metrics().commits == 150);
        // Superseded generations are gone (or untagged parents inside the chain).
        auto tagged =
            co_await w->docker->list_images(strs(std::string(label::registry) + "=" + w->prefix));
        REQUIRE(tagged.size() == 1);
        CHECK(tagged[0].id == last.image_id);
        auto awaited_1 = co_await cache->list();
        CHECK(awaited_1.size() == 1);
        // Every generation's write survived the flattens.
        co_await w->run_job(last.image,
                            strs("sh", "-c", "test \"$(wc -l < /work/count)\" -eq 150"));
      },
      std::chrono::seconds(300));
}

TEST_CASE("two concurrent commits of one key leave one entry and no stray image",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    // Two routers on one engine and one Redis.
    auto router_a = w->cache(w->options());
    auto router_b = w->cache(w->options());
    co_await router_a->start();
    const std::string key = "raced";
    auto job_a = co_await w->run_job(w->base, strs("sh", "-c", "echo a > /work/who"));
    auto job_b = co_await w->run_job(w->base, strs("sh", "-c", "echo b > /work/who"));
    auto [a, b] = co_await (router_a->commit(commit_request(job_a, "job-a", key, w->base, "")) &&
                            router_b->commit(commit_request(job_b, "job-b", key, w->base, "")));
    INFO(a.error << " / " << b.error);
    CHECK(a.status != CommitResult::Status::failed);
    CHECK(b.status != CommitResult::Status::failed);
    CHECK((a.status == CommitResult::Status::committed) !=
          (b.status == CommitResult::Status::committed));
    const auto& winner = a.status == CommitResult::Status::committed ? a : b;
    const auto& loser = a.status == CommitResult::Status::committed ? b : a;
    CHECK(loser.status == CommitResult::Status::lost_race);

    auto entries = co_await router_a->list();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].image_id == winner.image_id);
    auto images = co_await w->docker->list_images(
        strs(std::string(label::registry) + "=" + w->prefix, std::string(label::key) + "=" + key));
    REQUIRE(images.size() == 1);
    CHECK(images[0].id == winner.image_id);
    auto awaited_2 = co_await w->image_exists(loser.image_id);
    CHECK_FALSE(awaited_2);
    CHECK(router_a->metrics().commit_races_lost + router_b->metrics().commit_races_lost == 1);
  });
}

TEST_CASE("a base image re-imported with a new ID makes the next lookup base_changed",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    // A private copy of the base under a unique tag: the shared base stays untouched.
    const std::string repo = "wstest-base-" + random_token();
    const std::string base_ref = repo + ":latest";
    auto changes = strs("ENV PATH=/bin", "WORKDIR /work", "CMD [\"/bin/sh\"]");
    auto old_base_id = co_await w->import_copy(repo, "latest", changes);
    w->base = base_ref;

    auto cache = w->cache(w->options());
    co_await cache->start();
    const std::string key = "on-my-base";
    auto committed = co_await commit_generation(w, *cache, key, "echo 1 > /work/x");
    auto hit = co_await cache->choose_image(key, base_ref);
    REQUIRE(hit.outcome == LookupOutcome::hit);

    auto new_base_id = co_await w->import_copy(repo, "latest", changes);
    REQUIRE(new_base_id != old_base_id);

    auto choice = co_await cache->choose_image(key, base_ref);
    CHECK(choice.outcome == LookupOutcome::base_changed);
    CHECK(choice.image == base_ref);
    CHECK(choice.base_image_id == new_base_id);
    auto awaited_3 = co_await cache->registry().lookup(key);
    CHECK_FALSE(awaited_3.has_value());
    auto awaited_4 = co_await w->image_exists(committed.image);
    CHECK_FALSE(awaited_4);
    auto invalidated = w->events_of("snapshot.invalidated");
    REQUIRE(invalidated.size() == 1);
    CHECK(invalidated[0]["key"] == key);
    CHECK(invalidated[0]["reason"] == "base_changed");
    // The one after that is a plain miss.
    auto awaited_5 = co_await cache->choose_image(key, base_ref);
    CHECK(awaited_5.outcome == LookupOutcome::miss);
  });
}

TEST_CASE("a vanished snapshot image (404) is invalidated with reason image_missing",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto cache = w->cache(w->options());
    co_await cache->start();
    const std::string key = "vanishing";
    auto committed = co_await commit_generation(w, *cache, key, "true");
    co_await w->docker->remove_image(committed.image_id, true);  // pruned by hand

    auto stale = co_await cache->choose_image(key, w->base);
    REQUIRE(stale.outcome == LookupOutcome::hit);
    bool image_not_found = false;
    try {
      co_await w->create(stale.image, strs("true"), {});
    } catch (const container::ApiError& e) {
      image_not_found = e.is_image_not_found();
    }
    CHECK(image_not_found);
    auto awaited_6 = co_await cache->invalidate(key, "image_missing", stale.observed_image_id);
    CHECK(awaited_6);
    auto awaited_7 = co_await cache->invalidate(key, "image_missing", stale.observed_image_id);
    CHECK_FALSE(awaited_7);
    auto awaited_8 = co_await cache->choose_image(key, w->base);
    CHECK(awaited_8.outcome == LookupOutcome::miss);
    auto invalidated = w->events_of("snapshot.invalidated");
    REQUIRE(invalidated.size() == 1);
    CHECK(invalidated[0]["reason"] == "image_missing");
  });
}

TEST_CASE("eviction by ttl count and bytes deletes images and an image in use survives",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto cache = w->cache(w->options());
    co_await cache->start();
    auto expiring = co_await commit_generation(w, *cache, "ttl-key", "true", Duration{1});
    auto lru1 = co_await commit_generation(w, *cache, "lru-1",
                                           "dd if=/dev/zero of=/work/f bs=1k count=256");
    auto lru2 = co_await commit_generation(w, *cache, "lru-2",
                                           "dd if=/dev/zero of=/work/f bs=1k count=256");
    auto lru3 = co_await commit_generation(w, *cache, "lru-3",
                                           "dd if=/dev/zero of=/work/f bs=1k count=256");
    auto busy = co_await commit_generation(w, *cache, "busy", "true", Duration{1});
    // A job still running from the busy snapshot.
    auto runner = co_await w->create(busy.image, strs("sleep", "120"), {});
    co_await w->docker->start_container(runner);

    // TTL: the expired idle snapshot goes, the expired one in use stays.
    auto report = co_await cache->gc();
    CHECK(report.eviction.to_text() ==
          "evict ttl-key " + expiring.image + " reason=ttl\nkeep busy (ttl) in_use\n");
    auto awaited_9 = co_await w->image_exists(expiring.image_id);
    CHECK_FALSE(awaited_9);
    auto awaited_10 = co_await w->image_exists(busy.image_id);
    CHECK(awaited_10);
    auto awaited_11 = co_await cache->registry().lookup("busy");
    CHECK(awaited_11.has_value());

    // Count: 4 entries, at most 3 -> the least recently used goes.
    auto count_options = w->options();
    count_options.eviction.max_count = 3;
    report = co_await w->cache(count_options)->gc();
    CHECK(has_line(report.eviction.to_text(), "evict lru-1 " + lru1.image + " reason=count"));
    CHECK(report.eviction.evictions.size() == 1);
    auto awaited_12 = co_await w->image_exists(lru1.image_id);
    CHECK_FALSE(awaited_12);
    auto awaited_13 = co_await w->image_exists(lru2.image_id);
    CHECK(awaited_13);

    // Bytes: one byte over the budget -> again the least recently used.
    std::int64_t total = 0;
    for (const auto& e : co_await cache->list()) total += e.size_bytes;
    auto bytes_options = w->options();
    bytes_options.eviction.max_bytes = total - 1;
    auto by_bytes = w->cache(bytes_options);
    report = co_await by_bytes->gc();
    CHECK(has_line(report.eviction.to_text(), "evict lru-2 " + lru2.image + " reason=bytes"));
    CHECK(report.eviction.evictions.size() == 1);
    // The bytes gauge holds what the gc left, as the registry counts it.
    auto left_entries = co_await cache->list();
    std::int64_t left_bytes = 0;
    for (const auto& e : left_entries) left_bytes += e.size_bytes;
    CHECK(left_bytes < total);
    CHECK(by_bytes->metrics().bytes_cached == left_bytes);
    auto awaited_14 = co_await w->image_exists(lru2.image_id);
    CHECK_FALSE(awaited_14);
    auto awaited_15 = co_await w->image_exists(lru3.image_id);
    CHECK(awaited_15);
    auto awaited_16 = co_await w->image_exists(busy.image_id);
    CHECK(awaited_16);

    // Once its container is gone, the busy snapshot's TTL applies.
    co_await w->remove_container(runner);
    report = co_await cache->gc();
    CHECK(report.eviction.to_text() == "evict busy " + busy.image + " reason=ttl\n");
    auto awaited_17 = co_await w->image_exists(busy.image_id);
    CHECK_FALSE(awaited_17);

    std::vector<std::string> evicted;
    for (const auto& e : w->events_of("snapshot.evicted")) {
      evicted.push_back(e["key"].get<std::string>() + "/" + e["reason"].get<std::string>());
    }
    CHECK(evicted == strs("ttl-key/ttl", "lru-1/count", "lru-2/bytes", "busy/ttl"));
    auto left = co_await cache->list();
    REQUIRE(left.size() == 1);
    CHECK(left[0].key == "lru-3");
  });
}

TEST_CASE("start drops entries whose image is gone and removes unregistered snapshot images",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto cache = w->cache(w->options());
    co_await cache->start();
    auto missing = co_await commit_generation(w, *cache, "missing-key", "true");
    auto kept = co_await commit_generation(w, *cache, "kept-key", "true");
    co_await w->docker->remove_image(missing.image_id, true);  // deleted by hand

    // A crash between commit and registration: a labelled image, no entry.
    const auto engine = (co_await w->docker->info()).id;
    container::ImageConfig config;
    config.labels =
        snapshot_labels({"orphan-key", "sha256:whatever", engine, w->prefix, 9, "job-x"});
    const auto name = snapshot_image_name("warmstart-snapshot", w->prefix, "orphan-key", 9);
    auto orphan_id = co_await w->import_copy(name.repo, name.tag, import_changes(config));

    // A restarted router.
    auto plan = co_await w->cache(w->options())->start();
    const auto text = plan.to_text();
    INFO(text);
    CHECK(has_line(text, "drop-entry missing-key " + missing.image + " reason=image_missing"));
    CHECK(has_line(text, "remove-image orphan-key " + orphan_id + " reason=unregistered"));
    CHECK(text.find("kept-key") == std::string::npos);
    auto awaited_18 = co_await w->image_exists(orphan_id);
    CHECK_FALSE(awaited_18);
    auto awaited_19 = co_await cache->registry().lookup("missing-key");
    CHECK_FALSE(awaited_19.has_value());
    auto awaited_20 = co_await cache->registry().lookup("kept-key");
    CHECK(awaited_20.has_value());
    auto awaited_21 = co_await w->image_exists(kept.image_id);
    CHECK(awaited_21);
  });
}

TEST_CASE("a superseded generation in use is left for gc and removed once free",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto options = w->options();
    options.orphan_grace = Duration{0};
    auto cache = w->cache(options);
    co_await cache->start();
    auto [first, second, runner] = co_await supersede_while_running(w, *cache, "superseded");
    auto first_kept = co_await w->image_exists(first.image_id);
    CHECK(first_kept);

    // While it runs, gc keeps it and says why.
    auto report = co_await cache->gc();
    CHECK(has_line(report.reconcile.to_text(),
                   "keep-image superseded " + first.image_id + " reason=in_use"));
    co_await w->remove_container(runner);
    report = co_await cache->gc();
    CHECK(has_line(report.reconcile.to_text(),
                   "remove-image superseded " + first.image_id + " reason=unregistered"));
    auto first_left = co_await w->image_exists(first.image_id);
    CHECK_FALSE(first_left);
    auto second_left = co_await w->image_exists(second.image_id);
    CHECK(second_left);
  });
}

TEST_CASE("release_unused removes a superseded generation as soon as no container runs it",
          "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    // The default orphan grace (10 min): gc() alone would keep the image.
    auto cache = w->cache(w->options());
    co_await cache->start();
    const std::size_t nothing_waits = co_await cache->release_unused();
    CHECK(nothing_waits == 0);
    auto [first, second, runner] = co_await supersede_while_running(w, *cache, "released");

    const std::size_t while_running = co_await cache->release_unused();
    CHECK(while_running == 0);
    auto kept = co_await w->image_exists(first.image_id);
    CHECK(kept);

    co_await w->remove_container(runner);
    const std::size_t released = co_await cache->release_unused();
    CHECK(released == 1);
    auto first_left = co_await w->image_exists(first.image_id);
    CHECK_FALSE(first_left);
    auto second_left = co_await w->image_exists(second.image_id);
    CHECK(second_left);
    const std::size_t again = co_await cache->release_unused();
    CHECK(again == 0);
  });
}

TEST_CASE("a failed commit is returned and counted and never thrown", "[snapshots][docker]") {
  run_world_test([](WorldPtr w) -> awaitable<void> {
    auto cache = w->cache(w->options());
    co_await cache->start();
    auto gone = co_await cache->commit(
        commit_request("no-such-container-" + random_token(), "job-gone", "k", w->base, ""));
    CHECK(gone.status == CommitResult::Status::failed);
    CHECK(gone.error.find("No such container") != std::string::npos);

    // A job that failed is never committed, even if asked.
    auto job = co_await w->create(w->base, strs("sh", "-c", "exit 3"), {});
    co_await w->docker->start_container(job);
    auto code = co_await w->docker->wait_container(job, std::chrono::seconds(60));
    REQUIRE(code == 3);
    auto failed = co_await cache->commit(commit_request(job, "job-3", "k", w->base, ""));
    CHECK(failed.status == CommitResult::Status::failed);
    CHECK(cache->metrics().commit_failures == 2);
    CHECK(cache->metrics().commits == 0);
    auto entries = co_await cache->list();
    CHECK(entries.empty());
    auto images =
        co_await w->docker->list_images(strs(std::string(label::registry) + "=" + w->prefix));
    CHECK(images.empty());
  });
}
