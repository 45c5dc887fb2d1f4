#include "api/config.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

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
  CHECK(options.auth == AuthMode::token);
  CHECK(options.tokens.empty());  // ensure_api_token() generates one
  REQUIRE(options.webhooks.count("gh") == 1);
  CHECK(options.webhooks.at("gh").secret == "s");

  ::setenv("WARMSTART_API_TOKEN", "env-token", 1);
  ServerOptions with_token;
  load_api_config(toml::parse(""), with_token);
  REQUIRE(with_token.tokens.size() == 1);
  CHECK(with_token.tokens[0].secret == "env-token");
  CHECK_FALSE(with_token.tokens[0].snapshot_prefix);
  // An env or file token is the main one: nothing is generated.
  CHECK_FALSE(ensure_api_token(with_token, "/nonexistent/state"));
  ::unsetenv("WARMSTART_API_TOKEN");
}

TEST_CASE("[api] auth modes, scoped tokens, allowed hosts and stream caps", "[unit]") {
  ::unsetenv("WARMSTART_API_TOKEN");
  const auto dir =
      std::filesystem::temp_directory_path() / ("ws-api-config-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "ci-token") << "ci-secret\n";
  auto root = toml::parse(R"(
    [api]
    allowed_hosts = ["warmstart.example.com"]
    allowed_origins = ["https://ops.example.com"]
    max_connections_per_client = 9
    max_event_streams = 11
    max_event_streams_per_client = 3
    [[api.tokens]]
    name = "ci"
    token_file = ")" + (dir / "ci-token").string() +
                          R"("
    snapshot_prefix = "ci/"
  )");
  ServerOptions options;
  load_api_config(root, options);
  CHECK(options.allowed_hosts == std::vector<std::string>{"warmstart.example.com"});
  CHECK(options.allowed_origins == std::vector<std::string>{"https://ops.example.com"});
  CHECK(options.max_connections_per_client == 9);
  CHECK(options.max_event_streams == 11);
  CHECK(options.max_event_streams_per_client == 3);
  REQUIRE(options.tokens.size() == 1);
  CHECK(options.tokens[0].name == "ci");
  CHECK(options.tokens[0].secret == "ci-secret");
  CHECK(options.tokens[0].snapshot_prefix == "ci/");

  // A scoped token is not the main one: the main one is generated, once.
  const auto state = dir / "state" / "nested";
  const auto path = ensure_api_token(options, state.string());
  REQUIRE(path);
  CHECK(*path == (state / "api-token").string());
  REQUIRE(options.tokens.size() == 2);
  CHECK(options.tokens[0].name == "default");
  CHECK_FALSE(options.tokens[0].snapshot_prefix);
  CHECK(options.tokens[0].secret.size() == 64);
  ServerOptions again;
  load_api_config(root, again);
  ensure_api_token(again, state.string());
  CHECK(again.tokens[0].secret == options.tokens[0].secret);  // read back, not regenerated

  ServerOptions none;
  load_api_config(toml::parse("[api]\nauth = \"none\""), none);
  CHECK(none.auth == AuthMode::none);
  CHECK(none.tokens.empty());
  CHECK_FALSE(ensure_api_token(none, state.string()));
  CHECK_THROWS_WITH(load_api_config(toml::parse("[api]\nauth = \"off\""), none),
                    Catch::Contains("api.auth"));
  CHECK_THROWS_WITH(
      load_api_config(toml::parse("[api]\nauth = \"none\"\ntoken_file = \"x\""), none),
      Catch::Contains("api.auth"));
  CHECK_THROWS_WITH(load_api_config(toml::parse("[[api.tokens]]\nname = \"x\""), none),
                    Catch::Contains("token_file is required"));
  std::filesystem::remove_all(dir);
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
