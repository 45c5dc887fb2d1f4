// The [api] and [webhooks.*] sections of the router's TOML config file.
//
//   [api]
//   auth = "token"              # or "none": only on a loopback listener
//   token_file = "/etc/warmstart/api-token"  # env WARMSTART_API_TOKEN wins;
//                               # neither: generated in the state directory
//   allowed_hosts = ["warmstart.example.com"]    # Host names besides the listen address
//   allowed_origins = ["https://ops.example.com"] # origins besides the same origin
//   max_connections_per_client = 64
//   max_event_streams = 256
//   max_event_streams_per_client = 16
//   [[api.tokens]]              # more tokens, each limited to a snapshot key namespace
//   name = "ci"
//   token_file = "/etc/warmstart/ci-token"
//   snapshot_prefix = "ci/"
//   body_limit_bytes = 1048576
//   read_timeout = "30s"        # durations: "30s", "5m", or a number of seconds
//   write_timeout = "30s"
//   keep_alive_timeout = "60s"
//   max_connections = 512
//   backend_timeout = "10s"
//   webhook_dedup_ttl = "24h"
//   sse_keepalive = "15s"
//   sse_max_queue = 1024
//
// The listen address comes from the router's own `listen` setting.
#pragma once
#include "api/http_server.hpp"

#include <toml++/toml.h>

#include <string>

namespace warmstart::api {

// Reads the sections into `options` (absent keys keep their value) and loads
// the API token. Throws std::invalid_argument naming the key and reason.
void load_api_config(const toml::table& root, ServerOptions& options,
                     const EnvLookup& env = process_env);
void load_api_config_file(const std::string& path, ServerOptions& options);

// With auth on and no main token (WARMSTART_API_TOKEN, [api] token_file),
// reads `<state_dir>/api-token`, creating it on first start (a random 256-bit
// token, mode 0600, the directory 0700). Returns the file's path when it was
// used, nullopt otherwise. Throws std::runtime_error naming the path.
std::optional<std::string> ensure_api_token(ServerOptions& options, const std::string& state_dir);

}  // namespace warmstart::api
