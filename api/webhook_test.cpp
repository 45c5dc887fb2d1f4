#include "api/webhook.hpp"

#include "api/auth.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using nlohmann::json;
using Action = WebhookDecision::Action;

namespace {

const std::string github_secret = "It's a Secret to Everybody";

EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

WebhookConfig github_hook() {
  auto table = toml::parse(R"(
    secret_env = "GH_SECRET"
    events = ["push"]
    cmd = ["sh", "-c", "echo {{/repository/full_name}} {{/after}}"]
    env = { REPO = "{{/repository/full_name}}", N = "{{/size}}" }
    snapshot_key = "{{/repository/full_name}}/{{/ref}}"
    id = "gh-{{delivery}}"
    queue = "ci"
    image = "warmstart-worker:latest"
    timeout_s = 600
  )");
  return parse_webhook_config("github", table, fake_env({{"GH_SECRET", github_secret}}));
}

HeaderLookup headers(std::map<std::string, std::string> values) {
  return [values](std::string_view name) -> std::optional<std::string> {
    for (const auto& [k, v] : values) {
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
}

std::string sign(const std::string& secret, const std::string& body) {
  return "sha256=" + to_hex(hmac_sha256(secret, body));
}

const std::string push_body =
    R"({"ref":"refs/heads/main","after":"abc123","size":3,"repository":{"full_name":"acme/app"}})";

}  // namespace

TEST_CASE("GitHub's published signature test vector verifies", "[unit]") {
  const std::string vector =
      "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
  CHECK(verify_signature(SignatureScheme::github, github_secret, "Hello, World!", vector));
  CHECK_FALSE(verify_signature(SignatureScheme::github, github_secret, "Hello, World?", vector));
  CHECK_FALSE(verify_signature(SignatureScheme::github, "another secret", "Hello, World!", vector));
  // GitHub always sends the prefix; a bare digest is not accepted for it.
  CHECK_FALSE(
      verify_signature(SignatureScheme::github, github_secret, "Hello, World!", vector.substr(7)));
  // Generic hooks accept both forms, either case.
  CHECK(
      verify_signature(SignatureScheme::generic, github_secret, "Hello, World!", vector.substr(7)));
  CHECK(verify_signature(SignatureScheme::generic, github_secret, "Hello, World!",
                         "757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17"));
  CHECK_FALSE(
      verify_signature(SignatureScheme::generic, github_secret, "Hello, World!", "sha256="));
  CHECK_FALSE(verify_signature(SignatureScheme::generic, github_secret, "Hello, World!", "xyz"));
}

TEST_CASE("webhook config: GitHub defaults and the job template", "[unit]") {
  const WebhookConfig hook = github_hook();
  CHECK(hook.scheme == SignatureScheme::github);
  CHECK(hook.secret == github_secret);
  CHECK(hook.signature_header == "X-Hub-Signature-256");
  CHECK(hook.delivery_header == "X-GitHub-Delivery");
  CHECK(hook.event_header == "X-GitHub-Event");
  CHECK(hook.events == std::vector<std::string>{"push"});
  CHECK(hook.job.cmd.size() == 3);
  CHECK(hook.job.timeout_s == 600);
}

TEST_CASE("webhook config errors name the key", "[unit]") {
  auto parse = [](const char* text, std::map<std::string, std::string> env = {{"S", "x"}}) {
    return parse_webhook_config("hook", toml::parse(text), fake_env(env));
  };
  CHECK_THROWS_WITH(parse(R"(cmd = ["x"])"), Catch::Contains("exactly one of secret_env"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "MISSING"
                             cmd = ["x"])"),
                    Catch::Contains("webhooks.hook.secret_env: environment variable MISSING"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S")"), Catch::Contains("webhooks.hook.cmd: required"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             scheme = "generic"
                             cmd = ["x"])"),
                    Catch::Contains("signature_header: required"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             cmd = ["{{/a"])"),
                    Catch::Contains("unterminated"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             cmd = ["{{repo}}"])"),
                    Catch::Contains("unknown template variable \"repo\""));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             cmd = ["x"]
                             tiemout_s = 5)"),
                    Catch::Contains("webhooks.hook.tiemout_s: unknown key"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             scheme = "gitlab"
                             cmd = ["x"])"),
                    Catch::Contains("must be \"github\" or \"generic\""));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             cmd = ["x"]
                             prewarm = true)"),
                    Catch::Contains("webhooks.hook.prewarm: needs snapshot_key"));
  CHECK_THROWS_WITH(parse(R"(secret_env = "S"
                             cmd = ["x"]
                             snapshot_key = "k"
                             prewarm = "yes")"),
                    Catch::Contains("webhooks.hook.prewarm: must be true or false"));
}

TEST_CASE("webhook: prewarm = true makes each delivery a prewarm of its key", "[unit]") {
  auto table = toml::parse(R"(
    secret_env = "GH_SECRET"
    cmd = ["sh", "-c", "git pull"]
    snapshot_key = "{{/repository/full_name}}/{{/ref}}"
    prewarm = true
  )");
  const WebhookConfig hook =
      parse_webhook_config("warm", table, fake_env({{"GH_SECRET", github_secret}}));
  CHECK(hook.job.prewarm);
  const WebhookDecision d =
      evaluate_webhook(hook,
                       headers({{"X-Hub-Signature-256", sign(github_secret, push_body)},
                                {"X-GitHub-Event", "push"},
                                {"X-GitHub-Delivery", "d-1"}}),
                       push_body);
  REQUIRE(d.action == Action::enqueue);
  CHECK(d.job["snapshot"] ==
        json::parse(R"({"key": "acme/app/refs/heads/main", "prewarm": true})"));
}

TEST_CASE("webhook: a signed push maps to the templated job", "[unit]") {
  const WebhookDecision d =
      evaluate_webhook(github_hook(),
                       headers({{"X-Hub-Signature-256", sign(github_secret, push_body)},
                                {"x-github-event", "push"},
                                {"X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"}}),
                       push_body);
  REQUIRE(d.action == Action::enqueue);
  CHECK(d.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958");
  CHECK(d.job == json::parse(R"({
    "id": "gh-72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "cmd": ["sh", "-c", "echo acme/app abc123"],
    "env": {"REPO": "acme/app", "N": "3"},
    "snapshot": {"key": "acme/app/refs/heads/main"},
    "queue": "ci", "image": "warmstart-worker:latest", "timeout_s": 600,
    "labels": {"webhook": "github"}})"));
}

TEST_CASE("webhook: signature first, then event filter, then payload", "[unit]") {
  const WebhookConfig hook = github_hook();
  CHECK(evaluate_webhook(hook, headers({{"X-GitHub-Event", "push"}}), push_body).action ==
        Action::unauthorized);
  const auto bad = evaluate_webhook(
      hook,
      headers({{"X-Hub-Signature-256", sign("wrong", push_body)}, {"X-GitHub-Event", "push"}}),
      push_body);
  CHECK(bad.action == Action::unauthorized);
  CHECK(bad.reason == "signature does not match");
  // Signed over different bytes (re-serialized JSON) does not verify: the raw body counts.
  CHECK(evaluate_webhook(hook,
                         headers({{"X-Hub-Signature-256", sign(github_secret, push_body + " ")},
                                  {"X-GitHub-Event", "push"}}),
                         push_body)
            .action == Action::unauthorized);

  const auto ping =
      evaluate_webhook(hook,
                       headers({{"X-Hub-Signature-256", sign(github_secret, push_body)},
                                {"X-GitHub-Event", "ping"},
                                {"X-GitHub-Delivery", "d-ping"}}),
                       push_body);
  CHECK(ping.action == Action::ignored);
  CHECK(ping.reason == "event \"ping\" is not configured");

  const std::string not_json = "{nope";
  const auto garbled =
      evaluate_webhook(hook,
                       headers({{"X-Hub-Signature-256", sign(github_secret, not_json)},
                                {"X-GitHub-Event", "push"},
                                {"X-GitHub-Delivery", "d-1"}}),
                       not_json);
  CHECK(garbled.action == Action::bad_request);
  CHECK(garbled.reason == "body is not valid JSON");
}

TEST_CASE("webhook: a GitHub delivery without its delivery header is refused", "[unit]") {
  const auto d = evaluate_webhook(github_hook(),
                                  headers({{"X-Hub-Signature-256", sign(github_secret, push_body)},
                                           {"X-GitHub-Event", "push"}}),
                                  push_body);
  CHECK(d.action == Action::bad_request);
  CHECK(d.reason == "missing X-GitHub-Delivery header");
}

TEST_CASE("webhook: a deeply nested payload is refused before it is parsed", "[unit]") {
  const std::string body =
      R"({"repository": )" + std::string(100000, '[') + std::string(100000, ']') + "}";
  const auto d = evaluate_webhook(github_hook(),
                                  headers({{"X-Hub-Signature-256", sign(github_secret, body)},
                                           {"X-GitHub-Event", "push"},
                                           {"X-GitHub-Delivery", "d-deep"}}),
                                  body);
  CHECK(d.action == Action::bad_request);
  CHECK(d.reason == "body is nested deeper than 64 levels");
}

TEST_CASE("webhook: dedup keys cover the delivery id and the signed body", "[unit]") {
  auto decide = [](const std::string& delivery) {
    return evaluate_webhook(github_hook(),
                            headers({{"X-Hub-Signature-256", sign(github_secret, push_body)},
                                     {"X-GitHub-Event", "push"},
                                     {"X-GitHub-Delivery", delivery}}),
                            push_body);
  };
  const auto first = decide("d-1");
  const auto replay = decide("d-2");
  REQUIRE(first.action == Action::enqueue);
  CHECK(first.body_digest == to_hex(hmac_sha256(github_secret, push_body)));
  const auto a = webhook_dedup_keys("github", first);
  const auto b = webhook_dedup_keys("github", replay);
  CHECK(a.delivery == "webhook:github:d-1");
  CHECK(b.delivery == "webhook:github:d-2");
  // A new delivery id does not make the same body new.
  CHECK(a.body == b.body);
  CHECK(a.body == "webhook:github:body:" + first.body_digest);
}

TEST_CASE("webhook: a missing template pointer is a 400 naming it", "[unit]") {
  const std::string body = R"({"ref":"refs/heads/main","repository":{}})";
  const auto d = evaluate_webhook(github_hook(),
                                  headers({{"X-Hub-Signature-256", sign(github_secret, body)},
                                           {"X-GitHub-Event", "push"},
                                           {"X-GitHub-Delivery", "d-1"}}),
                                  body);
  CHECK(d.action == Action::bad_request);
  CHECK(d.reason == "payload has no value at /repository/full_name");
}

TEST_CASE("webhook: substituted values are data, never templates", "[unit]") {
  const json payload = {{"a", "{{/b}}"}, {"b", "secret"}, {"n", nullptr}, {"o", {{"k", 1}}}};
  CHECK(render_template(JobTemplateString("x {{/a}} y"), payload, "") == "x {{/b}} y");
  CHECK(render_template(JobTemplateString("{{delivery}}"), payload, "{{/b}}") == "{{/b}}");
  CHECK(render_template(JobTemplateString("[{{/n}}]"), payload, "") == "[]");
  CHECK(render_template(JobTemplateString("{{ /o }}"), payload, "") == R"({"k":1})");
  CHECK(render_template(JobTemplateString("{{/o/k}}"), payload, "") == "1");
}

TEST_CASE("webhook: a pointer token an array cannot take is a missing value, never a throw",
          "[unit]") {
  // Found by fuzz_webhook (fuzz/corpus/webhook/array_empty_token): "{{/a/b//5}}"
  // against an array at /a/b threw json out_of_range out of contains().
  const json payload = {{"a", {{"b", {1, "x", nullptr}}}}};
  for (const char* text : {"{{/a/b//5}}", "{{/a/b/}}", "{{/a/b/99999999999999999999999}}",
                           "{{/a/b/-}}", "{{/a/b/01}}", "{{/a/b/3}}"}) {
    INFO(text);
    CHECK_THROWS_AS(render_template(JobTemplateString(text), payload, ""), TemplateError);
  }
  CHECK(render_template(JobTemplateString("{{/a/b/1}}"), payload, "") == "x");
}

TEST_CASE("webhook: generic scheme with bare hex, default id from the delivery", "[unit]") {
  auto table = toml::parse(R"(
    scheme = "generic"
    secret_env = "S"
    signature_header = "X-Signature"
    delivery_header = "X-Delivery"
    cmd = ["run", "{{/task}}"]
  )");
  const WebhookConfig hook = parse_webhook_config("tasks", table, fake_env({{"S", "k"}}));
  const std::string body = R"({"task":"t1"})";
  const auto d = evaluate_webhook(
      hook, headers({{"X-Signature", to_hex(hmac_sha256("k", body))}, {"X-Delivery", "d/1 2"}}),
      body);
  REQUIRE(d.action == Action::enqueue);
  CHECK(d.job["id"] == "wh-tasks-d_1_2");
  CHECK(d.job["cmd"] == json::array({"run", "t1"}));
  CHECK_FALSE(d.job.contains("snapshot"));
}
