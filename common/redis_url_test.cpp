#include "common/redis.hpp"

#include <catch2/catch.hpp>

using warmstart::redis::Endpoint;
using warmstart::redis::Url;

namespace {

// Why Url::parse refuses `text`, or "accepted".
std::string reason(const std::string& text) {
  try {
    Url::parse(text);
  } catch (const std::invalid_argument& e) {
    return std::string(e.what());
  }
  return std::string("accepted");
}

}  // namespace

TEST_CASE("Url::parse reads host and port and db", "[unit][redis]") {
  Url u = Url::parse("redis://127.0.0.1:6380/3");
  CHECK(u.host == "127.0.0.1");
  CHECK(u.port == 6380);
  CHECK(u.db == 3);
  CHECK_FALSE(u.tls);
  CHECK(u.user.empty());
  CHECK(u.password.empty());
}

TEST_CASE("Url::parse fills defaults", "[unit][redis]") {
  Url u = Url::parse("redis://localhost");
  CHECK(u.host == "localhost");
  CHECK(u.port == 6379);
  CHECK(u.db == 0);
  CHECK(Url::parse("redis://localhost/").db == 0);
}

TEST_CASE("Url::parse reads user and password percent-decoded", "[unit][redis]") {
  Url u = Url::parse("redis://alice:p%40ss%3Aw@host:7000/1");
  CHECK(u.user == "alice");
  CHECK(u.password == "p@ss:w");
  CHECK(u.host == "host");
  CHECK(u.port == 7000);
  CHECK(u.db == 1);

  Url only_password = Url::parse("redis://:secret@host");
  CHECK(only_password.user.empty());
  CHECK(only_password.password == "secret");

  Url legacy = Url::parse("redis://secret@host");
  CHECK(legacy.user.empty());
  CHECK(legacy.password == "secret");

  // A raw '@' in the password: the last '@' ends the userinfo.
  CHECK(Url::parse("redis://u:a@b@host").password == "a@b");
}

TEST_CASE("Url::parse marks rediss:// as TLS and brackets IPv6", "[unit][redis]") {
  CHECK(Url::parse("rediss://h:1").tls);
  Url v6 = Url::parse("redis://[::1]:6390/2");
  CHECK(v6.host == "::1");
  CHECK(v6.port == 6390);
  CHECK(v6.db == 2);
  CHECK(Url::parse("redis://[::1]").port == 6379);
}

TEST_CASE("Url::parse rejects malformed input with a reason", "[unit][redis]") {
  CHECK_THAT(reason("http://h"), Catch::Contains("redis://"));
  CHECK_THAT(reason("h:6379"), Catch::Contains("redis://"));
  CHECK_THAT(reason("redis://"), Catch::Contains("missing host"));
  CHECK_THAT(reason("redis://h:0"), Catch::Contains("port"));
  CHECK_THAT(reason("redis://h:65536"), Catch::Contains("port"));
  CHECK_THAT(reason("redis://h:12ab"), Catch::Contains("port"));
  CHECK_THAT(reason("redis://h:"), Catch::Contains("empty port"));
  CHECK_THAT(reason("redis://h/x"), Catch::Contains("db index"));
  CHECK_THAT(reason("redis://h/-1"), Catch::Contains("db index"));
  CHECK_THAT(reason("redis://h?timeout=1"), Catch::Contains("query"));
  CHECK_THAT(reason("redis://u:%zz@h"), Catch::Contains("percent"));
  CHECK_THAT(reason("redis://u:%4@h"), Catch::Contains("percent"));
  CHECK_THAT(reason("redis://[::1"), Catch::Contains("IPv6"));
}

TEST_CASE("Url::parse reads unix:// socket paths, with userinfo and ?db=N", "[unit][redis]") {
  Url u = Url::parse("unix:///run/redis/redis-server.sock");
  CHECK(u.unix_socket());
  CHECK(u.socket_path == "/run/redis/redis-server.sock");
  CHECK(u.db == 0);
  CHECK(u.host.empty());
  CHECK_FALSE(u.sentinel());
  CHECK_FALSE(Url::parse("redis://h").unix_socket());

  Url full = Url::parse("unix://alice:p%2Fw@/tmp/r%3F.sock?db=3");
  CHECK(full.user == "alice");
  CHECK(full.password == "p/w");
  CHECK(full.socket_path == "/tmp/r?.sock");
  CHECK(full.db == 3);
  CHECK(Url::parse("unix://secret@/tmp/r.sock").password == "secret");
  // An '@' in the path is the path's: userinfo ends before the path's '/'.
  CHECK(Url::parse("unix:///tmp/a@b.sock").socket_path == "/tmp/a@b.sock");

  CHECK(full.redacted() == "unix://alice:***@/tmp/r?.sock?db=3");
  CHECK(Url::parse("unix:///tmp/r.sock").redacted() == "unix:///tmp/r.sock?db=0");
  CHECK(Url::parse(Url::parse("unix:///tmp/r.sock?db=2").redacted()).db == 2);
}

TEST_CASE("Url::parse refuses a unix:// URL without an absolute path or with another query",
          "[unit][redis]") {
  CHECK_THAT(reason("unix://"), Catch::Contains("absolute socket path"));
  CHECK_THAT(reason("unix://relative.sock"), Catch::Contains("absolute socket path"));
  CHECK_THAT(reason("unix://host/tmp/r.sock"), Catch::Contains("absolute socket path"));
  CHECK_THAT(reason("unix:///"), Catch::Contains("socket path must have"));
  CHECK_THAT(reason("unix:///" + std::string(120, 'a')), Catch::Contains("socket path must have"));
  CHECK_THAT(reason("unix:///tmp/r.sock?timeout=1"), Catch::Contains("?db=N"));
  CHECK_THAT(reason("unix:///tmp/r.sock?db=1&x=2"), Catch::Contains("?db=N"));
  CHECK_THAT(reason("unix:///tmp/r.sock?db=x"), Catch::Contains("db index"));
  CHECK_THAT(reason("unix:///tmp/r.sock#f"), Catch::Contains("fragments"));
  CHECK_THAT(reason("unix:///tmp/r%zz.sock"), Catch::Contains("percent"));
}

TEST_CASE("Url::redacted hides the password", "[unit][redis]") {
  CHECK(Url::parse("redis://alice:hunter2@h:1/2").redacted() == "redis://alice:***@h:1/2");
  CHECK(Url::parse("redis://:hunter2@h").redacted() == "redis://:***@h:6379/0");
  CHECK(Url::parse("rediss://h").redacted() == "rediss://h:6379/0");
  CHECK(Url::parse("redis://[::1]:5").redacted() == "redis://[::1]:5/0");
}

TEST_CASE("Url::parse reads redis+sentinel:// with several Sentinels", "[unit][redis]") {
  Url u =
      Url::parse("redis+sentinel://alice:s%40cret@sentinel-a:26380,sentinel-b,[::1]:26381/main/3");
  REQUIRE(u.sentinel());
  REQUIRE(u.sentinels.size() == 3);
  CHECK(u.sentinels[0] == Endpoint{"sentinel-a", 26380});
  CHECK(u.sentinels[1] == Endpoint{"sentinel-b", 26379});
  CHECK(u.sentinels[2] == Endpoint{"::1", 26381});
  CHECK(u.master_name == "main");
  CHECK(u.db == 3);
  CHECK(u.user == "alice");
  CHECK(u.password == "s@cret");
  CHECK(u.redacted() ==
        "redis+sentinel://alice:***@sentinel-a:26380,sentinel-b:26379,[::1]:26381/main/3");

  Url one = Url::parse("redis+sentinel://127.0.0.1/mymaster");
  CHECK(one.sentinels == std::vector<Endpoint>{{"127.0.0.1", 26379}});
  CHECK(one.db == 0);
  CHECK(!Url::parse("redis://h").sentinel());
}

TEST_CASE("Url::parse refuses a Sentinel URL without a master or with a bad host",
          "[unit][redis]") {
  CHECK_THAT(reason("redis+sentinel://h:26379"), Catch::Contains("master name"));
  CHECK_THAT(reason("redis+sentinel://h:26379/"), Catch::Contains("master name"));
  CHECK_THAT(reason("redis+sentinel://h:26379,/m"), Catch::Contains("missing host"));
  CHECK_THAT(reason("redis+sentinel://h:0/m"), Catch::Contains("port"));
  CHECK_THAT(reason("redis+sentinel://h/m/x"), Catch::Contains("db index"));
  CHECK_THAT(reason("redis+sentinel://h/m?x=1"), Catch::Contains("query"));
  CHECK_THAT(reason("sentinel://h/m"), Catch::Contains("redis+sentinel://"));
}
