#include "api/job_body.hpp"

#include <array>
#include <regex>
#include <string_view>

namespace warmstart::api {

using nlohmann::json;

namespace {

bool all_string_values(const json& object) {
  for (const auto& [k, v] : object.items()) {
    if (!v.is_string()) return false;
  }
  return true;
}

bool positive_integer(const json& value) {
  return value.is_number_integer() && value.get<std::int64_t>() > 0;
}

}  // namespace

std::optional<std::string> job_body_problem(const json& body) {
  static const std::regex id_pattern("[A-Za-z0-9._:-]{1,128}");
  // Docker host-config knobs a job must never set; named so the caller learns why.
  static constexpr std::array<std::string_view, 9> forbidden = {
      "privileged", "binds",   "mounts",  "volumes",    "network_mode",
      "network",    "cap_add", "devices", "host_config"};

  if (!body.is_object()) return "job must be a JSON object";
  for (std::string_view key : forbidden) {
    if (body.contains(key)) return "job." + std::string(key) + " is not allowed";
  }
  const auto cmd = body.find("cmd");
  if (cmd == body.end() || !cmd->is_array() || cmd->empty()) {
    return "job.cmd must be a non-empty array of strings";
  }
  for (const json& part : *cmd) {
    if (!part.is_string()) return "job.cmd must be a non-empty array of strings";
  }
  if (body.contains("id")) {
    const json& id = body["id"];
    if (!id.is_string() || !std::regex_match(id.get_ref<const std::string&>(), id_pattern)) {
      return "job.id must match [A-Za-z0-9._:-]{1,128}";
    }
  }
  for (const char* key : {"queue", "image", "concurrency_key"}) {
    if (body.contains(key) &&
        (!body[key].is_string() || body[key].get_ref<const std::string&>().empty())) {
      return "job." + std::string(key) + " must be a non-empty string";
    }
  }
  for (const char* key : {"env", "labels"}) {
    if (body.contains(key) && (!body[key].is_object() || !all_string_values(body[key]))) {
      return "job." + std::string(key) + " must be an object of strings";
    }
  }
  for (const char* key : {"timeout_s", "max_attempts"}) {
    if (body.contains(key) && !positive_integer(body[key])) {
      return "job." + std::string(key) + " must be a positive integer";
    }
  }
  if (body.contains("snapshot")) {
    const json& snapshot = body["snapshot"];
    if (!snapshot.is_object()) return "job.snapshot must be an object";
    if (!snapshot.contains("key") || !snapshot["key"].is_string() ||
        snapshot["key"].get_ref<const std::string&>().empty()) {
      return "job.snapshot.key must be a non-empty string";
    }
    for (const char* flag : {"reuse", "commit", "prewarm"}) {
      if (snapshot.contains(flag) && !snapshot[flag].is_boolean()) {
        return "job.snapshot." + std::string(flag) + " must be a boolean";
      }
    }
  }
  if (body.contains("resources")) {
    const json& resources = body["resources"];
    if (!resources.is_object()) return "job.resources must be an object";
    for (const char* key : {"memory_mb", "pids"}) {
      if (resources.contains(key) && !positive_integer(resources[key])) {
        return "job.resources." + std::string(key) + " must be a positive integer";
      }
    }
    if (resources.contains("cpus") &&
        (!resources["cpus"].is_number() || resources["cpus"].get<double>() <= 0)) {
      return "job.resources.cpus must be a positive number";
    }
  }
  return std::nullopt;
}

}  // namespace warmstart::api
