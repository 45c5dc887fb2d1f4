// Webhook delivery: signature check, GitHub/generic headers, the payload and
// the job template. The input is split into a header block and a body; half
// the runs sign the body with the configured secret so the payload and
// template code is reached, not only the signature check.
#include "api/auth.hpp"
#include "api/job_body.hpp"
#include "api/webhook.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <map>

using namespace warmstart::api;

namespace {

const std::string secret = "fuzz-secret";

WebhookConfig make_hook(const char* text) {
  return parse_webhook_config("ci_push", toml::parse(text), [](const std::string&) {
    return std::optional<std::string>(secret);
  });
}

const WebhookConfig& github() {
  static const WebhookConfig hook = make_hook(R"(
    secret_env = "S"
    events = ["push"]
    cmd = ["sh", "-c", "echo {{/repository/full_name}} {{/after}} {{delivery}}"]
    env = { REPO = "{{/repository/full_name}}", N = "{{/size}}", ALL = "{{/}}" }
    snapshot_key = "{{/repository/full_name}}/{{/ref}}"
    queue = "{{/queue}}"
  )");
  return hook;
}

const WebhookConfig& generic() {
  static const WebhookConfig hook = make_hook(R"(
    scheme = "generic"
    secret_env = "S"
    signature_header = "X-Signature"
    delivery_header = "X-Delivery"
    cmd = ["run", "{{/task}}", "{{/a~1b/0}}"]
    id = "{{/id}}"
  )");
  return hook;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const bool use_github = in.ConsumeBool();
  const bool sign_right = in.ConsumeBool();
  const std::string delivery = in.ConsumeRandomLengthString(200);
  const std::string event = in.ConsumeRandomLengthString(20);
  const std::string presented = in.ConsumeRandomLengthString(100);
  const std::string template_text = in.ConsumeRandomLengthString(200);
  const std::string body = in.ConsumeRemainingBytesAsString();

  const WebhookConfig& hook = use_github ? github() : generic();
  std::map<std::string, std::string> headers;
  const std::string digest = to_hex(hmac_sha256(secret, body));
  headers[hook.signature_header] =
      sign_right ? (use_github ? "sha256=" + digest : digest) : presented;
  if (!delivery.empty()) headers[hook.delivery_header] = delivery;
  if (!hook.event_header.empty()) headers[hook.event_header] = event.empty() ? "push" : event;
  const HeaderLookup lookup = [&headers](std::string_view name) -> std::optional<std::string> {
    for (const auto& [k, v] : headers) {
      if (k.size() == name.size() &&
          std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        return v;
      }
    }
    return std::nullopt;
  };

  const WebhookDecision d = evaluate_webhook(hook, lookup, body);
  if (d.action == WebhookDecision::Action::enqueue) {
    (void)job_body_problem(d.job);
    (void)webhook_dedup_keys(hook.name, d);
    (void)d.job.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  (void)verify_signature(hook.scheme, secret, body, presented);

  // Templates as an operator writes them, rendered against a fixed payload.
  try {
    const JobTemplateString tmpl(template_text);
    static const nlohmann::json payload = {{"a", {{"b", {1, "x", nullptr}}}}, {"s", "v"}};
    (void)render_template(tmpl, payload, delivery);
  } catch (const std::invalid_argument&) {
  } catch (const TemplateError&) {
  }
  return 0;
}
