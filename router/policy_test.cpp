#include "router/policy.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::router;

TEST_CASE("glob_match handles stars and question marks", "[unit][policy]") {
  CHECK(glob_match("*", "anything/at:all"));
  CHECK(glob_match("warmstart-worker:*", "warmstart-worker:latest"));
  CHECK(glob_match("registry.local/team/*", "registry.local/team/app:1.2"));
  CHECK(glob_match("busybox:1.3?", "busybox:1.36"));
  CHECK_FALSE(glob_match("busybox:1.3?", "busybox:1.360"));
  CHECK_FALSE(glob_match("warmstart-worker:*", "evil/warmstart-worker:latest"));
  CHECK(glob_match("a*b*c", "axxbyyc"));
  CHECK_FALSE(glob_match("a*b*c", "axxbyy"));
  CHECK(glob_match("", ""));
  CHECK_FALSE(glob_match("", "x"));
}

TEST_CASE("ImagePolicy allows the base image and the allowlist only", "[unit][policy]") {
  ImagePolicy policy("warmstart-worker:latest", {"tools/*"});
  std::string reason;
  CHECK(policy.resolve("", &reason) == "warmstart-worker:latest");
  CHECK(policy.resolve("warmstart-worker:latest", &reason) == "warmstart-worker:latest");
  CHECK(policy.resolve("tools/git:2", &reason) == "tools/git:2");
  CHECK_FALSE(policy.resolve("alpine:latest", &reason));
  CHECK(reason == "image not allowed: alpine:latest");
}
