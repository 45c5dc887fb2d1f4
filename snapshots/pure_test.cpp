// Unit tests of the pure parts: naming, lookup decision, commit strategy,
// eviction plans and reconciliation plans (golden text).
#include "snapshots/choice.hpp"
#include "snapshots/depth.hpp"
#include "snapshots/eviction.hpp"
#include "snapshots/naming.hpp"
#include "snapshots/reconcile.hpp"
#include "snapshots/registry.hpp"

#include <catch2/catch.hpp>

using namespace warmstart;
using namespace warmstart::snapshots;

namespace {

constexpr std::int64_t kHourMs = 3600 * 1000;

SnapshotEntry entry(std::string key, std::string id, std::int64_t last_used_ms,
                    std::int64_t size = 100) {
  SnapshotEntry e;
  e.key = key;
  e.image = "snap/" + key + ":g1";
  e.image_id = std::move(id);
  e.base_image_id = "sha256:base";
  e.created_ms = last_used_ms;
  e.last_used_ms = last_used_ms;
  e.size_bytes = size;
  return e;
}

}  // namespace

TEST_CASE("sha256_hex matches the FIPS 180-2 vector", "[unit]") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("snapshot image names are docker-safe and unique per namespace and generation",
          "[unit]") {
  auto a =
      snapshot_image_name("warmstart-snapshot", "warmstart:snapshots:", "repo-42/Branch Main!", 7);
  CHECK(a.tag == "g7");
  CHECK(a.repo.rfind("warmstart-snapshot/", 0) == 0);
  CHECK(a.repo.size() == std::string("warmstart-snapshot/").size() + 20);
  CHECK(a.repo.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-/") == std::string::npos);
  CHECK(a.ref() == a.repo + ":g7");
  auto same =
      snapshot_image_name("warmstart-snapshot", "warmstart:snapshots:", "repo-42/Branch Main!", 8);
  CHECK(same.repo == a.repo);
  auto other_ns = snapshot_image_name("warmstart-snapshot", "test:1:", "repo-42/Branch Main!", 7);
  CHECK(other_ns.repo != a.repo);
  // The separator keeps ("ab", "c") and ("a", "bc") apart.
  CHECK(snapshot_image_name("r", "ab", "c", 1).repo != snapshot_image_name("r", "a", "bc", 1).repo);
}

TEST_CASE("import_changes re-applies the base config with quoting", "[unit]") {
  container::ImageConfig config;
  config.env = {"PATH=/bin", "GREETING=say \"hi\" $HOME \\o/", "EMPTY="};
  config.cmd = {"/bin/sh", "-c", "echo \"x\""};
  config.entrypoint = {"/bin/tini", "--"};
  config.user = "nobody";
  config.working_dir = "/work";
  config.labels = {{"warmstart.snapshot.key", "repo-42/branch main"}};
  std::string text;
  for (const auto& line : import_changes(config)) text += line + "\n";
  CHECK(text ==
        "ENV PATH=\"/bin\"\n"
        "ENV GREETING=\"say \\\"hi\\\" \\$HOME \\\\o/\"\n"
        "ENV EMPTY=\"\"\n"
        "ENTRYPOINT [\"/bin/tini\",\"--\"]\n"
        "CMD [\"/bin/sh\",\"-c\",\"echo \\\"x\\\"\"]\n"
        "USER nobody\n"
        "WORKDIR /work\n"
        "LABEL \"warmstart.snapshot.key\"=\"repo-42/branch main\"\n");
}

TEST_CASE("snapshot labels carry key base engine namespace generation and job", "[unit]") {
  auto labels = snapshot_labels({"k/1", "sha256:b", "ENG:1", "ns:", 3, "job-9"});
  CHECK(labels == container::Labels{{"warmstart.snapshot.key", "k/1"},
                                    {"warmstart.snapshot.base", "sha256:b"},
                                    {"warmstart.snapshot.engine", "ENG:1"},
                                    {"warmstart.snapshot.registry", "ns:"},
                                    {"warmstart.snapshot.generation", "3"},
                                    {"warmstart.snapshot.job", "job-9"}});
}

TEST_CASE("decide_lookup covers hit miss base_changed and reuse disabled", "[unit]") {
  auto e = entry("k", "sha256:s1", 0);
  CHECK(decide_lookup(std::nullopt, "sha256:base").outcome == LookupOutcome::miss);
  CHECK(decide_lookup(std::nullopt, "sha256:base").reason == "no_entry");
  CHECK(decide_lookup(e, "sha256:base").outcome == LookupOutcome::hit);
  CHECK(decide_lookup(e, "sha256:rebuilt").outcome == LookupOutcome::base_changed);
  CHECK(decide_lookup(e, "sha256:base", false).reason == "reuse_disabled");
  CHECK(decide_lookup(e, "sha256:rebuilt", false).outcome == LookupOutcome::base_changed);
  CHECK(to_string(LookupOutcome::base_changed) == "base_changed");
}

TEST_CASE("decide_commit flattens past the depth limit or when layered is off", "[unit]") {
  DepthPolicy layered{true, 64};
  auto d = decide_commit(1, layered);
  CHECK(d.mode == CommitMode::layered);
  CHECK(d.result_depth == 2);
  CHECK(decide_commit(63, layered).mode == CommitMode::layered);
  CHECK(decide_commit(63, layered).result_depth == 64);
  CHECK(decide_commit(64, layered).mode == CommitMode::flatten);
  CHECK(decide_commit(64, layered).reason == "depth_limit");
  CHECK(decide_commit(64, layered).result_depth == 1);
  CHECK(decide_commit(1, DepthPolicy{}).mode == CommitMode::flatten);
  CHECK(decide_commit(1, DepthPolicy{}).reason == "layered_disabled");

  // A chain driven by the policy never exceeds the limit.
  std::size_t depth = 1, max_seen = 0;
  for (int generation = 0; generation < 300; ++generation) {
    depth = decide_commit(depth, DepthPolicy{true, 10}).result_depth;
    max_seen = std::max(max_seen, depth);
  }
  CHECK(max_seen == 10);
}

TEST_CASE("plan_evictions orders ttl then LRU by count and bytes and keeps images in use",
          "[unit]") {
  const std::int64_t now = 100 * kHourMs;
  std::vector<SnapshotEntry> entries{
      entry("old", "sha256:old", now - 30 * kHourMs),        // past the 24 h ttl
      entry("old-used", "sha256:used", now - 40 * kHourMs),  // past ttl, but running
      entry("short", "sha256:short", now - 2 * kHourMs),     // past its own 1 h ttl
      entry("a", "sha256:a", now - 5 * kHourMs, 400),
      entry("b", "sha256:b", now - 4 * kHourMs, 300),
      entry("c", "sha256:c", now - 3 * kHourMs, 200),
      entry("d", "sha256:d", now - 1 * kHourMs, 100),
  };
  entries[2].ttl_ms = kHourMs;
  std::set<std::string> in_use{"sha256:used"};

  SECTION("ttl only") {
    auto plan = plan_evictions(entries, in_use, EvictionPolicy{24h, 0, 0}, now);
    CHECK(plan.to_text() ==
          "evict old snap/old:g1 reason=ttl\n"
          "evict short snap/short:g1 reason=ttl\n"
          "keep old-used (ttl) in_use\n");
  }
  SECTION("count: least recently used first, the running one skipped") {
    auto plan = plan_evictions(entries, in_use, EvictionPolicy{24h, 3, 0}, now);
    CHECK(plan.to_text() ==
          "evict old snap/old:g1 reason=ttl\n"
          "evict short snap/short:g1 reason=ttl\n"
          "evict a snap/a:g1 reason=count\n"
          "evict b snap/b:g1 reason=count\n"
          "keep old-used (ttl) in_use\n"
          "keep old-used (count) in_use\n");
  }
  SECTION("bytes: in-use bytes count against the budget") {
    // After ttl: old-used 100 + a 400 + b 300 + c 200 + d 100 = 1100 bytes.
    auto plan = plan_evictions(entries, in_use, EvictionPolicy{24h, 0, 350}, now);
    CHECK(plan.to_text() ==
          "evict old snap/old:g1 reason=ttl\n"
          "evict short snap/short:g1 reason=ttl\n"
          "evict a snap/a:g1 reason=bytes\n"
          "evict b snap/b:g1 reason=bytes\n"
          "evict c snap/c:g1 reason=bytes\n"
          "keep old-used (ttl) in_use\n"
          "keep old-used (bytes) in_use\n");
  }
  SECTION("within every budget: only the per-key ttl applies") {
    auto plan = plan_evictions(entries, {}, EvictionPolicy{1000h, 10, 1 << 20}, now);
    CHECK(plan.to_text() == "evict short snap/short:g1 reason=ttl\n");
    entries[2].ttl_ms = 0;
    CHECK(plan_evictions(entries, {}, EvictionPolicy{1000h, 10, 1 << 20}, now).to_text().empty());
  }
}

TEST_CASE("plan_reconcile drops entries without image and removes unregistered images", "[unit]") {
  ReconcileInput in;
  in.now_ms = 1000 * 1000;
  in.orphan_grace = std::chrono::minutes(5);
  in.entries = {entry("kept", "sha256:1", 0), entry("gone", "sha256:2", 0),
                entry("parent", "sha256:3", 0)};
  in.images = {
      {"sha256:1", "snap/kept:g1", "kept", 10},
      {"sha256:9", "snap/crash:g4", "crash", 10},   // crash between commit and register
      {"sha256:8", "<none>", "kept", 10},           // superseded, still running
      {"sha256:7", "snap/busy:g2", "busy", 10},     // being committed right now
      {"sha256:6", "snap/fresh:g1", "fresh", 990},  // younger than the grace
  };
  in.also_present_ids = {"sha256:3"};  // has a child image: not listed, but present
  in.in_use_image_ids = {"sha256:8"};
  in.pending = {"snap/busy:g2"};
  CHECK(plan_reconcile(in).to_text() ==
        "drop-entry gone snap/gone:g1 reason=image_missing\n"
        "keep-image fresh sha256:6 reason=grace\n"
        "keep-image busy sha256:7 reason=pending\n"
        "keep-image kept sha256:8 reason=in_use\n"
        "remove-image crash sha256:9 reason=unregistered\n");

  in.orphan_grace = std::chrono::milliseconds(0);
  in.pending.clear();
  CHECK(plan_reconcile(in).to_text() ==
        "drop-entry gone snap/gone:g1 reason=image_missing\n"
        "remove-image fresh sha256:6 reason=unregistered\n"
        "remove-image busy sha256:7 reason=unregistered\n"
        "keep-image kept sha256:8 reason=in_use\n"
        "remove-image crash sha256:9 reason=unregistered\n");
}

TEST_CASE("registry hash fields round-trip and entries without an image are absent", "[unit]") {
  auto e = entry("repo-42/branch-main", "sha256:abc", 1700000000123, 123456789012);
  e.uses = 3;
  e.layer_depth = 12;
  e.generation = 9;
  e.ttl_ms = 60000;
  e.source_job = "job-1";
  e.build_ms = 5123;
  CHECK(entry_from_fields(entry_to_fields(e)) == e);
  CHECK_FALSE(entry_from_fields({"key", "k", "image", "i"}).has_value());
  auto lenient = entry_from_fields(
      {"key", "k", "image", "i", "image_id", "x", "uses", "12z", "future_field", "1"});
  REQUIRE(lenient.has_value());
  CHECK(lenient->uses == 0);
}
