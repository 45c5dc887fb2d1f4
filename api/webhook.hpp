// Webhooks: signed HTTP deliveries (GitHub or generic HMAC-SHA256) mapped to a
// job by a per-webhook template. Everything here is pure: the HTTP server asks
// evaluate_webhook() what to do with a delivery and only then talks to the
// Backend (dedup, enqueue).
#pragma once
#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::api {

enum class SignatureScheme { github, generic };

// A string with {{/json/pointer}} and {{delivery}} placeholders, checked when
// the config is loaded so a typo fails at startup, not at the first delivery.
class JobTemplateString {
 public:
  JobTemplateString() = default;
  // Throws std::invalid_argument on an unterminated "{{" or an unknown variable.
  explicit JobTemplateString(std::string text);
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// Every field is templated; absent fields are left out of the job.
struct JobTemplate {
  std::vector<JobTemplateString> cmd;             // required
  std::map<std::string, JobTemplateString> env;   // {} = no extra env
  std::optional<JobTemplateString> id;            // default "wh-<name>-{{delivery}}"
  std::optional<JobTemplateString> snapshot_key;  // none = no snapshot
  std::optional<JobTemplateString> queue;         // none = "default"
  std::optional<JobTemplateString> image;         // none = the router's base image
  std::optional<int> timeout_s;                   // none = the router's default
  // The job is a prewarm of snapshot_key (docs/snapshots.md): a delivery
  // rebuilds the key's snapshot. Needs snapshot_key.
  bool prewarm = false;
};

struct WebhookConfig {
  std::string name;
  SignatureScheme scheme = SignatureScheme::github;
  std::string secret;               // from secret_env or secret_file; never logged
  std::string signature_header;     // github: X-Hub-Signature-256; generic: required
  std::string delivery_header;      // github: X-GitHub-Delivery; generic: optional
  std::string event_header;         // github: X-GitHub-Event; generic: optional
  std::vector<std::string> events;  // accepted event names; {} = all
  JobTemplate job;
  // The snapshot key namespace this webhook owns: a job it makes may only
  // name keys starting with it (403 otherwise). nullopt = any key.
  std::optional<std::string> snapshot_prefix;
};

// Reads getenv-like values; injectable so config tests do not touch the process env.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> process_env(const std::string& name);

// Parses one [webhooks.NAME] table. Throws std::invalid_argument naming
// webhooks.NAME.key and the reason (never a secret's value).
WebhookConfig parse_webhook_config(const std::string& name, const toml::table& table,
                                   const EnvLookup& env = process_env);
// All [webhooks.*] tables of a config document ({} when there are none).
std::map<std::string, WebhookConfig> parse_webhooks(const toml::table& root,
                                                    const EnvLookup& env = process_env);

// Case-insensitive header lookup over the request; nullopt = header absent.
using HeaderLookup = std::function<std::optional<std::string>(std::string_view name)>;

// Checks `signature` ("sha256=<hex>" or, for generic, bare hex) against
// HMAC-SHA256(secret, body) in constant time.
bool verify_signature(SignatureScheme scheme, std::string_view secret, std::string_view body,
                      std::string_view signature);

struct WebhookDecision {
  enum class Action {
    unauthorized,  // 401: signature missing or wrong; nothing else was looked at
    ignored,       // 202: event filtered out
    bad_request,   // 400: no delivery id (github), body not JSON, template pointer missing
    enqueue,       // dedup on delivery_id (when set) and body_digest, then enqueue `job`
  };
  Action action;
  std::string reason;       // for the response body; never contains the secret
  std::string delivery_id;  // "" when the delivery carries none
  nlohmann::json job;       // the job body when action == enqueue
  // Hex HMAC-SHA256(secret, body): the delivery header is not signed, so a
  // replay under a new or no delivery id is recognised by its body.
  std::string body_digest;
};

// Dedup keys of a delivery, without the Backend's key prefix ("" = none).
struct WebhookDedupKeys {
  std::string delivery;  // "webhook:<name>:<delivery id>" when the delivery has an id
  std::string body;      // "webhook:<name>:body:<body digest>"
};
WebhookDedupKeys webhook_dedup_keys(const std::string& webhook_name,
                                    const WebhookDecision& decision);

WebhookDecision evaluate_webhook(const WebhookConfig& config, const HeaderLookup& headers,
                                 std::string_view body);

// Substitutes {{/pointer}} (payload value; strings raw, other JSON dumped, null
// empty) and {{delivery}}. Substituted values are copied as data and never
// scanned again. Throws TemplateError naming the pointer when it is absent.
struct TemplateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
std::string render_template(const JobTemplateString& tmpl, const nlohmann::json& payload,
                            std::string_view delivery_id);
nlohmann::json render_job(const WebhookConfig& config, const nlohmann::json& payload,
                          std::string_view delivery_id);

}  // namespace warmstart::api
