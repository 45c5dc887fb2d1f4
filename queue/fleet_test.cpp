// The fleet view's pure parts: a record's status, its JSON both ways, and the
// start-up check of a router's host identity.
#include "queue/fleet.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::queue;

namespace {

RouterRecord record(const std::string& id, const std::string& host_id, const std::string& engine_id,
                    std::int64_t last_seen) {
  RouterRecord r;
  r.id = id;
  r.host_id = host_id;
  r.engine_id = engine_id;
  r.host_name = "box-1";
  r.docker_host = "unix:///var/run/docker.sock";
  r.instance = id + "-instance";
  r.lease_ms = 30000;
  r.last_seen = last_seen;
  return r;
}

constexpr std::int64_t now = 1'700'000'100'000;

}  // namespace

TEST_CASE("a router silent past its lease is lost and a draining one says so", "[unit][fleet]") {
  RouterRecord r = record("r1", "H", "E1", now - 30000);
  CHECK(router_status(r, now) == "live");
  CHECK(router_status(r, now + 1) == "lost");
  r.draining = true;
  CHECK(router_status(r, now) == "draining");
  CHECK(router_status(r, now + 1) == "lost");
  const auto shown = describe(r, now + 5);
  CHECK(shown["status"] == "lost");
  CHECK(shown["last_seen_ago_ms"] == 30005);
  CHECK_FALSE(shown.contains("instance"));
}

TEST_CASE("a router record survives its JSON and a foreign value is refused", "[unit][fleet]") {
  RouterRecord r = record("r1", "H", "E1", now);
  r.queues = {"default", "gpu"};
  r.capacity = 8;
  r.running = 3;
  r.snapshot_count = 5;
  r.snapshot_bytes = 1 << 20;
  r.version = "0.1.0";
  auto back = router_record_from_json(to_json(r));
  REQUIRE(back);
  CHECK(to_json(*back) == to_json(r));
  CHECK_FALSE(router_record_from_json(nlohmann::json::array()));
  CHECK_FALSE(router_record_from_json({{"id", 7}}));
  CHECK_FALSE(router_record_from_json({{"id", "x"}, {"capacity", "many"}}));
}

TEST_CASE("host identity: a live router of another engine under the same id is a conflict",
          "[unit][fleet]") {
  RouterRecord mine = record("r-new", "H", "E1", now);
  mine.docker_host = "unix:///run/engine-2.sock";

  SECTION("two engines on one machine sharing one trust key (same engine ID, other socket)") {
    RouterRecord other = record("r-old", "H", "E1", now - 1000);
    auto conflict = host_identity_conflict(mine, {other}, now);
    REQUIRE(conflict);
    CHECK(conflict->id == "r-old");
    const auto message = describe_host_identity_conflict(mine, *conflict);
    CHECK_THAT(message, Catch::Contains("host identity \"H\" is claimed by live router \"r-old\""));
    CHECK_THAT(message, Catch::Contains("[router] host_id"));
  }
  SECTION("a cloned VM (same engine ID and socket, another machine)") {
    mine.docker_host = "unix:///var/run/docker.sock";
    RouterRecord other = record("r-old", "H", "E1", now - 1000);
    other.host_name = "box-2";
    CHECK(host_identity_conflict(mine, {other}, now));
  }
  SECTION("an explicit host_id reused for another engine") {
    RouterRecord other = record("r-old", "H", "E2", now - 1000);
    other.docker_host = mine.docker_host;
    CHECK(host_identity_conflict(mine, {other}, now));
  }
  SECTION("no conflict") {
    RouterRecord lost = record("r-lost", "H", "E9", now - 30001);
    RouterRecord elsewhere = record("r-b", "OTHER", "E2", now);
    RouterRecord same_engine = record("r-twin", "H", "E1", now);
    same_engine.docker_host = mine.docker_host;  // a second router on the same engine
    RouterRecord self = mine;                    // our own earlier heartbeat
    self.engine_id = "E-old";
    self.instance = mine.instance;
    CHECK_FALSE(host_identity_conflict(mine, {lost, elsewhere, same_engine, self}, now));
  }
}
