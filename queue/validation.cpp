#include "queue/validation.hpp"

#include "common/json_limits.hpp"
#include "common/time.hpp"

#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>

namespace warmstart::queue {
namespace {

using json = nlohmann::json;

// Thrown inside the validator and turned into Validated::reason: the first
// problem found is the one reported.
struct Invalid {
  std::string reason;
};

[[noreturn]] void reject(std::string reason) {
  throw Invalid{std::move(reason)};
}

bool is_id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

bool is_env_key(std::string_view key) {
  if (key.empty()) return false;
  auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!alpha(key.front())) return false;
  for (char c : key) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Fields that ask for more privilege than a job may have, with the reason.
// Checked before the unknown-field rule so the message says what is wrong.
void reject_privilege_requests(const json& j) {
  auto truthy = [](const json& v) {
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_null()) return false;
    if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
    return true;
  };
  for (const char* key : {"privileged", "Privileged"}) {
    if (j.contains(key) && truthy(j[key])) reject("privileged containers are not allowed");
  }
  for (const char* key : {"binds", "Binds", "mounts", "Mounts", "volumes", "Volumes"}) {
    if (j.contains(key) && truthy(j[key])) reject("host binds and mounts are not allowed");
  }
  for (const char* key : {"network_mode", "NetworkMode", "network"}) {
    if (!j.contains(key)) continue;
    if (j[key].is_string() && j[key].get<std::string>() == "host") {
      reject("host network is not allowed");
    }
    reject(std::string(key) + " is set by the router's configuration, not by a job");
  }
  for (const char* key : {"cap_add", "CapAdd", "capabilities"}) {
    if (j.contains(key) && truthy(j[key])) reject("adding capabilities is not allowed");
  }
  for (const char* key :
       {"devices", "Devices", "security_opt", "SecurityOpt", "pid_mode", "PidMode", "ipc_mode",
        "IpcMode", "userns_mode", "UsernsMode", "host_config", "HostConfig"}) {
    if (j.contains(key)) reject(std::string(key) + " is not allowed in a job");
  }
}

std::string string_field(const json& j, const char* key, std::size_t max_len) {
  const json& v = j[key];
  if (!v.is_string()) reject(std::string(key) + " must be a string");
  std::string s = v.get<std::string>();
  if (s.empty()) reject(std::string(key) + " must not be empty");
  if (s.size() > max_len) {
    reject(std::string(key) + " is longer than " + std::to_string(max_len) + " characters");
  }
  if (has_nul(s)) reject(std::string(key) + " must not contain NUL");
  return s;
}

std::int64_t int_field(const json& j, const char* key, std::int64_t min, std::int64_t max) {
  const json& v = j[key];
  bool integral = v.is_number_integer() ||
                  (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
                   std::fabs(v.get<double>()) < 1e15);
  if (!integral) reject(std::string(key) + " must be an integer");
  std::int64_t n = v.is_number_unsigned() && v.get<std::uint64_t>() > 1ULL << 62
                       ? max + 1
                       : (v.is_number_float() ? static_cast<std::int64_t>(v.get<double>())
                                              : v.get<std::int64_t>());
  if (n < min || n > max) {
    reject(std::string(key) + " must be in " + std::to_string(min) + ".." + std::to_string(max) +
           ", got " + v.dump());
  }
  return n;
}

std::map<std::string, std::string> string_map(const json& j, const char* key) {
  const json& v = j[key];
  if (!v.is_object()) reject(std::string(key) + " must be an object of strings");
  std::map<std::string, std::string> out;
  for (const auto& [k, val] : v.items()) {
    if (!val.is_string()) reject(std::string(key) + "." + k + " must be a string");
    if (has_nul(k) || has_nul(val.get_ref<const std::string&>())) {
      reject(std::string(key) + "." + k + " must not contain NUL");
    }
    out.emplace(k, val.get<std::string>());
  }
  return out;
}

std::string number_text(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}

// A value over its ceiling is refused, naming the limit, unless it is the
// schema's default: a job that asks for nothing is brought down to the ceiling
// (the spec cannot tell "asked for the default" from "asked for nothing": the
// queue re-validates specs that went through to_json()).
template <typename T>
void within_ceiling(T& value, T ceiling, T schema_default, const char* field, const char* limit,
                    const char* unit) {
  if (value <= ceiling) return;
  if (value == schema_default) {
    value = ceiling;
    return;
  }
  auto text = [](T v) {
    if constexpr (std::is_floating_point_v<T>) {
      return number_text(v);
    } else {
      return std::to_string(v);
    }
  };
  reject(std::string(field) + " " + text(value) + " is over the operator's ceiling limits." +
         limit + " = " + text(ceiling) + unit);
}

void apply_ceilings(const JobLimits& limits, JobSpec& spec) {
  const JobSpec schema;
  within_ceiling(spec.resources.memory_mb, limits.memory_mb, schema.resources.memory_mb,
                 "resources.memory_mb", "memory", " MiB");
  within_ceiling(spec.resources.cpus, limits.cpus, schema.resources.cpus, "resources.cpus", "cpus",
                 "");
  within_ceiling(spec.resources.pids, limits.pids, schema.resources.pids, "resources.pids", "pids",
                 "");
  within_ceiling(spec.timeout_s, limits.timeout_s, schema.timeout_s, "timeout_s", "timeout", " s");
}

JobSpec parse_spec(const json& j, const ValidationOptions& options) {
  if (!j.is_object()) reject("a job must be a JSON object");
  reject_privilege_requests(j);
  static const char* const known[] = {
      "id",        "queue",        "image",           "cmd",       "env",   "snapshot",
      "timeout_s", "max_attempts", "concurrency_key", "resources", "labels"};
  for (const auto& [key, value] : j.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) reject("unknown field \"" + key.substr(0, 64) + "\"");
  }

  JobSpec spec;
  if (j.contains("id") && !j["id"].is_null()) {
    if (!j["id"].is_string() || !is_valid_job_id(j["id"].get<std::string>())) {
      reject("id must match [A-Za-z0-9._:-]{1,128}");
    }
    spec.id = j["id"].get<std::string>();
  } else if (options.generate_id) {
    spec.id = generate_job_id();
  } else {
    reject("id is missing");
  }
  if (j.contains("queue")) {
    spec.queue = string_field(j, "queue", 128);
    if (!is_valid_job_id(spec.queue)) reject("queue must match [A-Za-z0-9._:-]{1,128}");
  }
  if (j.contains("image") && !j["image"].is_null()) {
    spec.image = string_field(j, "image", 255);
    for (char c : spec.image) {
      if (static_cast<unsigned char>(c) <= ' ') reject("image must not contain whitespace");
    }
  }

  if (!j.contains("cmd")) reject("cmd is missing");
  const json& cmd = j["cmd"];
  if (!cmd.is_array() || cmd.empty()) reject("cmd must be a non-empty array of strings");
  if (cmd.size() > 4096) reject("cmd has more than 4096 arguments");
  for (const json& arg : cmd) {
    if (!arg.is_string()) reject("cmd must be a non-empty array of strings");
    if (has_nul(arg.get_ref<const std::string&>())) reject("cmd arguments must not contain NUL");
    spec.cmd.push_back(arg.get<std::string>());
  }
  if (spec.cmd.front().empty()) reject("cmd[0] must not be empty");

  if (j.contains("env")) {
    spec.env = string_map(j, "env");
    for (const auto& [k, v] : spec.env) {
      if (!is_env_key(k))
        reject("env key \"" + k.substr(0, 64) + "\" must match [A-Za-z_][A-Za-z0-9_]*");
    }
  }

  if (j.contains("snapshot") && !j["snapshot"].is_null()) {
    const json& s = j["snapshot"];
    if (!s.is_object()) reject("snapshot must be an object");
    for (const auto& [key, value] : s.items()) {
      if (key != "key" && key != "reuse" && key != "commit" && key != "prewarm") {
        reject("unknown field \"snapshot." + key.substr(0, 64) + "\"");
      }
    }
    SnapshotSpec snap;
    if (!s.contains("key")) reject("snapshot.key is missing");
    snap.key = string_field(s, "key", 256);
    for (char c : snap.key) {
      bool ok = is_id_char(c) || c == '/' || c == '@' || c == '+';
      if (!ok) reject("snapshot.key must match [A-Za-z0-9._:/@+_-]{1,256}");
    }
    for (const char* flag : {"reuse", "commit", "prewarm"}) {
      if (!s.contains(flag)) continue;
      if (!s[flag].is_boolean()) reject(std::string("snapshot.") + flag + " must be true or false");
    }
    snap.reuse = s.value("reuse", true);
    snap.commit = s.value("commit", true);
    snap.prewarm = s.value("prewarm", false);
    if (snap.prewarm && !snap.commit) reject("snapshot.prewarm needs snapshot.commit");
    spec.snapshot = snap;
  }

  if (j.contains("timeout_s")) spec.timeout_s = int_field(j, "timeout_s", 1, 30LL * 24 * 3600);
  if (j.contains("max_attempts")) {
    spec.max_attempts = static_cast<int>(int_field(j, "max_attempts", 1, 100));
  }
  if (j.contains("concurrency_key") && !j["concurrency_key"].is_null()) {
    spec.concurrency_key = string_field(j, "concurrency_key", 256);
  }

  if (j.contains("resources")) {
    const json& r = j["resources"];
    if (!r.is_object()) reject("resources must be an object");
    for (const auto& [key, value] : r.items()) {
      if (key != "memory_mb" && key != "cpus" && key != "pids") {
        reject("unknown field \"resources." + key.substr(0, 64) + "\"");
      }
    }
    // Docker refuses less than 6 MiB of memory.
    if (r.contains("memory_mb")) spec.resources.memory_mb = int_field(r, "memory_mb", 6, 1 << 20);
    if (r.contains("cpus")) {
      if (!r["cpus"].is_number()) reject("resources.cpus must be a number");
      double cpus = r["cpus"].get<double>();
      if (!(cpus >= 0.01 && cpus <= 1024)) reject("resources.cpus must be in 0.01..1024");
      spec.resources.cpus = cpus;
    }
    if (r.contains("pids")) spec.resources.pids = int_field(r, "pids", 1, 4194304);
  }
  if (options.limits) apply_ceilings(*options.limits, spec);

  if (j.contains("labels")) {
    spec.labels = string_map(j, "labels");
    for (const auto& [k, v] : spec.labels) {
      if (k.empty() || k.size() > 128) reject("label keys must be 1..128 characters");
      if (v.size() > 1024) reject("label \"" + k + "\" is longer than 1024 characters");
      if (k.rfind("warmstart.", 0) == 0) reject("label keys starting with warmstart. are reserved");
    }
  }
  return spec;
}

std::string best_effort_id(const json& j) {
  if (j.is_object() && j.contains("id") && j["id"].is_string() &&
      is_valid_job_id(j["id"].get<std::string>())) {
    return j["id"].get<std::string>();
  }
  return {};
}

}  // namespace

std::string describe(const JobLimits& limits) {
  return "memory_mb<=" + std::to_string(limits.memory_mb) + " cpus<=" + number_text(limits.cpus) +
         " pids<=" + std::to_string(limits.pids) +
         " timeout_s<=" + std::to_string(limits.timeout_s);
}

nlohmann::json limits_to_json(const JobLimits& limits) {
  return {{"memory_mb", limits.memory_mb},
          {"cpus", limits.cpus},
          {"pids", limits.pids},
          {"timeout_s", limits.timeout_s}};
}

std::optional<JobLimits> limits_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  for (const char* key : {"memory_mb", "pids", "timeout_s"}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<std::int64_t>() < 1) {
      return std::nullopt;
    }
  }
  if (!j.contains("cpus") || !j["cpus"].is_number() || !(j["cpus"].get<double>() > 0)) {
    return std::nullopt;
  }
  JobLimits limits;
  limits.memory_mb = j["memory_mb"].get<std::int64_t>();
  limits.cpus = j["cpus"].get<double>();
  limits.pids = j["pids"].get<std::int64_t>();
  limits.timeout_s = j["timeout_s"].get<std::int64_t>();
  return limits;
}

bool is_valid_job_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!is_id_char(c)) return false;
  }
  return true;
}

std::string generate_job_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[64];
  std::snprintf(buf, sizeof buf, "j-%lld-%016llx", static_cast<long long>(unix_ms_now()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

Validated validate_job(const nlohmann::json& job, const ValidationOptions& options) {
  Validated out;
  out.id = best_effort_id(job);
  try {
    // dump() recurses once per level: a deep document (even in a field the
    // schema rejects) must never reach it.
    if (!json_depth_within(job, options.max_depth)) {
      reject("job is nested deeper than " + std::to_string(options.max_depth) + " levels");
    }
    JobSpec spec = parse_spec(job, options);
    // dump() is what travels on the stream: that is the size that counts. A
    // job built in code (CLI arguments) may hold bytes JSON cannot carry.
    std::size_t size = 0;
    try {
      size = job.dump().size();
    } catch (const json::type_error&) {
      reject("job strings must be valid UTF-8");
    }
    if (size > options.max_payload_bytes) {
      reject("job is " + std::to_string(size) + " bytes; the limit is " +
             std::to_string(options.max_payload_bytes));
    }
    out.spec = std::move(spec);
    out.id = out.spec->id;
  } catch (const Invalid& e) {
    out.reason = e.reason;
  }
  return out;
}

Validated validate_job_text(std::string_view json_text, const ValidationOptions& options) {
  std::string reason;
  auto j =
      parse_bounded(json_text, JsonLimits{options.max_payload_bytes, options.max_depth}, &reason);
  if (!j) {
    Validated out;
    out.reason = "job " + reason;
    return out;
  }
  return validate_job(*j, options);
}

}  // namespace warmstart::queue
