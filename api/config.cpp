#include "api/config.hpp"

#include "api/auth.hpp"
#include "common/time.hpp"

#include <stdexcept>

namespace warmstart::api {
namespace {

[[noreturn]] void bad(const std::string& key, const std::string& reason) {
  throw std::invalid_argument("api." + key + ": " + reason);
}

void read_duration(const toml::table& api, const char* key, Duration& out) {
  const toml::node* node = api.get(key);
  if (node == nullptr) return;
  std::optional<std::chrono::milliseconds> value;
  if (auto text = node->value_exact<std::string>()) {
    value = parse_duration(*text);
  } else if (auto seconds = node->value_exact<std::int64_t>()) {
    value = std::chrono::seconds(*seconds);
  }
  if (!value || value->count() <= 0) bad(key, "must be a positive duration such as \"30s\"");
  out = *value;
}

void read_count(const toml::table& api, const char* key, std::size_t& out) {
  const toml::node* node = api.get(key);
  if (node == nullptr) return;
  auto value = node->value_exact<std::int64_t>();
  if (!value || *value <= 0) bad(key, "must be a positive integer");
  out = static_cast<std::size_t>(*value);
}

}  // namespace

void load_api_config(const toml::table& root, ServerOptions& options, const EnvLookup& env) {
  std::optional<std::string> token_file;
  if (const toml::node* node = root.get("api")) {
    const toml::table* api = node->as_table();
    if (api == nullptr) throw std::invalid_argument("api: must be a table");
    static const std::vector<std::string> known = {
        "token_file",         "body_limit_bytes", "read_timeout",    "write_timeout",
        "keep_alive_timeout", "max_connections",  "backend_timeout", "webhook_dedup_ttl",
        "sse_keepalive",      "sse_max_queue"};
    for (const auto& [key, value] : *api) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        bad(std::string(key.str()), "unknown key");
      }
    }
    if (const toml::node* file = api->get("token_file")) {
      if (!file->is_string()) bad("token_file", "must be a string");
      token_file = file->value<std::string>();
    }
    read_count(*api, "body_limit_bytes", options.body_limit);
    read_duration(*api, "read_timeout", options.read_timeout);
    read_duration(*api, "write_timeout", options.write_timeout);
    read_duration(*api, "keep_alive_timeout", options.keep_alive_timeout);
    read_count(*api, "max_connections", options.max_connections);
    read_duration(*api, "backend_timeout", options.backend_timeout);
    read_duration(*api, "webhook_dedup_ttl", options.webhook_dedup_ttl);
    read_duration(*api, "sse_keepalive", options.sse.keepalive);
    read_count(*api, "sse_max_queue", options.sse.max_queue);
  }
  try {
    options.api_token = load_api_token(token_file);
  } catch (const std::runtime_error& e) {
    bad("token_file", e.what());
  }
  options.webhooks = parse_webhooks(root, env);
}

void load_api_config_file(const std::string& path, ServerOptions& options) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(path + ": " + std::string(e.description()));
  }
  load_api_config(root, options);
}

}  // namespace warmstart::api
