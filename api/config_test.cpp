#include "api/config.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>

using namespace warmstart;
using namespace warmstart::api;

TEST_CASE("[api] and [webhooks] sections fill ServerOptions", "[unit]") {
  ::unsetenv("WARMSTART_API_TOKEN");
  auto root = toml::parse(R"(
    listen = "127.0.0.1:9000"   # the router's own key, ignored here
    [api]
    body_limit_bytes = 2048
    read_timeout = "5s"
    keep_alive_timeout = 90
    max_connections = 7
    webhook_dedup_ttl = "1h"
    sse_keepalive = "2s"
    sse_max_queue = 16
    [webhooks.gh]
    secret_env = "HOOK_SECRET"
    cmd = ["true"]
  )");
  ServerOptions options;
  load_api_config(root, options, [](const std::string& name) -> std::optional<std::string> {
    if (name == "HOOK_SECRET") return "s";
    return std::nullopt;
  });
  CHECK(options.body_limit == 2048);
  CHECK(options.read_timeout == 5s);
  CHECK(options.keep_alive_timeout == 90s);
  CHECK(options.write_timeout == 30s);  // default kept
  CHECK(options.max_connections == 7);
  CHECK(options.webhook_dedup_ttl == 1h);
  CHECK(options.sse.keepalive == 2s);
  CHECK(options.sse.max_queue == 16);
  CHECK_FALSE(options.api_token);
  REQUIRE(options.webhooks.count("gh") == 1);
  CHECK(options.webhooks.at("gh").secret == "s");

  ::setenv("WARMSTART_API_TOKEN", "env-token", 1);
  ServerOptions with_token;
  load_api_config(toml::parse(""), with_token);
  CHECK(with_token.api_token == "env-token");
  ::unsetenv("WARMSTART_API_TOKEN");
}

TEST_CASE("[api] errors name the key", "[unit]") {
  ServerOptions options;
  CHECK_THROWS_WITH(load_api_config(toml::parse("[api]\nread_timeout = \"soon\""), options),
                    Catch::Contains("api.read_timeout"));
  CHECK_THROWS_WITH(load_api_config(toml::parse("[api]\nmax_connections = 0"), options),
                    Catch::Contains("api.max_connections"));
  CHECK_THROWS_WITH(load_api_config(toml::parse("[api]\ntoken = \"x\""), options),
                    Catch::Contains("api.token: unknown key"));
  ::unsetenv("WARMSTART_API_TOKEN");
  CHECK_THROWS_WITH(
      load_api_config(toml::parse("[api]\ntoken_file = \"/nonexistent/warmstart-token\""), options),
      Catch::Contains("api.token_file"));
}
