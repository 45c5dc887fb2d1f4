// The [api] and [webhooks.*] sections of the router's TOML config file.
//
//   [api]
//   token_file = "/etc/warmstart/api-token"  # env WARMSTART_API_TOKEN wins
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

}  // namespace warmstart::api
