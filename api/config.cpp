#include "api/config.hpp"

#include "api/auth.hpp"
#include "common/time.hpp"

#include <algorithm>
#include <filesystem>
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

std::vector<std::string> read_strings(const toml::table& api, const char* key) {
  std::vector<std::string> out;
  const toml::node* node = api.get(key);
  if (node == nullptr) return out;
  const toml::array* array = node->as_array();
  if (array == nullptr) bad(key, "must be an array of strings");
  for (const auto& item : *array) {
    auto text = item.value_exact<std::string>();
    if (!text || text->empty()) bad(key, "must be an array of non-empty strings");
    out.push_back(*text);
  }
  return out;
}

// [[api.tokens]]: name, token_file, snapshot_prefix (optional).
std::vector<ApiToken> read_scoped_tokens(const toml::table& api) {
  std::vector<ApiToken> out;
  const toml::node* node = api.get("tokens");
  if (node == nullptr) return out;
  const toml::array* array = node->as_array();
  if (array == nullptr) bad("tokens", "must be an array of tables ([[api.tokens]])");
  for (const auto& item : *array) {
    const toml::table* table = item.as_table();
    if (table == nullptr) bad("tokens", "must be an array of tables ([[api.tokens]])");
    for (const auto& [key, value] : *table) {
      if (key != "name" && key != "token_file" && key != "snapshot_prefix") {
        bad("tokens." + std::string(key.str()), "unknown key");
      }
    }
    ApiToken token;
    auto name = table->get("name") ? table->get("name")->value_exact<std::string>() : std::nullopt;
    if (!name || name->empty()) bad("tokens.name", "every [[api.tokens]] needs a name");
    token.name = *name;
    auto file = table->get("token_file") ? table->get("token_file")->value_exact<std::string>()
                                         : std::nullopt;
    if (!file || file->empty()) bad("tokens." + token.name, "token_file is required");
    try {
      token.secret = read_secret_file(*file);
    } catch (const std::runtime_error& e) {
      bad("tokens." + token.name + ".token_file", e.what());
    }
    if (const toml::node* prefix = table->get("snapshot_prefix")) {
      auto text = prefix->value_exact<std::string>();
      if (!text || text->empty())
        bad("tokens." + token.name + ".snapshot_prefix", "must be a non-empty string");
      token.snapshot_prefix = *text;
    }
    out.push_back(std::move(token));
  }
  return out;
}

}  // namespace

void load_api_config(const toml::table& root, ServerOptions& options, const EnvLookup& env) {
  std::optional<std::string> token_file;
  std::vector<ApiToken> scoped;
  if (const toml::node* node = root.get("api")) {
    const toml::table* api = node->as_table();
    if (api == nullptr) throw std::invalid_argument("api: must be a table");
    static const std::vector<std::string> known = {"auth",
                                                   "token_file",
                                                   "tokens",
                                                   "allowed_hosts",
                                                   "allowed_origins",
                                                   "body_limit_bytes",
                                                   "read_timeout",
                                                   "write_timeout",
                                                   "keep_alive_timeout",
                                                   "max_connections",
                                                   "max_connections_per_client",
                                                   "max_event_streams",
                                                   "max_event_streams_per_client",
                                                   "backend_timeout",
                                                   "webhook_dedup_ttl",
                                                   "sse_keepalive",
                                                   "sse_max_queue"};
    for (const auto& [key, value] : *api) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        bad(std::string(key.str()), "unknown key");
      }
    }
    if (const toml::node* mode = api->get("auth")) {
      auto text = mode->value_exact<std::string>();
      if (text == "token") {
        options.auth = AuthMode::token;
      } else if (text == "none") {
        options.auth = AuthMode::none;
      } else {
        bad("auth", "must be \"token\" (the default) or \"none\"");
      }
    }
    options.allowed_hosts = read_strings(*api, "allowed_hosts");
    options.allowed_origins = read_strings(*api, "allowed_origins");
    scoped = read_scoped_tokens(*api);
    read_count(*api, "max_connections_per_client", options.max_connections_per_client);
    read_count(*api, "max_event_streams", options.max_event_streams);
    read_count(*api, "max_event_streams_per_client", options.max_event_streams_per_client);
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
  options.tokens.clear();
  if (options.auth == AuthMode::token) {
    std::optional<std::string> main_token;
    try {
      main_token = load_api_token(token_file);
    } catch (const std::runtime_error& e) {
      bad("token_file", e.what());
    }
    if (main_token) options.tokens.push_back(ApiToken{"default", std::move(*main_token), {}});
    for (auto& token : scoped) options.tokens.push_back(std::move(token));
  } else if (token_file || !scoped.empty()) {
    bad("auth", "\"none\" takes no token_file or [[api.tokens]]");
  }
  options.webhooks = parse_webhooks(root, env);
}

std::optional<std::string> ensure_api_token(ServerOptions& options, const std::string& state_dir) {
  if (options.auth != AuthMode::token) return std::nullopt;
  const bool has_main = std::any_of(options.tokens.begin(), options.tokens.end(),
                                    [](const ApiToken& t) { return !t.snapshot_prefix; });
  if (has_main) return std::nullopt;
  const std::string path = (std::filesystem::path(state_dir) / "api-token").string();
  std::string secret = load_or_create_secret_file(path);
  options.tokens.insert(options.tokens.begin(), ApiToken{"default", std::move(secret), {}});
  return path;
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
