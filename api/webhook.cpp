#include "api/webhook.hpp"

#include "api/auth.hpp"
#include "common/json_limits.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

namespace warmstart::api {

using nlohmann::json;

namespace {

constexpr std::string_view open_tag = "{{";
constexpr std::string_view close_tag = "}}";

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.';
}

bool is_id_char(char c) {
  return is_name_char(c) || c == ':';
}

// Calls on_text(literal) and on_var(variable) in order; throws
// std::invalid_argument on an unterminated placeholder.
template <typename OnText, typename OnVar>
void scan_template(std::string_view text, OnText on_text, OnVar on_var) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t open = text.find(open_tag, pos);
    if (open == std::string_view::npos) {
      on_text(text.substr(pos));
      return;
    }
    on_text(text.substr(pos, open - pos));
    const std::size_t close = text.find(close_tag, open + open_tag.size());
    if (close == std::string_view::npos) {
      throw std::invalid_argument("unterminated \"{{\" in template \"" + std::string(text) + "\"");
    }
    on_var(text.substr(open + open_tag.size(), close - open - open_tag.size()));
    pos = close + close_tag.size();
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

JobTemplateString::JobTemplateString(std::string text) : text_(std::move(text)) {
  scan_template(
      text_, [](std::string_view) {},
      [this](std::string_view raw) {
        const std::string_view var = trim(raw);
        if (var == "delivery") return;
        if (var.empty() || var.front() != '/') {
          throw std::invalid_argument("unknown template variable \"" + std::string(var) +
                                      "\" in \"" + text_ +
                                      "\" (use {{/json/pointer}} or {{delivery}})");
        }
        try {
          json::json_pointer pointer{std::string(var)};
        } catch (const json::exception&) {
          throw std::invalid_argument("invalid JSON pointer \"" + std::string(var) + "\" in \"" +
                                      text_ + "\"");
        }
      });
}

std::string render_template(const JobTemplateString& tmpl, const json& payload,
                            std::string_view delivery_id) {
  std::string out;
  scan_template(
      tmpl.text(), [&out](std::string_view literal) { out.append(literal); },
      [&](std::string_view raw) {
        const std::string_view var = trim(raw);
        if (var == "delivery") {
          out.append(delivery_id);
          return;
        }
        const json::json_pointer pointer{std::string(var)};
        const json* value = nullptr;
        try {
          if (payload.contains(pointer)) value = &payload.at(pointer);
        } catch (const json::exception&) {
          // nlohmann's contains() throws where an array meets a token that
          // is no index ("" or past size_t): no value there either.
        }
        if (value == nullptr) throw TemplateError("payload has no value at " + std::string(var));
        if (value->is_string()) {
          out.append(value->get_ref<const std::string&>());
        } else if (!value->is_null()) {
          out.append(value->dump());
        }
      });
  return out;
}

std::optional<std::string> process_env(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

namespace {

[[noreturn]] void config_error(const std::string& name, const std::string& key,
                               const std::string& reason) {
  throw std::invalid_argument("webhooks." + name + (key.empty() ? "" : "." + key) + ": " + reason);
}

std::optional<std::string> optional_string(const std::string& name, const toml::table& table,
                                           const std::string& key) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return std::nullopt;
  if (!node->is_string()) config_error(name, key, "must be a string");
  return node->value<std::string>();
}

std::optional<JobTemplateString> optional_template(const std::string& name,
                                                   const toml::table& table,
                                                   const std::string& key) {
  auto text = optional_string(name, table, key);
  if (!text) return std::nullopt;
  try {
    return JobTemplateString(*text);
  } catch (const std::invalid_argument& e) {
    config_error(name, key, e.what());
  }
}

}  // namespace

WebhookConfig parse_webhook_config(const std::string& name, const toml::table& table,
                                   const EnvLookup& env) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), is_name_char)) {
    config_error(name, "", "name must match [A-Za-z0-9._-]+");
  }
  WebhookConfig config;
  config.name = name;

  const auto scheme = optional_string(name, table, "scheme").value_or("github");
  if (scheme == "github") {
    config.scheme = SignatureScheme::github;
  } else if (scheme == "generic") {
    config.scheme = SignatureScheme::generic;
  } else {
    config_error(name, "scheme", "must be \"github\" or \"generic\", not \"" + scheme + "\"");
  }

  const auto secret_env = optional_string(name, table, "secret_env");
  const auto secret_file = optional_string(name, table, "secret_file");
  if (secret_env.has_value() == secret_file.has_value()) {
    config_error(name, "", "set exactly one of secret_env and secret_file");
  }
  if (secret_env) {
    auto value = env(*secret_env);
    if (!value || value->empty()) {
      config_error(name, "secret_env", "environment variable " + *secret_env + " is not set");
    }
    config.secret = *value;
  } else {
    try {
      config.secret = read_secret_file(*secret_file);
    } catch (const std::runtime_error& e) {
      config_error(name, "secret_file", e.what());
    }
  }

  const bool github = config.scheme == SignatureScheme::github;
  config.signature_header = optional_string(name, table, "signature_header")
                                .value_or(github ? "X-Hub-Signature-256" : "");
  if (config.signature_header.empty()) {
    config_error(name, "signature_header", "required for scheme \"generic\"");
  }
  config.delivery_header =
      optional_string(name, table, "delivery_header").value_or(github ? "X-GitHub-Delivery" : "");
  config.event_header =
      optional_string(name, table, "event_header").value_or(github ? "X-GitHub-Event" : "");

  if (const toml::node* events = table.get("events")) {
    const toml::array* list = events->as_array();
    if (list == nullptr) config_error(name, "events", "must be an array of strings");
    for (const toml::node& item : *list) {
      if (!item.is_string()) config_error(name, "events", "must be an array of strings");
      config.events.push_back(*item.value<std::string>());
    }
    if (!config.events.empty() && config.event_header.empty()) {
      config_error(name, "events", "needs event_header for scheme \"generic\"");
    }
  }

  const toml::array* cmd = table.get_as<toml::array>("cmd");
  if (cmd == nullptr || cmd->empty()) {
    config_error(name, "cmd", "required: a non-empty array of strings");
  }
  for (const toml::node& item : *cmd) {
    if (!item.is_string()) config_error(name, "cmd", "must be an array of strings");
    try {
      config.job.cmd.emplace_back(*item.value<std::string>());
    } catch (const std::invalid_argument& e) {
      config_error(name, "cmd", e.what());
    }
  }
  if (const toml::node* env_node = table.get("env")) {
    const toml::table* env_table = env_node->as_table();
    if (env_table == nullptr) config_error(name, "env", "must be a table of strings");
    for (const auto& [key, value] : *env_table) {
      if (!value.is_string())
        config_error(name, "env." + std::string(key.str()), "must be a string");
      try {
        config.job.env.emplace(std::string(key.str()),
                               JobTemplateString(*value.value<std::string>()));
      } catch (const std::invalid_argument& e) {
        config_error(name, "env." + std::string(key.str()), e.what());
      }
    }
  }
  config.job.id = optional_template(name, table, "id");
  config.job.snapshot_key = optional_template(name, table, "snapshot_key");
  config.job.queue = optional_template(name, table, "queue");
  config.job.image = optional_template(name, table, "image");
  if (const toml::node* timeout = table.get("timeout_s")) {
    auto value = timeout->value<std::int64_t>();
    if (!timeout->is_integer() || !value || *value <= 0 || *value > 7 * 24 * 3600) {
      config_error(name, "timeout_s", "must be a positive integer of seconds (at most a week)");
    }
    config.job.timeout_s = static_cast<int>(*value);
  }

  static const std::vector<std::string> known = {"scheme",
                                                 "secret_env",
                                                 "secret_file",
                                                 "signature_header",
                                                 "delivery_header",
                                                 "event_header",
                                                 "events",
                                                 "cmd",
                                                 "env",
                                                 "id",
                                                 "snapshot_key",
                                                 "queue",
                                                 "image",
                                                 "timeout_s",
                                                 "snapshot_prefix",
                                                 "prewarm"};
  if (const toml::node* prewarm = table.get("prewarm")) {
    auto value = prewarm->value_exact<bool>();
    if (!value) config_error(name, "prewarm", "must be true or false");
    if (*value && !config.job.snapshot_key) {
      config_error(name, "prewarm", "needs snapshot_key: a prewarm builds a key's snapshot");
    }
    config.job.prewarm = *value;
  }
  if (const toml::node* prefix = table.get("snapshot_prefix")) {
    auto value = prefix->value_exact<std::string>();
    if (!value || value->empty())
      config_error(name, "snapshot_prefix", "must be a non-empty string");
    config.snapshot_prefix = *value;
  }
  for (const auto& [key, value] : table) {
    if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
      config_error(name, std::string(key.str()), "unknown key");
    }
  }
  return config;
}

std::map<std::string, WebhookConfig> parse_webhooks(const toml::table& root, const EnvLookup& env) {
  std::map<std::string, WebhookConfig> out;
  const toml::node* webhooks = root.get("webhooks");
  if (webhooks == nullptr) return out;
  const toml::table* table = webhooks->as_table();
  if (table == nullptr) throw std::invalid_argument("webhooks: must be a table of tables");
  for (const auto& [name, node] : *table) {
    const toml::table* hook = node.as_table();
    if (hook == nullptr)
      throw std::invalid_argument("webhooks." + std::string(name.str()) + ": must be a table");
    out.emplace(std::string(name.str()), parse_webhook_config(std::string(name.str()), *hook, env));
  }
  return out;
}

bool verify_signature(SignatureScheme scheme, std::string_view secret, std::string_view body,
                      std::string_view signature) {
  signature = trim(signature);
  constexpr std::string_view prefix = "sha256=";
  if (signature.substr(0, prefix.size()) == prefix) {
    signature.remove_prefix(prefix.size());
  } else if (scheme == SignatureScheme::github) {
    return false;  // GitHub always sends the algorithm prefix
  }
  const auto presented = from_hex(signature);
  if (!presented || presented->size() != 32) return false;
  return secrets_equal(hmac_sha256(secret, body), *presented);
}

json render_job(const WebhookConfig& config, const json& payload, std::string_view delivery_id) {
  json job = json::object();
  json cmd = json::array();
  for (const auto& part : config.job.cmd)
    cmd.push_back(render_template(part, payload, delivery_id));
  job["cmd"] = std::move(cmd);
  if (!config.job.env.empty()) {
    json env = json::object();
    for (const auto& [key, value] : config.job.env) {
      env[key] = render_template(value, payload, delivery_id);
    }
    job["env"] = std::move(env);
  }
  if (config.job.id) {
    job["id"] = render_template(*config.job.id, payload, delivery_id);
  } else if (!delivery_id.empty()) {
    // A stable id makes a redelivery idempotent even after the dedup key expired.
    std::string id = "wh-" + config.name + "-";
    for (char c : delivery_id) id.push_back(is_id_char(c) ? c : '_');
    job["id"] = id.substr(0, 128);
  }
  if (config.job.snapshot_key) {
    job["snapshot"] = {{"key", render_template(*config.job.snapshot_key, payload, delivery_id)}};
    if (config.job.prewarm) job["snapshot"]["prewarm"] = true;
  }
  if (config.job.queue) job["queue"] = render_template(*config.job.queue, payload, delivery_id);
  if (config.job.image) job["image"] = render_template(*config.job.image, payload, delivery_id);
  if (config.job.timeout_s) job["timeout_s"] = *config.job.timeout_s;
  job["labels"] = {{"webhook", config.name}};
  return job;
}

WebhookDecision evaluate_webhook(const WebhookConfig& config, const HeaderLookup& headers,
                                 std::string_view body) {
  using Action = WebhookDecision::Action;
  const auto signature = headers(config.signature_header);
  if (!signature) {
    return {Action::unauthorized, "missing " + config.signature_header + " header", "", nullptr};
  }
  if (!verify_signature(config.scheme, config.secret, body, *signature)) {
    return {Action::unauthorized, "signature does not match", "", nullptr};
  }
  std::string delivery;
  if (!config.delivery_header.empty()) delivery = headers(config.delivery_header).value_or("");
  // GitHub always sends one; a delivery without it is not GitHub's.
  if (config.scheme == SignatureScheme::github && delivery.empty()) {
    return {Action::bad_request, "missing " + config.delivery_header + " header", "", nullptr};
  }

  if (!config.events.empty()) {
    const auto event = headers(config.event_header);
    if (!event)
      return {Action::ignored, "no " + config.event_header + " header", delivery, nullptr};
    if (std::find(config.events.begin(), config.events.end(), *event) == config.events.end()) {
      return {Action::ignored, "event \"" + *event + "\" is not configured", delivery, nullptr};
    }
  }

  // The server bounds the size; the depth is bounded here, before anything recursive.
  std::string problem;
  auto payload = parse_bounded(body, JsonLimits{body.size(), JsonLimits{}.max_depth}, &problem);
  if (!payload) return {Action::bad_request, "body " + problem, delivery, nullptr};
  try {
    WebhookDecision out{Action::enqueue, "", delivery, render_job(config, *payload, delivery)};
    out.body_digest = to_hex(hmac_sha256(config.secret, body));
    return out;
  } catch (const TemplateError& e) {
    return {Action::bad_request, e.what(), delivery, nullptr};
  }
}

WebhookDedupKeys webhook_dedup_keys(const std::string& webhook_name,
                                    const WebhookDecision& decision) {
  WebhookDedupKeys keys;
  if (!decision.delivery_id.empty()) {
    keys.delivery = "webhook:" + webhook_name + ":" + decision.delivery_id;
  }
  if (!decision.body_digest.empty()) {
    keys.body = "webhook:" + webhook_name + ":body:" + decision.body_digest;
  }
  return keys;
}

}  // namespace warmstart::api
